"""tools/port_weights.py: a counting snapshot (six-branch, stacked or deploy) becomes a CaffeNet
conv1..conv5 model that loads into the transfer nets in real Caffe with exactly the source
weights and computes the same features; bad files are refused with a message naming them."""
import os
import sys

import cv2
import lmdb
import numpy as np
import pytest

import caffe
from caffe.proto import caffe_pb2

from conftest import load_script
from ltc import REPO
from ltc import transfer_nets
from ltc import surgery
from counting_models import CAFFENET_CONV_SHAPES as SHAPES, CONVS, build_counting_model, counting_netparam
from ltc import lmdb_io
from ltc.lmdb_io import image_to_datum



@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Source counting snapshots of every layout, with different random weights, and their ports."""
    d = tmp_path_factory.mktemp("port")
    out = {}
    for seed, layout in enumerate(("six", "stacked", "deploy")):
        src = d / ("%s.caffemodel" % layout)
        net = build_counting_model(src, layout, seed=seed)
        ported = d / ("%s_ported.caffemodel" % layout)
        assert load_script("tools/port_weights.py").main([str(src), str(ported)]) == 0
        params = {k: [b.data.copy() for b in net.params[k]] for k in CONVS + ("fc6", "fc7", "fc8")}
        out[layout] = dict(src=src, ported=ported, params=params, net=net)
    return out


def write_proto(path, netparam):
    with open(str(path), "w") as f:
        f.write(str(netparam))
    return str(path)


def ported_layers(path):
    net = caffe_pb2.NetParameter()
    with open(str(path), "rb") as f:
        net.ParseFromString(f.read())
    return net


def test_detects_every_layout(models):
    for layout, kind in (("six", "six-branch"), ("stacked", "stacked"), ("deploy", "deploy")):
        assert surgery.CountingModel(str(models[layout]["src"])).kind == kind


def test_ported_model_is_caffenet_conv1_to_conv5(models):
    for layout in ("six", "stacked", "deploy"):
        net = ported_layers(models[layout]["ported"])
        assert [l.name for l in net.layer] == list(CONVS)
        for layer in net.layer:
            assert layer.type == "Convolution"
            assert tuple(layer.blobs[0].shape.dim) == SHAPES[layer.name]
            assert tuple(layer.blobs[1].shape.dim) == (SHAPES[layer.name][0],)


def test_loads_into_linear_probe_with_exact_blobs(models, tmp_path):
    # (FCN-AlexNet loads a ported model in test_transfer.py: the suite builds that large net once)
    probe = write_proto(tmp_path / "probe.prototxt", transfer_nets.linear_probe_net(dict(batch=1, num_classes=10), inputs="input"))
    for layout in ("six", "deploy"):
        for proto in (probe,):
            net = caffe.Net(proto, caffe.TRAIN)
            net.copy_from(str(models[layout]["ported"]))
            for name in CONVS:
                for i in range(2):
                    assert np.array_equal(net.params[name][i].data, models[layout]["params"][name][i]), (layout, proto, name)


def test_ported_features_equal_the_counting_branch(models, tmp_path):
    """The plain CaffeNet conv trunk (counting geometry: no pad, 114 input) with the ported
    weights computes the counting branch's conv5/pool5 on the same input."""
    src = models["six"]["net"]
    feat = caffe.Net(write_proto(tmp_path / "feat.prototxt", transfer_nets.features_deploy(size=114)), caffe.TEST)
    feat.copy_from(str(models["six"]["ported"]))
    rng = np.random.RandomState(3)
    x = rng.normal(0, 1, (1, 3, 114, 114)).astype(np.float32)
    for name in ("t1", "t2", "t3", "t4", "dx", "dy"):
        src.blobs[name].data[...] = rng.normal(0, 1, src.blobs[name].data.shape)
    src.blobs["t1"].data[...] = x
    src.forward()
    feat.blobs["data"].data[...] = x
    feat.forward()
    assert feat.blobs["pool5"].data.shape == (1, 256, 3, 3)
    assert np.abs(src.blobs["pool5"].data).max() > 0  # a non-trivial comparison
    for blob in ("conv5", "pool5"):
        assert np.array_equal(feat.blobs[blob].data, src.blobs[blob].data), blob


def test_keep_head_renames_and_downstream_ignores_it(models, tmp_path):
    out = tmp_path / "head.caffemodel"
    assert load_script("tools/port_weights.py").main([str(models["stacked"]["src"]), str(out), "--keep-head"]) == 0
    net = ported_layers(out)
    assert [l.name for l in net.layer] == list(CONVS) + ["count_fc6", "count_fc7", "count_fc8"]
    by = {l.name: l for l in net.layer}
    assert tuple(by["count_fc6"].blobs[0].shape.dim) == (64, 2304)
    np.testing.assert_array_equal(surgery.blob_array(by["count_fc8"].blobs[0]), models["stacked"]["params"]["fc8"][0])
    probe = caffe.Net(write_proto(tmp_path / "p.prototxt", transfer_nets.linear_probe_net(dict(batch=1), inputs="input")), caffe.TEST)
    probe.copy_from(str(out))  # count_* match no layer there: silently ignored by name
    assert np.array_equal(probe.params["conv1"][0].data, models["stacked"]["params"]["conv1"][0])


