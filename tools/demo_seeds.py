#!/usr/bin/env python3
"""How reliably does the CPU demo's recipe count? Trains the demo (prototxt/demo: the small-scale
recipe on the Fashion scenes) once per seed and runs the demo's count-check on each: Spearman of
|phi| with k on 500 val scenes and the least-squares read-out fitted on the train scenes.

    python tools/demo_seeds.py --seeds 1701 1702 1703            # 600 iterations, 2 BLAS threads
    python tools/demo_seeds.py --seeds 1701 1702 --max-iter 900 --out runs/demo_seeds_900
    python tools/demo_seeds.py --seeds 1702 --max-iter 1200 --out runs/demo_seeds_1200 \
        --resume-from runs/demo_seeds        # continue each seed's 600-iteration run to 1200

A seed sets the solver's random_seed (weight init) and the data stream's (crops, interpolation,
partners), as `make_prototxt.py --seed` does; everything else is the demo's configuration
(ltc/nets.py VARIANTS "demo"). Each seed's nets, log, snapshot and count-check go to OUT/sSEED; a
seed whose count-check is already there is not trained again, so a stopped run resumes by
rerunning the command. --resume-from DIR continues each seed from its latest snapshot in DIR/sSEED
(a shorter run of this tool) instead of training from iteration 0: same data stream, same
solver state, so the result is that of one longer run. The table goes to stdout and
OUT/summary.md.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from ltc import REPO, cli_checks
from ltc import bench
from ltc import nets
from ltc import snapshots


def demo_config(seed, max_iter, folder):
    """The demo's overrides with this seed, length and snapshot folder."""
    return dict(dict(nets.VARIANTS)["demo"], seed=seed, max_iter=max_iter, snapshot=max_iter,
                snapshot_prefix=os.path.join(folder, "counting_demo"))


def write_nets(seed, max_iter, folder):
    """Writes train_val and solver for one seed into folder; returns the solver's path (relative to
    the repository, where caffe runs)."""
    files = nets.render(demo_config(seed, max_iter, folder), "demo", command="tools/demo_seeds.py")
    solver = None
    for rel, text in files.items():
        name = os.path.basename(rel)
        # the solver names its net by path: point it at this folder's copy
        text = text.replace("prototxt/demo/train_val.prototxt", os.path.join(folder, "train_val.prototxt"))
        with open(os.path.join(REPO, folder, name), "w") as f:
            f.write(text)
        if name == "solver.prototxt":
            solver = os.path.join(folder, name)
    return solver


def latest_state(folder, below):
    """Path (relative to the repository) of the latest solverstate in folder before iteration
    `below`, or None."""
    for n, path in snapshots.list_snapshots(os.path.join(REPO, folder, "counting_demo")):   # newest first
        if n < below:
            return os.path.relpath(path, REPO)
    return None


def summary_row(seed, folder):
    """(seed, Spearman, exact, within1, wall s) from a finished seed's files, or None."""
    path = os.path.join(REPO, folder, "count_check", "count_check.json")
    if not os.path.isfile(path):
        return None
    cc = json.load(open(path))
    wall = os.path.join(REPO, folder, "wall_s.txt")
    return dict(seed=seed, spearman=cc["spearman"], exact=cc["count_map"]["exact"],
                within1=cc["count_map"]["within1"],
                norm0=cc["per_count"][0]["mean"], norm16=cc["per_count"][-1]["mean"],
                wall=float(open(wall).read()) if os.path.isfile(wall) else float("nan"))


def table(rows, max_iter, threads):
    lines = ["demo_seeds: the demo recipe, %d iterations, %d BLAS threads, one run per seed; %s"
             % (max_iter, threads, bench.machine_line()), "",
             "| seed | Spearman(\\|phi\\|, k), 500 val scenes | read-out exact / +-1 | mean norm k=0 / k=16 | train s |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append("| %d | %.3f | %.1f %% / %.1f %% | %.2f / %.2f | %.0f |"
                     % (r["seed"], r["spearman"], 100 * r["exact"], 100 * r["within1"], r["norm0"], r["norm16"], r["wall"]))
    if len(rows) > 1:
        sp = [r["spearman"] for r in rows]
        lines += ["", "Spearman: median %.3f, min %.3f, max %.3f; %d of %d seeds >= 0.9"
                  % (statistics.median(sp), min(sp), max(sp), sum(v >= 0.9 for v in sp), len(sp))]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--seeds", type=cli_checks.int_range(0, 2 ** 31 - 1), nargs="+", required=True)
    ap.add_argument("--max-iter", type=int, default=dict(nets.VARIANTS)["demo"]["max_iter"])
    ap.add_argument("--threads", type=int, default=2, help="OPENBLAS_NUM_THREADS of each run")
    ap.add_argument("--out", default="runs/demo_seeds")
    ap.add_argument("--resume-from", metavar="DIR", help="continue each seed from its latest snapshot in DIR/sSEED")
    a = ap.parse_args(argv)
    for need in ("data/fashion/scenes_train_lmdb", "data/fashion/scenes_val_lmdb"):
        if not os.path.isfile(os.path.join(REPO, need, "data.mdb")):
            ap.error("%s is missing: build the data first (make study-data)" % need)
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(a.threads))
    if "avx512f" in bench.cpu_flags():
        env.pop("OPENBLAS_CORETYPE", None)   # as make demo does on an AVX-512 CPU
    rows = []
    for seed in a.seeds:
        folder = os.path.join(a.out, "s%d" % seed)
        row = summary_row(seed, folder)
        if row is None:
            os.makedirs(os.path.join(REPO, folder), exist_ok=True)
            solver = write_nets(seed, a.max_iter, folder)
            argv_ = [os.path.join(REPO, ".venv", "bin", "caffe"), "train", "-solver", solver]
            if a.resume_from:
                state = latest_state(os.path.join(a.resume_from, "s%d" % seed), a.max_iter)
                if state is None:
                    raise SystemExit("seed %d: no snapshot below iteration %d in %s/s%d"
                                     % (seed, a.max_iter, a.resume_from, seed))
                argv_ += ["-snapshot", state]
            print("seed %d: %s" % (seed, " ".join(argv_[1:])), flush=True)
            t0 = time.time()
            with open(os.path.join(REPO, folder, "train.log"), "w") as log:
                rc = subprocess.call(argv_, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
            if rc:
                raise SystemExit("seed %d: caffe train exited with %d; see %s" % (seed, rc, os.path.join(folder, "train.log")))
            with open(os.path.join(REPO, folder, "wall_s.txt"), "w") as f:
                f.write("%.1f\n" % (time.time() - t0))
            subprocess.check_call([sys.executable, os.path.join(REPO, "tools", "analyze.py"), "count-check",
                                   "--weights", os.path.join(folder, "counting_demo_iter_%d.caffemodel" % a.max_iter),
                                   "--source", "data/fashion/scenes_val_lmdb", "--max-images", "500",
                                   "--fit-source", "data/fashion/scenes_train_lmdb",
                                   "--out", os.path.join(folder, "count_check")], cwd=REPO, env=env,
                                  stdout=open(os.path.join(REPO, folder, "count_check.log"), "w"),
                                  stderr=subprocess.STDOUT)
            row = summary_row(seed, folder)
        rows.append(row)
        print("seed %d: Spearman %.3f, read-out %.1f %% / %.1f %%" % (seed, row["spearman"], 100 * row["exact"],
                                                                     100 * row["within1"]), flush=True)
    text = table(rows, a.max_iter, a.threads)
    print(text)
    with open(os.path.join(REPO, a.out, "summary.md"), "w") as f:
        f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
