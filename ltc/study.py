"""The reproduction study: train the small-scale counting nets, evaluate them, write a report.

Stages (tools/reproduce.py runs them in order; each can be run alone):

  data      data/fashion (scenes, items), data/photos (42 real photos shipped in Python
            packages: 34 train / 8 held out), data/study/train_lmdb (the 2,000 train scenes
            plus the 34 train photos repeated PHOTO_REPEAT times), the few-labels probe set
  train     the RUNS below with ``caffe train``, resumed from the newest snapshot of each run
            folder, with a progress line per run every ``poll`` seconds
  evaluate  count-check (+ the least-squares count map), loss terms at the end, TEST loss on the
            held-out photos, mean-vector sparsity on them, linear probe against random init
            (same probe, data and seeds), Table 5 (mixed vs single-method), training curves
  report    OUT/report.md with every number, the goals it meets or misses, the PNGs

Every number comes from a command of this repository (tools/analyze.py, tools/port_weights.py,
tools/linear_probe.py) run as a subprocess; the command lines are kept in OUT/commands.txt.
"""
import glob
import json
import textwrap
import os
import re
import subprocess
import sys
import time

from ltc import nets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCENES_TRAIN = "data/fashion/scenes_train_lmdb"
SCENES_VAL = "data/fashion/scenes_val_lmdb"
ITEMS_TRAIN = "data/fashion/items_train_lmdb"
ITEMS_VAL = "data/fashion/items_val_lmdb"
PHOTOS_TRAIN = "data/photos/train_lmdb"
PHOTOS_TEST = "data/photos/val_lmdb"          # held out: never in a training LMDB
STUDY_TRAIN = "data/study/train_lmdb"
PROBE_TRAIN = "data/study/items_%d_per_class_lmdb"
PHOTO_REPEAT = 8        # 34 photos x 8 = 272 of 2,272 samples (12 %): ~4 photos in a batch of 32
PROBE_PER_CLASS = 20    # few labels: 20 Fashion items per class (200 training images)

# The committed nets (ltc/nets.py VARIANTS "study/main", "study/linear").
RUNS = (("main", "prototxt/study/main/solver.prototxt"),
        ("linear", "prototxt/study/linear/solver.prototxt"))
# Table 5's single-method run branches off the main run: it starts from main's snapshot
# STUDY_SINGLE_METHOD_ITERS before the end (the same weights and solver state) and trains on with
# bilinear downsampling only, for as many iterations as main trains on with a random method per
# batch. The two rows then differ only in the downsampling of their last leg: cheap on 2 cores,
# and a controlled comparison.
BRANCHES = {"linear": ("main", nets.STUDY_ITERS - nets.STUDY_SINGLE_METHOD_ITERS)}

TRAJECTORY_EVERY = 500  # iterations between the snapshots of the norm trajectory

GOALS = dict(spearman=0.97, exact=0.80, within1=0.95, probe_margin=3.0)


class StudyError(Exception):
    """A stage cannot run (missing input, failed command); the message says which."""


