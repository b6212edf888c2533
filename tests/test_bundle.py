"""The relocatable bundle (tools/bundle.py, ./setup.sh --bundle), its chroot check
(tools/caffe/bundle_check.sh) and bench/gpu_check.sh.

Fast tests build tiny ELF files with the C compiler: the library collection, the $ORIGIN
rewrite (the program still runs after its folder moved and the original is gone), the
closure check; the activate script's variables and its CUDA library search; the split pieces
and their checksum. The full check in a Debian chroot needs root and minutes: it runs only
with LTC_BUNDLE_CHECK=1 (LTC_BUNDLE=PATH to use a bundle made before; else one is made)."""
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from conftest import load_script  # noqa: E402

bundle = load_script("tools/bundle.py")

CC = shutil.which("cc") or shutil.which("gcc")
needs_cc = pytest.mark.skipif(not CC, reason="no C compiler")
needs_patchelf = pytest.mark.skipif(not shutil.which("patchelf"), reason="no patchelf (apt-get install patchelf)")
HAVE_ZLIB_DEV = any(os.path.exists(p) for p in ("/usr/include/zlib.h",))


def _run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


@pytest.fixture
def tiny(tmp_path):
    """build/libtiny.so.1 (needs libz) and build/prog (needs libtiny, RUNPATH build/)."""
    if not HAVE_ZLIB_DEV:
        pytest.skip("no zlib.h")
    b = tmp_path / "build"
    b.mkdir()
    (b / "tiny.c").write_text('#include <zlib.h>\nconst char *tiny(void) { return zlibVersion(); }\n')
    (b / "prog.c").write_text('#include <stdio.h>\nconst char *tiny(void);\n'
                              'int main(void) { printf("zlib %s\\n", tiny()); return 0; }\n')
    r = _run([CC, "-shared", "-fPIC", "-o", str(b / "libtiny.so.1"), "-Wl,-soname,libtiny.so.1", str(b / "tiny.c"),
              "-lz"])
    assert r.returncode == 0, r.stderr
    r = _run([CC, "-o", str(b / "prog"), str(b / "prog.c"), str(b / "libtiny.so.1"), "-Wl,--enable-new-dtags",
              "-Wl,-rpath," + str(b)])
    assert r.returncode == 0, r.stderr
    return b


@needs_cc
def test_elf_dynamic_reads_needed_soname_and_runpath(tiny):
    lib = bundle.elf_dynamic(str(tiny / "libtiny.so.1"))
    assert lib["soname"] == "libtiny.so.1"
    assert lib["needed"] == ["libz.so.1"] and lib["runpath"] == [] and lib["rpath"] == []
    prog = bundle.elf_dynamic(str(tiny / "prog"))
    assert prog["needed"] == ["libtiny.so.1", "libc.so.6"] and prog["runpath"] == [str(tiny)] and prog["rpath"] == []
    assert bundle.elf_dynamic(str(tiny / "tiny.c")) is None


