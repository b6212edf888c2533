"""tools/export.py and ltc.torch_caffenet: the exported PyTorch module and ONNX model compute
Caffe's conv1..conv5 / pool5 / fc8 on real photos (same preprocessing, relative max abs
difference < 1e-4), on random weights of every snapshot layout and on the demo model, and the
exported parameters are Caffe's blobs bit for bit. Needs the optional extras (make extras):
the whole module is skipped without torch, the ONNX tests without onnx / onnxruntime."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import caffe  # noqa: E402
from caffe.proto import caffe_pb2  # noqa: E402
from google.protobuf import text_format  # noqa: E402

from conftest import load_script  # noqa: E402
from counting_models import build_counting_model, counting_netparam  # noqa: E402
from ltc import REPO  # noqa: E402
from ltc import export as ex  # noqa: E402
from ltc import torch_caffenet as tc  # noqa: E402

CAFFE = os.path.join(REPO, ".venv", "bin", "caffe")
DEMO = os.path.join(REPO, "runs", "demo", "counting_demo_iter_600.caffemodel")
TOL = 1e-4          # max |torch - caffe| / max |caffe| per blob
HEAD, DIM = 64, 20  # small random heads (fc6 still takes the 3x3x256 pool5)
BLOBS = ("conv1", "pool1", "norm1", "conv2", "pool2", "norm2", "conv3", "conv4", "conv5", "pool5")
REPORT = []         # (model, backend, blob, relative max abs diff): printed by test_zz_report


# ----------------------------------------------------------------------------- helpers
def sample_photos():
    """Real photos: the package files data/sample is built from (scikit-image, scikit-learn)."""
    def pkg(name):
        return list(importlib.util.find_spec(name).submodule_search_locations)[0]
    sk = os.path.join(pkg("skimage"), "data")
    paths = [os.path.join(sk, f) for f in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")]
    paths.append(os.path.join(pkg("sklearn"), "datasets", "images", "china.jpg"))
    assert all(os.path.isfile(p) for p in paths), paths
    return paths


def batch(meta, size=None):
    return torch.cat([tc.preprocess(p, meta, size) for p in sample_photos()])


def caffe_net(tmp_path, x, weights, head=None, tag="ref"):
    """The project's deploy net (or its trunk up to pool5 when head is None) at x's shape, in Caffe.

    weights: a .caffemodel (loaded by Caffe's copy_from) or {layer: [w, b]} taken from a net
    that loaded one (saves re-reading a large six-branch snapshot)."""
    netp = counting_netparam("deploy", head=HEAD, dim=DIM)
    if head is None:
        keep = []
        for layer in netp.layer:
            keep.append(layer)
            if layer.name == "pool5":
                break
        del netp.layer[:]
        netp.layer.extend(keep)
    else:
        fc = {l.name: l for l in netp.layer}
        for name, n in zip(("fc6", "fc7", "fc8"), head):
            fc[name].inner_product_param.num_output = n
    netp.layer[0].input_param.shape[0].dim[:] = list(x.shape)
    proto = tmp_path / ("%s_%dx%d.prototxt" % (tag, x.shape[2], x.shape[3]))
    proto.write_text(str(netp))
    net = caffe.Net(str(proto), caffe.TEST)
    if isinstance(weights, dict):
        for name in net.params:
            for i, b in enumerate(net.params[name]):
                b.data[...] = weights[name][i]
    else:
        net.copy_from(str(weights))
    net.blobs["data"].data[...] = x.numpy()
    net.forward()
    return net


def have(module):
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def rel_diff(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = np.abs(b).max()
    assert scale > 0, "an all-zero activation makes the comparison vacuous"
    return float(np.abs(a - b).max() / scale)


def compare(label, backend, got, ref, names):
    """ref: a caffe.Net after forward, or {blob: array}."""
    worst = 0.0
    for name in names:
        d = rel_diff(got[name], ref.blobs[name].data if hasattr(ref, "blobs") else ref[name])
        REPORT.append((label, backend, name, d))
        assert d < TOL, (label, backend, name, d)
        worst = max(worst, d)
    return worst


def export(src, out, *args):
    """tools/export.py's main (exit status)."""
    return load_script("tools/export.py").main([str(src), str(out)] + list(args))


@pytest.fixture(scope="module")
def random_models(tmp_path_factory):
    """Counting snapshots of every layout with different seeded random weights (real Caffe saves)."""
    d = tmp_path_factory.mktemp("export_random")
    out = {}
    for seed, layout in enumerate(("six", "stacked", "deploy")):
        path = d / ("%s.caffemodel" % layout)
        net = build_counting_model(path, layout, head=HEAD, dim=DIM, seed=seed + 11)
        out[layout] = dict(path=path, params={k: [b.data.copy() for b in v] for k, v in net.params.items()})
    return out


def _train_short_demo(d):
    """The demo net and solver (prototxt/demo), shortened to 20 iterations of batch 8."""
    from conftest import write_test_lmdb
    sample = os.path.join(REPO, "data", "sample")
    train, val = os.path.join(sample, "train_lmdb"), os.path.join(sample, "val_lmdb")
    if not os.path.isfile(os.path.join(train, "data.mdb")):
        train, val = str(d / "train_lmdb"), str(d / "val_lmdb")
        write_test_lmdb(train, 8, seed=1)
        write_test_lmdb(val, 3, seed=2)
    net = caffe_pb2.NetParameter()
    text_format.Merge(open(os.path.join(REPO, "prototxt/demo/train_val.prototxt")).read(), net)
    for layer in net.layer:
        if layer.type == "Python" and layer.python_param.module == "counting_data":
            p = json.loads(layer.python_param.param_str)
            test = layer.include[0].phase == caffe_pb2.TEST
            p.update(source=val if test else train, batch_size=8, workers=0)
            layer.python_param.param_str = json.dumps(p)
    (d / "train_val.prototxt").write_text(str(net))
    s = caffe_pb2.SolverParameter()
    text_format.Merge(open(os.path.join(REPO, "prototxt/demo/solver.prototxt")).read(), s)
    s.net, s.max_iter, s.snapshot, s.test_interval = str(d / "train_val.prototxt"), 20, 20, 1000
    s.test_initialization = False
    s.snapshot_prefix = str(d / "demo")
    (d / "solver.prototxt").write_text(str(s))
    proc = subprocess.run([CAFFE, "train", "-solver", str(d / "solver.prototxt")], cwd=REPO, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return d / "demo_iter_20.caffemodel"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo model (runs/demo after `make demo`; without it, the demo net trained for 20
    iterations), exported once to every format, and Caffe's blobs for the sample photos."""
    d = tmp_path_factory.mktemp("demo")
    if os.path.isfile(DEMO):
        label, src = "demo", DEMO
    else:
        label, src = "demo-20it", str(_train_short_demo(d))
    files = {"head.pt": d / "head.pt"}
    assert export(src, files["head.pt"], "--head") == 0            # the command line, once
    trained = ex.read_trained(src, log=lambda *a: None)          # the other files: read the large snapshot once
    for part, head in (("trunk", False), ("head", True)):
        for ext, write in (("pt", ex.write_torch), ("onnx", ex.write_onnx)):
            name = "%s.%s" % (part, ext)
            if name in files or (ext == "onnx" and not have("onnx")):
                continue
            files[name] = d / name
            write(*ex.prepare(trained, head=head, log=lambda *a: None), str(files[name]))
    meta = tc.load(str(files["head.pt"]))[0].meta
    x = batch(meta)
    ref = caffe_net(d, x, src, head=meta["head"])          # Caffe itself reads the snapshot, once
    params = {k: [b.data.copy() for b in v] for k, v in ref.params.items()}
    blobs = {k: v.data.copy() for k, v in ref.blobs.items()}
    return dict(label=label, src=src, files=files, meta=meta, x=x, ref=blobs, params=params)


# ----------------------------------------------------------------------------- the module itself
def test_pool5_sizes_match_caffe_at_several_input_sides(tmp_path, random_models):
    w = random_models["deploy"]["path"]
    net = tc.CaffeNet()
    for side in (67, 100, 113, 114, 160, 227, 250):
        x = torch.randn(1, 3, side, side)
        ref = caffe_net(tmp_path, x, w)
        got = net.extract(x, BLOBS)
        for name in BLOBS:
            assert tuple(got[name].shape) == ref.blobs[name].data.shape, (side, name)
    assert tuple(net(torch.zeros(1, 3, 114, 114)).shape) == (1, 256, 3, 3)
    assert tuple(net(torch.zeros(1, 3, 227, 227)).shape) == (1, 256, 6, 6)
    assert tc.pooled_size(114) == 3 and tc.pooled_size(227) == 6


LRN_NET = """name: "lrn"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 7 dim: 5 dim: 4 } } }
layer { name: "norm" type: "LRN" bottom: "data" top: "norm" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
"""


def test_lrn_is_caffes_across_channels_formula(tmp_path):
    """Inputs large enough that the LRN term matters (x^2 alpha/size ~ 1): catches alpha without /size, k."""
    (tmp_path / "lrn.prototxt").write_text(LRN_NET)
    net = caffe.Net(str(tmp_path / "lrn.prototxt"), caffe.TEST)
    x = np.random.RandomState(0).normal(0, 150, (2, 7, 5, 4)).astype(np.float32)
    net.blobs["data"].data[...] = x
    net.forward()
    ref = net.blobs["norm"].data
    got = tc.CaffeLRN(5, 1e-4, 0.75, 1.0)(torch.from_numpy(x)).numpy()
    assert np.abs(ref - x).max() > 0.05 * np.abs(x).max()   # the normalisation is not negligible here
    assert rel_diff(got, ref) < 1e-6


def test_preprocess_is_the_analyses_single_image_input():
    """prep(file) = what tools/analyze.py feeds the deploy net (BGR, whole image, area, per image)."""
    import cv2
    from ltc.analysis import features
    meta = {"input": ex.input_convention("per-image")}
    for path in sample_photos()[:3]:
        ref = features.normalise_views([features.image_view(cv2.imread(path, cv2.IMREAD_COLOR), 114)], gray=False)
        got = tc.preprocess(path, meta).numpy()
        assert got.shape == ref.shape == (1, 3, 114, 114)
        np.testing.assert_allclose(got, ref, rtol=0, atol=2e-5)
        rgb = tc.preprocess(cv2.imread(path)[:, :, ::-1], meta).numpy()
        assert np.abs(rgb - ref).max() > 0.1       # channel order matters: the check can fail


# ----------------------------------------------------------------------------- PyTorch vs Caffe
@pytest.mark.parametrize("layout", ["six", "stacked", "deploy"])
def test_torch_matches_caffe_random_weights(layout, random_models, tmp_path):
    src = random_models[layout]["path"]
    out = tmp_path / "m.pt"
    assert export(src, out, "--head") == 0
    net, prep = tc.load(str(out))
    x = batch(net.meta)
    assert tuple(x.shape) == (5, 3, 114, 114)
    ref = caffe_net(tmp_path, x, src, head=net.meta["head"])
    with torch.no_grad():
        got = {k: v.numpy() for k, v in net.extract(x, BLOBS + ("fc6", "fc7", "fc8")).items()}
    compare("random-" + layout, "torch", got, ref, BLOBS + ("fc6", "fc7", "fc8"))
    with torch.no_grad():
        assert np.array_equal(net(x).numpy(), got["fc8"])


def test_torch_matches_caffe_demo_model(demo):
    net, _ = tc.load(str(demo["files"]["head.pt"]))
    assert net.meta["head"] == [4096, 4096, 1000]
    with torch.no_grad():
        got = {k: v.numpy() for k, v in net.extract(demo["x"], BLOBS + ("fc6", "fc7", "fc8")).items()}
    compare(demo["label"], "torch", got, demo["ref"], BLOBS + ("fc6", "fc7", "fc8"))


def test_torch_trunk_at_227_matches_caffe(demo, tmp_path):
    """The trunk export takes any input side: at 227 pool5 is 6x6, as in Caffe."""
    net, prep = tc.load(str(demo["files"]["trunk.pt"]))
    assert net.meta["head"] is None and "fc6.weight" not in net.state_dict()
    x = torch.cat([prep(p, 227) for p in sample_photos()[:2]])
    ref = caffe_net(tmp_path, x, demo["params"])
    with torch.no_grad():
        got = {k: v.numpy() for k, v in net.extract(x, BLOBS).items()}
    assert got["pool5"].shape == (2, 256, 6, 6)
    compare(demo["label"] + "@227", "torch", got, ref, BLOBS)


def test_folded_std_export_matches_the_ported_model_in_caffe(random_models, tmp_path):
    """--fold-std-value S: BGR-mean inputs; Caffe reference = tools/port_weights.py --fold-std-value S."""
    pw = load_script("tools/port_weights.py")
    src = random_models["six"]["path"]
    ported = tmp_path / "ported.caffemodel"
    assert pw.main([str(src), str(ported), "--fold-std-value", "61.25"]) == 0
    a, b = tmp_path / "fold_from_snapshot.pt", tmp_path / "fold_from_ported.pt"
    assert export(src, a, "--fold-std-value", "61.25") == 0
    assert export(ported, b, "--input", "bgr-mean") == 0
    na, prep = tc.load(str(a))
    nb, _ = tc.load(str(b))
    assert na.meta["input"]["normalization"] == nb.meta["input"]["normalization"] == "bgr-mean"
    assert na.meta["input"]["folded_std"] == 61.25 and na.meta["input"]["mean_bgr"] == [104.0, 117.0, 123.0]
    for k, v in na.state_dict().items():   # both routes give the same parameters, bit for bit
        assert torch.equal(v, nb.state_dict()[k]), k
    x = batch(na.meta)
    assert abs(float(x.mean())) > 1   # mean-subtracted 0-255 values, not a normalised image
    ref = caffe_net(tmp_path, x, ported)
    with torch.no_grad():
        got = {k: v.numpy() for k, v in na.extract(x, BLOBS).items()}
    compare("random-six-folded", "torch", got, ref, BLOBS)


# ----------------------------------------------------------------------------- round trip
NAMES = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")


def assert_state_dict_is(sd, params, label):
    """sd (a loaded export) holds exactly the blobs params {layer: [w, b]} that Caffe loaded."""
    assert list(sd) == [n + s for n in NAMES for s in (".weight", ".bias")]
    for name in NAMES:
        for i, suffix in enumerate((".weight", ".bias")):
            t = sd[name + suffix]
            assert t.dtype == torch.float32
            assert np.array_equal(t.numpy(), params[name][i]), (label, name, suffix)


def test_round_trip_state_dict_equals_caffe_blobs_exactly(random_models, demo, tmp_path):
    for label, v in random_models.items():
        out = tmp_path / ("%s.pt" % label)
        assert export(v["path"], out, "--head") == 0
        net, _ = tc.load(str(out))
        head = net.meta["head"]
        ref = caffe_net(tmp_path, torch.zeros(1, 3, 114, 114), v["path"], head=head, tag=label)   # Caffe's copy_from
        assert_state_dict_is(net.state_dict(), {k: [b.data for b in p] for k, p in ref.params.items()}, label)
    net, _ = tc.load(str(demo["files"]["head.pt"]))
    assert_state_dict_is(net.state_dict(), demo["params"], demo["label"])


def test_ported_model_round_trip_and_refusal(random_models, tmp_path, capsys):
    pw = load_script("tools/port_weights.py")
    ported = tmp_path / "ported.caffemodel"
    assert pw.main([str(random_models["stacked"]["path"]), str(ported), "--keep-head"]) == 0
    capsys.readouterr()
    out = tmp_path / "p.pt"
    assert export(ported, out) == 2
    err = capsys.readouterr().err
    assert str(ported) in err and "--input" in err and not out.exists()
    assert export(ported, out, "--input", "per-image", "--head") == 0
    net, _ = tc.load(str(out))
    assert net.meta["source_kind"] == "ported-caffenet" and net.meta["head"] == [HEAD, HEAD, DIM]
    params = random_models["stacked"]["params"]
    for name, (w, b) in ((n, params[n]) for n in ("conv1", "conv5", "fc6", "fc8")):
        assert np.array_equal(net.state_dict()[name + ".weight"].numpy(), w)
        assert np.array_equal(net.state_dict()[name + ".bias"].numpy(), b)


def test_metadata_states_the_input_convention(random_models, tmp_path):
    out = tmp_path / "m.pt"
    assert export(random_models["deploy"]["path"], out) == 0
    blob = torch.load(str(out), weights_only=True)
    assert blob["format"] == tc.FORMAT and blob["version"] == tc.FORMAT_VERSION
    inp = blob["metadata"]["input"]
    assert (inp["channels"], inp["range"], inp["normalization"], inp["size"]) == ("BGR", "0-255", "per-image", 114)
    assert inp["eps"] == 1e-5 and inp["mean_bgr"] is None and inp["folded_std"] is None
    assert blob["metadata"]["source_kind"] == "deploy"


# ----------------------------------------------------------------------------- ONNX
@pytest.fixture(scope="module")
def ort():
    pytest.importorskip("onnx")
    return pytest.importorskip("onnxruntime")


def onnx_run(ort, path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {"data": x.numpy()})))


