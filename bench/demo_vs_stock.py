#!/usr/bin/env python3
"""The CPU demo's training (prototxt/demo) run by two Caffe builds side by side on the same data
stream, then compared: every displayed train loss, every test output, and the weights of the
final snapshot.

What it checks for the speed patches (tools/caffe/patches/speed/): at one thread the patched
build runs the stock layer code, and its one-pass SGD update rounds as the stock BLAS passes do,
so the two runs should agree bit for bit. At two threads the weight gradients are summed in
another order and the runs part after a while, as stock Caffe's own one- and two-thread runs do.

    python bench/demo_vs_stock.py --builds patched=venv stock=~/.cache/learning-to-count/caffe-KEY
    python bench/demo_vs_stock.py --builds ... --threads 2 --iters 300

A build is "venv" (the project's Caffe, .venv/bin/caffe) or the prefix of another install
(./setup.sh --stock-caffe prints it). Each run has --threads BLAS threads; the two go in
parallel when the CPUs have room for both, else one after the other. The table goes to stdout
and OUT/summary.txt; the logs and snapshots stay in OUT/LABEL/. --reuse LABEL keeps that build's
finished run in OUT/LABEL (same solver, iterations and threads, checked against its solver copy and
log) instead of training it again: stock Caffe's run does not change when only the patched build
does.
"""
import argparse
import os
import re
import subprocess
import sys
import time

import numpy as np

from ltc import REPO
from bench import benchlib
from ltc import machine

SOLVER = "prototxt/demo/solver.prototxt"
NEEDS = ("data/fashion/scenes_train_lmdb", "data/fashion/scenes_val_lmdb")
ITER_RE = re.compile(r"Iteration (\d+) \(.*\), loss = (\S+)")
TEST_RE = re.compile(r"Iteration (\d+), Testing net")
OUT_RE = re.compile(r"Test net output #\d+: (\w+) = (\S+)")


def solver_text(folder, iters):
    """The demo solver with max_iter = snapshot = iters and its snapshots in folder."""
    text = open(os.path.join(REPO, SOLVER)).read()
    text = re.sub(r"(?m)^max_iter: .*$", "max_iter: %d" % iters, text)
    text = re.sub(r"(?m)^snapshot: .*$", "snapshot: %d" % iters, text)
    return re.sub(r'(?m)^snapshot_prefix: .*$', 'snapshot_prefix: "%s"' % os.path.join(folder, "demo"), text)


def solver_copy(folder, iters):
    """solver_text written to folder/solver.prototxt; returns its path."""
    text = solver_text(folder, iters)
    path = os.path.join(folder, "solver.prototxt")
    with open(path, "w") as f:
        f.write(text)
    return path


def caffe_command(build, solver):
    """(argv, environment changes) of `caffe train` for a build from benchlib.parse_builds."""
    if build == "venv":
        return [os.path.join(REPO, ".venv", "bin", "caffe"), "train", "-solver", solver], {}
    py, lib, extra = build
    prefix = os.path.dirname(lib)
    # the project environment's Python paths (as setup.sh's caffe wrapper passes them to the binary's
    # embedded Python, which reads no .pth files), without the venv's own Caffe
    paths = [p for p in _python_paths() if "learning-to-count/caffe-" not in p]
    env = dict(extra, PYTHONPATH=os.pathsep.join([py, REPO, os.path.join(REPO, "python_layers")] + paths),
               LD_LIBRARY_PATH=lib, OMP_WAIT_POLICY="passive", OPENBLAS_THREAD_TIMEOUT="4")
    return [os.path.join(prefix, "bin", "caffe"), "train", "-solver", solver], env


def _python_paths():
    code = "import os, sys; print(os.pathsep.join(p for p in sys.path[1:] if p))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return [p for p in out.strip().split(os.pathsep) if p]