# ----------------------------------------------------------------------------- commands
class Runner:
    """Runs the repository's commands from the repository root, logging each command line."""

    def __init__(self, out, python=sys.executable, caffe=None, dry=False, reuse=True):
        self.out = out
        self.python = python
        self.caffe = caffe or os.path.join(REPO, ".venv", "bin", "caffe")
        self.dry = dry
        self.reuse = reuse
        if not dry:  # a dry run writes nothing
            os.makedirs(out, exist_ok=True)
        self.log_path = os.path.join(out, "commands.txt")

    def note(self, argv):
        line = " ".join(argv).replace(REPO + "/", "")
        if not self.dry:
            with open(self.log_path, "a") as f:
                f.write(line + "\n")
        print("$ " + line, flush=True)
        return line

    def run(self, argv, log=None, env=None):
        self.note(argv)
        if self.dry:
            return ""
        e = dict(os.environ, **(env or {}))
        res = subprocess.run(argv, cwd=REPO, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if log:
            with open(log, "w") as f:
                f.write(res.stdout)
        if res.returncode:
            raise StudyError("command failed (exit %d): %s\n%s" % (res.returncode, " ".join(argv),
                                                                   res.stdout[-3000:]))
        return res.stdout

    def tool(self, script, *args, log=None, done=None):
        """Run a repository command; with ``done`` (the file it writes last), skip it when that file
        is newer than every existing file among the arguments (an earlier evaluation of the same inputs)."""
        argv = [self.python, os.path.join(REPO, script)] + [str(a) for a in args]
        if done and self.reuse and not self.dry:
            d = os.path.join(REPO, done)
            inputs = [os.path.join(REPO, a) for a in argv[2:]
                      if os.path.isfile(os.path.join(REPO, a)) and os.path.join(REPO, a) != d]
            if os.path.isfile(d) and all(os.path.getmtime(d) > os.path.getmtime(i) for i in inputs):
                self.note(argv + ["# reused " + done])
                return ""
        return self.run(argv, log=log)


# ----------------------------------------------------------------------------- data
def prepare_data(runner, photo_repeat=PHOTO_REPEAT, per_class=PROBE_PER_CLASS):
    from ltc import mixdata
    if not os.path.isfile(os.path.join(REPO, SCENES_TRAIN, "data.mdb")):
        runner.tool("data_prep/fashion_scenes.py")
    if not os.path.isfile(os.path.join(REPO, PHOTOS_TRAIN, "data.mdb")):
        runner.tool("data_prep/embedded.py", "--set", "all")
    study = os.path.join(REPO, STUDY_TRAIN)
    if not os.path.isfile(os.path.join(study, "data.mdb")):
        runner.note(["ltc.mixdata.mix_lmdbs", SCENES_TRAIN, "+", PHOTOS_TRAIN, "x%d" % photo_repeat, "->", STUDY_TRAIN])
        if not runner.dry:
            print(mixdata.mix_lmdbs([("scenes", os.path.join(REPO, SCENES_TRAIN), 1),
                                     ("photos", os.path.join(REPO, PHOTOS_TRAIN), photo_repeat)], study))
    probe = os.path.join(REPO, PROBE_TRAIN % per_class)
    if not os.path.isfile(os.path.join(probe, "data.mdb")):
        runner.note(["ltc.mixdata.subset_per_class", ITEMS_TRAIN, str(per_class), "->", PROBE_TRAIN % per_class])
        if not runner.dry:
            print(mixdata.subset_per_class(os.path.join(REPO, ITEMS_TRAIN), probe, per_class))
    if not runner.dry:
        check_disjoint(os.path.join(REPO, PHOTOS_TEST), study)
    return dict(study_train=STUDY_TRAIN, probe_train=PROBE_TRAIN % per_class)


def check_disjoint(test_lmdb, train_lmdb):
    """Raise StudyError if a datum of ``test_lmdb`` is byte-identical to one of ``train_lmdb``."""
    import hashlib
    import lmdb

    def digests(path):
        env = lmdb.open(path, readonly=True, lock=False)
        try:
            with env.begin() as txn:
                return {hashlib.sha1(v).hexdigest() for _, v in txn.cursor()}
        finally:
            env.close()
    shared = digests(test_lmdb) & digests(train_lmdb)
    if shared:
        raise StudyError("%d held-out test photos of %s are also in %s" % (len(shared), test_lmdb, train_lmdb))


# ----------------------------------------------------------------------------- training
def solver_settings(solver_path):
    """dict(max_iter, snapshot, snapshot_prefix, net) of a solver prototxt (text format)."""
    text = open(os.path.join(REPO, solver_path)).read()
    out = {}
    for key in ("max_iter", "snapshot", "snapshot_prefix", "net", "base_lr", "lr_policy"):
        m = re.search(r'^%s:\s*"?([^"\n]+)"?' % key, text, re.M)
        if m:
            out[key] = m.group(1)
    for key in ("max_iter", "snapshot"):
        out[key] = int(out[key])
    return out


def snapshots(prefix):
    """{iteration: caffemodel path} of the snapshots written under ``prefix``."""
    found = {}
    for path in glob.glob(os.path.join(REPO, prefix + "_iter_*.caffemodel")):
        m = re.search(r"_iter_(\d+)\.caffemodel$", path)
        if m:
            found[int(m.group(1))] = path
    return found


def latest_state(prefix):
    """(iteration, solverstate) of the newest intact snapshot pair of ``prefix`` (ltc.snapshots checks
    both files; damaged newer ones are named and skipped), or (0, None)."""
    from ltc import snapshots as snap
    found, skipped = snap.newest_intact(os.path.join(REPO, prefix))
    for path, why in skipped:
        print("skipping %s: %s" % (os.path.relpath(path, REPO), why))
    return (found[0], found[1]) if found else (0, None)


def train_command(caffe, solver_path, state=None):
    argv = [caffe, "train", "-solver", solver_path]
    if state:
        argv += ["-snapshot", os.path.relpath(state, REPO)]
    return argv


def progress_line(name, log_path, max_iter, t0):
    """'name: iteration i/max, loss l, norm n, ... eta' from the newest lines of a caffe log."""
    it, loss, diag = None, None, {}
    try:
        with open(log_path, errors="replace") as f:
            f.seek(max(0, os.path.getsize(log_path) - 20000))
            tail = f.read()
    except OSError:
        return "%s: no log yet" % name
    for m in re.finditer(r"Iteration (\d+) \([^)]*\), loss = (\S+)", tail):
        it, loss = int(m.group(1)), m.group(2)
    for m in re.finditer(r"Train net output #\d+: (\w+) = (\S+)", tail):
        diag[m.group(1)] = m.group(2)
    if it is None:
        return "%s: starting" % name
    el = time.time() - t0
    return "%s: iteration %d/%d, loss %s, count_term %s, hinge_active %s, |phi(Dx)| %s (%.0f s)" % (
        name, it, max_iter, loss, diag.get("count_term", "?"), diag.get("hinge_active", "?"),
        diag.get("norm_dx", "?"), el)


def train_runs(runner, runs=RUNS, resume=None, poll=60, threads=1, branches=None):
    """Train every run to its max_iter, in parallel (one BLAS thread each), resuming from the
    newest snapshot (or ``resume[name]``, a solverstate, when the run has none yet). A run in
    ``branches`` ({name: (parent run, iteration)}) without snapshots of its own waits for the
    parent's snapshot at that iteration and starts from it."""
    resume = dict(resume or {})
    branches = BRANCHES if branches is None else branches
    procs, waiting = [], []
    # the training log is caffe's INFO output on stderr, whatever the caller's glog settings
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), GLOG_minloglevel="0", GLOG_logtostderr="1")
    env.pop("OPENBLAS_CORETYPE", None)
    solvers = dict(RUNS)
    solvers.update(dict(runs))
    pending = list(runs)
    t0 = time.time()
    while pending or procs or waiting:
        for name, solver_path in pending:
            p = _start(runner, name, solver_path, resume, branches, waiting, env)
            if p:
                procs.append(p)
        pending = []
        for name, solver_path in list(waiting):
            parent, at = branches[name]
            state = solver_settings(solvers[parent])["snapshot_prefix"] + "_iter_%d.solverstate" % at
            if os.path.isfile(os.path.join(REPO, state)):
                waiting.remove((name, solver_path))
                resume[name] = state
                p = _start(runner, name, solver_path, resume, branches, waiting, env)
                if p:
                    procs.append(p)
        if runner.dry:
            return
        _poll(procs, waiting, t0, poll)


