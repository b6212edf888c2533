#!/usr/bin/env python
"""GPU checks of the CUDA build (./setup.sh --cuda), ready to run on a machine with a GPU.

  1. equivalence: one SGD step of the counting net on the GPU against the same step on the
     CPU, from the same weights and inputs: the loss and every parameter gradient and
     updated weight must agree within --tol (relative to the largest CPU magnitude);
  2. speed: samples/s of the paper's solver (prototxt/solver.prototxt, batch 256) on the GPU
     with the counting data layer on --lmdb;
  3. data workers: the data layer's wait per step for workers = --workers ...; the GPU is
     busy (1 - wait / step) of the time, also sampled from nvidia-smi; the smallest worker
     count reaching >= 95 % is reported;
  4. memory: peak GPU memory of this process at batch 256 (nvidia-smi, sampled).

Prints tables and writes bench/results/gpu_check.txt / .csv. Exit code 1 when the
equivalence check fails or no GPU is usable (with the reason), 2 for bad arguments.
--self-test runs check 1 with the CPU on both sides (a check of this script without a GPU).

    python bench/gpu_check.py --lmdb data/imagenet/train_lmdb
    python bench/gpu_check.py --self-test
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from bench import benchlib
from ltc import machine


def net_files(folder, batch, inputs, lmdb="", workers=2, layout="six"):
    """The counting train net (Input blobs or the data layer) and its solver, paper settings."""
    from ltc import nets
    cfg = dict(nets.DEFAULTS, batch=batch, layout=layout, train_lmdb=lmdb or "unused", val_lmdb=lmdb or "unused",
               workers=workers, prefetch=max(nets.DEFAULTS["prefetch"], workers + 2), snapshot_prefix=os.path.join(folder, "snap"))
    net = nets.counting_net(cfg, inputs=inputs)
    net_path = os.path.join(folder, "train_%s_%d_w%d.prototxt" % (inputs, batch, workers))
    return benchlib.write_timing_files(net, cfg, net_path, net_path.replace("train_", "solver_"))


def _own_params(net):
    """{layer: blobs} without the layers whose blobs are shared with an earlier layer (the
    siamese branches share one trunk)."""
    seen, out = set(), {}
    for k, ps in net.params.items():
        addr = ps[0].data.__array_interface__["data"][0]
        if addr not in seen:
            seen.add(addr)
            out[k] = ps
    return out


def _grads(solver):
    """Forward + backward of the solver's net: (loss, {param: [gradients]})."""
    net = solver.net
    for ps in net.params.values():
        for p in ps:
            p.diff[...] = 0
    loss = float(net.forward()["loss"].ravel()[0])
    net.backward()
    return loss, {k: [p.diff.copy() for p in ps] for k, ps in _own_params(net).items()}


def _rel(a, b):
    import numpy as np
    scale = max(float(np.abs(a).max()), 1e-12)
    return float(np.abs(a - b).max()) / scale


def check_equivalence(batch, tol, gpu, self_test, folder):
    """Rows of (what, relative difference) and whether all are within tol."""
    import numpy as np
    import caffe
    path = net_files(folder, batch, "input")
    inputs = {}
    rng = np.random.default_rng(0)
    sides = []
    weights = os.path.join(folder, "init.caffemodel")
    for side in ("cpu", "cpu" if self_test else "gpu"):
        if side == "gpu":
            caffe.set_device(gpu)
            caffe.set_mode_gpu()
        else:
            caffe.set_mode_cpu()
        caffe.set_random_seed(1701)
        solver = caffe.SGDSolver(path)
        net = solver.net
        if not sides:
            net.save(weights)
        else:
            net.copy_from(weights)
        for name in ("t1", "t2", "t3", "t4", "dx", "dy"):
            if name not in inputs:
                inputs[name] = rng.standard_normal(net.blobs[name].data.shape, dtype=np.float32)
            net.blobs[name].data[...] = inputs[name]
        loss, grads = _grads(solver)
        solver.step(1)
        updated = {k: [p.data.copy() for p in ps] for k, ps in _own_params(net).items()}
        sides.append(dict(loss=loss, grads=grads, updated=updated))
    a, b = sides
    rows = [dict(what="loss", rel=abs(a["loss"] - b["loss"]) / max(abs(a["loss"]), 1e-12),
                 cpu=a["loss"], other=b["loss"])]
    for k in a["grads"]:
        for i, (ga, gb) in enumerate(zip(a["grads"][k], b["grads"][k])):
            rows.append(dict(what="grad %s[%d]" % (k, i), rel=_rel(ga, gb)))
        for i, (wa, wb) in enumerate(zip(a["updated"][k], b["updated"][k])):
            rows.append(dict(what="updated %s[%d]" % (k, i), rel=_rel(wa, wb)))
    ok = all(r["rel"] <= tol for r in rows)
    return rows, ok