@needs_cc
@needs_patchelf
def test_collected_libraries_and_origin_runpath_survive_a_move(tiny, tmp_path):
    libs, edges, host = bundle.collect([str(tiny / "prog")], bundle.system_lib_dirs())
    assert set(libs) == {"libtiny.so.1", "libz.so.1"}  # libc: base, not bundled
    assert os.path.realpath(libs["libtiny.so.1"]) == str(tiny / "libtiny.so.1")
    assert edges[str(tiny / "prog")][0] == "libtiny.so.1" and host == set()
    root = tmp_path / "b"
    (root / "bin").mkdir(parents=True)
    (root / "lib").mkdir()
    shutil.copy2(tiny / "prog", root / "bin" / "prog")
    for so, src in libs.items():
        shutil.copy2(os.path.realpath(src), root / "lib" / so)
    for p in (root / "bin" / "prog", root / "lib" / "libtiny.so.1", root / "lib" / "libz.so.1"):
        bundle.set_runpath(str(p), bundle.relative_runpath(str(p), str(root / "lib")))
    assert bundle.elf_dynamic(str(root / "bin" / "prog"))["runpath"] == ["$ORIGIN/../lib"]
    assert bundle.elf_dynamic(str(root / "lib" / "libz.so.1"))["runpath"] == ["$ORIGIN"]
    assert bundle.closure_check(str(root)) == []
    shutil.rmtree(tiny)  # the build folder (the old RUNPATH) is gone
    moved = tmp_path / "elsewhere"
    shutil.move(str(root), str(moved))
    r = _run([str(moved / "bin" / "prog")], env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 0 and r.stdout.startswith("zlib "), r.stderr
    os.unlink(moved / "lib" / "libz.so.1")
    assert bundle.closure_check(str(moved)) == ["lib/libtiny.so.1 needs libz.so.1: not in the bundle"]


@needs_cc
def test_a_missing_library_is_named_with_the_object_that_needs_it(tiny):
    os.unlink(tiny / "libtiny.so.1")
    with pytest.raises(bundle.BundleError, match=r"prog needs libtiny\.so\.1, which is not found"):
        bundle.collect([str(tiny / "prog")], ["/nonexistent"])


def test_base_and_cuda_sonames():
    for so in ("libc.so.6", "libm.so.6", "libstdc++.so.6", "libgcc_s.so.1", "ld-linux-x86-64.so.2", "libpthread.so.0"):
        assert bundle.BASE_SONAMES.match(so), so
    for so in ("libgomp.so.1", "libz.so.1", "libpython3.11.so.1.0", "libcrypt.so.1", "libgfortran.so.5"):
        assert not bundle.BASE_SONAMES.match(so), so
    for so in ("libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13", "libcurand.so.10", "libcudnn.so.9",
               "libnccl.so.2", "libcuda.so.1"):
        assert bundle.HOST_CUDA_SONAMES.match(so), so
    assert not bundle.HOST_CUDA_SONAMES.match("libcaffe.so.1.0.0")


def test_only_through_finds_what_one_library_alone_brings():
    libs = {"libopencv_core.so.406": "/s/libopencv_core.so.406", "libgdal.so.32": "/s/libgdal.so.32",
            "libz.so.1": "/s/libz.so.1", "libglog.so.1": "/s/libglog.so.1"}
    edges = {"/b/caffe": ["libopencv_core.so.406", "libglog.so.1"],
             "/s/libopencv_core.so.406": ["libgdal.so.32", "libz.so.1"], "/s/libgdal.so.32": ["libz.so.1"],
             "/s/libglog.so.1": ["libz.so.1"], "/s/libz.so.1": []}
    assert bundle.only_through(edges, libs, "libopencv_") == ["libgdal.so.32", "libopencv_core.so.406"]


def _fake_bundle(tmp_path, cuda=()):
    root = tmp_path / "bundle dir"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "caffe").write_text("#!/bin/sh\necho fake\n")
    os.chmod(root / "bin" / "caffe", 0o755)
    (root / "activate").write_text(bundle.activate_text(cuda))
    return root


def _sourced(root, script, env):
    return _run(["bash", "-c", '. "%s/activate" && %s' % (root, script)], env=env, cwd="/")


def test_activate_sets_and_restores_the_environment(tmp_path):
    root = _fake_bundle(tmp_path)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": "/mine", "HOME": str(tmp_path)}
    r = _sourced(root, 'echo "$PATH|$PYTHONHOME|$PYTHONPATH|$OMP_WAIT_POLICY|$LTC_BUNDLE|${LTC_CUDA_FOUND-unset}"; '
                       'ltc_deactivate; echo "$PATH|${PYTHONHOME-unset}|$PYTHONPATH|${LTC_BUNDLE-unset}"', env)
    assert r.returncode == 0, r.stderr
    first, second = r.stdout.splitlines()
    assert first == "%s/bin:/usr/bin:/bin|%s|%s/project:%s/project/python_layers:/mine|passive|%s|unset" % (
        root, root, root, root, root)
    assert second == "/usr/bin:/bin|unset|/mine|unset"
    # sourced by a relative path from another folder
    r = _run(["bash", "-c", '. "./bundle dir/activate" && command -v caffe'], env=env, cwd=str(tmp_path))
    assert r.stdout.strip() == "%s/bin/caffe" % root, r.stderr
    # an activate outside a bundle refuses
    os.unlink(root / "bin" / "caffe")
    r = _sourced(root, "true", env)
    assert r.returncode == 1 and "bin/caffe not found" in r.stderr