@pytest.mark.parametrize("layout", ["six", "deploy"])
def test_onnx_matches_caffe_random_weights(layout, random_models, ort, tmp_path):
    src = random_models[layout]["path"]
    out = tmp_path / "m.onnx"
    assert export(src, out, "--head") == 0
    meta = ex.onnx_metadata(out)
    assert meta["input"]["normalization"] == "per-image" and meta["head"] == [HEAD, HEAD, DIM]
    x = batch(meta)
    got = onnx_run(ort, out, x)
    assert sorted(got) == sorted(["conv1", "conv2", "conv3", "conv4", "conv5", "pool5", "fc6", "fc7", "fc8"])
    ref = caffe_net(tmp_path, x, src, head=meta["head"])
    compare("random-" + layout, "onnxruntime", got, ref, ("conv1", "conv2", "conv3", "conv4", "conv5", "pool5",
                                                           "fc6", "fc7", "fc8"))


def test_onnx_matches_caffe_demo_model(ort, demo):
    out = demo["files"]["head.onnx"]
    meta = ex.onnx_metadata(out)
    assert meta == demo["meta"]
    got = onnx_run(ort, out, demo["x"])
    compare(demo["label"], "onnxruntime", got, demo["ref"], ("conv1", "conv2", "conv3", "conv4", "conv5", "pool5",
                                                             "fc6", "fc7", "fc8"))


