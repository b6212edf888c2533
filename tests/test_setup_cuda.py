"""setup.sh's Caffe build options without building: argument checks, the pinned CUDA wheel
list, and tools/caffe/cuda_flags.sh's choices (toolkit, cuDNN, NCCL, architectures) against
a fake toolkit."""
import os
import re
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setup(*args):
    return subprocess.run(["bash", os.path.join(REPO, "setup.sh")] + list(args), capture_output=True, text=True,
                          timeout=60, cwd=REPO)


@pytest.mark.parametrize("args,msg", [(["--cuda-arch", "80"], "needs --cuda"),
                                      (["--cuda", "--cuda-arch", "sm_80"], "expected compute capabilities"),
                                      (["--gtests"], "needs a list"),
                                      (["--no-such-option"], "unknown option")])
def test_setup_refuses_bad_options_before_doing_anything(args, msg):
    r = _setup(*args)
    assert r.returncode == 1 and msg in r.stderr, r.stderr


def test_cuda_wheels_are_pinned_with_sha256():
    lines = [ln for ln in open(os.path.join(REPO, "tools", "caffe", "cuda-wheels.txt"))
             if ln.strip() and not ln.startswith("#")]
    names = set()
    for ln in lines:
        m = re.fullmatch(r"([a-z0-9-]+)==([0-9.]+) --hash=sha256:([0-9a-f]{64})\n", ln)
        assert m, ln
        names.add(m.group(1))
    assert {"nvidia-cuda-nvcc", "nvidia-nvvm", "nvidia-cuda-crt", "nvidia-cuda-runtime", "nvidia-cublas",
            "nvidia-curand", "nvidia-cudnn-cu13", "nvidia-nccl-cu13", "nvidia-cuda-cccl"} <= names


def _fake_toolkit(root, version="13.5", cudnn=True, nccl=True):
    """A directory that looks like a CUDA toolkit to cuda_flags.sh (nvcc prints a release)."""
    for d in ("bin", "include", "lib64"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    nvcc = os.path.join(root, "bin", "nvcc")
    with open(nvcc, "w") as f:
        f.write("#!/bin/sh\ncase \"$*\" in *--dryrun*) echo '#$ _HERE_=%s/bin' >&2 ;; "
                "*) echo 'Cuda compilation tools, release %s, V%s.0' ;; esac\n" % (root, version, version))
    os.chmod(nvcc, 0o755)
    smi = os.path.join(root, "bin", "nvidia-smi")  # no GPU, also on a machine that has one
    with open(smi, "w") as f:
        f.write("#!/bin/sh\nexit 9\n")
    os.chmod(smi, 0o755)
    headers = ["cublas_v2.h", "curand.h"] + (["nccl.h"] if nccl else [])
    libs = ["libcublas.so", "libcurand.so"] + (["libnccl.so"] if nccl else [])
    if cudnn:
        with open(os.path.join(root, "include", "cudnn_version.h"), "w") as f:
            f.write("#define CUDNN_MAJOR 9\n#define CUDNN_MINOR 1\n#define CUDNN_PATCHLEVEL 0\n")
        libs.append("libcudnn.so")
    for h in headers:
        open(os.path.join(root, "include", h), "w").close()
    for lib in libs:
        open(os.path.join(root, "lib64", lib), "w").close()


def _flags(tmp_path, arch="", path_prefix=None):
    script = ('die() { echo "DIE $*"; exit 1; }; say() { echo "SAY $*"; }; REPO=%s; CACHE_ROOT=%s; VPY=python3; '
              'CUDA_ARCH="%s"; . "$REPO/tools/caffe/cuda_flags.sh"; echo "FLAGS=$CUDA_FLAGS"; '
              'echo "SUMMARY=$CUDA_SUMMARY"' % (REPO, tmp_path / "cache", arch))
    env = dict(os.environ, PATH=path_prefix + ":/usr/bin:/bin")
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, env=env)
    out = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line and line[:5] in ("FLAGS", "SUMMA"))
    return r, out


def test_a_complete_system_toolkit_is_used_with_its_cudnn_and_nccl(tmp_path):
    root = str(tmp_path / "cuda")
    _fake_toolkit(root)
    r, out = _flags(tmp_path, "80,86", os.path.join(root, "bin"))
    assert r.returncode == 0, r.stdout + r.stderr
    flags = out["FLAGS"]
    assert "-DCUDA_TOOLKIT_ROOT_DIR=%s " % root in flags
    assert "-DCUDA_ARCH_BIN=80;86 -DCUDA_ARCH_PTX=86" in flags
    assert "-DUSE_CUDNN=ON" in flags and "-DUSE_NCCL=ON" in flags
    assert "cuDNN 9.1.0" in out["SUMMARY"] and "CUDA 13.5" in out["SUMMARY"]


def test_without_a_gpu_the_default_archs_are_sm80_sm90_and_ptx90(tmp_path):
    root = str(tmp_path / "cuda")
    _fake_toolkit(root, cudnn=False, nccl=False)
    r, out = _flags(tmp_path, "", os.path.join(root, "bin"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "-DCUDA_ARCH_BIN=80;90 -DCUDA_ARCH_PTX=90" in out["FLAGS"]
    assert "-DUSE_CUDNN=OFF" in out["FLAGS"] and "-DUSE_NCCL=OFF" in out["FLAGS"]
    assert "building without cuDNN" in r.stdout


def test_an_old_system_cuda_is_refused(tmp_path):
    root = str(tmp_path / "cuda")
    _fake_toolkit(root, version="11.8")
    r, _ = _flags(tmp_path, "80", os.path.join(root, "bin"))
    assert r.returncode == 1 and "supports CUDA 12 and 13" in r.stdout


def _cuda_wheel_list(tmp_path, data):
    """One stand-in wheel kept in the cache's CUDA wheel folder and a list pinning it."""
    import hashlib
    import zipfile
    cache = tmp_path / "cache"
    whl = cache / "cuda-wheels"
    whl.mkdir(parents=True)
    path = whl / "nvidia_cuda_nvcc-13.5.1-py3-none-manylinux_2_27_x86_64.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("nvidia/cu13/bin/README", data)
    lst = tmp_path / "cuda-wheels.txt"
    lst.write_text("# stand-in\nnvidia-cuda-nvcc==13.5.1 --hash=sha256:%s\n" % hashlib.sha256(path.read_bytes()).hexdigest())
    return cache, lst, path


def _toolchain(cache, lst):
    # VPY=/bin/false: any download attempt fails, so the outcome shows whether the kept wheel was used
    return subprocess.run(["bash", os.path.join(REPO, "tools", "caffe", "cuda_toolchain.sh"), str(cache), str(lst)],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ, VPY="/bin/false"))


def test_cuda_toolchain_uses_a_kept_wheel_only_while_its_hash_matches(tmp_path):
    cache, lst, path = _cuda_wheel_list(tmp_path, "stand-in")
    r = _toolchain(cache, lst)
    # the kept wheel passes the hash check (no download) and is unpacked
    assert "downloading" not in r.stderr and "sha256 verified and unpacked 1 wheels" in r.stderr, r.stderr
    with open(path, "ab") as f:
        f.write(b"tampered")
    r = _toolchain(cache, lst)
    assert r.returncode == 1, r.stderr
    assert "downloading the pinned CUDA 13.5.1 wheels (about 1.5 GB) with pip, hashes checked" in r.stderr
    assert "pip download of the CUDA wheels failed" in r.stderr
    assert not list(cache.glob("cuda-toolkit-*/.complete"))
