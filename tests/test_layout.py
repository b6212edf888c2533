"""The code layout: one library (ltc), thin entry points that never import each other, no
sys.path edits, and library modules without import-time side effects on the environment."""
import ast
import os
import re
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


# ----------------------------------------------------------------------------- no entry point as a subprocess
# The library may start programs (caffe train, dpkg-query, pip), never one of the repository's entry
# points: a tools/ or data_prep/ script run from ltc is an upward dependency that the import
# graph does not show. The check follows, within the library, what reaches a process start:
# a spawn call's command, the variables assigned into it, and the parameters of every function
# whose parameters reach one (a "spawner", e.g. a Runner.tool(script, ...) that builds an argv and
# calls its own run(argv)), then the arguments given to spawners at those parameters.
SPAWNS = {("subprocess", n) for n in ("run", "Popen", "call", "check_call", "check_output", "getoutput",
                                      "getstatusoutput")}
SPAWNS |= {("os", n) for n in ("system", "popen", "execv", "execve", "execvp", "execvpe", "execl", "execlp",
                               "spawnv", "spawnve", "spawnvp", "posix_spawn", "posix_spawnp")}
SPAWNS |= {("asyncio", "create_subprocess_exec"), ("asyncio", "create_subprocess_shell")}
ENTRY_SCRIPT = re.compile(r"(^|[/\s])(tools|data_prep)/[\w./-]*\.py\b")


def _callee(call):
    f = call.func
    if isinstance(f, ast.Attribute):
        return getattr(f.value, "id", None), f.attr
    return None, getattr(f, "id", None)


def _command_args(call, params=None):
    """The argument expressions of ``call`` that reach a process start: the command of a spawn,
    or those given at a spawner's tainted ``params`` ((names, tainted names, is a method))."""
    if params is None:
        return call.args[:1] + [k.value for k in call.keywords if k.arg in ("args", "cmd", "command", "path", "file")]
    names, tainted, vararg, method = params
    pos = names[1:] if method and isinstance(call.func, ast.Attribute) else names
    out = []
    for i, a in enumerate(call.args):
        name = pos[i] if i < len(pos) else vararg
        if name in tainted:
            out.append(a)
    out += [k.value for k in call.keywords if k.arg in tainted]
    return out


def _script_literals(exprs, assigned):
    """Entry-point script paths among the string constants of ``exprs`` and of what is assigned to
    the names they use (within the function), followed to a fixpoint."""
    seen, todo, found = set(), list(exprs), []
    while todo:
        e = todo.pop()
        for node in ast.walk(e):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and ENTRY_SCRIPT.search(node.value):
                found.append(node.value)
            if isinstance(node, ast.Name) and node.id not in seen:
                seen.add(node.id)
                todo += assigned.get(node.id, [])
    return found, seen


def entry_point_spawns(sources):
    """[(file:line, script)] where library code ``sources`` ({path: text}) starts an entry-point script."""
    funcs = []
    for path, text in sources.items():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assigned = {}
                for a in ast.walk(node):
                    targets = a.targets if isinstance(a, ast.Assign) else [a.target] if isinstance(
                        a, (ast.AugAssign, ast.AnnAssign)) and a.value is not None else []
                    for t in targets:
                        for n in ast.walk(t):
                            if isinstance(n, ast.Name):
                                assigned.setdefault(n.id, []).append(a.value)
                args = node.args
                names = [a.arg for a in args.posonlyargs + args.args]
                method = bool(names) and names[0] in ("self", "cls")
                funcs.append((path, node, assigned, names + [a.arg for a in args.kwonlyargs],
                              args.vararg.arg if args.vararg else None, method))
    spawners, changed = {}, True   # function name -> (param names, tainted params, vararg, is a method)
    offenders = set()
    while changed:
        changed = False
        for path, node, assigned, names, vararg, method in funcs:
            sinks = []
            for call in ast.walk(node):
                if isinstance(call, ast.Call):
                    owner, name = _callee(call)
                    if (owner, name) in SPAWNS:
                        sinks += _command_args(call)
                    elif name in spawners and name != node.name:
                        sinks += _command_args(call, spawners[name])
            scripts, reached = _script_literals(sinks, assigned)
            offenders |= {("%s:%d" % (path, node.lineno), s) for s in scripts}
            tainted = {p for p in names + [vararg] if p in reached and p not in ("self", "cls")}
            if tainted and spawners.get(node.name, (None, set()))[1] != tainted:
                spawners[node.name] = (names, tainted, vararg, method)
                changed = True
    return sorted(offenders)


def test_library_starts_no_entry_point_script():
    sources = {f: open(os.path.join(REPO, f)).read() for f in tracked_python_files() if f.startswith("ltc/")}
    assert entry_point_spawns(sources) == []


def test_entry_point_spawn_check_finds_the_patterns():
    """The check above on the shapes it must catch: a script run directly, through an argv variable,
    and through a helper method that builds the argv from its parameter (the old ltc/study.py)."""
    direct = 'import subprocess, sys\ndef f():\n    subprocess.run([sys.executable, "tools/analyze.py", "log"])\n'
    via_var = ('import subprocess, sys\ndef f(x):\n    cmd = [sys.executable, "data_prep/embedded.py"] + x\n'
               '    return subprocess.check_call(cmd)\n')
    helper = ('import os, subprocess\nclass R:\n    def run(self, argv):\n        return subprocess.run(argv)\n'
              '    def tool(self, script, *args):\n        argv = ["python", os.path.join("/r", script)] + list(args)\n'
              '        return self.run(argv)\n'
              'def evaluate(runner):\n    runner.tool("tools/analyze.py", "count-check", "--out", "x")\n')
    allowed = ('import subprocess\ndef f(caffe, solver):\n    subprocess.Popen([caffe, "train", "-solver", solver])\n'
               'def g(runner):\n    runner.note(["python", "tools/analyze.py"])   # only logged\n'
               '    f("caffe", "prototxt/demo/solver.prototxt")\n')
    assert [s for _, s in entry_point_spawns({"a.py": direct})] == ["tools/analyze.py"]
    assert [s for _, s in entry_point_spawns({"b.py": via_var})] == ["data_prep/embedded.py"]
    assert entry_point_spawns({"c.py": helper}) == [("c.py:8", "tools/analyze.py")]
    assert entry_point_spawns({"d.py": allowed}) == []
