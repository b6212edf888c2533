#!/usr/bin/env python
"""Benchmark the counting data pipeline: samples/s by worker count, where its time goes,
and how long the solver waits for data during real training.

Three tables:
 1. throughput: ltc.pipeline.BatchPipeline (the code behind CountingDataLayer) making
    training batches (six 114x114 inputs per sample) from an LMDB with 0 (in the calling
    process), 1, 2, ... worker processes, each setting in a child process of its own:
    samples/s, samples/s per worker, scaling vs 1 worker (1.00 = linear), peak RSS;
 2. profile: cProfile of the in-process pipeline (workers 0), top functions by own time;
 3. training: one SGD step of the six-branch (and stacked) counting net with the real
    data layer against the same net on Input blobs (bench/train_step.py's rows): time
    spent inside the data layer's forward per step (= the solver waiting for data) and the
    step-time difference, which also counts CPU stolen by the workers from the BLAS threads.

The LMDB: --lmdb (default data/sample/train_lmdb); if it is missing, 512 synthetic 256x256
crops of photos bundled with scikit-image / scikit-learn / matplotlib are written to
bench/.cache once.

Example:
  python bench/data_layer.py                       # workers 0 1 2, batch 64; training rows at batch 16
  python bench/data_layer.py --workers 0 1 2 4 --batches 40 --no-training
"""
import argparse
import cProfile
import json
import os
import pstats
import sys
import time

from bench import benchlib
from ltc import knobs, machine, params


def child_pipe(a):
    """Time a.batches batches after one warm-up batch (the warm-up includes forking the workers)."""
    from ltc.pipeline import BatchPipeline
    t0 = time.perf_counter()
    with BatchPipeline(a.lmdb, a.batch, workers=a.workers, prefetch=max(knobs.DATA["prefetch"].default, 2 * a.workers + 1),
                       seed=params.SEED,
                       interpolation=a.interpolation) as pipe:
        first = pipe.next_batch()
        first_s = time.perf_counter() - t0
        shape = list(first.shape)
        t = time.perf_counter()
        for _ in range(a.batches):
            batch = pipe.next_batch()
        dt = time.perf_counter() - t
        checksum = float(abs(batch[:, 0]).mean())
    benchlib.child_print(dict(kind="pipe", workers=a.workers, batch=a.batch, batches=a.batches, seconds=dt,
                        first_batch_s=first_s, samples_s=a.batches * a.batch / dt, shape=shape,
                        mean_abs=checksum))


def child_profile(a):
    from ltc.pipeline import BatchPipeline
    with BatchPipeline(a.lmdb, a.batch, workers=0, seed=params.SEED, interpolation=a.interpolation) as pipe:
        pipe.next_batch()
        prof = cProfile.Profile()
        t = time.perf_counter()
        prof.enable()
        for _ in range(a.batches):
            pipe.next_batch()
        prof.disable()
        wall = time.perf_counter() - t
    st = pstats.Stats(prof)
    rows = []
    for (fname, line, func), (cc, nc, tt, ct, _) in st.stats.items():
        where = os.path.relpath(fname, benchlib.REPO) if fname.startswith(benchlib.REPO) else os.path.basename(fname)
        rows.append(dict(function="%s:%d %s" % (where, line, func) if line else func, calls=nc,
                         own_s=tt, cum_s=ct))
    rows.sort(key=lambda r: -r["own_s"])
    total = sum(r["own_s"] for r in rows)
    for r in rows:
        r["own_pct"] = 100.0 * r["own_s"] / total if total else 0.0
        r["ms_per_sample"] = 1000.0 * r["own_s"] / (a.batches * a.batch)
    benchlib.child_print(dict(kind="profile", wall_s=wall, samples_s=a.batches * a.batch / wall, rows=rows[:a.top]))


