"""Test helper (not a test module): run many short command-line invocations quickly.

Most of a failing command's time is the import of numpy, OpenCV and pycaffe. This runner
imports them once and then forks one child per command; the child runs the script with
``runpy`` as ``__main__`` (its own argv, working folder, stdout/stderr files, stdin from
/dev/null) and exits with the script's status. A child that dies of a signal (a Caffe CHECK,
SIGBUS, SIGSEGV) is reported as ``-signal``, as subprocess does; an uncaught exception prints
its traceback and exits 1, as Python does. The runner is single-threaded, so forking is safe.

    python tests/fork_runner.py --jobs 4 < requests.json > results.json

requests: a JSON list of {"script", "argv", "cwd", "stdout", "stderr", "timeout"}; results: a
JSON list of {"rc", "seconds"} in the same order (rc "timeout" when killed after "timeout" s).
Run it with PYTHONPATH pointing at the checkout whose ``ltc`` the scripts should import.
"""
import json
import os
import runpy
import signal
import sys
import time
import traceback


def preload():
    """Import what the project's scripts import, once, before any fork."""
    import numpy  # noqa: F401
    import cv2  # noqa: F401
    import lmdb  # noqa: F401
    try:
        import caffe  # noqa: F401
        from caffe.proto import caffe_pb2  # noqa: F401
        import google.protobuf.text_format  # noqa: F401
    except ImportError:
        pass
    import importlib
    for name in ("ltc", "ltc.lmdb_io", "ltc.lmdb_build", "ltc.surgery", "ltc.snapshots", "ltc.nets",
                 "ltc.analysis.features", "ltc.probe", "ltc.study", "ltc.table1", "ltc.export", "ltc.pipeline"):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a module the other checkout lacks, or an optional extra
            pass


def child(req):
    try:
        os.chdir(req["cwd"])
        for fd, path in ((1, req["stdout"]), (2, req["stderr"])):
            f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(f, fd)
            os.close(f)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        sys.argv = [req["script"]] + list(req["argv"])
        code = 0
        try:
            runpy.run_path(req["script"], run_name="__main__")
        except SystemExit as e:
            if e.code is None:
                code = 0
            elif isinstance(e.code, int):
                code = e.code
            else:
                sys.stderr.write("%s\n" % e.code)
                code = 1
        except BaseException:  # noqa: BLE001 - what python itself does with an uncaught exception
            traceback.print_exc()
            code = 1
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
    except BaseException:  # noqa: BLE001 - the runner's own failure in the child
        traceback.print_exc()
        code = 1
    os._exit(code & 0xFF if code >= 0 else 1)


def run_all(requests, jobs=4):
    results = [None] * len(requests)
    running = {}   # pid -> (index, start)
    todo = list(range(len(requests)))
    sys.stdout.flush()
    sys.stderr.flush()
    while todo or running:
        while todo and len(running) < jobs:
            i = todo.pop(0)
            pid = os.fork()
            if pid == 0:
                child(requests[i])
            running[pid] = (i, time.time())
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            now = time.time()
            for p, (i, t0) in list(running.items()):
                if now - t0 > requests[i].get("timeout", 120):
                    os.kill(p, signal.SIGKILL)
                    os.waitpid(p, 0)
                    del running[p]
                    results[i] = dict(rc="timeout", seconds=now - t0)
            time.sleep(0.005)
            continue
        if pid not in running:
            continue
        i, t0 = running.pop(pid)
        rc = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        results[i] = dict(rc=rc, seconds=time.time() - t0)
    return results


def main():
    jobs = int(sys.argv[sys.argv.index("--jobs") + 1]) if "--jobs" in sys.argv else 4
    requests = json.load(sys.stdin)
    preload()
    json.dump(run_all(requests, jobs), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