def _start(runner, name, solver_path, resume, branches, waiting, env):
    """Start one run's caffe train (or put it on ``waiting``); returns the process tuple or None."""
    s = solver_settings(solver_path)
    done = snapshots(s["snapshot_prefix"])
    if s["max_iter"] in done:
        print("%s: complete (%s)" % (name, os.path.relpath(done[s["max_iter"]], REPO)))
        return None
    it, state = latest_state(s["snapshot_prefix"])
    if state is None and name not in resume and name in branches:
        print("%s: waits for %s's snapshot at iteration %d, then branches off it" % ((name,) + branches[name]))
        waiting.append((name, solver_path))
        return None
    if state is None and name in resume:
        state = os.path.join(REPO, resume[name])
        if not os.path.isfile(state):
            raise StudyError("--resume %s=%s: no such solverstate" % (name, resume[name]))
        it = int(re.search(r"_iter_(\d+)\.solverstate$", state).group(1))
    log_path = os.path.join(REPO, os.path.dirname(s["snapshot_prefix"]), "train.log")
    if not runner.dry:
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
    argv = train_command(runner.caffe, solver_path, state)
    runner.note(argv + ["2>>", os.path.relpath(log_path, REPO)])
    print("%s: %s at iteration %d of %d" % (name, "resuming" if state else "starting", it, s["max_iter"]))
    if runner.dry:
        return None
    f = open(log_path, "a")
    return (name, subprocess.Popen(argv, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT),
            f, log_path, s["max_iter"], s["snapshot_prefix"])


def _poll(procs, waiting, t0, poll):
    """One round: reap finished runs (StudyError on a failure), print progress, sleep."""
    try:
        if procs or waiting:
            for proc in list(procs):
                name, p, f, log_path, max_iter, prefix = proc
                if p.poll() is not None:
                    f.close()
                    procs.remove(proc)
                    if p.returncode:
                        raise StudyError("%s: caffe train exited with %d; see %s (rerun to resume from the "
                                         "newest snapshot)" % (name, p.returncode, log_path))
                    if max_iter not in snapshots(prefix):
                        # caffe exits 0 after a Ctrl-C/SIGINT (its snapshot-and-stop): not a finished run
                        raise StudyError("%s: caffe train stopped before iteration %d (interrupted?); rerun to "
                                         "resume from the newest snapshot" % (name, max_iter))
                    print("%s: finished" % name, flush=True)
            for name, _, _, log_path, max_iter, _ in procs:
                print(progress_line(name, log_path, max_iter, t0), flush=True)
            if procs or waiting:
                time.sleep(poll)
    except BaseException:
        for _, p, f, _, _, _ in procs:   # interrupted: stop our own trainings; snapshots stay for a resume
            p.terminate()
            f.close()
        raise


