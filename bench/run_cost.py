#!/usr/bin/env python3
"""Wall time of a finished counting run, phase by phase, from its caffe log (a table + CSV).

    python bench/run_cost.py runs/demo/train.log            # the last `make demo`
    python bench/run_cost.py runs/study/main/train.log runs/study/linear/train.log

For each log: iterations trained, wall time from the first to the last glog line, the time spent
in test passes (from "Testing net" to the following "Iteration" line), seconds per training
iteration without the tests, and the machine's load average when the script runs (the logs
carry no load: the numbers are only comparable between runs made on the same, equally busy
machine). Writes bench/results/run_cost.csv.
"""
import argparse
import csv
import os
import re
import sys

from ltc import REPO
from ltc.analysis import caffelog

_TS = re.compile(r"^[IWEF](\d{4}|\d{8}) (\d\d):(\d\d):(\d\d)\.(\d+)")


def phases(text):
    """dict(iterations, wall_s, test_s, test_passes, s_per_iter) of one caffe training log."""
    times, test_s, passes, in_test = [], 0.0, 0, None
    for line in text.splitlines():
        m = caffelog._GLOG.match(line)
        if not m:
            continue
        t = caffelog._glog_seconds(m)
        times.append(t)
        msg = m.group(6)
        if "Testing net" in msg:
            in_test, passes = t, passes + 1
        elif in_test is not None and re.search(r"Iteration \d+ \(|Optimization Done|Snapshotting", msg):
            test_s += t - in_test
            in_test = None
    res = caffelog.parse_caffe_log(text)
    its = [r["iteration"] for r in res["train"]]
    first = min(its) if its else 0
    last = max(its) if its else 0
    wall = times[-1] - times[0] if times else 0.0
    n = max(last - first, 1)
    return dict(iterations=last - first, first_iteration=first, wall_s=wall, test_s=test_s, test_passes=passes,
                s_per_iter=(wall - test_s) / n)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("logs", nargs="+", help="caffe training logs (stderr of caffe train)")
    ap.add_argument("--csv", default=os.path.join(REPO, "bench", "results", "run_cost.csv"), help="CSV output")
    args = ap.parse_args(argv)
    rows = []
    for path in args.logs:
        if not os.path.isfile(path):
            print("run_cost: '%s' does not exist" % path, file=sys.stderr)
            return 2
        with open(path, errors="replace") as f:
            r = phases(f.read())
        r["log"] = path
        rows.append(r)
    load = " ".join(open("/proc/loadavg").read().split()[:3]) if os.path.exists("/proc/loadavg") else "?"
    print("%-34s %10s %9s %9s %7s %9s" % ("log", "iterations", "wall", "tests", "passes", "s/iter"))
    for r in rows:
        print("%-34s %10s %8.0fs %8.0fs %7d %9.2f" % (r["log"][-34:], "%d-%d" % (r["first_iteration"],
              r["first_iteration"] + r["iterations"]), r["wall_s"], r["test_s"], r["test_passes"], r["s_per_iter"]))
    print("(load average now: %s; a shared machine inflates every number)" % load)
    os.makedirs(os.path.dirname(os.path.abspath(args.csv)), exist_ok=True)
    with open(args.csv, "w", newline="") as f:
        w = csv.DictWriter(f, ["log", "first_iteration", "iterations", "wall_s", "test_s", "test_passes", "s_per_iter"])
        w.writeheader()
        for r in rows:
            w.writerow(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