def test_activate_of_a_cuda_bundle_finds_the_nvidia_wheels_of_a_python_on_path(tmp_path):
    root = _fake_bundle(tmp_path, cuda=["libcudart.so.13", "libcublas.so.13", "libcudnn.so.9"])
    site = tmp_path / "site-packages"
    for part, so in (("cu13", "libcudart.so.13"), ("cu13", "libcublas.so.13"), ("cudnn", "libcudnn.so.9")):
        (site / "nvidia" / part / "lib").mkdir(parents=True, exist_ok=True)
        (site / "nvidia" / part / "lib" / so).write_text("")
    pybin = tmp_path / "pybin"
    pybin.mkdir()
    (pybin / "python3").write_text("#!/bin/sh\necho '%s'\n" % site)  # stands in for PyTorch's python
    os.chmod(pybin / "python3", 0o755)
    # (LTC_CUDA_DEFAULT_DIRS: leave out this machine's own /usr/local/cuda)
    env = {"PATH": "%s:/usr/bin:/bin" % pybin, "HOME": str(tmp_path), "LTC_CUDA_DEFAULT_DIRS": ""}
    r = _sourced(root, 'echo "$LD_LIBRARY_PATH"; echo "$LTC_CUDA_FOUND"', env)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    ld, found = r.stdout.splitlines()
    assert ld == "%s/nvidia/cu13/lib:%s/nvidia/cudnn/lib" % (site, site)
    assert "libcudnn.so.9=%s/nvidia/cudnn/lib" % site in found
    # LTC_CUDA_LIBS comes first; a library found nowhere is named
    own = tmp_path / "own"
    own.mkdir()
    (own / "libcudart.so.13").write_text("")
    os.unlink(site / "nvidia" / "cudnn" / "lib" / "libcudnn.so.9")
    env["LTC_CUDA_LIBS"] = str(own)
    r = _sourced(root, 'echo "$LD_LIBRARY_PATH"', env)
    assert r.stdout.splitlines()[0] == "%s:%s/nvidia/cu13/lib" % (own, site)
    assert "libcudnn.so.9 not found (set LTC_CUDA_LIBS" in r.stderr


def test_cpu_bundle_activate_has_no_cuda_search():
    assert "LTC_CUDA_FOUND=" not in bundle.activate_text(())
    assert "libcudart.so.13" in bundle.activate_text(["libcudart.so.13"])


def test_split_pieces_and_gpu_check_refuses_a_damaged_piece(tmp_path):
    data = os.urandom(3 * 1048576 + 5)
    arc = tmp_path / "b.tar.gz"
    arc.write_bytes(data)
    parts = bundle.split(str(arc), 1)
    assert [os.path.getsize(p) for p in parts] == [1048576, 1048576, 1048576, 5]
    assert b"".join(open(p, "rb").read() for p in parts) == data
    os.unlink(arc)
    with open(parts[1], "r+b") as f:
        f.write(b"\0" if data[1048576:1048577] != b"\0" else b"\1")
    r = _run(["bash", os.path.join(REPO, "bench", "gpu_check.sh"), "--self-test", "--bundle", parts[0]])
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout.strip().splitlines()[-1].startswith("GPU CHECK SELF-TEST FAIL: checksum mismatch: 4 pieces")


@pytest.mark.parametrize("args,msg", [(["--limit", "0"], "--limit '0'"), (["--workers", "2,4"], "--workers"),
                                      (["--nope"], "unknown option")])
def test_gpu_check_bad_usage(args, msg):
    r = _run(["bash", os.path.join(REPO, "bench", "gpu_check.sh")] + args)
    assert r.returncode == 2 and msg in r.stderr


def _venv_locations():
    loc = os.path.join(REPO, ".venv", ".caffe_locations")
    if not os.path.isfile(loc):
        pytest.skip("no project environment (./setup.sh)")
    return bundle.read_locations(loc)