# ----------------------------------------------------------------------------- evaluation
def final_model(solver_path, iteration=None):
    s = solver_settings(solver_path)
    snaps = snapshots(s["snapshot_prefix"])
    it = iteration if iteration is not None else s["max_iter"]
    if it not in snaps:
        raise StudyError("no snapshot at iteration %d for %s (have %s); train first"
                         % (it, solver_path, sorted(snaps) or "none"))
    return os.path.relpath(snaps[it], REPO), it


def _json(path):
    with open(path) as f:
        return json.load(f)


def tail_means(rows, prefix, names, last=5):
    """Mean of the last ``last`` rows' ``<prefix>_<name>`` values (the displayed train outputs)."""
    out = {}
    for n in names:
        key = "%s_%s" % (prefix, n) if prefix else n
        vals = [r[key] for r in rows if key in r][-last:]
        out[n] = sum(vals) / len(vals) if vals else None
    return out


def evaluate(runner, out, seeds=(1701, 1702), probe_iters=200, per_class=PROBE_PER_CLASS, table5_images=200,
             trajectory_images=200, trajectory_every=TRAJECTORY_EVERY, main_solver=RUNS[0][1],
             single_solver=RUNS[1][1], iteration=None, extra_prefixes=(), probe_val_images=0):
    """Every analysis of the study; returns the results dict (also OUT/results.json).

    iteration: evaluate this snapshot of the main run instead of its last one; extra_prefixes:
    snapshot prefixes of earlier legs of the main run (a --resume source) for the norm trajectory,
    which takes every snapshot up to ``trajectory_every`` iterations, then its multiples (and the
    evaluated snapshot).
    """
    res = {}
    os.makedirs(os.path.join(REPO, out), exist_ok=True)
    weights, it = final_model(main_solver, iteration)
    res["main"] = dict(weights=weights, iteration=it, solver=main_solver, partner=train_partner(main_solver))
    ms = solver_settings(main_solver)
    log_path = os.path.join(os.path.dirname(ms["snapshot_prefix"]), "train.log")
    legs = [os.path.join(os.path.dirname(p), "train.log") for p in extra_prefixes]
    if legs:   # one log for the curves: the earlier legs, then this run's (caffe resumes where they stopped)
        merged = os.path.join(out, "train_all.log")
        with open(os.path.join(REPO, merged), "w") as f:
            for leg in legs + [log_path]:
                with open(os.path.join(REPO, leg), errors="replace") as g:
                    f.write(g.read())
        runner.note(["cat"] + legs + [log_path, ">", merged])
        log_path = merged

    # curves + loss terms at the end + TEST on the held-out photos
    runner.tool("tools/analyze.py", "log", "--log", log_path, "--out", os.path.join(out, "log"))
    lg = _json(os.path.join(REPO, out, "log", "log.json"))
    names = ("loss", "count_term", "contrast_term", "hinge_active", "norm_dx")
    res["train_end"] = dict(tail_means([dict(r, train_loss=r["loss"]) for r in lg["train"]], "train", names),
                            iterations=[r["iteration"] for r in lg["train"]][-5:])
    tests = [r for r in lg["test"] if r.get("net", 0) == 0]
    res["test_photos"] = dict(iteration=tests[-1]["iteration"], **{n: tests[-1].get("test_" + n) for n in names}) \
        if tests else None
    res["test_photos_first"] = dict(iteration=tests[0]["iteration"], loss=tests[0].get("test_loss")) if tests else None
    res["log_warnings"] = lg.get("warnings", [])

    # counting: Spearman, least-squares map, norm-vs-k figure
    runner.tool("tools/analyze.py", "count-check", "--weights", weights, "--source", SCENES_VAL,
                "--fit-source", SCENES_TRAIN, "--max-images", 500, "--out", os.path.join(out, "count_check"),
                done=os.path.join(out, "count_check", "count_check.json"))
    cc = _json(os.path.join(REPO, out, "count_check", "count_check.json"))
    res["count_check"] = dict(spearman=cc["spearman"], pearson=cc["pearson"], n=cc["n_images"],
                              per_count=cc["per_count"], count_map=cc["count_map"])
    # norm trajectory: Spearman of the snapshots every trajectory_every iterations, on the first scenes
    traj = []
    snaps = {}
    for prefix in list(extra_prefixes) + [ms["snapshot_prefix"]]:
        snaps.update(snapshots(prefix))
    for i, path in sorted(snaps.items()):
        if i > it or (i % trajectory_every and i != it and i > trajectory_every):
            continue
        d = os.path.join(out, "trajectory", "iter_%d" % i)
        runner.tool("tools/analyze.py", "count-check", "--weights", os.path.relpath(path, REPO), "--source",
                    SCENES_VAL, "--max-images", trajectory_images, "--out", d,
                    done=os.path.join(d, "count_check.json"))
        j = _json(os.path.join(REPO, d, "count_check.json"))
        traj.append(dict(iteration=i, spearman=j["spearman"],
                         mean_norm=sum(p["mean"] * p["count"] for p in j["per_count"]) / j["n_images"],
                         norm_k0=j["per_count"][0]["mean"], norm_kmax=j["per_count"][-1]["mean"]))
    res["trajectory"] = traj

    # Fig. 3 on the held-out photos
    runner.tool("tools/analyze.py", "mean-vector", "--weights", weights, "--source", PHOTOS_TEST,
                "--out", os.path.join(out, "mean_vector"), done=os.path.join(out, "mean_vector", "mean_vector.json"))
    mv = _json(os.path.join(REPO, out, "mean_vector", "mean_vector.json"))
    res["mean_vector"] = {k: mv.get(k) for k in ("n_images", "n_dims", "n_nonzero", "n_above_threshold",
                                                 "threshold", "n_above_rel", "rel_threshold", "max_mean",
                                                 "mean_norm")}

    # dead units: fc8 entries never active on the val scenes (a diagnosis when counting stays weak)
    runner.tool("tools/analyze.py", "mean-vector", "--weights", weights, "--source", SCENES_VAL, "--max-images", 500,
                "--out", os.path.join(out, "mean_vector_scenes"),
                done=os.path.join(out, "mean_vector_scenes", "mean_vector.json"))

    # control: the same count check and least-squares map on the untrained net (same init seed)
    rand = os.path.join(out, "random_init", "counting_random_init.caffemodel")
    if not os.path.isfile(os.path.join(REPO, rand)):
        runner.note(["ltc.study.save_random_init", main_solver, rand])
        save_random_init(ms["net"], os.path.join(REPO, rand), seed=int(solver_random_seed(main_solver)))
    runner.tool("tools/analyze.py", "count-check", "--weights", rand, "--source", SCENES_VAL,
                "--fit-source", SCENES_TRAIN, "--max-images", 500, "--out", os.path.join(out, "count_check_random_init"),
                done=os.path.join(out, "count_check_random_init", "count_check.json"))
    cr = _json(os.path.join(REPO, out, "count_check_random_init", "count_check.json"))
    res["count_check_random_init"] = dict(spearman=cr["spearman"], count_map=cr["count_map"], weights=rand)
    mv = _json(os.path.join(REPO, out, "mean_vector_scenes", "mean_vector.json"))
    res["fc8_scenes"] = dict(n_images=mv["n_images"], n_dims=mv["n_dims"], n_ever_active=mv["n_nonzero"],
                             n_above_threshold=mv["n_above_threshold"], mean_norm=mv["mean_norm"])

    # Table 5 at this scale: the mixed model at the single-method model's last iteration
    try:
        single_w, single_it = final_model(single_solver)
        mixed_w = snaps.get(single_it)
        if mixed_w is None:
            raise StudyError("the main run has no snapshot at iteration %d to pair with %s" % (single_it, single_w))
        mixed_w, missing = os.path.relpath(mixed_w, REPO), None
        pair = (["--weights", mixed_w, single_w, "--train-methods", "mixed", "linear"])
    except StudyError as e:   # the single-method run is not trained: the mixed row alone, said so
        single_it, missing = it, str(e)
        pair = ["--weights", weights, "--train-methods", "mixed"]
    runner.tool("tools/analyze.py", "table5", *(pair + ["--source", SCENES_VAL, "--max-images", table5_images,
                                                       "--out", os.path.join(out, "table5")]),
                done=os.path.join(out, "table5", "table5.json"))
    t5 = _json(os.path.join(REPO, out, "table5", "table5.json"))
    res["table5"] = dict(iteration=single_it, rows=t5["train_methods"], matrix=t5["matrix"], std=t5["std"],
                         test_methods=t5["test_methods"], table=t5["table"], n_images=t5["n_images"],
                         single_solver=single_solver, missing=missing)

    # linear probe: counting conv1-5 against random init, same probe, data, seeds
    probe_train = PROBE_TRAIN % per_class
    ported = os.path.join(out, "probe", "caffenet_counting.caffemodel")
    runner.tool("tools/port_weights.py", weights, ported, "--fold-std", probe_train, done=ported)
    csvs = []
    for seed in seeds:
        csvs.append(os.path.join(out, "probe", "seed_%d" % seed, "linear_probe.csv"))
        if not (runner.reuse and os.path.isfile(os.path.join(REPO, csvs[-1]))
                and os.path.getmtime(os.path.join(REPO, csvs[-1])) > os.path.getmtime(os.path.join(REPO, ported))):
            if os.path.exists(os.path.join(REPO, csvs[-1])):
                os.remove(os.path.join(REPO, csvs[-1]))
        runner.tool("tools/linear_probe.py", "--model", "counting=" + ported, "--random-init", "--train-lmdb",
                    probe_train, "--val-lmdb", ITEMS_VAL, "--iters", probe_iters, "--seed", seed,
                    "--val-images", probe_val_images,
                    "--out-dir", os.path.join(out, "probe", "seed_%d" % seed), "--csv", csvs[-1], done=csvs[-1])
    res["probe"] = probe_summary([os.path.join(REPO, c) for c in csvs])
    res["probe"].update(train_lmdb=probe_train, val_lmdb=ITEMS_VAL, iters=probe_iters, seeds=list(seeds))

    with open(os.path.join(REPO, out, "results.json"), "w") as f:
        json.dump(res, f, indent=1, default=float)
    return res


