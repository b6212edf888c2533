"""Every param_str key of the three Python layers (counting_data, counting_loss, resize_layer)
refuses bad values inside a real caffe.Net with a ParamError naming the key; and the data
layer's default normalisation is the formula, checked at a few 1e-6 on inputs where the eps
and the std's ddof matter."""
import json
import re

import lmdb
import numpy as np
import pytest

import caffe
from ltc.lmdb_io import image_to_datum
from ltc.params import ParamError

NAMES6 = ("t1", "t2", "t3", "t4", "dx", "dy")


def write_net(tmp_path, text):
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    return str(path)


def data_net(tmp_path, param_str):
    return write_net(tmp_path, 'layer { name: "data" type: "Python" %s python_param { module: "counting_data" '
                               'layer: "CountingDataLayer" param_str: %s } }\n'
                     % (" ".join('top: "%s"' % t for t in NAMES6), json.dumps(param_str)))


def loss_net(tmp_path, param_str):
    inputs = "".join('input: "%s" input_shape { dim: 2 dim: 3 }\n' % n for n in NAMES6)
    return write_net(tmp_path, inputs + 'layer { name: "loss" type: "Python" %s top: "loss" loss_weight: 1 '
                                        'python_param { module: "counting_loss" layer: "CountingLossLayer" '
                                        'param_str: %s } }\n'
                     % (" ".join('bottom: "%s"' % n for n in NAMES6), json.dumps(param_str)))


def resize_net(tmp_path, param_str):
    return write_net(tmp_path, 'input: "x" input_shape { dim: 1 dim: 2 dim: 9 dim: 9 }\n'
                               'layer { name: "r" type: "Python" bottom: "x" top: "r" python_param { '
                               'module: "resize_layer" layer: "BilinearResizeLayer" param_str: %s } }\n'
                     % json.dumps(param_str))


@pytest.fixture(scope="module")
def small_lmdb(tmp_path_factory):
    from conftest import write_test_lmdb
    path = str(tmp_path_factory.mktemp("params") / "lmdb")
    write_test_lmdb(path, 3, size=232)
    return path


# (key, bad JSON value): each must be refused with a message naming the key.
DATA_BAD = [
    ("source", 5), ("source", ["a"]),
    ("batch_size", "4"), ("batch_size", 1), ("batch_size", 2.5),
    ("crop_size", 227), ("crop_size", "228"),
    ("interpolation", "nearest"), ("interpolation", 1),
    ("gray_prob", 1.5), ("gray_prob", -0.1), ("gray_prob", "0.5"),
    ("seed", -1), ("seed", 1.5),
    ("workers", -1), ("workers", "2"),
    ("prefetch", 0), ("prefetch", 1.0),
    ("eps", 0), ("eps", -1e-5), ("eps", "1e-5"),
    ("stack", "yes"), ("stack", 1),
    ("test_batches", -1), ("test_batches", "20"),
    ("trace", 5), ("trace", ["a"]),
    ("partner", "photos"), ("partner", 1),
    ("shard", -1), ("shard", "1"), ("num_shards", 0), ("num_shards", 1.5),
]
LOSS_BAD = [("M", 0), ("M", -1), ("M", "ten"), ("M", True), ("M", None)]
RESIZE_BAD = [("height", 0), ("height", "5"), ("height", 2.5), ("width", -1), ("width", None),
              ("align_corners", "yes"), ("align_corners", 1)]


def _names_key(message, key):
    """The key is named in the message proper (not only in the data layer's "(got k=v ...)" list)."""
    message = message.split(" (got ")[0]
    return re.search(r"(^|[^A-Za-z_])'?%s'?([^A-Za-z_]|$)" % re.escape(key), message) is not None


def _refused(make, tmp_path, params, key):
    with pytest.raises(ParamError) as err:
        caffe.Net(make(tmp_path, json.dumps(params)), caffe.TRAIN)
    assert _names_key(str(err.value), key), str(err.value)


