"""speed/0204: convolution through oneDNN (the engine a USE_DNNL build gives `engine: DEFAULT`)
against Caffe's own im2col + GEMM path (CAFFE_CONV_ENGINE=caffe) in the same build, and against
finite differences. The two engines sum in different orders (and oneDNN's order depends on the
instruction set it dispatches, ONEDNN_MAX_CPU_ISA), so the nets are compared layer by layer
within the float32 bound of a K-term sum in any order, 2 gamma_K times the sum of the terms'
absolute values per element (tests/layerwise.py, which derives K for each output), not bit for
bit. Skipped for a build without the patch (libcaffe not linked with libdnnl)."""
import os
import subprocess
import sys

import numpy as np
import pytest

caffe = pytest.importorskip("caffe")
from caffe import layers as L  # noqa: E402
from conftest import numeric_grad, pycaffe_links  # noqa: E402
import layerwise  # noqa: E402

GEMM = dict(CAFFE_CONV_ENGINE="caffe")   # im2col + GEMM, the reference
ONEDNN = dict(CAFFE_CONV_ENGINE=None)     # the build's default engine

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


def _inputs(path):
    net = caffe.Net(str(path), caffe.TRAIN)
    rng = np.random.default_rng(0)
    return {k: rng.standard_normal(net.blobs[k].data.shape) for k in ("data", "data2", "target")}


def test_onednn_matches_im2col_gemm(tmp_path):
    path = _net(tmp_path)
    report, ref, test = layerwise.compare(path, GEMM, ONEDNN, _inputs(path), seed=7)
    assert not report.failures, str(report)
    # the comparison means something: gradients reach the bottom, and the engines are different code
    assert np.abs(ref.blobs["data"].diff).max() > 0 and np.abs(ref.params["c1"][0].diff).max() > 0
    assert report.checks >= 25 and report.inexact > 0, "every output bit-identical: the default engine is not oneDNN"


def test_shared_weights_accumulate_both_branches(tmp_path):
    """c1/c2 are used by two branches: their gradient is the sum of both branches' (oneDNN writes its
    result; the layer must add it to the diff). Layer by layer, c1's backward (after c1b's) adds to a
    non-zero diff: a planted 'write instead of add' there is rejected. Zeroing one branch's input
    changes the sum."""
    path = _net(tmp_path)
    inputs = _inputs(path)
    report, _, _ = layerwise.compare(path, GEMM, ONEDNN, inputs, seed=7, corrupt=layerwise.plant("overwrite", "c1"))
    assert report.failures and all(" c1 (" in f for f in report.failures), str(report)
    _, both, _ = layerwise.compare(path, GEMM, ONEDNN, inputs, seed=7)
    _, single, _ = layerwise.compare(path, GEMM, ONEDNN, dict(inputs, data2=np.zeros_like(inputs["data2"])), seed=7)
    a, b = both.params["c1"][0].diff, single.params["c1"][0].diff
    assert np.abs(a - b).max() > 1e-2 * np.abs(a).max()


@pytest.mark.parametrize("kind,layer", [("bias_dropped", "c2b"), ("col_shift", "c2"), ("stale_image", "c1b")])
def test_the_comparison_rejects_planted_bugs(tmp_path, kind, layer):
    path = _net(tmp_path)
    report, _, _ = layerwise.compare(path, GEMM, ONEDNN, _inputs(path), seed=7, corrupt=layerwise.plant(kind, layer))
    assert report.failures and all(" %s (" % layer in f for f in report.failures), str(report)


def test_counting_net_onednn_matches_im2col_gemm(tmp_path):
    """The counting net (stacked, 2 x 6 images of 114 px: CaffeNet's layer shapes, where oneDNN picks
    its real kernels), layer by layer against the serial im2col + GEMM path."""
    from ltc import nets
    cfg = dict(nets.DEFAULTS, batch=2, layout="stacked")
    path = tmp_path / "counting.prototxt"
    path.write_text(str(nets.counting_net(cfg, inputs="input")))
    shape = caffe.Net(str(path), caffe.TRAIN).blobs["data"].data.shape
    inputs = {"data": np.random.default_rng(1).uniform(-100, 100, shape)}
    report, ref, _ = layerwise.compare(str(path), dict(GEMM, CAFFE_CPU_THREADS="1"), ONEDNN, inputs, seed=5)
    assert not report.failures, str(report)
    assert report.inexact > 0 and np.abs(ref.params["conv1"][0].diff).max() > 0