PROBE_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "pool5")


def probe_summary(csv_paths):
    """{model: {layer: (mean, spread = max - min, values)}} over the rows (seeds) of linear_probe CSVs."""
    import csv
    acc = {}
    for csv_path in [csv_paths] if isinstance(csv_paths, str) else csv_paths:
        with open(csv_path) as f:
            for row in csv.DictReader(f):
                for layer in PROBE_LAYERS:
                    acc.setdefault(row["model"], {}).setdefault(layer, []).append(float(row[layer]))
    out = {}
    for model, layers in acc.items():
        out[model] = {l: dict(mean=sum(v) / len(v), spread=max(v) - min(v), values=v) for l, v in layers.items()}
    if "counting" in out and "random" in out:
        out["gain"] = {l: out["counting"][l]["mean"] - out["random"][l]["mean"] for l in PROBE_LAYERS}
    return out


def solver_random_seed(solver_path):
    m = re.search(r"^random_seed:\s*(\d+)", open(os.path.join(REPO, solver_path)).read(), re.M)
    return m.group(1) if m else "1701"


def save_random_init(train_val, out, seed):
    """The untrained counting net (the fillers of ``train_val`` drawn with ``seed``) as a .caffemodel."""
    import caffe
    caffe.set_random_seed(seed)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    net = caffe.Net(os.path.join(REPO, train_val), caffe.TEST)
    try:
        net.save(out)
    finally:
        for layer in net.layers:
            if hasattr(layer, "close"):
                layer.close()