def run_throughput(a, lmdb):
    rows = []
    for w in a.workers:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", "pipe", "--lmdb", lmdb, "--batch", str(a.batch),
               "--batches", str(a.batches), "--workers", str(w), "--interpolation", a.interpolation]
        print("run  pipeline workers %d, batch %d x %d ..." % (w, a.batch, a.batches), end=" ", flush=True)
        res, rss, wall, err = benchlib.run_child(cmd, timeout=a.timeout)
        if res is None:
            print("FAILED\n" + err)
            rows.append(dict(name="workers %d" % w, workers=w, error=err.strip().splitlines()[-1][:200]))
            continue
        res.update(name="workers %d" % w, peak_rss_mib=rss,
                   worker_rss_mib=res.get("children_peak_rss_mib"), load_before=benchlib.load_avg())
        res["per_worker"] = res["samples_s"] / max(w, 1)
        print("%.0f samples/s" % res["samples_s"], flush=True)
        rows.append(res)
    return add_scaling(rows)


def add_scaling(rows):
    """scaling: samples/s over (workers x the 1-worker row's samples/s); 1.00 = linear."""
    one = [r for r in rows if r.get("workers") == 1 and "samples_s" in r]
    for r in rows:
        if one and r.get("workers", 0) >= 1 and "samples_s" in r:
            r["scaling"] = r["samples_s"] / (r["workers"] * one[0]["samples_s"])
        if "samples_s" in r:
            r["goal_1000_per_worker"] = "yes" if r["per_worker"] >= 1000 else "NO"
    return rows


def run_profile(a, lmdb):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "profile", "--lmdb", lmdb, "--batch", str(a.batch),
           "--batches", str(a.profile_batches), "--top", str(a.top), "--interpolation", a.interpolation]
    print("run  profile (workers 0, batch %d x %d) ..." % (a.batch, a.profile_batches), flush=True)
    res, _, _, err = benchlib.run_child(cmd, timeout=a.timeout)
    if res is None:
        print("profile FAILED\n" + err)
        return None
    return res


def run_training(a, lmdb):
    specs = []
    for batch in a.train_batches:
        for layout in a.layouts:
            specs.append(dict(kind="caffe", layout=layout, inputs="input", batch=batch, blas=a.blas, gemm=False))
            for w in a.train_workers:
                specs.append(dict(kind="caffe", layout=layout, inputs="data_layer", batch=batch, blas=a.blas,
                                  workers=w, lmdb=lmdb, gemm=False))
    ns = argparse.Namespace(iters=a.iters, warmup=2, repeats=1, timeout=a.timeout, torch_python=benchlib.TORCH_VENV_PY)
    return add_slowdown(benchlib.run_rows(specs, ns))


