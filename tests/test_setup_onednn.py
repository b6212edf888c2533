"""`./setup.sh --onednn wheel` without building Caffe: the option checks, the pinned oneDNN wheel
list, tools/caffe/onednn_wheels.sh on stand-in wheels (unpacking, links, hash checks), and patch
onednn3/0205 applied to speed/0204's layer source, compiled against the oneDNN headers at hand
(Debian's 2.x always; the wheels' 3.x where a build unpacked them)."""
import glob
import hashlib
import os
import re
import subprocess
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAFFE_TOOLS = os.path.join(REPO, "tools", "caffe")
P0204 = os.path.join(CAFFE_TOOLS, "patches", "speed", "0204-cpu-onednn-convolution.patch")
P0205 = os.path.join(CAFFE_TOOLS, "patches", "onednn3", "0205-onednn3-convolution-api.patch")
LAYER = "src/caffe/layers/dnnl_conv_layer.cpp"


def _setup(*args):
    return subprocess.run(["bash", os.path.join(REPO, "setup.sh")] + list(args), capture_output=True, text=True,
                          timeout=60, cwd=REPO)


@pytest.mark.parametrize("args,msg", [(["--onednn", "latest"], "expected 'debian'"),
                                      (["--onednn"], "needs 'debian' or 'wheel'"),
                                      (["--onednn", "wheel", "--stock-caffe"], "needs the speed patches"),
                                      (["--onednn", "wheel", "--caffe", "/nonexistent"], "does not apply to an existing"),
                                      (["--venv"], "needs a folder")])
def test_setup_refuses_bad_onednn_options_before_doing_anything(args, msg):
    r = _setup(*args)
    assert r.returncode == 1 and msg in r.stderr, r.stderr


def test_onednn_wheels_are_pinned_with_sha256():
    lines = [ln for ln in open(os.path.join(CAFFE_TOOLS, "onednn-wheels.txt")) if ln.strip() and not ln.startswith("#")]
    names = set()
    for ln in lines:
        m = re.fullmatch(r"([a-z0-9-]+)==([0-9.]+) --hash=sha256:([0-9a-f]{64})\n", ln)
        assert m, ln
        names.add(m.group(1))
    assert names == {"onednn-cpu-gomp", "onednn-devel-cpu-gomp"}


def _wheel(path, files):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _stand_in_wheels(tmp_path, major=3):
    """Two small wheels laid out as the real pair is (data/lib with three copies of the library,
    data/include with the version header) in the cache's wheel folder, and their list."""
    cache = tmp_path / "cache"
    whl = cache / "onednn-wheels"
    whl.mkdir(parents=True)
    lib = b"\x7fELF stand-in"
    h1 = _wheel(whl / "onednn_cpu_gomp-2023.2.0-py2.py3-none-manylinux1_x86_64.whl",
                {"onednn_cpu_gomp-2023.2.0.data/data/lib/libdnnl.so": lib,
                 "onednn_cpu_gomp-2023.2.0.data/data/lib/libdnnl.so.3": lib,
                 "onednn_cpu_gomp-2023.2.0.data/data/lib/libdnnl.so.3.2": lib,
                 "onednn_cpu_gomp-2023.2.0.dist-info/METADATA": "Name: onednn-cpu-gomp\n"})
    h2 = _wheel(whl / "onednn_devel_cpu_gomp-2023.2.0-py2.py3-none-manylinux1_x86_64.whl",
                {"onednn_devel_cpu_gomp-2023.2.0.data/data/include/dnnl.hpp": '#include "oneapi/dnnl/dnnl.hpp"\n',
                 "onednn_devel_cpu_gomp-2023.2.0.data/data/include/oneapi/dnnl/dnnl_version.h":
                     "#define DNNL_VERSION_MAJOR %d\n#define DNNL_VERSION_MINOR 2\n#define DNNL_VERSION_PATCH 0\n" % major,
                 "onednn_devel_cpu_gomp-2023.2.0.data/data/lib/cmake/dnnl/dnnl-config.cmake": "# build machine paths\n"})
    lst = tmp_path / "wheels.txt"
    lst.write_text("# stand-ins\nonednn-cpu-gomp==2023.2.0 --hash=sha256:%s\n"
                   "onednn-devel-cpu-gomp==2023.2.0 --hash=sha256:%s\n" % (h1, h2))
    return cache, lst


def _unpack(cache, lst, python="/bin/false"):
    # VPY=/bin/false: any attempt to download fails, so a pass means the kept wheels were used
    return subprocess.run(["bash", os.path.join(CAFFE_TOOLS, "onednn_wheels.sh"), str(cache), str(lst)],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ, VPY=python))