# ----------------------------------------------------------------------------- report
def goals(res):
    """[(goal, measured, met)] of the issue's "Must show" targets."""
    g = []
    cc = res["count_check"]
    g.append(("Spearman(|phi|, k) >= %.2f on scenes_val" % GOALS["spearman"], "%.3f" % cc["spearman"],
              cc["spearman"] >= GOALS["spearman"]))
    cm = cc.get("count_map") or {}
    if cm:
        g.append(("least-squares map: exact k >= %d %%" % (100 * GOALS["exact"]), "%.1f %%" % (100 * cm["exact"]),
                  cm["exact"] >= GOALS["exact"]))
        g.append(("least-squares map: k +- 1 >= %d %%" % (100 * GOALS["within1"]), "%.1f %%" % (100 * cm["within1"]),
                  cm["within1"] >= GOALS["within1"]))
    te = res["train_end"]
    if te.get("count_term") is not None:
        g.append(("counting term well below M = 10 at the end (train; < M/4)", "%.3g" % te["count_term"],
                  te["count_term"] < 2.5))
        g.append(("hinge active on a minority of samples (train; < 50 %)", "%.0f %%" % (100 * te["hinge_active"]),
                  te["hinge_active"] < 0.5))
    tp = res.get("test_photos")
    if tp and tp.get("loss") is not None:
        g.append(("TEST loss on held-out photos well below M = 10 (< M/2)", "%.3g" % tp["loss"], tp["loss"] < 5.0))
    gain = res.get("probe", {}).get("gain", {})
    for layer in ("conv3", "conv4", "conv5"):
        if layer in gain:
            g.append(("probe %s: counting - random >= %.0f top-1 points" % (layer, GOALS["probe_margin"]),
                      "%+.1f" % gain[layer], gain[layer] >= GOALS["probe_margin"]))
    return g


def _fmt(v, f="%.3g"):
    return "-" if v is None else f % v


def train_partner(solver_path):
    """The contrastive partner of a solver's TRAIN data layer: "batch" (the paper's) or "same_source"."""
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format
    net = caffe_pb2.NetParameter()
    with open(os.path.join(REPO, solver_settings(solver_path)["net"])) as f:
        text_format.Merge(f.read(), net)
    (layer,) = nets.train_data_layers(net)
    return json.loads(layer.python_param.param_str or "{}").get("partner", "batch")