def test_onednn_gradient_by_finite_differences(tmp_path):
    """Loss gradients of the oneDNN path against central differences of the same float32 net's loss,
    for every weight, bias and input entry. The loss (a convolution into a squared error) is a
    quadratic function of any single entry, so a central difference of any step is that entry's
    derivative exactly and only the float32 rounding of the two loss values, e_L each, is left:
    |numeric - analytic| <= e_L / step. With step 1 (not Caffe's 1e-2) that is 100 x smaller: e_L
    is about u sqrt(n) |L| for n = 160 squared terms (u = 2^-24), ~1e-5 here, far inside the
    tolerance 2e-3 max(1, |g|) (measured: 6e-6 at step 1, 7e-4 at step 1e-2)."""
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
        numeric = numeric_grad(loss, arr, eps=1.0)
        bad = np.abs(numeric - analytic[key]) > 2e-3 * np.maximum(1.0, np.abs(numeric))
        assert not bad.any(), (key, np.argwhere(bad)[:3], numeric[bad][:3], analytic[key][bad][:3])


def test_unknown_engine_name_is_refused(tmp_path):
    path = _net(tmp_path)
    code = "import caffe; caffe.set_mode_cpu(); caffe.Net(%r, caffe.TRAIN)" % path
    res = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, CAFFE_CONV_ENGINE="mkl"),
                         capture_output=True, text=True)
    assert res.returncode != 0
    assert "CAFFE_CONV_ENGINE='mkl'" in res.stderr


def test_isa_cap_reaches_caffes_onednn():
    """The ISA sweep (tools/test_isa.py) and bench/train_step.py rely on ONEDNN_MAX_CPU_ISA reaching
    Caffe's oneDNN and on reading back what it dispatched (ONEDNN_VERBOSE): with the cap at AVX2 the
    convolution runs an AVX2 kernel; without a cap, whatever this CPU has."""
    from ltc import machine
    capped = machine.kernel_probe(dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX2"))
    assert capped["error"] is None, capped
    assert capped["onednn_version"] and "AVX2" in capped["onednn_isa"], capped
    assert "avx2" in capped["onednn_conv_impl"], capped
    assert capped["openblas_core"], capped
    if "avx512f" in machine.cpu_flags():
        free = machine.kernel_probe(dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX512_CORE"))
        assert "AVX-512" in free["onednn_isa"] and "avx512" in free["onednn_conv_impl"], free


def test_onednn_verbose_lines_of_versions_2_and_3_are_read():
    from ltc import machine
    v2 = ("onednn_verbose,info,oneDNN v2.6.3 (commit N/A)\nonednn_verbose,info,cpu,isa:Intel AVX2\n"
          "onednn_verbose,exec,cpu,convolution,jit:avx2,forward_training,src_f32::blocked:abcd:f0,,,mb2,0.1\n")
    v3 = ("onednn_verbose,v1,info,oneDNN v3.12.0 (commit 80afa71)\nonednn_verbose,v1,info,cpu,isa:Intel AVX-512 "
          "with AVX512BW, AVX512VL, and AVX512DQ extensions\nonednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,,\n"
          "onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx512_core,forward_training,,,mb4,0.2\n")
    assert machine.parse_onednn_verbose(v2) == dict(onednn_version="2.6.3", onednn_isa="Intel AVX2", onednn_conv_impl="jit:avx2")
    assert machine.parse_onednn_verbose(v3) == dict(
        onednn_version="3.12.0", onednn_isa="Intel AVX-512 with AVX512BW, AVX512VL, and AVX512DQ extensions",
        onednn_conv_impl="brg_conv_fwd:avx512_core")
    assert machine.parse_onednn_verbose("nothing") == dict(onednn_version=None, onednn_isa=None, onednn_conv_impl=None)
