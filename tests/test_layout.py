"""The code layout: one library (ltc), thin entry points that never import each other, no
sys.path edits, and library modules without import-time side effects on the environment."""
import ast
import os
import subprocess
import sys

from ltc import REPO

ENTRY_DIRS = ("tools", "data_prep", "bench")


def tracked_python_files():
    out = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [f for f in out.split() if os.path.isfile(os.path.join(REPO, f))]


def imported_modules(path):
    tree = ast.parse(open(os.path.join(REPO, path)).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0]


def test_nothing_edits_sys_path():
    offenders = []
    for f in tracked_python_files():
        tree = ast.parse(open(os.path.join(REPO, f)).read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", "") == "sys":
                offenders.append("%s:%d" % (f, node.lineno))
    assert offenders == []


def test_entry_points_import_no_other_entry_point():
    entry_modules = {os.path.splitext(os.path.basename(f))[0]: f for f in tracked_python_files()
                     if f.split("/")[0] in ENTRY_DIRS}
    offenders = []
    for name, f in entry_modules.items():
        for mod in imported_modules(f):
            if mod in entry_modules and mod != name:
                offenders.append("%s imports %s" % (f, entry_modules[mod]))
    assert offenders == []


def test_bench_toolkit_is_imported_only_by_bench_and_its_tests():
    """bench/benchlib.py is the benchmarks' own toolkit (``from bench import benchlib``): no ltc
    module, tool, data_prep script or layer imports anything from bench/."""
    offenders = [f for f in tracked_python_files() if f.split("/")[0] not in ("bench", "tests")
                 and "bench" in set(imported_modules(f))]
    assert offenders == []


def test_python_layers_hold_only_the_layer_shells():
    names = sorted(f for f in os.listdir(os.path.join(REPO, "python_layers")) if f.endswith(".py"))
    assert names == ["counting_data.py", "counting_loss.py", "resize_layer.py", "roi_pooling_layer.py",
                     "smooth_l1_loss_layer.py", "voc_layers.py"]


def test_library_import_leaves_the_environment_alone():
    # third-party imports first: OpenCV's own __init__ edits LD_LIBRARY_PATH. A module that
    # needs an optional extra (ltc.torch_caffenet: torch) is skipped where it is absent.
    code = ("import os, pkgutil, importlib, cv2, caffe, ltc, ltc.analysis\n"
            "before = dict(os.environ)\n"
            "for m in pkgutil.walk_packages(ltc.__path__, 'ltc.'):\n"
            "    try:\n"
            "        importlib.import_module(m.name)\n"
            "    except ImportError as e:\n"
            "        if e.name not in ('torch', 'onnx', 'onnxruntime'):\n"
            "            raise\n"
            "print(sorted(set(os.environ.items()) ^ set(before.items())))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GLOG_")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