def test_gpu_check_self_test_runs_the_whole_path_without_a_gpu(tmp_path):
    """A bundle folder that is the project's own environment (bin/ and lib/ of the cached
    Caffe, the .venv's python): gpu_check.sh makes the LMDB with tools/make_lmdb.py and runs
    bench/gpu_check.py --self-test, and ends with its verdict line."""
    loc = _venv_locations()
    root = tmp_path / "venv-bundle"
    root.mkdir()
    prefix = os.path.dirname(loc["CAFFE_BIN_DIR"])
    os.symlink(loc["CAFFE_BIN_DIR"], root / "bin")
    os.symlink(loc["CAFFE_LIB_DIR"], root / "lib")
    os.symlink(REPO, root / "project")
    (root / "BUNDLE.txt").write_text("learning-to-count: relocatable Caffe bundle (CPU-only build)\n")
    (root / "activate").write_text('. "%s/.venv/bin/activate"\nexport PYTHONPATH="%s"\n' % (REPO, loc["CAFFE_PY_DIR"]))
    assert os.path.isfile(os.path.join(prefix, "bin", "caffe"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["TMPDIR"] = str(tmp_path)
    r = subprocess.run(["bash", os.path.join(REPO, "bench", "gpu_check.sh"), "--self-test", "--bundle", str(root)],
                       capture_output=True, text=True, timeout=900, env=env)
    last = r.stdout.strip().splitlines()[-1]
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert last.startswith("GPU CHECK SELF-TEST PASS: bundle (") and "CPU-only build" in last
    assert "LMDB made" in last and "CPU-vs-CPU step worst rel. difference" in last
    assert "1. one SGD step, CPU vs CPU (batch 16)" in r.stdout and ": PASS" in r.stdout


@pytest.mark.parametrize("args,msg", [(["--bundle", "x.zip"], "name the bundle OUT.tar.gz"),
                                      (["--bundle", "x.tar.gz", "--cuda"], "run ./setup.sh [--cuda ...] first"),
                                      (["--bundle-split", "64"], "needs --bundle"),
                                      (["--bundle", "x.tar.gz", "--bundle-split", "0"], "expected a size in MiB"),
                                      (["--bundle"], "needs an output path")])
def test_setup_bundle_refuses_bad_options(args, msg):
    r = _run(["bash", os.path.join(REPO, "setup.sh")] + args, cwd=REPO)
    assert r.returncode == 1 and msg in r.stderr, r.stderr


def test_bundle_py_names_a_bad_locations_file(tmp_path):
    bad = tmp_path / "locs"
    bad.write_text("CAFFE_BIN_DIR='/nonexistent/bin'\n")
    r = _run([sys.executable, os.path.join(REPO, "tools", "bundle.py"), "--out", str(tmp_path / "o.tar.gz"),
              "--locations", str(bad)])
    assert r.returncode == 1 and "%s: CAFFE_BIN_DIR missing or not a folder" % bad in r.stderr
    assert "Traceback" not in r.stderr and not os.path.exists(tmp_path / "o.tar.gz")
    good = tmp_path / "good"
    good.write_text("".join("CAFFE_%s_DIR='%s'\n" % (k, tmp_path) for k in ("BIN", "PY", "LIB")))
    r = _run([sys.executable, os.path.join(REPO, "tools", "bundle.py"), "--out", str(tmp_path / "o.zip"),
              "--locations", str(good)])
    assert r.returncode == 1 and "o.zip: name the bundle OUT.tar.xz" in r.stderr, r.stderr
    r = _run([sys.executable, os.path.join(REPO, "tools", "bundle.py"), "--out", str(tmp_path / "o.tar.gz"),
              "--locations", str(tmp_path / "missing")])
    assert r.returncode == 1 and "missing: cannot read" in r.stderr, r.stderr


@pytest.mark.skipif(os.environ.get("LTC_BUNDLE_CHECK") != "1",
                    reason="needs root and minutes: LTC_BUNDLE_CHECK=1 (and LTC_BUNDLE=PATH to reuse a bundle)")
def test_bundle_runs_in_a_bare_debian_chroot_as_a_user(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root (debootstrap, chroot)")
    path = os.environ.get("LTC_BUNDLE")
    if not path:
        path = str(tmp_path / "ltc-caffe-test.tar.gz")
        r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "bundle.py"), "--out", path],
                           capture_output=True, text=True, timeout=3600)
        assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run(["bash", os.path.join(REPO, "tools", "caffe", "bundle_check.sh"), path],
                       capture_output=True, text=True, timeout=3600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1].startswith("BUNDLE CHECK PASS")
    losses = [ln for ln in r.stdout.splitlines() if ln.startswith("Iteration ") and ", loss = " in ln]
    assert len(losses) >= 20
    assert "caffe version" in r.stdout and "Python layer compiled in: True" in r.stdout