@pytest.mark.parametrize("key,value", DATA_BAD, ids=["%s=%r" % kv for kv in DATA_BAD])
def test_data_layer_refuses_bad_value_naming_the_key(small_lmdb, tmp_path, key, value):
    params = dict(source=small_lmdb, batch_size=2, workers=0)
    params[key] = value
    _refused(data_net, tmp_path, params, key)


@pytest.mark.parametrize("key,value", LOSS_BAD, ids=["%s=%r" % kv for kv in LOSS_BAD])
def test_loss_layer_refuses_bad_value_naming_the_key(tmp_path, key, value):
    _refused(loss_net, tmp_path, {key: value}, key)


@pytest.mark.parametrize("key,value", RESIZE_BAD, ids=["%s=%r" % kv for kv in RESIZE_BAD])
def test_resize_layer_refuses_bad_value_naming_the_key(tmp_path, key, value):
    params = dict(height=4, width=5)
    params[key] = value
    _refused(resize_net, tmp_path, params, key)


@pytest.mark.parametrize("make,required", [(data_net, "source"), (resize_net, "height"), (resize_net, "width")])
def test_missing_required_key_is_named(small_lmdb, tmp_path, make, required):
    params = dict(source=small_lmdb, batch_size=2, workers=0) if make is data_net else dict(height=4, width=5)
    del params[required]
    _refused(make, tmp_path, params, required)


@pytest.mark.parametrize("make", [data_net, loss_net, resize_net])
def test_unknown_key_is_named(small_lmdb, tmp_path, make):
    params = dict(source=small_lmdb, batch_size=2, workers=0) if make is data_net else \
        dict(height=4, width=5) if make is resize_net else {}
    params["bogus_key"] = 1
    _refused(make, tmp_path, params, "bogus_key")


def test_every_key_has_a_bad_value_in_the_table():
    import counting_data
    import resize_layer
    from ltc import loss
    assert {k for k, _ in DATA_BAD} == set(counting_data.PARAM_KEYS)
    assert {k for k, _ in LOSS_BAD} == set(loss.PARAM_KEYS)
    assert {k for k, _ in RESIZE_BAD} == set(resize_layer.PARAM_KEYS)


# ----------------------------------------------------------------------------- default normalisation
def test_data_layer_default_normalisation_is_the_formula(tmp_path):
    """Low-contrast images (std about 1.5 levels): the layer's default eps (1e-5) and the population
    std are checked at 6e-6 against the float64 formula; eps 1e-3 or ddof 1 would be off by > 2e-5."""
    from test_count_transforms import exact_reference, low_contrast
    from ltc import transforms
    path = str(tmp_path / "flat_lmdb")
    images = [low_contrast((256, 256, 3), seed) for seed in range(4)]
    env = lmdb.open(path, map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, img in enumerate(images):
            txn.put(b"%08d_f%d.png" % (i, i), image_to_datum(img, label=0).SerializeToString())
    env.close()
    net = caffe.Net(data_net(tmp_path, json.dumps(dict(source=path, batch_size=4, workers=0, seed=9))), caffe.TRAIN)
    net.forward()
    plan = transforms.plan_batch(9, "train", 0, 4, 4)
    chw = [np.ascontiguousarray(img.transpose(2, 0, 1)) for img in images]
    for i, views in enumerate(transforms.batch_views([chw[j] for j in plan.index], plan, 228)):
        for k, v in enumerate(views):
            gray = bool(plan.gray[i])
            ref = exact_reference(v, gray)
            assert np.abs(exact_reference(v, gray, eps=1e-3) - ref).max() > 2e-5
            assert np.abs(exact_reference(v, gray, ddof=1) - ref).max() > 2e-5
            np.testing.assert_allclose(net.blobs[NAMES6[k]].data[i], ref, rtol=1e-6, atol=6e-6)
