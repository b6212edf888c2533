"""Shared pytest fixtures and helpers."""
import importlib.util
import os
import subprocess
import sys

import cv2
import lmdb
import numpy as np
import pytest

# Caffe's glog writes a log file per process into /tmp unless told otherwise; the test run's
# caffe processes (pycaffe here, the caffe binary in subprocesses) log to stderr only.
os.environ.setdefault("GLOG_logtostderr", "1")

from ltc import REPO  # noqa: E402
from ltc.lmdb_io import image_to_datum  # noqa: E402


def write_test_lmdb(path, n, encoded=False, seed=0, size=256):
    """Write ``n`` distinct smooth random size x size BGR images (label i) into an LMDB at ``path``.

    Keys follow the project format ``%08d_img<i>.png``; encoded=True stores PNG bytes.
    Returns the list of HxWx3 uint8 images in key order.
    """
    rng = np.random.default_rng(seed)
    os.makedirs(path, exist_ok=True)
    images = []
    env = lmdb.open(str(path), map_size=max(1 << 24, n * size * size * 3 * 4))
    with env.begin(write=True) as txn:
        for i in range(n):
            noise = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
            img = cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
            img = cv2.add(img, rng.integers(0, 64, (size, size, 3), dtype=np.uint8))
            if encoded:
                ok, buf = cv2.imencode(".png", img)
                assert ok
                datum = image_to_datum(img, label=i, encoded_bytes=buf.tobytes())
            else:
                datum = image_to_datum(img, label=i)
            txn.put(b"%08d_img%d.png" % (i, i), datum.SerializeToString())
            images.append(img)
    env.close()
    return images


def pycaffe_links(library):
    """True when pycaffe's extension links ``library`` (ldd also lists libcaffe's own dependencies:
    "libgomp" for the speed patches, "libdnnl" for speed/0204, "libcudart" for a CUDA build)."""
    import caffe
    out = subprocess.run(["ldd", caffe._caffe.__file__], capture_output=True, text=True).stdout
    return library in out


def numeric_grad(fun, x, eps=1e-6):
    """Central differences of the scalar ``fun()`` with respect to every entry of the array ``x``,
    changed in place (a Caffe blob's data, say) and restored."""
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + eps
        fp = fun()
        x[i] = old - eps
        fm = fun()
        x[i] = old
        g[i] = (fp - fm) / (2 * eps)
    return g


@pytest.fixture
def make_test_lmdb():
    """make_test_lmdb(path, n, encoded=False, seed=0) -> list of the written HxWx3 images."""
    return write_test_lmdb


def load_script(rel_path):
    """Import a command-line script (tools/, data_prep/, bench/) from its file, as module
    ``script_<folder>_<name>``: the scripts are entry points, not a package, and two of them
    may share a file name."""
    name = "script_" + os.path.splitext(rel_path)[0].replace("/", "_")
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, rel_path))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