def test_onnx_trunk_takes_any_side_and_holds_the_blobs_exactly(ort, demo, tmp_path):
    import onnx
    from onnx import numpy_helper
    label = demo["label"]
    out = demo["files"]["trunk.onnx"]
    meta = ex.onnx_metadata(out)
    assert meta["head"] is None
    for side in (114, 227):
        x = torch.cat([tc.preprocess(p, meta, side) for p in sample_photos()[:2]])
        got = onnx_run(ort, out, x)
        assert sorted(got) == ["conv1", "conv2", "conv3", "conv4", "conv5", "pool5"]
        assert got["pool5"].shape == (2, 256, tc.pooled_size(side), tc.pooled_size(side))
        ref = caffe_net(tmp_path, x, demo["params"])
        compare("%s@%d" % (label, side), "onnxruntime", got, ref, ("conv1", "conv2", "conv3", "conv4", "conv5",
                                                                   "pool5"))
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(out)).graph.initializer}
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5"):
        w, b = demo["params"][name]
        matches = [k for k, v in inits.items() if v.shape == w.shape and np.array_equal(v, w)]
        assert matches, name   # the weights are stored unchanged
        assert any(v.shape == b.shape and np.array_equal(v, b) for v in inits.values()), name


# ----------------------------------------------------------------------------- the CLI
def test_cli_refuses_bad_inputs_naming_the_file(tmp_path, capsys):
    junk = tmp_path / "junk.caffemodel"
    junk.write_bytes(bytes(range(7, 200)) * 10)
    out = tmp_path / "o.pt"
    out.write_bytes(b"keep me")
    assert export(junk, out) == 2
    err = capsys.readouterr().err
    assert str(junk) in err
    assert out.read_bytes() == b"keep me"         # a failed export leaves OUT as it was
    assert export(tmp_path / "missing.caffemodel", out) == 2
    assert "TRAINED '%s': no such file" % (tmp_path / "missing.caffemodel") in capsys.readouterr().err
    assert export(out, out) == 2
    assert "is the same file as the TRAINED" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"