class GpuSampler:
    """nvidia-smi samples of this process's GPU memory and the GPU's utilisation."""

    def __init__(self, gpu, period=0.2):
        self.gpu, self.period = gpu, period
        self.mem_mib, self.util = 0, []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _query(self, args):
        return subprocess.run(["nvidia-smi"] + args, capture_output=True, text=True, timeout=10).stdout

    def _run(self):
        pid = str(os.getpid())
        while not self._stop.is_set():
            try:
                for line in self._query(["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]
                                        ).splitlines():
                    p, m = [x.strip() for x in line.split(",")[:2]]
                    if p == pid:
                        self.mem_mib = max(self.mem_mib, int(m))
                u = self._query(["-i", str(self.gpu), "--query-gpu=utilization.gpu",
                                 "--format=csv,noheader,nounits"]).strip()
                if u:
                    self.util.append(float(u.splitlines()[0]))
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
            self._stop.wait(self.period)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def run_training(batch, workers, lmdb, gpu, iters, warmup, folder):
    """(samples/s, data wait fraction, GPU utilisation % sampled, peak MiB) of `iters` steps."""
    import caffe
    caffe.set_device(gpu)
    caffe.set_mode_gpu()
    path = net_files(folder, batch, "data_layer", lmdb, workers)
    solver = caffe.SGDSolver(path)
    data = next(l for n, l in zip(solver.net._layer_names, solver.net.layers) if n == "data")
    wait = [0.0]
    fwd = data.forward

    def timed(*a):
        t = time.perf_counter()
        try:
            return fwd(*a)
        finally:
            wait[0] += time.perf_counter() - t
    data.forward = timed
    try:
        solver.step(warmup)
        wait[0] = 0.0
        with GpuSampler(gpu) as s:
            t = time.perf_counter()
            solver.step(iters)
            wall = time.perf_counter() - t
        return dict(batch=batch, workers=workers, samples_s=batch * iters / wall, step_ms=1000 * wall / iters,
                    data_wait_pct=100 * wait[0] / wall, busy_pct=100 * (1 - wait[0] / wall),
                    smi_util_pct=statistics.mean(s.util) if s.util else None, peak_mib=s.mem_mib or None)
    finally:
        data.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--gpu", type=int, default=0, help="device id")
    ap.add_argument("--lmdb", default="data/imagenet/train_lmdb", help="training LMDB for checks 2-4")
    ap.add_argument("--batch", type=int, default=256, help="the paper's batch (checks 2-4)")
    ap.add_argument("--equiv-batch", type=int, default=16, help="batch of the equivalence step")
    ap.add_argument("--tol", type=float, default=1e-3, help="relative tolerance of the equivalence check")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3, 4, 6, 8], help="data-layer workers to try")
    ap.add_argument("--iters", type=int, default=20, help="timed steps per setting")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--self-test", action="store_true", help="check 1 only, CPU against CPU (no GPU needed)")
    ap.add_argument("--out", default=os.path.join(benchlib.RESULTS, "gpu_check"), help="results path without extension")
    a = ap.parse_args(argv)
    import caffe
    print(machine.machine_line())
    folder = tempfile.mkdtemp(prefix="gpu_check_")
    if not a.self_test:
        try:
            smi = subprocess.run(["nvidia-smi", "-i", str(a.gpu), "--query-gpu=name,compute_cap,driver_version,"
                                  "memory.total", "--format=csv,noheader"], capture_output=True, text=True,
                                 timeout=30)
        except OSError as e:
            print("gpu_check: no GPU usable: nvidia-smi: %s" % e, file=sys.stderr)
            return 1
        if smi.returncode != 0 or not smi.stdout.strip():
            print("gpu_check: no GPU usable: nvidia-smi failed: %s" % (smi.stderr or smi.stdout).strip(),
                  file=sys.stderr)
            return 1
        print("gpu %d: %s" % (a.gpu, smi.stdout.strip()))
    lines = []
    rows, ok = check_equivalence(a.equiv_batch, a.tol, a.gpu, a.self_test, folder)
    title = "1. one SGD step, %s vs CPU (batch %d): max |a-b| / max |a|, tolerance %g: %s" % (
        "CPU" if a.self_test else "GPU", a.equiv_batch, a.tol, "PASS" if ok else "FAIL")
    benchlib.print_table(rows, [("what", "quantity", 0), ("rel", "rel. difference", 6)], title=title)
    lines.append(json.dumps(dict(check="equivalence", ok=ok, worst=max(r["rel"] for r in rows))))
    results = []
    if not a.self_test:
        if not os.path.isdir(a.lmdb):
            print("gpu_check: --lmdb %s: no such LMDB (checks 2-4 skipped)" % a.lmdb, file=sys.stderr)
        else:
            for w in a.workers:
                r = run_training(a.batch, w, a.lmdb, a.gpu, a.iters, a.warmup, folder)
                print("workers %d: %.1f samples/s, data wait %.1f %%, busy %.1f %%, nvidia-smi %s %%, peak %s MiB"
                      % (w, r["samples_s"], r["data_wait_pct"], r["busy_pct"], benchlib.fmt(r["smi_util_pct"]),
                         benchlib.fmt(r["peak_mib"])), flush=True)
                results.append(r)
            enough = [r["workers"] for r in results if r["busy_pct"] >= 95.0]
            benchlib.print_table(results, [("batch", "batch", 0), ("workers", "workers", 0), ("step_ms", "ms/step", 1),
                                     ("samples_s", "samples/s", 1), ("data_wait_pct", "data wait %", 1),
                                     ("busy_pct", "GPU busy %", 1), ("smi_util_pct", "nvidia-smi util %", 1),
                                     ("peak_mib", "peak GPU MiB", 0)],
                           title="2-4. paper's solver on the GPU, batch %d: samples/s, workers for >= 95 %% busy: "
                                 "%s" % (a.batch, enough[0] if enough else "none of %s" % a.workers))
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    benchlib.write_csv(rows + results, a.out + ".csv")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