def test_onednn_wheels_unpack_into_a_library_folder(tmp_path):
    cache, lst = _stand_in_wheels(tmp_path)
    r = _unpack(cache, lst)
    assert r.returncode == 0, r.stderr
    root = r.stdout.strip()
    assert root == str(cache / ("onednn-" + hashlib.sha256(lst.read_bytes()).hexdigest()[:16]))
    assert os.path.isfile(os.path.join(root, "lib", "libdnnl.so.3.2"))
    assert os.readlink(os.path.join(root, "lib", "libdnnl.so.3")) == "libdnnl.so.3.2"
    assert os.readlink(os.path.join(root, "lib", "libdnnl.so")) == "libdnnl.so.3"
    assert not os.path.exists(os.path.join(root, "lib", "cmake"))
    assert os.path.isfile(os.path.join(root, "include", "dnnl.hpp"))
    assert open(os.path.join(root, ".complete")).read().strip() == "oneDNN 3.2.0"
    # a second call reuses the folder
    r2 = _unpack(cache, lst)
    assert r2.returncode == 0 and r2.stdout.strip() == root and "unpacked" not in r2.stderr


def test_onednn_wheels_with_a_wrong_hash_are_not_used(tmp_path):
    cache, lst = _stand_in_wheels(tmp_path)
    with open(next(iter(glob.glob(str(cache / "onednn-wheels" / "onednn_devel*.whl")))), "ab") as f:
        f.write(b"tampered")
    r = _unpack(cache, lst)
    assert r.returncode == 1 and "pip download of the oneDNN wheels failed" in r.stderr, r.stderr
    assert not glob.glob(str(cache / "onednn-*" / ".complete"))


def test_onednn_wheels_of_another_major_version_are_refused(tmp_path):
    cache, lst = _stand_in_wheels(tmp_path, major=2)
    r = _unpack(cache, lst)
    assert r.returncode == 1 and "say oneDNN 2, expected 3" in r.stderr, r.stderr


def _patched_layer(tmp_path):
    """speed/0204's new dnnl_conv_layer.cpp, then onednn3/0205 applied to it with patch(1)."""
    text = open(P0204).read()
    part = text.split("+++ b/" + LAYER + "\n", 1)[1].split("\ndiff --git", 1)[0]
    body = part.split("\n", 1)[1]  # drop the @@ line
    src = tmp_path / LAYER
    src.parent.mkdir(parents=True)
    src.write_text("".join(ln[1:] + "\n" for ln in body.split("\n") if ln.startswith("+")))
    r = subprocess.run(["patch", "-p1", "--forward", "-s", "-i", P0205], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return src


def test_0205_applies_on_0204_and_keeps_both_apis(tmp_path):
    src = _patched_layer(tmp_path).read_text()
    assert "#if DNNL_VERSION_MAJOR >= 3" in src
    assert "dnnl::convolution_forward::desc(" in src  # the 2.x branch is kept
    assert "dnnl_version()" in src                   # the header/library check


def _caffe_include():
    loc = os.path.join(REPO, ".venv", ".caffe_locations")
    if not os.path.exists(loc):
        return None
    m = re.search(r"CAFFE_LIB_DIR='([^']+)'", open(loc).read())
    inc = os.path.join(os.path.dirname(m.group(1)), "include") if m else None
    return inc if inc and os.path.exists(os.path.join(inc, "caffe", "layers", "dnnl_conv_layer.hpp")) else None


def _oneDNN_includes():
    found = []
    if os.path.exists("/usr/include/dnnl.hpp"):
        found.append(("debian", None))
    cache = os.environ.get("LTC_CACHE", os.path.expanduser("~/.cache/learning-to-count"))
    for root in sorted(glob.glob(os.path.join(cache, "onednn-*", ".complete"))):
        found.append(("wheel", os.path.join(os.path.dirname(root), "include")))
    return found


@pytest.mark.parametrize("which,include", _oneDNN_includes() or [pytest.param("none", None, marks=pytest.mark.skip(
    reason="no oneDNN headers on this machine"))])
def test_0205_compiles_against_the_oneDNN_headers_at_hand(tmp_path, which, include):
    caffe_inc = _caffe_include()
    if caffe_inc is None:
        pytest.skip("no Caffe build with speed/0204 headers in .venv")
    src = _patched_layer(tmp_path)
    cmd = ["g++", "-std=c++11", "-fsyntax-only", "-fopenmp", "-DUSE_DNNL", "-DCPU_ONLY"]
    cmd += (["-I" + include] if include else []) + ["-I" + caffe_inc, "-I/usr/include/hdf5/serial", str(src)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
