#!/usr/bin/env python3
"""How reliably does the CPU demo count, and with which start? Trains the demo (prototxt/demo: the
small-scale recipe on the Fashion scenes) for a grid of arms x seeds and runs the demo's count-check
on each run: Spearman of |phi| with k on 500 scenes, the least-squares read-out fitted on the train
scenes, live fc8 units.

    python tools/demo_seeds.py --seeds 1701 1702 1703                  # the recipe (arm "demo")
    python tools/demo_seeds.py --arms control small adam --seeds 1701 1702 --max-iter 100 \\
        --eval select --out runs/start_screen                          # a cheap screen
    python tools/demo_seeds.py --arms small --seeds 1701 1702 1703 1704 1705 --eval select val \\
        --out runs/start_grid                                          # full length, both sets
    python tools/demo_seeds.py --arms "mine:fc8_std=0.004,warmup=50" --seeds 1701   # an arm of your own
    python tools/demo_seeds.py --seeds 1702 --max-iter 1200 --out runs/demo_seeds_1200 \\
        --resume-from runs/demo_seeds        # continue each seed's 600-iteration run to 1200

An arm is a named set of overrides of the demo's configuration (ltc/nets.py VARIANTS "demo"; the
start options of tools/make_prototxt.py: fc_bias, fc8_bias, fc8_std, warmup, solver_type, base_lr,
...): one of ARMS below, or NAME:key=value,key=value. A seed sets the solver's random_seed (weight
init) and the data stream's (crops, interpolation, partners), as `make_prototxt.py --seed` does.

Choosing and reporting are kept apart (issue 26): --eval select scores each run on a selection set
of scenes made with another seed (SELECT below; made by `python data_prep/fashion_scenes.py --what
scenes --seed 26 --train-scenes 1 --val-scenes 500 --out-dir data/fashion_select`), and the TEST
net of every grid run reads that set too; --eval val scores on data/fashion/scenes_val_lmdb, the
split the README reports. A run "counts" when Spearman >= 0.95 and the read-out is within +-1 for
>= 90 % of the scenes.

Each run's nets, log, snapshot and count-checks go to OUT/ARM/sSEED; a run whose count-checks are
there is not redone, a trained one is only evaluated, so a stopped grid resumes by rerunning the
command. --resume-from DIR continues each run from its latest snapshot in DIR/ARM/sSEED (or
DIR/sSEED, the layout of this tool's earlier version) instead of training from iteration 0: same
data stream, same solver state, so the result is that of one longer run. One table per arm goes to
OUT/ARM/summary.md, the arms side by side to OUT/summary.md and stdout.
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

from ltc import REPO, cli_checks
from ltc import machine
from ltc import knobs, nets
from ltc import snapshots
from ltc.analysis import caffelog

SELECT = "data/fashion_select/scenes_val_lmdb"
VAL = "data/fashion/scenes_val_lmdb"
FIT = "data/fashion/scenes_train_lmdb"
EVALS = {"select": SELECT, "val": VAL}
# Success of one run (issue 26): the norm orders the scenes by count and the read-out is usable.
MIN_SPEARMAN, MIN_WITHIN1 = 0.95, 0.90

# The arms (docs/design.md, "The start"; docs/study/start_grid.md has their measurements). Each is the
# control (the demo's start before issue 26: fc biases 0.1, Xavier fc8, SGD, no warm-up) with its
# changes, so that an arm means the same whatever prototxt/demo holds; "demo" is prototxt/demo itself.
CONTROL = dict(fc_bias=0.1, fc8_bias=0.1, fc8_std=None, warmup=0, solver_type="SGD", base_lr=1e-4)
ARMS = {
    "demo": {},
    "control": dict(CONTROL),
    # Xavier with zero fc biases (the TF re-implementation's init), SGD
    "bias0": dict(CONTROL, fc_bias=0.0, fc8_bias=0.0),
    # small-output start: zero fc biases, fc8 ~ N(0, 0.005^2): |phi|^2 near M = 10 at iteration 0
    "small": dict(CONTROL, fc_bias=0.0, fc8_bias=0.0, fc8_std=0.005),
    # smaller still: |phi|^2 about 1.5, inside the hinge's working range from the first step
    "small2": dict(CONTROL, fc_bias=0.0, fc8_bias=0.0, fc8_std=0.002),
    # the control with a warm-up to the recipe's lr (1e-4, not beyond) over 100 iterations
    "warmup": dict(CONTROL, warmup=100),
    # the TF re-implementation: Xavier, zero biases, Adam at lr 1e-4 (a departure)
    "adam": dict(CONTROL, fc_bias=0.0, fc8_bias=0.0, solver_type="Adam"),
}


class GridError(Exception):
    pass


def parse_arm(text):
    """NAME (one of ARMS) or NAME:key=value,... (keys of ltc/nets.py DEFAULTS) -> (name, overrides)."""
    name, _, spec = text.partition(":")
    if not name or "/" in name or name.startswith("."):
        raise argparse.ArgumentTypeError("arm %r: a name (letters, digits, _-) is needed" % text)
    if not spec:
        if name not in ARMS:
            raise argparse.ArgumentTypeError("unknown arm %r (known: %s; or NAME:key=value,...)"
                                             % (name, ", ".join(ARMS)))
        return name, dict(ARMS[name])
    over = {}
    for item in spec.split(","):
        key, eq, value = item.partition("=")
        if not eq or key not in nets.DEFAULTS:
            raise argparse.ArgumentTypeError("arm %r: %r is not key=value with a key of ltc/nets.py DEFAULTS"
                                             % (text, item))
        try:
            over[key] = json.loads(value)
        except ValueError:
            over[key] = value
        try:   # the knob's kind and range (ltc/knobs.py: finite, in range), as make_prototxt checks them
            over[key] = knobs.NET[key].accept(over[key])
        except knobs.KnobError as e:
            raise argparse.ArgumentTypeError("arm %r: %s %s" % (text, key, e))
    return name, over


def demo_config(seed, max_iter, folder, overrides=None, val_lmdb=None, snapshot=None):
    """The demo's configuration with this arm's overrides, seed, length and snapshot folder."""
    cfg = dict(dict(nets.VARIANTS)["demo"], **(overrides or {}))
    cfg.update(seed=seed, max_iter=max_iter, snapshot=snapshot or max_iter,
               snapshot_prefix=os.path.join(folder, "counting_demo"))
    if val_lmdb:
        cfg["val_lmdb"] = val_lmdb
    return cfg


def write_nets(seed, max_iter, folder, overrides=None, val_lmdb=None, snapshot=None):
    """Writes train_val and solver for one run into folder; returns the solver's path (relative to
    the repository, where caffe runs)."""
    cfg = demo_config(seed, max_iter, folder, overrides, val_lmdb, snapshot)
    files = nets.render(cfg, "demo", command="tools/demo_seeds.py")
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


def log_figures(folder):
    """From a run's train.log: the first and last TEST pass (count_term, norm_dx, hinge_active), or {}."""
    path = os.path.join(REPO, folder, "train.log")
    if not os.path.isfile(path):
        return {}
    tests = [r for r in caffelog.parse_caffe_log(open(path, errors="replace").read())["test"] if "test_loss" in r]
    if not tests:
        return {}
    pick = lambda r: {k[5:]: r.get(k) for k in ("test_loss", "test_count_term", "test_norm_dx", "test_hinge_active")}
    return dict(first=dict(iteration=tests[0]["iteration"], **pick(tests[0])),
                last=dict(iteration=tests[-1]["iteration"], **pick(tests[-1])))