def test_cli_refuses_mean_input_without_fold(random_models, tmp_path, capsys):
    src = random_models["deploy"]["path"]
    assert export(src, tmp_path / "o.pt", "--input", "bgr-mean") == 2
    err = capsys.readouterr().err
    assert str(src) in err and "--fold-std" in err
    assert export(src, tmp_path / "o.pt", "--head", "--input-size", "227") == 2
    assert "3x3 pool5" in capsys.readouterr().err


def test_cli_runs_as_a_script(random_models, tmp_path):
    out = tmp_path / "s.onnx" if have("onnx") else tmp_path / "s.pt"
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "export.py"), str(random_models["six"]["path"]),
                           str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "verified: the 5 branch copies" in proc.stdout and "wrote %s" % out in proc.stdout
    assert out.is_file()


def test_readme_three_lines_extract_conv5(demo, tmp_path):
    """The README's three lines, run as written (only the model and image paths redirected)."""
    text = open(os.path.join(REPO, "README.md")).read().splitlines()
    i = next(k for k, line in enumerate(text) if line.strip() == "from ltc.torch_caffenet import load")
    lines = [line.strip() for line in text[i:i + 3]]
    assert lines[1].startswith("net, prep = load(") and lines[2].startswith("conv5 = net.extract(prep(")
    model = demo["files"]["trunk.pt"]
    image = os.path.join(REPO, "data/sample/images/val/sklearn_flower.jpg")
    if not os.path.isfile(image):                 # data/sample not built: the same photo from its package
        image = os.path.join(os.path.dirname(sample_photos()[-1]), "flower.jpg")
    code = "\n".join(lines).replace("runs/demo/counting_trunk.pt", str(model))
    code = code.replace("data/sample/images/val/sklearn_flower.jpg", image)
    env = {}
    exec(code, env)
    conv5 = env["conv5"]
    assert tuple(conv5.shape) == (1, 256, 6, 6)
    ref = caffe_net(tmp_path, env["prep"](image), demo["params"])
    assert rel_diff(conv5.detach().numpy(), ref.blobs["conv5"].data) < TOL


def test_zz_report():
    """Prints the measured differences (pytest -s)."""
    if not REPORT:
        pytest.skip("no comparison ran in this session")
    print("\n%-22s %-12s %-6s %s" % ("model", "backend", "blob", "max|diff|/max|caffe|"))
    for label, backend, blob, d in REPORT:
        print("%-22s %-12s %-6s %.2e" % (label, backend, blob, d))
