"""speed/0204: convolution through oneDNN (the engine a USE_DNNL build gives `engine: DEFAULT`)
against Caffe's own im2col + GEMM path (CAFFE_CONV_ENGINE=caffe) in the same build, and against
finite differences. The two engines sum in different orders, so values agree within TOL relative
to the blob's largest value, not bit for bit. Skipped for a build without the patch (libcaffe not
linked with libdnnl)."""
import os
import subprocess
import sys

import numpy as np
import pytest

caffe = pytest.importorskip("caffe")
from caffe import layers as L  # noqa: E402
from conftest import numeric_grad, pycaffe_links  # noqa: E402

TOL = 1e-5

pytestmark = pytest.mark.skipif(not pycaffe_links("libdnnl"), reason="this Caffe build has no oneDNN convolution (speed/0204)")


def _conv(bottom, name, **kw):
    """A convolution whose parameters are shared by name (as the six-branch counting net's are)."""
    kw.setdefault("weight_filler", dict(type="gaussian", std=0.2))
    if kw.get("bias_term", True):
        kw.setdefault("bias_filler", dict(type="gaussian", std=0.2))
    return L.Convolution(bottom, param=[dict(name=name + "_w"), dict(name=name + "_b")][:2 if kw.get("bias_term", True) else 1], **kw)


def _net(tmp_path, batch=3):
    n = caffe.NetSpec()
    n.data, n.data2, n.target = L.Input(shape=[dict(dim=[batch, 3, 23, 21]), dict(dim=[batch, 3, 23, 21]),
                                               dict(dim=[batch, 20])], ntop=3)
    # conv1-like (stride 4, odd size), group 2 with padding, no bias, dilation, 1x1
    n.c1 = _conv(n.data, "c1", num_output=8, kernel_size=5, stride=2)
    n.c2 = _conv(n.c1, "c2", num_output=6, kernel_size=3, pad=1, group=2)
    n.c3 = _conv(n.c2, "c3", num_output=6, kernel_size=3, pad=2, dilation=2, bias_term=False)
    n.c4 = _conv(n.c3, "c4", num_output=4, kernel_size=1)
    # a second branch through the same parameters: their gradients must add up
    n.c1b = _conv(n.data2, "c1", num_output=8, kernel_size=5, stride=2)
    n.c2b = _conv(n.c1b, "c2", num_output=6, kernel_size=3, pad=1, group=2)
    n.cat = L.Concat(L.Flatten(n.c4), L.Flatten(n.c2b))
    n.fc = L.InnerProduct(n.cat, num_output=20, weight_filler=dict(type="gaussian", std=0.1))
    n.loss = L.EuclideanLoss(n.fc, n.target)
    proto = n.to_proto()
    proto.force_backward = True
    path = tmp_path / "net.prototxt"
    path.write_text(str(proto))
    return str(path)


def _run(path, engine, weights=None, inputs=None):
    """One forward/backward; engine "caffe" sets CAFFE_CONV_ENGINE=caffe (im2col + GEMM), None
    leaves the build's default. Returns (net, blobs, params)."""
    if engine:
        os.environ["CAFFE_CONV_ENGINE"] = engine
    try:
        caffe.set_mode_cpu()
        caffe.set_random_seed(7)
        net = caffe.Net(path, caffe.TRAIN)
    finally:
        os.environ.pop("CAFFE_CONV_ENGINE", None)
    if weights:
        net.copy_from(weights)
    rng = np.random.default_rng(0)
    for name, values in (inputs or {k: rng.standard_normal(net.blobs[k].data.shape)
                                    for k in ("data", "data2", "target")}).items():
        net.blobs[name].data[...] = values
    net.forward()
    net.backward()
    blobs = {k: (b.data.copy(), b.diff.copy()) for k, b in net.blobs.items()}
    params = {k: [(p.data.copy(), p.diff.copy()) for p in ps] for k, ps in net.params.items()}
    return net, blobs, params


def _rel(a, b):
    return np.abs(a - b).max(initial=0) / max(np.abs(a).max(initial=0), 1e-30)


