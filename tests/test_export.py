"""ltc.export without the optional extras: reading every source kind, the input-convention
decisions and the refusals (each naming the file); a clear message when torch is missing.
The numerical checks against Caffe are in test_export_torch.py (they need torch)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import caffe

from conftest import load_script
from counting_models import build_counting_model
from ltc import REPO
from ltc import export as ex

QUIET = dict(log=lambda *a: None)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("export_src")
    out = {}
    for seed, layout in enumerate(("six", "stacked", "deploy")):
        path = d / ("%s.caffemodel" % layout)
        net = build_counting_model(path, layout, head=32, dim=10, seed=seed)
        out[layout] = (path, {k: [b.data.copy() for b in v] for k, v in net.params.items()})
    return out


def _ported(tmp_path, src, *args):
    pw = load_script("tools/port_weights.py")
    out = tmp_path / "ported.caffemodel"
    assert pw.main([str(src), str(out)] + list(args)) == 0
    return out


def test_reads_every_counting_layout_exactly(models):
    for layout, kind in (("six", "six-branch"), ("stacked", "stacked"), ("deploy", "deploy")):
        path, params = models[layout]
        t = ex.read_trained(str(path), **QUIET)
        assert t.kind == kind and t.head == [32, 32, 10]
        p, meta = ex.prepare(t, head=True, **QUIET)
        assert list(p) == [n + s for n in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
                           for s in (".weight", ".bias")]
        for name, (w, b) in params.items():
            if name in t.blobs:
                assert np.array_equal(p[name + ".weight"], w) and np.array_equal(p[name + ".bias"], b), name
        assert meta["input"]["normalization"] == "per-image" and meta["source_kind"] == kind


def test_trunk_only_by_default_and_fold_divides_conv1_exactly(models):
    path, params = models["deploy"]
    t = ex.read_trained(str(path), **QUIET)
    p, meta = ex.prepare(t, fold_std=57.5, **QUIET)
    assert meta["head"] is None and "fc6.weight" not in p
    assert np.array_equal(p["conv1.weight"], params["conv1"][0] / np.float32(57.5))
    assert np.array_equal(p["conv1.bias"], params["conv1"][1]) and np.array_equal(p["conv2.weight"], params["conv2"][0])
    inp = meta["input"]
    assert (inp["normalization"], inp["mean_bgr"], inp["folded_std"], inp["eps"]) == ("bgr-mean", [104.0, 117.0, 123.0],
                                                                                     57.5, None)


def test_ported_model_needs_the_convention_stated(models, tmp_path):
    src, params = models["stacked"]
    ported = _ported(tmp_path, src)
    t = ex.read_trained(str(ported), **QUIET)
    assert t.kind == "ported-caffenet" and t.head is None
    with pytest.raises(ex.ExportError, match="ported.caffemodel is a ported CaffeNet model.*--input bgr-mean"):
        ex.prepare(t, **QUIET)
    with pytest.raises(ex.ExportError, match="has no counting head.*--keep-head"):
        ex.prepare(t, "per-image", head=True, **QUIET)
    with pytest.raises(ex.ExportError, match="fold the std when porting"):
        ex.prepare(t, "bgr-mean", fold_std=50.0, **QUIET)
    p, meta = ex.prepare(t, "bgr-mean", **QUIET)
    assert meta["input"]["normalization"] == "bgr-mean" and meta["input"]["folded_std"] is None
    assert np.array_equal(p["conv3.weight"], params["conv3"][0])


def test_counting_snapshot_refuses_mean_input_without_a_fold(models):
    path, _ = models["six"]
    t = ex.read_trained(str(path), **QUIET)
    with pytest.raises(ex.ExportError, match="six.caffemodel is a six-branch counting snapshot.*--fold-std"):
        ex.prepare(t, "bgr-mean", **QUIET)
    with pytest.raises(ex.ExportError, match="cannot be combined"):
        ex.prepare(t, "per-image", fold_std=3.0, **QUIET)


LENET = """name: "lenet"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 28 dim: 28 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 20 kernel_size: 5 weight_filler { type: "xavier" } } }
layer { name: "ip1" type: "InnerProduct" bottom: "conv1" top: "ip1"
        inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
"""


def test_refusals_name_the_file(tmp_path, models):
    junk = tmp_path / "junk.caffemodel"
    junk.write_bytes(bytes(range(7, 200)) * 10)
    proto = tmp_path / "lenet.prototxt"
    proto.write_text(LENET)
    lenet = tmp_path / "lenet.caffemodel"
    caffe.Net(str(proto), caffe.TEST).save(str(lenet))
    data = open(str(models["six"][0]), "rb").read()
    cut = tmp_path / "cut.caffemodel"
    cut.write_bytes(data[: len(data) // 2])
    for path, what in ((junk, "not"), (lenet, "not a counting net"), (cut, "truncated"),
                       (tmp_path / "none.caffemodel", "no such file")):
        with pytest.raises(ex.ExportError) as e:
            ex.read_trained(str(path), **QUIET)
        assert str(path) in str(e.value) and what in str(e.value), str(e.value)


def test_ported_model_with_wrong_shapes_is_refused(tmp_path):
    from caffe.proto import caffe_pb2
    net = caffe_pb2.NetParameter()
    for name, shape in (("conv1", (96, 3, 11, 11)), ("conv2", (256, 96, 5, 5)), ("conv3", (384, 256, 3, 3)),
                        ("conv4", (384, 192, 3, 3)), ("conv5", (256, 192, 3, 3))):
        layer = net.layer.add(name=name, type="Convolution")
        for s in (shape, shape[:1]):
            b = layer.blobs.add()
            b.shape.dim.extend(s)
            b.data.extend([0.0] * int(np.prod(s)))
    path = tmp_path / "ungrouped.caffemodel"
    path.write_bytes(net.SerializeToString())
    with pytest.raises(ex.ExportError, match=r"ungrouped.caffemodel: shape mismatch: 'conv2' weights 256x96x5x5"):
        ex.read_trained(str(path), **QUIET)


def test_missing_torch_is_a_clear_failure(monkeypatch, models, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)     # import torch -> ImportError
    with pytest.raises(ex.MissingDependency, match="'torch'.*make extras"):
        ex.require("torch")
    cli = load_script("tools/export.py")
    out = tmp_path / "o.pt"
    assert cli.main([str(models["deploy"][0]), str(out)]) == 1
    assert "make extras" in capsys.readouterr().err and not out.exists()


def test_importing_the_exporter_does_not_import_torch():
    code = "import sys, ltc.export; assert 'torch' not in sys.modules and 'onnx' not in sys.modules"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_fold_std_measurement_errors_name_the_lmdb(tmp_path, make_test_lmdb):
    with pytest.raises(ex.ExportError, match="nothing_here"):
        ex.measure_input_std(str(tmp_path / "nothing_here"), 4)
    db = tmp_path / "one_lmdb"
    make_test_lmdb(str(db), 1)
    with pytest.raises(ex.ExportError, match="one_lmdb: 1 image"):
        ex.measure_input_std(str(db), 4)
    make_test_lmdb(str(tmp_path / "three_lmdb"), 3)
    s, n = ex.measure_input_std(str(tmp_path / "three_lmdb"), 3)
    assert n == 18 and 5 < s < 120
