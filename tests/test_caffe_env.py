"""The environment that setup.sh makes: real Caffe, pycaffe with Python layers, the check tool."""
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.join(REPO, ".venv", "bin")

import caffe


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