def test_onednn_matches_im2col_gemm(tmp_path):
    path = _net(tmp_path)
    net, ref_blobs, ref_params = _run(path, "caffe")
    weights = str(tmp_path / "w.caffemodel")
    net.save(weights)
    _, blobs, params = _run(path, None, weights)
    for k, (data, diff) in ref_blobs.items():
        assert _rel(data, blobs[k][0]) <= TOL, "forward %s: %.3g" % (k, _rel(data, blobs[k][0]))
        assert _rel(diff, blobs[k][1]) <= TOL, "input gradient %s: %.3g" % (k, _rel(diff, blobs[k][1]))
    for k, ps in ref_params.items():
        for i, (_, diff) in enumerate(ps):
            assert _rel(diff, params[k][i][1]) <= TOL, "%s[%d] gradient: %.3g" % (k, i, _rel(diff, params[k][i][1]))
    # the comparison means something: gradients reach the bottom, and the engines are different code
    assert np.abs(ref_blobs["data"][1]).max() > 0 and np.abs(ref_params["c1"][0][1]).max() > 0
    assert any(not np.array_equal(d, blobs[k][0]) for k, (d, _) in ref_blobs.items() if k.startswith("c")), \
        "every output bit-identical: the default engine is not oneDNN"


def test_shared_weights_accumulate_both_branches(tmp_path):
    """c1/c2 are used by two branches: their gradient is the sum of both branches' (oneDNN writes its
    result; the layer must add it to the diff). Zeroing one branch's input changes the sum."""
    path = _net(tmp_path)
    net, _, both = _run(path, None)
    weights = str(tmp_path / "w.caffemodel")
    net.save(weights)
    rng = np.random.default_rng(0)
    inputs = {k: rng.standard_normal(net.blobs[k].data.shape) for k in ("data", "data2", "target")}
    _, _, both = _run(path, None, weights, inputs)
    _, _, ref = _run(path, "caffe", weights, inputs)
    assert _rel(ref["c1"][0][1], both["c1"][0][1]) <= TOL
    one = dict(inputs, data2=np.zeros_like(inputs["data2"]))
    _, _, single = _run(path, None, weights, one)
    assert _rel(both["c1"][0][1], single["c1"][0][1]) > 1e-2


def test_onednn_gradient_by_finite_differences(tmp_path):
    """Loss gradients of the oneDNN path against central differences (step 1e-2) of the same float32
    net's loss, for every weight, bias and input entry."""
    n = caffe.NetSpec()
    n.data, n.target = L.Input(shape=[dict(dim=[2, 4, 9, 8]), dict(dim=[2, 4, 5, 4])], ntop=2)
    n.conv = _conv(n.data, "conv", num_output=4, kernel_size=3, stride=2, pad=1, group=2)
    n.loss = L.EuclideanLoss(n.conv, n.target)
    proto = n.to_proto()
    proto.force_backward = True
    path = tmp_path / "fd.prototxt"
    path.write_text(str(proto))
    net = caffe.Net(str(path), caffe.TRAIN)
    rng = np.random.default_rng(3)
    net.blobs["data"].data[...] = rng.standard_normal(net.blobs["data"].data.shape)
    net.blobs["target"].data[...] = rng.standard_normal(net.blobs["target"].data.shape)

    def loss():
        return float(np.asarray(net.forward()["loss"]).reshape(-1)[0])

    loss()
    net.params["conv"][0].diff[...] = 0
    net.params["conv"][1].diff[...] = 0
    net.backward()
    analytic = {"w": net.params["conv"][0].diff.copy(), "b": net.params["conv"][1].diff.copy(),
                "x": net.blobs["data"].diff.copy()}
    arrays = {"w": net.params["conv"][0].data, "b": net.params["conv"][1].data, "x": net.blobs["data"].data}
    for key, arr in arrays.items():
        numeric = numeric_grad(loss, arr, eps=1e-2)
        bad = np.abs(numeric - analytic[key]) > 2e-3 * np.maximum(1.0, np.abs(numeric))
        assert not bad.any(), (key, np.argwhere(bad)[:3], numeric[bad][:3], analytic[key][bad][:3])


def test_unknown_engine_name_is_refused(tmp_path):
    path = _net(tmp_path)
    code = "import caffe; caffe.set_mode_cpu(); caffe.Net(%r, caffe.TRAIN)" % path
    res = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, CAFFE_CONV_ENGINE="mkl"),
                         capture_output=True, text=True)
    assert res.returncode != 0
    assert "CAFFE_CONV_ENGINE='mkl'" in res.stderr