def write_report(res, out, wall=None, commands=None):
    """OUT/report.md from the results dict."""
    L = []
    L.append("# Reproduction study: learning to count at a small scale\n")
    partner = res["main"].get("partner")
    if partner is None and os.path.isfile(os.path.join(REPO, res["main"]["solver"])):
        partner = train_partner(res["main"]["solver"])
    L.append("Model: `%s` (iteration %d, solver `%s`%s)." % (
        res["main"]["weights"], res["main"]["iteration"], res["main"]["solver"],
        ", contrastive partner `%s`" % partner if partner else ""))
    if wall:
        L.append("Wall time: %s." % wall)
    L.append("\n## Goals\n\n| goal | measured | met |\n|---|---|---|")
    for goal, measured, met in goals(res):
        L.append("| %s | %s | %s |" % (goal, measured, "yes" if met else "**no**"))
    cc = res["count_check"]
    L.append("\n## Counting on the Fashion scenes (%d val scenes)\n" % cc["n"])
    L.append("Spearman(|phi|, k) = %.4f, Pearson = %s." % (cc["spearman"], _fmt(cc["pearson"], "%.4f")))
    cm = cc.get("count_map")
    if cm:
        L.append("Least-squares map phi -> k fitted on %d train scenes (ridge %g): exact %.1f %%, +-1 %.1f %%, "
                 "mean |error| %.3f on val (on the fitted scenes: exact %.1f %%, +-1 %.1f %%)."
                 % (cm["n_fit"], cm["ridge"], 100 * cm["exact"], 100 * cm["within1"], cm["mae"],
                    100 * cm["train"]["exact"], 100 * cm["train"]["within1"]))
    cr = res.get("count_check_random_init")
    if cr:
        crm = cr.get("count_map") or {}
        L.append("Control, the untrained net (same init seed): Spearman %.4f; least-squares map exact %.1f %%, "
                 "+-1 %.1f %% (guessing the middle count: 5.9 %% / 17.6 %%)."
                 % (cr["spearman"], 100 * crm.get("exact", float("nan")), 100 * crm.get("within1", float("nan"))))
    L.append("\n| k | scenes | mean norm | std |\n|---|---|---|---|")
    for p in cc["per_count"]:
        L.append("| %d | %d | %.4g | %.3g |" % (p["k"], p["count"], p["mean"], p["std"]))
    L.append("\n![norm vs k](count_check/count_check.png)\n")
    if res.get("trajectory"):
        L.append("Norm trajectory over the snapshots (first scenes of scenes_val):\n")
        L.append("| iteration | Spearman | mean norm | mean norm k=0 | mean norm k=max |\n|---|---|---|---|---|")
        for t in res["trajectory"]:
            L.append("| %d | %.3f | %.4g | %.4g | %.4g |" % (t["iteration"], t["spearman"], t["mean_norm"],
                                                            t["norm_k0"], t["norm_kmax"]))
    te = res["train_end"]
    L.append("\n## Loss terms at the end of training (mean of the last displayed train rows)\n")
    L.append("loss %s = counting term %s + contrast term %s; hinge active on %s of the samples; mean |phi(Dx)| %s."
             % (_fmt(te["loss"]), _fmt(te["count_term"]), _fmt(te["contrast_term"]),
                _fmt(None if te["hinge_active"] is None else 100 * te["hinge_active"], "%.0f %%"), _fmt(te["norm_dx"])))
    tp = res.get("test_photos")
    if tp:
        L.append("\n## Real photos: TEST on the %s held-out photos (iteration %d)\n" % ("8", tp["iteration"]))
        first = res.get("test_photos_first") or {}
        L.append("TEST loss %s (first test pass, iteration %s: %s) = counting term %s + contrast term %s; hinge "
                 "active on %s; mean |phi(Dx)| %s."
                 % (_fmt(tp["loss"]), first.get("iteration"), _fmt(first.get("loss")), _fmt(tp["count_term"]),
                    _fmt(tp["contrast_term"]), _fmt(None if tp["hinge_active"] is None else 100 * tp["hinge_active"],
                                                    "%.0f %%"), _fmt(tp["norm_dx"])))
    mv = res["mean_vector"]
    L.append("\nMean counting vector over the %d held-out photos (Fig. 3): %d of %d entries non-zero, %d above %g, "
             "%d above %g x the largest mean (%.3g); mean |phi| %.3g.\n"
             % (mv["n_images"], mv["n_nonzero"], mv["n_dims"], mv["n_above_threshold"], mv["threshold"],
                mv["n_above_rel"], mv["rel_threshold"], mv["max_mean"], mv["mean_norm"]))
    L.append("![mean vector](mean_vector/mean_vector.png)\n")
    fs = res.get("fc8_scenes")
    if fs:
        L.append("On %d val scenes, %d of the %d counting-vector entries are ever non-zero (the rest are dead "
                 "ReLUs there); %d have a mean above 0.01.\n" % (fs["n_images"], fs["n_ever_active"], fs["n_dims"],
                                                                 fs["n_above_threshold"]))
    pr = res.get("probe")
    if pr:
        L.append("## Transfer: linear probe on frozen features (%s, %d iterations, seeds %s; val %s)\n"
                 % (pr["train_lmdb"], pr["iters"], ", ".join(map(str, pr["seeds"])), pr["val_lmdb"]))
        L.append("| model | " + " | ".join(PROBE_LAYERS) + " |\n|---|" + "---|" * len(PROBE_LAYERS))
        for model in ("counting", "random"):
            if model in pr:
                L.append("| %s | " % model + " | ".join("%.1f +- %.1f" % (pr[model][l]["mean"], pr[model][l]["spread"] / 2)
                                                        for l in PROBE_LAYERS) + " |")
        if "gain" in pr:
            L.append("| counting - random | " + " | ".join("%+.1f" % pr["gain"][l] for l in PROBE_LAYERS) + " |")
        L.append("\n(top-1 %; mean +- half the range over the seeds)\n")
    t5 = res.get("table5")
    if t5:
        L.append("## Table 5 at this scale (iteration %d, %d scenes)\n" % (t5["iteration"], t5["n_images"]))
        L.append("```\n%s\n```\n" % t5["table"])
        if t5.get("missing"):
            L.append("Only the mixed row: %s.\n" % t5["missing"])
        L.append("![table 5](table5/table5.png)\n")
    L.append("## Training curves\n\n![curves](log/curves.png)\n")
    for w in res.get("log_warnings") or []:
        L.append("**%s**\n" % w)
    if commands:
        L.append("## Commands\n\n```\n%s\n```\n" % commands.strip())
    os.makedirs(os.path.join(REPO, out), exist_ok=True)
    path = os.path.join(REPO, out, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")
    return path


# ----------------------------------------------------------------------------- the demo's last words
def demo_summary(count_json, log_json, figures, trained_on="the Fashion-MNIST scenes",
                 tested_on="100 held-out scenes"):
    """The closing lines of `make demo`, in plain words, from count-check's and log's JSON."""
    cc = _json(count_json)
    lg = _json(log_json)
    tests = [r for r in lg["test"] if "test_loss" in r]
    per_k = cc["per_count"]
    lines = ["", "=" * 78, "What the demo's network learned"]
    lines.append("  Training: %d iterations on %s, no labels used."
                 % (lg["train"][-1]["iteration"] if lg["train"] else 0, trained_on))
    if tests:
        lines.append("  TEST loss on %s: %.3g at iteration %d -> %.3g at iteration %d "
                     "(an all-zero counting vector scores exactly M = 10)."
                     % (tested_on, tests[0]["test_loss"], tests[0]["iteration"], tests[-1]["test_loss"],
                        tests[-1]["iteration"]))
    lines.append("  Count check on %d unseen scenes of 0..16 items: Spearman(|phi|, k) = %.3f "
                 "(1 = the norm of the counting vector orders the scenes exactly by their number of items)."
                 % (cc["n_images"], cc["spearman"]))
    lines.append("  Mean norm |phi| for k = %d items: %.3g; for k = %d items: %.3g."
                 % (per_k[0]["k"], per_k[0]["mean"], per_k[-1]["k"], per_k[-1]["mean"]))
    cm = cc.get("count_map")
    if cm:
        lines.append("  A linear read-out of phi fitted on training scenes gives the exact count for %.0f %% of the "
                     "unseen scenes and the count +-1 for %.0f %% (guessing: about 6 %% and 17 %%)."
                     % (100 * cm["exact"], 100 * cm["within1"]))
    if cc["spearman"] >= 0.8:
        verdict = ("The network learned to count: without any labels, its counting vector grows with the number "
                   "of objects in the scene.")
    elif cm and cm["within1"] >= 0.5:
        verdict = ("The network learned something about counting without labels: its counting vector carries the "
                   "number of items (the linear read-out), but after this short run its norm does not yet grow "
                   "with the count (Spearman < 0.8). README, 'Does it reproduce?', has the longer runs.")
    else:
        verdict = ("After this short run the counting signal is weak (Spearman < 0.8). README, 'Does it "
                   "reproduce?', has the longer runs.")
    lines += ["  " + line for line in textwrap.wrap(verdict, 76)]
    for label, path in figures:
        lines.append("  %-28s %s" % (label + ":", path))
    lines.append("=" * 78)
    return "\n".join(lines)