def test_fold_std_value_scales_conv1_exactly(models, tmp_path):
    out = tmp_path / "fold.caffemodel"
    assert load_script("tools/port_weights.py").main([str(models["deploy"]["src"]), str(out), "--fold-std-value", "57.5"]) == 0
    by = {l.name: l for l in ported_layers(out).layer}
    src = models["deploy"]["params"]
    assert np.array_equal(surgery.blob_array(by["conv1"].blobs[0]), src["conv1"][0] / np.float32(57.5))
    assert np.array_equal(surgery.blob_array(by["conv1"].blobs[1]), src["conv1"][1])      # bias unchanged
    assert np.array_equal(surgery.blob_array(by["conv2"].blobs[0]), src["conv2"][0])      # other layers unchanged


def _flat_colour_lmdb(path, contrasts=(30, 90)):
    """One image per contrast a: B, G, R planes constant at 10, 10 + a, 10 + 2a, so every view of
    it (tile, crop, any resize) has std a * sqrt(2/3) and its gray is uniform."""
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, a in enumerate(contrasts):
            img = np.empty((256, 256, 3), np.uint8)
            img[..., 0], img[..., 1], img[..., 2] = 10, 10 + a, 10 + 2 * a
            txn.put(b"%08d_c%d.png" % (i, i), image_to_datum(img, label=0).SerializeToString())
    env.close()


def test_fold_std_measures_the_counting_inputs(models, tmp_path, capsys):
    db = tmp_path / "flat_lmdb"
    _flat_colour_lmdb(db)
    # two images of different contrast, each paired with the other: per image five views of its
    # own (tiles, Dx) and one of the other (Dy); the mean of the 12 stds is (30 + 90) / 2 * sqrt(2/3)
    # (the root of the mean variance would be 54.77, the std of all pixels pooled larger still)
    expected = 60.0 * np.sqrt(2.0 / 3.0)
    s, n = surgery.measure_input_std(str(db), n_images=2)
    assert n == 2 * 6 and abs(s - expected) < 1e-9
    s_gray, _ = surgery.measure_input_std(str(db), n_images=2, gray_prob=1.0)
    assert s_gray < 1e-6   # gray mode averages the channels: a uniform image
    out = tmp_path / "fold.caffemodel"
    assert load_script("tools/port_weights.py").main([str(models["deploy"]["src"]), str(out), "--fold-std", str(db),
                                                      "--fold-std-images", "2"]) == 0
    assert "measured input std 48.9898" in capsys.readouterr().out
    conv1 = surgery.blob_array(ported_layers(out).layer[0].blobs[0])
    assert np.array_equal(conv1, models["deploy"]["params"]["conv1"][0] / np.float32(s))


def _refused(capsys, argv):
    assert load_script("tools/port_weights.py").main(argv) == 2
    return capsys.readouterr().err


