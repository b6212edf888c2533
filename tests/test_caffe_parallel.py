"""The batch-parallel CPU layers of tools/caffe/patches/speed/ (convolution with batched im2col,
LRN, max pooling, ReLU) against Caffe's serial path in the same build: CAFFE_CPU_THREADS=1 runs
the stock code, 2 runs the parallel one, with CAFFE_CONV_BATCH images per convolution GEMM (1:
one GEMM per image; 2: chunks of two, with a remainder; unset: the images of a thread within the
cache budget). With one GEMM per image, forward outputs and all input gradients must be
identical (each value is the same sum in the same order). A batched GEMM has another N, for which
OpenBLAS may pick other kernels and round the same sums differently in the last bit, so there
they must agree within FORWARD_TOL (relative to the blob's largest value). Conv weight and bias
gradients (summed over other groupings of the images, then reduced over threads) agree within
WEIGHT_TOL. These layers are the im2col + GEMM engine: every net here is made with
CAFFE_CONV_ENGINE=caffe (speed/0204's oneDNN engine has its own tests, test_caffe_dnnl_conv.py).
Skipped for a build without the patch (libcaffe not linked with OpenMP)."""
import os
import subprocess

import numpy as np
import pytest

caffe = pytest.importorskip("caffe")
from caffe import layers as L, params as P  # noqa: E402
from conftest import pycaffe_links  # noqa: E402

WEIGHT_TOL = 1e-5
FORWARD_TOL = 1e-6


def _same(a, b, exact):
    """Exactly equal, or (exact=False) within FORWARD_TOL of the larger blob's largest value."""
    if exact:
        return np.array_equal(a, b)
    return np.abs(a - b).max(initial=0) <= FORWARD_TOL * max(np.abs(a).max(initial=0), 1e-30)


# pycaffe's libcaffe links OpenMP only with the patch
pytestmark = pytest.mark.skipif(not pycaffe_links("libgomp"), reason="this Caffe build has no batch-parallel patch (no OpenMP)")


