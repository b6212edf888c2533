"""The environment that setup.sh makes: real Caffe, pycaffe with Python layers, the check tool."""
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.join(REPO, ".venv", "bin")

import caffe
from conftest import pycaffe_links


class ScaleShiftLayer(caffe.Layer):
    """Test layer: top = 3 * bottom + 1; param_str unused."""

    def setup(self, bottom, top):
        if len(bottom) != 1 or len(top) != 1:
            raise Exception("ScaleShiftLayer takes one bottom and one top")

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = 3.0 * bottom[0].data + 1.0

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = 3.0 * top[0].diff


NET = """
name: "env_check"
input: "x"
input_shape { dim: 2 dim: 3 }
input: "target"
input_shape { dim: 2 dim: 3 }
force_backward: true
layer { name: "scale" type: "Python" bottom: "x" top: "y"
        python_param { module: "test_caffe_env" layer: "ScaleShiftLayer" } }
layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "target" top: "loss" }
"""


def test_caffe_binary_reports_version():
    out = subprocess.run([os.path.join(VENV_BIN, "caffe"), "--version"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "caffe version 1.0.0"


def test_environment_sets_thread_defaults_unless_the_caller_did():
    """The venv's python and the caffe wrapper default OMP_WAIT_POLICY=passive and
    OPENBLAS_THREAD_TIMEOUT=4 (setup.sh explains why); a value the caller set wins."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT")}
    show = "import os; print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('OPENBLAS_THREAD_TIMEOUT'))"
    py = os.path.join(VENV_BIN, "python")
    assert subprocess.run([py, "-c", show], env=env, capture_output=True, text=True).stdout.split() == ["passive", "4"]
    mine = dict(env, OMP_WAIT_POLICY="active")
    assert subprocess.run([py, "-c", show], env=mine, capture_output=True, text=True).stdout.split() == ["active", "4"]
    # the caffe wrapper, run with `env` in place of the caffe binary, shows what caffe gets
    lines = open(os.path.join(VENV_BIN, "caffe")).read().splitlines()
    assert lines[-1].startswith("exec ")
    fake = "\n".join(lines[:-1] + ['exec env "$@"'])
    for given, expected in ((env, "passive"), (mine, "active")):
        out = subprocess.run(["sh", "-c", fake, "caffe"], env=given, capture_output=True, text=True).stdout
        got = dict(l.split("=", 1) for l in out.splitlines() if "=" in l)
        assert (got["OMP_WAIT_POLICY"], got["OPENBLAS_THREAD_TIMEOUT"]) == (expected, "4")


def test_python_layer_is_compiled_in():
    assert "Python" in caffe.layer_type_list()


def test_python_layer_forward_backward_in_real_net(tmp_path):
    proto = tmp_path / "net.prototxt"
    proto.write_text(NET)
    net = caffe.Net(str(proto), caffe.TEST)
    x = np.array([[0.5, -1.0, 2.0], [0.0, 1.5, -0.25]], dtype=np.float32)
    t = np.array([[1.0, 1.0, 1.0], [-1.0, 0.0, 2.0]], dtype=np.float32)
    net.blobs["x"].data[...] = x
    net.blobs["target"].data[...] = t
    out = net.forward()
    y = 3 * x + 1
    np.testing.assert_allclose(net.blobs["y"].data, y, rtol=1e-6)
    # EuclideanLoss = sum((y - t)^2) / (2 N)
    expected = ((y - t) ** 2).sum() / (2 * x.shape[0])
    assert float(np.asarray(out["loss"]).ravel()[0]) == pytest.approx(expected, rel=1e-6)
    net.backward()
    # d loss / d x = 3 * (y - t) / N
    np.testing.assert_allclose(net.blobs["x"].diff, 3 * (y - t) / x.shape[0], rtol=1e-5)


def _check(path):
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", "check_caffe.py"), "--locate", str(path)],
                          capture_output=True, text=True, timeout=120)


def test_check_rejects_fake_caffe(tmp_path):
    fake = tmp_path / "fake_caffe"
    (fake / "bin").mkdir(parents=True)
    binary = fake / "bin" / "caffe"
    binary.write_text("#!/bin/sh\necho 'caffe version 1.0.0'\n")
    binary.chmod(0o755)
    res = _check(fake)
    assert res.returncode == 1
    assert "not a usable Caffe:" in res.stderr + res.stdout
    assert str(fake) in res.stderr + res.stdout


def test_check_rejects_pycaffe_without_python_layer(tmp_path):
    fake = tmp_path / "nolayer"
    (fake / "bin").mkdir(parents=True)
    (fake / "bin" / "caffe").write_text("#!/bin/sh\necho 'caffe version 1.0.0'\n")
    (fake / "bin" / "caffe").chmod(0o755)
    pkg = fake / "python" / "caffe"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("def layer_type_list():\n    return ['Convolution', 'ReLU']\n")
    (pkg / "_caffe.so").write_bytes(b"")
    res = _check(fake)
    assert res.returncode == 1
    msg = res.stderr + res.stdout
    assert "not a usable Caffe:" in msg and "without the Python layer" in msg


def test_check_accepts_the_project_caffe():
    locs = open(os.path.join(REPO, ".venv", ".caffe_locations")).read()
    prefix = locs.split("CAFFE_BIN_DIR='")[1].split("'")[0].rsplit("/", 1)[0]
    res = _check(prefix)
    assert res.returncode == 0, res.stderr
    assert "CAFFE_PY_DIR=" in res.stdout


def _is_cuda_build():
    return pycaffe_links("libcudart")


CPU_MODE_NET = """
layer { name: "d" type: "Data" top: "data" top: "label"
  data_param { source: "%s" backend: LMDB batch_size: 2 } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 stride: 2 weight_filler { type: "xavier" } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "lrn" type: "LRN" bottom: "pool" top: "lrn" lrn_param { local_size: 5 alpha: 1e-4 beta: 0.75 } }
layer { name: "tanh" type: "TanH" bottom: "lrn" top: "tanh" }
layer { name: "sig" type: "Sigmoid" bottom: "tanh" top: "sig" }
layer { name: "ip" type: "InnerProduct" bottom: "sig" top: "ip" inner_product_param { num_output: 3 } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""


@pytest.mark.skipif(not _is_cuda_build(), reason="a CUDA build's CPU mode (this Caffe is CPU-only)")
def test_cuda_build_cpu_mode_runs_default_engines_and_the_data_layer(tmp_path):
    """Patches cuda/0104 and cuda/0105: in CPU mode a CUDA build uses Caffe's own layers for the
    DEFAULT engines (not cuDNN) and its Data layer's prefetch thread does not touch the device, so
    it runs on a machine without a GPU. Run in a child: without the patches Caffe aborts."""
    from conftest import write_test_lmdb
    write_test_lmdb(str(tmp_path / "db"), 4, size=32)
    (tmp_path / "net.prototxt").write_text(CPU_MODE_NET % (tmp_path / "db"))
    code = ("import caffe, numpy as np; caffe.set_mode_cpu(); "
            "n = caffe.Net(%r, caffe.TRAIN); n.forward(); p = n.blobs['prob'].data; "
            "assert p.shape == (2, 3) and np.allclose(p.sum(1), 1), p; print('ok')" % str(tmp_path / "net.prototxt"))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]