def test_refuses_truncated_file(models, tmp_path, capsys):
    data = open(str(models["six"]["src"]), "rb").read()
    cut = tmp_path / "cut.caffemodel"
    cut.write_bytes(data[: len(data) * 3 // 5])
    err = _refused(capsys, [str(cut), str(tmp_path / "o.caffemodel")])
    assert str(cut) in err and "truncated" in err
    assert not (tmp_path / "o.caffemodel").exists()


def test_refuses_file_cut_between_layers(models, tmp_path, capsys):
    """Cut exactly after a whole layer message: protobuf parses it, the tool must not."""
    data = open(str(models["deploy"]["src"]), "rb").read()
    model = surgery.CountingModel(str(models["deploy"]["src"]))
    cut = tmp_path / "cut.caffemodel"
    cut.write_bytes(data[: model.spans["relu7"][1]])   # everything up to relu7; fc8, relu8 lost
    err = _refused(capsys, [str(cut), str(tmp_path / "o.caffemodel")])
    assert str(cut) in err and "truncated" in err and "fc8" in err


def test_refuses_garbage_and_empty(tmp_path, capsys):
    junk = tmp_path / "junk.caffemodel"
    junk.write_bytes(bytes(range(7, 200)) * 10)
    err = _refused(capsys, [str(junk), str(tmp_path / "o.caffemodel")])
    assert str(junk) in err and ("truncated" in err or "not a Caffe" in err)
    empty = tmp_path / "empty.caffemodel"
    empty.write_bytes(b"")
    assert "empty" in _refused(capsys, [str(empty), str(tmp_path / "o.caffemodel")])
    assert "no such file" in _refused(capsys, [str(tmp_path / "missing.caffemodel"), str(tmp_path / "o.caffemodel")])


LENET = """name: "lenet"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 28 dim: 28 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 20 kernel_size: 5 weight_filler { type: "xavier" } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1"
        inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
"""


def test_refuses_non_counting_lenet(tmp_path, capsys):
    proto = tmp_path / "lenet.prototxt"
    proto.write_text(LENET)
    model = tmp_path / "lenet.caffemodel"
    caffe.Net(str(proto), caffe.TEST).save(str(model))
    err = _refused(capsys, [str(model), str(tmp_path / "o.caffemodel")])
    assert str(model) in err and "not a counting net" in err


def test_refuses_imagenet_caffenet(tmp_path, capsys):
    """conv1..conv5 fine, but fc6 takes 6x6x256: a CaffeNet, not a counting net."""
    netp = transfer_nets.features_deploy(size=227)
    fc = netp.layer.add(name="fc6", type="InnerProduct", bottom=["pool5"], top=["fc6"])
    fc.inner_product_param.num_output = 8
    for name, bottom, k in (("fc7", "fc6", 8), ("fc8", "fc7", 4)):
        l = netp.layer.add(name=name, type="InnerProduct", bottom=[bottom], top=[name])
        l.inner_product_param.num_output = k
    netp.layer.add(name="relu8", type="ReLU", bottom=["fc8"], top=["fc8"])
    model = tmp_path / "caffenet.caffemodel"
    caffe.Net(write_proto(tmp_path / "c.prototxt", netp), caffe.TEST).save(str(model))
    err = _refused(capsys, [str(model), str(tmp_path / "o.caffemodel")])
    assert "not a counting net" in err and "9216" in err and "ImageNet CaffeNet" in err


def test_refuses_shape_mismatch(tmp_path, capsys):
    netp = counting_netparam("deploy")
    for layer in netp.layer:
        if layer.name == "conv2":
            layer.convolution_param.group = 1   # 256x96x5x5 instead of CaffeNet's 256x48x5x5
    model = tmp_path / "nogroup.caffemodel"
    build_counting_model(model, netparam=netp)
    err = _refused(capsys, [str(model), str(tmp_path / "o.caffemodel")])
    assert str(model) in err and "shape mismatch" in err and "256x96x5x5" in err and "256x48x5x5" in err


def test_refuses_unshared_branches(models, tmp_path, capsys):
    net = caffe_pb2.NetParameter()
    net.ParseFromString(open(str(models["six"]["src"]), "rb").read())
    for layer in net.layer:
        if layer.name == "conv3_dx":
            layer.blobs[0].data[5] += 1.0
    bad = tmp_path / "unshared.caffemodel"
    bad.write_bytes(net.SerializeToString())
    err = _refused(capsys, [str(bad), str(tmp_path / "o.caffemodel")])
    assert "conv3_dx" in err and "do not share" in err


def test_rescale_normalises_the_random_layers(models, tmp_path, make_test_lmdb):
    """--rescale (Kraehenbuehl et al. within-layer init): every channel of fc6, fc7, score_fr
    has zero-mean unit-std pre-activations on the images used; conv1..conv5 stay ported."""
    make_test_lmdb(str(tmp_path / "imgs"), 3)
    fcn = transfer_nets.fcn_alexnet(dict(size=64))
    for layer in fcn.layer:   # fc6/fc7 narrowed: the rescaling is per channel, whatever the width
        if layer.name in ("fc6", "fc7"):
            layer.convolution_param.num_output = 64
    net_path = write_proto(tmp_path / "fcn.prototxt", fcn)
    out = tmp_path / "init.caffemodel"
    assert load_script("tools/port_weights.py").main([str(models["deploy"]["src"]), str(out), "--rescale", str(tmp_path / "imgs"), "--rescale-net", net_path,
                    "--rescale-images", "3", "--rescale-size", "64"]) == 0
    net = caffe.Net(net_path, caffe.TEST)
    net.copy_from(str(out))
    for name in CONVS:
        assert np.array_equal(net.params[name][0].data, models["deploy"]["params"][name][0])
    imgs = [im for _, im, _ in lmdb_io.iter_images(str(tmp_path / "imgs"))]
    batch = np.stack([cv2.resize(im, (64, 64), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1) for im in imgs])
    net.blobs["data"].reshape(3, 3, 64, 64)
    net.blobs["label"].reshape(3, 1, 64, 64)
    net.reshape()
    net.blobs["data"].data[...] = batch - np.array([104, 117, 123], np.float32).reshape(1, 3, 1, 1)
    for name in ("fc6", "fc7", "score_fr"):
        net.forward(end=name)
        z = net.blobs[name].data
        np.testing.assert_allclose(z.mean(axis=(0, 2, 3)), 0, atol=1e-3)
        np.testing.assert_allclose(z.std(axis=(0, 2, 3)), 1, atol=1e-2)
    assert "Input blob 'data'" in _refused_rescale(models, tmp_path)


def _refused_rescale(models, tmp_path):
    import subprocess
    probe = write_proto(tmp_path / "probe.prototxt", transfer_nets.linear_probe_net({}))   # images from a Data layer
    r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "port_weights.py"), str(models["deploy"]["src"]),
                        str(tmp_path / "x.caffemodel"), "--rescale", str(tmp_path / "imgs"), "--rescale-net", probe],
                       capture_output=True, text=True)
    assert r.returncode == 2
    return r.stderr