def parse_log(path):
    """[(what, value)]: ("train N", loss) per display, ("test N name", value) per test output."""
    out, test_it = [], None
    for line in open(path, errors="replace"):
        m = ITER_RE.search(line)
        if m:
            out.append(("train %s" % m.group(1), float(m.group(2))))
            continue
        m = TEST_RE.search(line)
        if m:
            test_it = m.group(1)
            continue
        m = OUT_RE.search(line)
        if m and test_it is not None:
            out.append(("test %s %s" % (test_it, m.group(1)), float(m.group(2))))
    return out


def load_weights(path):
    """{(layer, i): float32 array} of a .caffemodel, read with protobuf alone."""
    from caffe.proto import caffe_pb2
    net = caffe_pb2.NetParameter()
    with open(path, "rb") as f:
        net.ParseFromString(f.read())
    return {(layer.name, i): np.asarray(blob.data, dtype=np.float32)
            for layer in net.layer for i, blob in enumerate(layer.blobs)}


def compare(a, b):
    """(values compared, identical, max relative difference, first differing entry or None)."""
    n = same = 0
    worst, first = 0.0, None
    for (ka, va), (kb, vb) in zip(a, b):
        if ka != kb:
            raise SystemExit("the two logs differ in structure at %r / %r" % (ka, kb))
        n += 1
        if va == vb:
            same += 1
        else:
            first = first or ka
            worst = max(worst, abs(va - vb) / max(abs(va), abs(vb), 1e-30))
    return n, same, worst, first


def reused_run(label, folder, iters, threads, error):
    """A finished run of an earlier call, checked: the demo solver with these iterations (its solver
    copy), the iteration-`iters` snapshot, a finished log, and (where recorded) the threads."""
    solver = os.path.join(folder, "solver.prototxt")
    snap = os.path.join(folder, "demo_iter_%d.caffemodel" % iters)
    log = os.path.join(folder, "train.log")
    for need in (solver, snap, log):
        if not os.path.isfile(need):
            error("--reuse %s: %s is missing (run it without --reuse first)" % (label, need))
    text = open(solver).read()
    want = solver_text(folder, iters)
    if text != want:
        error("--reuse %s: %s is not the current demo solver with max_iter %d (prototxt/demo changed?)"
              % (label, solver, iters))
    if "Optimization Done." not in open(log, errors="replace").read():
        error("--reuse %s: %s has no 'Optimization Done.' (the run did not finish)" % (label, log))
    tfile = os.path.join(folder, "threads.txt")
    had = int(open(tfile).read()) if os.path.isfile(tfile) else threads
    if had != threads:
        error("--reuse %s: that run had %d thread(s), not %d" % (label, had, threads))
    wfile = os.path.join(folder, "wall_s.txt")
    wall = float(open(wfile).read()) if os.path.isfile(wfile) else float("nan")
    print("%s: reusing the finished run in %s" % (label, folder), flush=True)
    return dict(label=label, folder=folder, wall=wall)