def run_row(seed, folder, ev):
    """The figures of one finished run on eval set ``ev`` ("select" or "val"), or None."""
    path = os.path.join(REPO, folder, "count_check_" + ev, "count_check.json")
    if not os.path.isfile(path):
        return None
    cc = json.load(open(path))
    wall = os.path.join(REPO, folder, "wall_s.txt")
    cm = cc.get("count_map") or {}
    units = cc.get("units") or {}
    row = dict(seed=seed, spearman=cc["spearman"], exact=cm.get("exact", float("nan")),
               within1=cm.get("within1", float("nan")), norm0=cc["per_count"][0]["mean"],
               norm16=cc["per_count"][-1]["mean"], live=units.get("live"), sq_norm=units.get("sq_norm_mean"),
               amplitude=(cc.get("amplitude") or {}).get("mean_spearman"),
               wall=float(open(wall).read()) if os.path.isfile(wall) else float("nan"), log=log_figures(folder))
    row["counts"] = bool(row["spearman"] >= MIN_SPEARMAN and row["within1"] >= MIN_WITHIN1)
    return row


def _changes(overrides):
    """An arm's overrides as text: those that differ from the control, or the control's name."""
    if not overrides:
        return "the demo recipe (prototxt/demo)"
    diff = {k: v for k, v in overrides.items() if k not in CONTROL or CONTROL[k] != v}
    if set(CONTROL) <= set(overrides):
        return ", ".join("%s=%s" % kv for kv in sorted(diff.items())) or "control (the old start)"
    return ", ".join("%s=%s" % kv for kv in sorted(overrides.items()))


