"""The batch-parallel CPU convolution and LRN of tools/caffe/patches/speed/ against Caffe's
serial path in the same build: CAFFE_CPU_THREADS=1 runs the stock code, 2 runs the
parallel one. Forward outputs, input gradients and LRN gradients must be identical; conv
weight and bias gradients (summed per thread, then reduced) equal within 1e-5 relative.
Skipped for a build without the patch (libcaffe not linked with OpenMP)."""
import glob
import os
import subprocess

import numpy as np
import pytest

caffe = pytest.importorskip("caffe")
from caffe import layers as L, params as P  # noqa: E402

WEIGHT_TOL = 1e-5


def _patched():
    """pycaffe's libcaffe (ldd lists its dependencies too) links OpenMP only with the patch."""
    so = glob.glob(os.path.join(os.path.dirname(caffe.__file__), "_caffe*.so"))
    out = subprocess.run(["ldd"] + so[:1], capture_output=True, text=True).stdout if so else ""
    return "libgomp" in out


pytestmark = pytest.mark.skipif(not _patched(), reason="this Caffe build has no batch-parallel patch (no OpenMP)")


def _net(tmp_path, batch):
    n = caffe.NetSpec()
    n.data, n.target = L.Input(shape=[dict(dim=[batch, 4, 27, 27]), dict(dim=[batch, 10])], ntop=2)
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
    proto = n.to_proto()
    proto.force_backward = True
    path = tmp_path / "net.prototxt"
    path.write_text(str(proto))
    return str(path)


def _run(path, threads, weights=None):
    os.environ["CAFFE_CPU_THREADS"] = str(threads)
    try:
        caffe.set_mode_cpu()
        caffe.set_random_seed(3)
        net = caffe.Net(path, caffe.TRAIN)
        if weights:
            net.copy_from(weights)
        rng = np.random.default_rng(0)
        for name in ("data", "target"):
            net.blobs[name].data[...] = rng.standard_normal(net.blobs[name].data.shape)
        net.forward()
        net.backward()
        blobs = {k: (b.data.copy(), b.diff.copy()) for k, b in net.blobs.items()}
        params = {k: [(p.data.copy(), p.diff.copy()) for p in ps] for k, ps in net.params.items()}
        return net, blobs, params
    finally:
        del os.environ["CAFFE_CPU_THREADS"]


@pytest.mark.parametrize("batch", [2, 5, 8])
def test_parallel_conv_and_lrn_match_the_serial_path(tmp_path, batch):
    path = _net(tmp_path, batch)
    net, serial_blobs, serial_params = _run(path, 1)
    weights = str(tmp_path / "w.caffemodel")
    net.save(weights)
    _, par_blobs, par_params = _run(path, 2, weights)
    for k, (data, diff) in serial_blobs.items():
        assert np.array_equal(data, par_blobs[k][0]), "forward %s differs" % k
        assert np.array_equal(diff, par_blobs[k][1]), "input gradient %s differs" % k
    for k, ps in serial_params.items():
        for i, (_, diff) in enumerate(ps):
            other = par_params[k][i][1]
            rel = np.abs(diff - other).max() / max(np.abs(diff).max(), 1e-30)
            assert rel <= WEIGHT_TOL, "%s[%d] gradient: relative difference %.3g" % (k, i, rel)
    # the gradients are not all zero (the comparison means something)
    assert np.abs(serial_params["conv1"][0][1]).max() > 0
    assert np.abs(serial_blobs["data"][1]).max() > 0