def _net(tmp_path, batch):
    n = caffe.NetSpec()
    # big: a blob of >= 2^15 values per image, so that ReLU takes its threaded path
    n.data, n.target, n.big = L.Input(shape=[dict(dim=[batch, 4, 27, 27]), dict(dim=[batch, 10]),
                                             dict(dim=[batch, 16, 48, 48])], ntop=3)
    n.conv1 = L.Convolution(n.data, num_output=8, kernel_size=5, stride=2, group=2,
                            weight_filler=dict(type="gaussian", std=0.1), bias_filler=dict(type="constant", value=0.1))
    n.norm1 = L.LRN(n.conv1, local_size=5, alpha=1e-2, beta=0.75)
    n.conv2 = L.Convolution(n.norm1, num_output=6, kernel_size=3, pad=1,
                            weight_filler=dict(type="gaussian", std=0.1), bias_filler=dict(type="constant", value=0.2))
    n.conv3 = L.Convolution(n.conv2, num_output=6, kernel_size=1, bias_term=False,  # a conv without bias
                            weight_filler=dict(type="gaussian", std=0.1))
    n.pool = L.Pooling(n.conv3, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    n.fc = L.InnerProduct(n.pool, num_output=10, weight_filler=dict(type="gaussian", std=0.1))
    n.loss = L.EuclideanLoss(n.fc, n.target)
    n.relu_big = L.ReLU(n.big, negative_slope=0.1)
    n.pool_big, n.pool_mask = L.Pooling(n.relu_big, pool=P.Pooling.MAX, kernel_size=3, stride=2, ntop=2)
    n.fc_big = L.InnerProduct(n.pool_big, num_output=10, weight_filler=dict(type="gaussian", std=0.01))
    n.loss_big = L.EuclideanLoss(n.fc_big, n.target)
    proto = n.to_proto()
    proto.force_backward = True
    path = tmp_path / "net.prototxt"
    path.write_text(str(proto))
    return str(path)


def _assert_param_grads_close(serial_params, par_params):
    """Every weight and bias gradient within WEIGHT_TOL of the serial one (relative to its largest value)."""
    for k, ps in serial_params.items():
        for i, (_, diff) in enumerate(ps):
            rel = np.abs(diff - par_params[k][i][1]).max() / max(np.abs(diff).max(), 1e-30)
            assert rel <= WEIGHT_TOL, "%s[%d] gradient: relative difference %.3g" % (k, i, rel)


def _run(path, threads, weights=None, conv_batch=None, inputs=None, seed=3):
    """One forward/backward of the net at ``path`` with T = threads; inputs: {blob: values}
    (default: standard normal data, target and big). Returns (net, blobs, params)."""
    os.environ["CAFFE_CPU_THREADS"] = str(threads)
    os.environ["CAFFE_CONV_ENGINE"] = "caffe"
    if conv_batch:
        os.environ["CAFFE_CONV_BATCH"] = conv_batch
    try:
        caffe.set_mode_cpu()
        caffe.set_random_seed(seed)
        net = caffe.Net(path, caffe.TRAIN)
        if weights:
            net.copy_from(weights)
        if inputs is None:
            rng = np.random.default_rng(0)
            inputs = {name: rng.standard_normal(net.blobs[name].data.shape) for name in ("data", "target", "big")}
        for name, values in inputs.items():
            net.blobs[name].data[...] = values
        net.forward()
        net.backward()
        blobs = {k: (b.data.copy(), b.diff.copy()) for k, b in net.blobs.items()}
        params = {k: [(p.data.copy(), p.diff.copy()) for p in ps] for k, ps in net.params.items()}
        return net, blobs, params
    finally:
        del os.environ["CAFFE_CPU_THREADS"]
        os.environ.pop("CAFFE_CONV_BATCH", None)
        os.environ.pop("CAFFE_CONV_ENGINE", None)


# (threads, CAFFE_CONV_BATCH): 1 image per GEMM; chunks of 2 with a remainder; a thread's images
# within the cache budget; and the batched path forced on at one thread (as for Caffe's gtests)
@pytest.mark.parametrize("threads,conv_batch", [(2, "1"), (2, "2"), (2, None), (1, "3")])
@pytest.mark.parametrize("batch", [2, 5, 8])
def test_parallel_layers_match_the_serial_path(tmp_path, batch, threads, conv_batch):
    path = _net(tmp_path, batch)
    net, serial_blobs, serial_params = _run(path, 1)
    weights = str(tmp_path / "w.caffemodel")
    net.save(weights)
    _, par_blobs, par_params = _run(path, threads, weights, conv_batch)
    exact = conv_batch == "1"
    for k, (data, diff) in serial_blobs.items():
        assert _same(data, par_blobs[k][0], exact), "forward %s differs" % k
        assert _same(diff, par_blobs[k][1], exact), "input gradient %s differs" % k
    # the ReLU/pooling branch sees no convolution: its values are exact whatever the conv batching
    for k in ("relu_big", "pool_big", "big"):
        assert np.array_equal(serial_blobs[k][0], par_blobs[k][0]), "forward %s differs" % k
    for k in ("relu_big", "pool_big"):
        assert np.array_equal(serial_blobs[k][1], par_blobs[k][1]), "input gradient %s differs" % k
    _assert_param_grads_close(serial_params, par_params)
    # the gradients are not all zero (the comparison means something)
    assert np.abs(serial_params["conv1"][0][1]).max() > 0
    assert np.abs(serial_blobs["data"][1]).max() > 0
    assert np.abs(serial_blobs["big"][1]).max() > 0
    assert (serial_blobs["relu_big"][0] < 0).any()   # the negative slope is exercised


def test_counting_net_step_matches_the_serial_path(tmp_path):
    """The counting net itself (stacked, 2 x 6 images of 114 px: CaffeNet's real layer shapes, so the
    GEMMs of the batched path have the sizes training uses): one forward/backward with 2 threads
    (the default batching) against the serial path."""
    from ltc import nets
    cfg = dict(nets.DEFAULTS, batch=2, layout="stacked")
    path = tmp_path / "counting.prototxt"
    path.write_text(str(nets.counting_net(cfg, inputs="input")))
    inputs = {"data": np.random.default_rng(1).uniform(-100, 100, (6 * cfg["batch"], 3, 114, 114))}
    net, serial_blobs, serial_params = _run(str(path), 1, inputs=inputs, seed=5)
    weights = str(tmp_path / "w.caffemodel")
    net.save(weights)
    _, par_blobs, par_params = _run(str(path), 2, weights, inputs=inputs, seed=5)
    for k, (data, diff) in serial_blobs.items():
        assert _same(data, par_blobs[k][0], False), "forward %s differs" % k
        if k != "data":   # conv1 computes no input gradient here (nothing below it learns)
            assert _same(diff, par_blobs[k][1], False), "input gradient %s differs" % k
    _assert_param_grads_close(serial_params, par_params)
    assert np.abs(serial_params["conv3"][0][1]).max() > 0
    assert np.abs(serial_blobs["conv3"][1]).max() > 0


def test_a_smaller_openmp_team_still_covers_the_batch():
    """OMP_THREAD_LIMIT=1: the parallel regions ask for 2 threads and get a team of one (OMP_DYNAMIC
    can do the same under load). Work split by hand (the convolution's images per thread, the fused
    SGD update's ranges) must follow the team actually started, or part of the batch is silently
    skipped; oneDNN's kernels, sized for the threads asked for, would wait for the missing one
    forever. Reruns the two-thread layer tests, the oneDNN convolution tests and the SGD update
    tests under that limit (with a timeout)."""
    import sys
    here = os.path.dirname(os.path.abspath(__file__))
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          os.path.join(here, "test_caffe_parallel.py") + "::test_parallel_layers_match_the_serial_path",
                          os.path.join(here, "test_caffe_dnnl_conv.py"),
                          os.path.join(here, "test_caffe_sgd_update.py")],
                         env=dict(os.environ, OMP_THREAD_LIMIT="1"), capture_output=True, text=True,
                         cwd=os.path.dirname(here), timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert " passed" in res.stdout and " skipped" not in res.stdout, res.stdout[-1000:]
