#!/usr/bin/env python
"""How fast the counting data pipeline turns a killed worker into an error, and what a resume
seek costs.

Table 1 (kill): ltc.pipeline.BatchPipeline with 2 workers serving batches; one worker is
SIGKILLed (as the OOM killer does) either while idle (its batches done) or while busy making
a batch; the seconds from the kill to the RuntimeError that names it, over --repeats runs
(median and max), and how many whole batches were still served in between.
Table 2 (seek): seconds for ``seek(b)`` on a fresh pipeline (what a resumed run pays once):
it lets the prefetched batches land and refills the ring from b.

The LMDB: --lmdb (default data/sample/train_lmdb); if it is missing, synthetic 256x256 crops
of bundled photos are written to bench/.cache once.

Example:
  python bench/fault_latency.py
  python bench/fault_latency.py --repeats 20 --batch 4 64
"""
import argparse
import os
import signal
import statistics
import sys
import time

from bench import benchlib
from ltc import lmdb_io, machine


def _dead(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def kill_once(lmdb, batch, busy):
    """Seconds from SIGKILL of worker 1 to the RuntimeError, and the batches served in between."""
    from ltc.pipeline import BatchPipeline
    with BatchPipeline(lmdb, batch, workers=2, prefetch=3, seed=1701) as pipe:
        pipe.next_batch()
        victim = pipe.worker_pids[1]
        if not busy:    # let worker 1 finish what it has (batch 1), so it idles
            time.sleep(0.5 + batch * 0.02)
        os.kill(victim, signal.SIGKILL)
        while not _dead(victim):
            time.sleep(0.001)
        t0 = time.perf_counter()
        served = 0
        try:
            for _ in range(100):
                pipe.next_batch()
                served += 1
        except RuntimeError as e:
            assert "pid %d" % victim in str(e), e
            return time.perf_counter() - t0, served
    raise AssertionError("no error after 100 batches")


def seek_once(lmdb, batch, target):
    from ltc.pipeline import BatchPipeline
    with BatchPipeline(lmdb, batch, workers=2, prefetch=3, seed=1701) as pipe:
        t0 = time.perf_counter()
        pipe.seek(target)
        dt = time.perf_counter() - t0
        pipe.next_batch()
    return dt


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--lmdb", default="data/sample/train_lmdb", help="LMDB of 256x256 Datums")
    ap.add_argument("--batch", type=int, nargs="+", default=[4, 32], help="batch sizes")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="bench/results/fault_latency.csv")
    a = ap.parse_args(argv)
    print("resolved args:", vars(a), flush=True)
    lmdb = benchlib.ensure_lmdb(a.lmdb)
    try:  # a damaged LMDB is a message here, not a traceback from a worker
        lmdb_io.open_lmdb(lmdb, "fault_latency").close()
    except lmdb_io.LmdbError as e:
        print("fault_latency: error: %s" % e, file=sys.stderr)
        raise SystemExit(2)
    print(machine.machine_line(), "load average %.1f" % (benchlib.load_avg() or 0), flush=True)
    rows = []
    for batch in a.batch:
        for busy in (False, True):
            runs = [kill_once(lmdb, batch, busy) for _ in range(a.repeats)]
            lat = [r[0] for r in runs]
            rows.append(dict(table="kill", batch=batch, state="busy" if busy else "idle", repeats=a.repeats,
                             median_s=statistics.median(lat), max_s=max(lat),
                             served=max(r[1] for r in runs)))
    benchlib.print_table(rows, [("batch", "batch", 0), ("state", "worker when killed", 0), ("repeats", "runs", 0),
                          ("median_s", "kill -> error median s", 3), ("max_s", "max s", 3),
                          ("served", "whole batches served before (max)", 0)],
                   title="Table 1: a SIGKILLed data worker -> RuntimeError naming it (2 workers, prefetch 3)")
    seeks = []
    for batch in a.batch:
        dts = [seek_once(lmdb, batch, 350000 * 1) for _ in range(a.repeats)]
        seeks.append(dict(table="seek", batch=batch, repeats=a.repeats, median_s=statistics.median(dts),
                          max_s=max(dts)))
    benchlib.print_table(seeks, [("batch", "batch", 0), ("repeats", "runs", 0), ("median_s", "seek median s", 3),
                           ("max_s", "max s", 3)],
                   title="Table 2: seek(350000) on a fresh pipeline (the one-time cost of a resume)")
    benchlib.write_csv(rows + seeks, a.out, ["table", "batch", "state", "repeats", "median_s", "max_s", "served"])
    return rows + seeks


if __name__ == "__main__":
    main()