def _f(v, fmt="%.3f"):
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt % v


def arm_stats(rows):
    """Success rate, median and worst Spearman, median live units, median train s of an arm's rows."""
    sp = [r["spearman"] for r in rows]
    live = [r["live"] for r in rows if r["live"] is not None]
    return dict(n=len(rows), success=sum(r["counts"] for r in rows), median=statistics.median(sp), worst=min(sp),
                live=statistics.median(live) if live else None,
                wall=statistics.median([r["wall"] for r in rows]))


def arm_table(arm, overrides, rows, ev, max_iter, threads, source=None):
    lines = ["demo_seeds: arm %s (%s), %d iterations, %d BLAS threads, on %s (%s); %s"
             % (arm, _changes(overrides), max_iter,
                threads, ev, source or EVALS[ev], machine.machine_line()), "",
             "| seed | Spearman(\\|phi\\|, k) | read-out exact / +-1 | counts | live fc8 units | \\|phi\\|^2 mean "
             "| mean norm k=0 / k=16 | first TEST (it.): count term, \\|phi(Dx)\\| | last TEST: hinge active, \\|phi(Dx)\\| "
             "| train s (this run; a resumed run: its own leg) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        first, last = r["log"].get("first", {}), r["log"].get("last", {})
        lines.append("| %d | %.3f | %.1f %% / %.1f %% | %s | %s | %s | %.2f / %.2f | (%s) %s, %s | %s %%, %s (it. %s) | %.0f |"
                     % (r["seed"], r["spearman"], 100 * r["exact"], 100 * r["within1"], "yes" if r["counts"] else "no",
                        _f(r["live"], "%d"), _f(r["sq_norm"], "%.3g"), r["norm0"], r["norm16"],
                        first.get("iteration", "-"), _f(first.get("count_term"), "%.4g"), _f(first.get("norm_dx"), "%.3g"),
                        _f(None if last.get("hinge_active") is None else 100 * last["hinge_active"], "%.0f"),
                        _f(last.get("norm_dx"), "%.3g"), last.get("iteration", "-"), r["wall"]))
    if rows:
        s = arm_stats(rows)
        lines += ["", "%s: counts in %d of %d seeds (Spearman >= %.2f and +-1 >= %.0f %%); Spearman median %.3f, "
                      "worst %.3f; live fc8 units median %s" % (arm, s["success"], s["n"], MIN_SPEARMAN,
                                                                 100 * MIN_WITHIN1, s["median"], s["worst"],
                                                                 _f(s["live"], "%g"))]
    return "\n".join(lines)


def grid_table(results, ev, max_iter, threads, source=None):
    lines = ["demo_seeds grid: %d iterations, %d BLAS threads, on %s (%s); %s"
             % (max_iter, threads, ev, source or EVALS[ev], machine.machine_line()), "",
             "| arm | overrides | seeds | counts | Spearman median / worst | live fc8 units (median) | train s (median) "
             "| TEST it. 0 count term (median) | last TEST hinge active (median) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for arm, overrides, rows in results:
        if not rows:
            continue
        s = arm_stats(rows)
        first = [r["log"]["first"]["count_term"] for r in rows if r["log"].get("first", {}).get("iteration") == 0
                 and r["log"]["first"].get("count_term") is not None]
        hinge = [r["log"]["last"]["hinge_active"] for r in rows if r["log"].get("last", {}).get("hinge_active") is not None]
        lines.append("| %s | %s | %s | %d of %d | %.3f / %.3f | %s | %.0f | %s | %s |"
                     % (arm, _changes(overrides),
                        " ".join(str(r["seed"]) for r in rows), s["success"], s["n"], s["median"], s["worst"],
                        _f(s["live"], "%g"), s["wall"], _f(statistics.median(first) if first else None, "%.4g"),
                        _f(100 * statistics.median(hinge) if hinge else None, "%.0f %%")))
    return "\n".join(lines)


def train(seed, folder, a, overrides, env):
    """Trains one run (or continues it from its latest snapshot); writes wall_s.txt."""
    final = os.path.join(REPO, folder, "counting_demo_iter_%d.caffemodel" % a.max_iter)
    if os.path.isfile(final):
        return
    os.makedirs(os.path.join(REPO, folder), exist_ok=True)
    solver = write_nets(seed, a.max_iter, folder, overrides, a.evals["select"] if "select" in a.eval else None,
                        a.snapshot)
    argv = [a.caffe, "train", "-solver", solver]
    state = latest_state(folder, a.max_iter)            # a stopped run of this grid
    if state is None and a.resume_from:
        for cand in (os.path.join(a.resume_from, os.path.basename(os.path.dirname(folder)), "s%d" % seed),
                     os.path.join(a.resume_from, "s%d" % seed)):
            state = latest_state(cand, a.max_iter)
            if state:
                break
        else:
            raise GridError("seed %d: no snapshot below iteration %d in %s" % (seed, a.max_iter, a.resume_from))
    if state:
        argv += ["-snapshot", state]
    print("  %s: %s" % (folder, " ".join(argv[1:])), flush=True)
    t0 = time.time()
    with open(os.path.join(REPO, folder, "train.log"), "a" if state else "w") as log:
        rc = subprocess.call(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    if rc:
        raise GridError("seed %d: caffe train exited with %d; see %s" % (seed, rc, os.path.join(folder, "train.log")))
    prev = os.path.join(REPO, folder, "wall_s.txt")
    before = float(open(prev).read()) if state and os.path.isfile(prev) else 0.0
    with open(prev, "w") as f:
        f.write("%.1f\n" % (before + time.time() - t0))


def evaluate(folder, ev, a, env):
    out = os.path.join(folder, "count_check_" + ev)
    if os.path.isfile(os.path.join(REPO, out, "count_check.json")):
        return
    argv = [sys.executable, os.path.join(REPO, "tools", "analyze.py"), "count-check",
            "--weights", os.path.join(folder, "counting_demo_iter_%d.caffemodel" % a.max_iter),
            "--source", a.evals[ev], "--max-images", str(a.max_images), "--fit-source", a.fit_source,
            "--fit-max-images", str(a.fit_max_images), "--out", out]
    with open(os.path.join(REPO, folder, "count_check_%s.log" % ev), "w") as log:
        rc = subprocess.call(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    if rc:
        raise GridError("count-check of %s on %s exited with %d; see %s/count_check_%s.log" % (folder, ev, rc, folder, ev))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--arms", type=parse_arm, nargs="+", default=[("demo", {})],
                    help="arms: %s, or NAME:key=value,..." % ", ".join(ARMS))
    ap.add_argument("--seeds", type=cli_checks.int_range(0, 2 ** 31 - 1), nargs="+", required=True)
    ap.add_argument("--max-iter", type=cli_checks.int_range(1), default=dict(nets.VARIANTS)["demo"]["max_iter"])
    ap.add_argument("--snapshot", type=cli_checks.int_range(1), default=None, help="snapshot interval (default: only at --max-iter)")
    ap.add_argument("--eval", nargs="+", choices=sorted(EVALS), default=["val"],
                    help="score on the selection set (choosing) and/or the val scenes (reporting)")
    ap.add_argument("--threads", type=cli_checks.int_range(1, 256), default=2, help="OPENBLAS_NUM_THREADS of each run")
    ap.add_argument("--out", default="runs/demo_seeds")
    ap.add_argument("--resume-from", metavar="DIR", help="continue each run from its latest snapshot in DIR")
    ap.add_argument("--max-images", type=cli_checks.int_range(1), default=500, help="scenes of each eval set scored")
    ap.add_argument("--fit-source", default=FIT, help="scenes the read-out is fitted on")
    ap.add_argument("--fit-max-images", type=cli_checks.int_range(1), default=2000)
    ap.add_argument("--caffe", default=os.path.join(REPO, ".venv", "bin", "caffe"))
    ap.add_argument("--data", nargs=3, metavar=("TRAIN", "SELECT", "VAL"), default=None,
                    help="other LMDBs for the train scenes, the selection set and the val set (tests)")
    a = ap.parse_args(argv)
    a.evals = dict(EVALS)
    if a.data:
        a.evals.update(select=a.data[1], val=a.data[2])
        a.fit_source = a.data[0]
    train_lmdb = a.data[0] if a.data else dict(nets.VARIANTS)["demo"]["train_lmdb"]
    needs = [train_lmdb, a.fit_source] + [a.evals[e] for e in a.eval]
    for need in needs:
        if not os.path.isfile(os.path.join(REPO, need, "data.mdb")):
            ap.error("%s is missing: build the data first (make study-data%s)"
                     % (need, "; the selection set: see this tool's docstring" if need == a.evals["select"] else ""))
    names = [n for n, _ in a.arms]
    if len(set(names)) != len(names):
        ap.error("arm names must differ: %s" % " ".join(names))
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(a.threads))
    if "avx512f" in machine.cpu_flags():
        env.pop("OPENBLAS_CORETYPE", None)   # as make demo does on an AVX-512 CPU
    results = {ev: [] for ev in a.eval}
    try:
        for arm, overrides in a.arms:
            if a.data:
                overrides = dict(overrides, train_lmdb=train_lmdb)
            rows = {ev: [] for ev in a.eval}
            for seed in a.seeds:
                folder = os.path.join(a.out, arm, "s%d" % seed)
                if not all(run_row(seed, folder, ev) for ev in a.eval):
                    train(seed, folder, a, overrides, env)
                    for ev in a.eval:
                        evaluate(folder, ev, a, env)
                for ev in a.eval:
                    r = run_row(seed, folder, ev)
                    rows[ev].append(r)
                    print("%s seed %d on %s: Spearman %.3f, read-out %.1f %% / %.1f %%, live units %s -> %s"
                          % (arm, seed, ev, r["spearman"], 100 * r["exact"], 100 * r["within1"], _f(r["live"], "%d"),
                             "counts" if r["counts"] else "does not count"), flush=True)
            shown = {k: v for k, v in overrides.items() if k != "train_lmdb"}
            with open(os.path.join(REPO, a.out, arm, "summary.md"), "w") as f:
                f.write("\n\n".join(arm_table(arm, shown, rows[ev], ev, a.max_iter, a.threads, a.evals[ev])
                                      for ev in a.eval) + "\n")
            for ev in a.eval:
                results[ev].append((arm, shown, rows[ev]))
    except GridError as e:
        print("demo_seeds: %s" % e, file=sys.stderr)
        return 1
    text = "\n\n".join(grid_table(results[ev], ev, a.max_iter, a.threads, a.evals[ev]) for ev in a.eval)
    print(text)
    with open(os.path.join(REPO, a.out, "summary.md"), "w") as f:
        f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