def _wait(run):
    rc = run["proc"].wait()
    run["wall"] = time.time() - run["t0"]
    run["log"].close()
    with open(os.path.join(run["folder"], "wall_s.txt"), "w") as f:
        f.write("%.1f\n" % run["wall"])
    if rc:
        raise SystemExit("%s: caffe train exited with %d; see %s" % (run["label"], rc,
                                                                  os.path.join(run["folder"], "train.log")))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--builds", nargs=2, required=True, metavar="LABEL=venv|PREFIX",
                    help="the two Caffe builds (bench/train_step.py --caffe-builds syntax)")
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads per run")
    ap.add_argument("--iters", type=int, default=300, help="iterations of the demo solver")
    ap.add_argument("--out", default="runs/demo_vs_stock", help="folder for logs, snapshots, summary")
    ap.add_argument("--reuse", nargs="*", default=[], metavar="LABEL",
                    help="keep these builds' finished runs in OUT/LABEL instead of training again")
    a = ap.parse_args(argv)
    for need in NEEDS:
        if not os.path.isfile(os.path.join(REPO, need, "data.mdb")):
            ap.error("%s is missing: build the data first (make fashion)" % need)
    builds = benchlib.parse_builds(a.builds, ap.error)
    if len(builds) != 2:
        ap.error("--builds needs two different labels")
    out = os.path.join(REPO, a.out)
    parallel = 2 * a.threads <= (os.cpu_count() or 1)
    runs = []
    for label in a.reuse:
        if label not in builds:
            ap.error("--reuse %s: not one of the --builds labels" % label)
    for label, build in builds.items():
        folder = os.path.join(out, label)
        if label in a.reuse:
            runs.append(reused_run(label, folder, a.iters, a.threads, ap.error))
            continue
        os.makedirs(folder, exist_ok=True)
        for old in os.listdir(folder):   # a rerun starts from scratch, never from old snapshots
            os.remove(os.path.join(folder, old))
        argv_, extra = caffe_command(build, solver_copy(folder, a.iters))
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(a.threads), **extra)
        if "avx512f" in machine.cpu_flags():
            env.pop("OPENBLAS_CORETYPE", None)   # as make demo does on an AVX-512 CPU
        with open(os.path.join(folder, "threads.txt"), "w") as f:
            f.write("%d\n" % a.threads)
        log = open(os.path.join(folder, "train.log"), "w")
        print("%s: %s (OPENBLAS_NUM_THREADS=%d)" % (label, " ".join(argv_), a.threads), flush=True)
        runs.append(dict(label=label, folder=folder, log=log, t0=time.time(),
                         proc=subprocess.Popen(argv_, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)))
        if not parallel:
            _wait(runs[-1])
    for r in runs:
        if "wall" not in r:
            _wait(r)
    logs = [parse_log(os.path.join(r["folder"], "train.log")) for r in runs]
    weights = [load_weights(os.path.join(r["folder"], "demo_iter_%d.caffemodel" % a.iters)) for r in runs]
    if not logs[0] or not logs[1] or len(logs[0]) != len(logs[1]):
        raise SystemExit("the logs have %d and %d loss lines" % (len(logs[0]), len(logs[1])))
    n, same, worst, first = compare(*logs)
    keys = sorted(weights[0])
    if keys != sorted(weights[1]):
        raise SystemExit("the two snapshots hold different blobs")
    w_same = sum(np.array_equal(weights[0][k], weights[1][k]) for k in keys)
    w_worst = max(float(np.abs(weights[0][k] - weights[1][k]).max() / max(np.abs(weights[0][k]).max(), 1e-30))
                  for k in keys)
    last_train = [[v for k, v in log if k.startswith("train ")][-1] for log in logs]
    last_test = [[v for k, v in log if k.startswith("test ") and k.endswith(" loss")][-1:] for log in logs]
    rows = [dict(build=r["label"], wall_s=r["wall"], train=lt, test=tt[0] if tt else float("nan"))
            for r, lt, tt in zip(runs, last_train, last_test)]
    lines = ["demo_vs_stock: %d iterations, %d BLAS thread(s) per run (%s), %s"
             % (a.iters, a.threads, "in parallel" if parallel else "one after the other", machine.machine_line()), ""]
    lines += ["%-10s %8s %24s %24s" % ("build", "wall s", "train loss (last display)", "test loss (last pass)")]
    lines += ["%-10s %8.0f %24.6g %24.6g" % (r["build"], r["wall_s"], r["train"], r["test"]) for r in rows]
    rel = abs(rows[0]["train"] - rows[1]["train"]) / max(abs(rows[1]["train"]), 1e-30)
    lines += ["",
              "log values (every displayed train loss and test output): %d compared, %d identical, max relative "
              "difference %.3g%s" % (n, same, worst, "" if first is None else ", first difference at %s" % first),
              "final train loss: relative difference %.3g" % rel,
              "snapshot weights (iteration %d): %d of %d blobs bit-identical, max relative difference %.3g"
              % (a.iters, w_same, len(keys), w_worst)]
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(out, "summary.txt"), "w") as f:
        f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