def add_slowdown(rows):
    """slowdown: a data-layer row's step time over the Input row's (same layout and batch) - 1."""
    for r in rows:
        if r.get("inputs") != "data_layer" or "step_s" not in r:
            continue
        ref = [p for p in rows if p.get("inputs") == "input" and p["layout"] == r["layout"]
               and p["batch"] == r["batch"] and "step_s" in p]
        if ref:
            r["slowdown_pct"] = 100.0 * (r["step_s"] / ref[0]["step_s"] - 1.0)
            r["best_slowdown_pct"] = 100.0 * (r["min_s"] / ref[0]["min_s"] - 1.0)
        r["goal_wait_2pct"] = "yes" if r.get("data_wait_pct", 100) < 2.0 else "NO"
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--lmdb", default="data/sample/train_lmdb",
                    help="LMDB of 256x256 images (synthetic one built in bench/.cache if missing)")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="worker counts to time")
    ap.add_argument("--batch", type=int, default=64, help="samples per batch for the throughput rows")
    ap.add_argument("--batches", type=int, default=30, help="timed batches per throughput row")
    ap.add_argument("--interpolation", choices=knobs.INTERPOLATION_MODES, default=params.INTERPOLATION,
                    help="the data layer's interpolation setting")
    ap.add_argument("--profile-batches", type=int, default=10, help="batches profiled in-process (0: no profile)")
    ap.add_argument("--top", type=int, default=12, help="functions shown in the profile")
    ap.add_argument("--no-training", dest="training", action="store_false", help="skip the solver-wait rows")
    ap.add_argument("--train-batches", type=int, nargs="+", default=[16], help="batches of the training rows")
    ap.add_argument("--train-workers", type=int, nargs="+", default=[1], help="data-layer workers in training rows")
    ap.add_argument("--layouts", nargs="+", choices=("six", "stacked"), default=["six", "stacked"])
    ap.add_argument("--blas", choices=sorted(benchlib.blas_presets()), default="env", help="BLAS setting of training rows")
    ap.add_argument("--iters", type=int, default=8, help="timed SGD steps per training row")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per child")
    ap.add_argument("--csv", default=None, help="CSV path (default bench/results/data_layer.csv; the profile "
                    "and training tables go next to it with _profile / _training suffixes)")
    ap.add_argument("--child", choices=("pipe", "profile"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        a.workers = a.workers[0]
        return {"pipe": child_pipe, "profile": child_profile}[a.child](a) or 0
    if a.batch < 2 or a.batches < 1 or any(w < 0 for w in a.workers):
        ap.error("--batch must be >= 2, --batches >= 1, --workers >= 0")
    print("data_layer:", json.dumps(vars(a), sort_keys=True))
    print(machine.machine_line())
    lmdb = benchlib.ensure_lmdb(a.lmdb)
    print("lmdb: %s" % lmdb)
    csv_path = a.csv or os.path.join(benchlib.RESULTS, "data_layer.csv")
    stem = os.path.splitext(csv_path)[0]

    rows = run_throughput(a, lmdb)
    prof = run_profile(a, lmdb) if a.profile_batches > 0 else None
    train_rows = run_training(a, lmdb) if a.training else []

    print()
    benchlib.print_table(rows, [("name", "pipeline", 0), ("batch", "batch", 0), ("samples_s", "samples/s", 0),
                          ("per_worker", "per worker", 0), ("goal_1000_per_worker", ">=1000/worker", 0),
                          ("scaling", "scaling vs 1w", 2), ("first_batch_s", "first batch s", 2),
                          ("peak_rss_mib", "RSS MiB", 0), ("worker_rss_mib", "worker RSS MiB", 0)],
                   title="Counting data pipeline throughput (%d timed batches of %d samples; 6 x 3x114x114 "
                   "per sample; goal >= 1000 samples/s per worker, near-linear scaling)" % (a.batches, a.batch))
    benchlib.write_csv(rows, csv_path, ["name", "workers", "batch", "batches", "seconds", "samples_s", "per_worker",
                                  "scaling", "first_batch_s", "peak_rss_mib", "worker_rss_mib", "load_before",
                                  "error"])
    if prof:
        print()
        benchlib.print_table(prof["rows"], [("function", "function", 0), ("calls", "calls", 0), ("own_s", "own s", 3),
                                      ("own_pct", "own %", 1), ("ms_per_sample", "ms/sample", 3),
                                      ("cum_s", "cum s", 3)],
                       title="Where the time goes (cProfile, workers 0, %d batches; %.0f samples/s under the "
                       "profiler)" % (a.profile_batches, prof["samples_s"]))
        benchlib.write_csv(prof["rows"], stem + "_profile.csv", ["function", "calls", "own_s", "own_pct",
                                                           "ms_per_sample", "cum_s"])
    if train_rows:
        print()
        benchlib.print_table(train_rows, [("name", "row", 0), ("blas", "BLAS", 0), ("batch", "batch", 0),
                                    ("step_ms", "ms/step", 0), ("noise_pct", "+-%", 0),
                                    ("samples_s", "samples/s", 1), ("data_wait_pct", "data wait %", 2),
                                    ("goal_wait_2pct", "<2%", 0), ("slowdown_pct", "step +% vs Input", 1),
                                    ("best_slowdown_pct", "best-step +%", 1), ("peak_rss_mib", "RSS MiB", 0)],
                       title="Solver time waiting for data (median of %d SGD steps; data wait = time inside "
                       "the data layer's forward; goal < 2%%)" % a.iters)
        benchlib.write_csv(train_rows, stem + "_training.csv",
                     ["name", "blas", "layout", "inputs", "workers", "batch", "step_s", "min_s", "max_s",
                      "samples_s", "data_s", "data_wait_pct", "slowdown_pct", "best_slowdown_pct",
                      "peak_rss_mib", "load_before", "error"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
