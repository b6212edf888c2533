#!/usr/bin/env python3
"""Check that a Caffe build or install is usable by this project.

A usable Caffe has: a `caffe` binary that runs, a pycaffe that imports, and the
Python layer compiled in (``'Python' in caffe.layer_type_list()``).

    python tools/check_caffe.py --locate PATH   # find + check a Caffe under PATH;
                                                # prints CAFFE_BIN_DIR=... lines (sh syntax)
    python tools/check_caffe.py --venv .venv    # check the project environment

PATH may be an install prefix (bin/, lib/, python/ or lib/python3/dist-packages/),
a CMake build folder (tools/, lib/, python/), or a source tree built with make
(.build_release/ or build/ inside it). On failure the message starts with
``not a usable Caffe:`` and names the path and what is wrong; the exit code is 1.
"""
import argparse
import glob
import os
import subprocess
import sys

BIN_CANDIDATES = ["bin", "tools", "build/tools", ".build_release/tools", "build/bin"]
PY_CANDIDATES = ["python", "lib/python3/dist-packages", "build/python",
                 "lib/python3.11/site-packages", "lib/python3/site-packages"]
LIB_CANDIDATES = ["lib", "build/lib", ".build_release/lib", "lib64"]


class NotUsable(Exception):
    pass


def _find_dir(root, candidates, predicate):
    for c in candidates:
        d = os.path.join(root, c)
        if os.path.isdir(d) and predicate(d):
            return os.path.abspath(d)
    return None


def _has_caffe_binary(d):
    return any(os.access(os.path.join(d, n), os.X_OK) and os.path.isfile(os.path.join(d, n))
               for n in ("caffe", "caffe.bin"))


def _has_pycaffe(d):
    return (os.path.isfile(os.path.join(d, "caffe", "__init__.py"))
            and bool(glob.glob(os.path.join(d, "caffe", "_caffe*.so"))))


def _has_libcaffe(d):
    return bool(glob.glob(os.path.join(d, "libcaffe*.so*")))


def locate(root):
    """Return dict(bin=, py=, lib=) for the Caffe under root, or raise NotUsable."""
    root = os.path.abspath(os.path.expanduser(root))
    if not os.path.isdir(root):
        raise NotUsable("%s: no such directory" % root)
    bin_dir = _find_dir(root, BIN_CANDIDATES, _has_caffe_binary)
    if bin_dir is None:
        raise NotUsable("%s: no executable 'caffe' binary in any of %s" % (root, ", ".join(BIN_CANDIDATES)))
    py_dir = _find_dir(root, PY_CANDIDATES, _has_pycaffe)
    if py_dir is None:
        raise NotUsable("%s: no pycaffe (caffe/__init__.py with _caffe*.so) in any of %s; "
                        "build it with `make pycaffe` or -DBUILD_python=ON" % (root, ", ".join(PY_CANDIDATES)))
    lib_dir = _find_dir(root, LIB_CANDIDATES, _has_libcaffe) or ""
    return {"bin": bin_dir, "py": py_dir, "lib": lib_dir}


def _env(loc):
    env = dict(os.environ)
    if loc["lib"]:
        env["LD_LIBRARY_PATH"] = loc["lib"] + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    env["PYTHONPATH"] = loc["py"] + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("GLOG_minloglevel", "2")
    return env


def check(loc, python=sys.executable):
    """Run the binary and import pycaffe; raise NotUsable with the reason."""
    binary = os.path.join(loc["bin"], "caffe")
    if not os.path.exists(binary):
        binary += ".bin"
    try:
        out = subprocess.run([binary, "--version"], env=_env(loc), capture_output=True, text=True, timeout=60)
    except OSError as e:
        raise NotUsable("%s: cannot run: %s" % (binary, e))
    if out.returncode != 0 or "caffe version" not in (out.stdout + out.stderr):
        raise NotUsable("%s: `caffe --version` failed (exit %d): %s"
                        % (binary, out.returncode, (out.stderr or out.stdout).strip()[-400:]))
    version = (out.stdout + out.stderr).strip().splitlines()[-1]
    code = ("import caffe; print(caffe.__file__); "
            "print('PYTHON_LAYER=%s' % ('Python' in caffe.layer_type_list()))")
    r = subprocess.run([python, "-c", code], env=_env(loc), capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise NotUsable("%s: `import caffe` failed with %s: %s"
                        % (loc["py"], python, r.stderr.strip()[-600:]))
    if "PYTHON_LAYER=True" not in r.stdout:
        raise NotUsable("%s: this Caffe was built without the Python layer "
                        "(rebuild with WITH_PYTHON_LAYER=1 / -DBUILD_python_layer=ON)" % loc["py"])
    return version


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--locate", metavar="PATH", help="find and check a Caffe under PATH")
    g.add_argument("--venv", metavar="VENV", help="check the project environment VENV")
    args = ap.parse_args(argv)
    try:
        if args.locate:
            loc = locate(args.locate)
            version = check(loc)
            print("CAFFE_BIN_DIR='%s'" % loc["bin"])
            print("CAFFE_PY_DIR='%s'" % loc["py"])
            print("CAFFE_LIB_DIR='%s'" % loc["lib"])
            print("checked %s: %s, pycaffe with the Python layer" % (args.locate, version), file=sys.stderr)
        else:
            venv = os.path.abspath(args.venv)
            caffe_bin = os.path.join(venv, "bin", "caffe")
            if not os.access(caffe_bin, os.X_OK):
                raise NotUsable("%s: no caffe wrapper; run ./setup.sh" % caffe_bin)
            out = subprocess.run([caffe_bin, "--version"], capture_output=True, text=True, timeout=60)
            if out.returncode != 0:
                raise NotUsable("%s --version failed: %s" % (caffe_bin, out.stderr.strip()[-400:]))
            code = ("import caffe, sys; assert 'Python' in caffe.layer_type_list(), 'no Python layer'; "
                    "print('pycaffe', caffe.__file__)")
            r = subprocess.run([os.path.join(venv, "bin", "python"), "-c", code],
                               capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                raise NotUsable("%s: `import caffe` failed: %s" % (venv, r.stderr.strip()[-600:]))
            print("environment OK: %s; %s" % ((out.stdout + out.stderr).strip(), r.stdout.strip()))
    except NotUsable as e:
        print("not a usable Caffe: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
