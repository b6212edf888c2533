"""The study's data and training stages: the LMDBs it trains and probes on, and the resumable
``caffe train`` runs (in parallel, one BLAS thread each, with a progress line per run)."""
import os
import re
import subprocess
import time

from ltc import REPO, snapshots
from ltc.study.common import (BRANCHES, ITEMS_TRAIN, PHOTO_REPEAT, PHOTOS_STUDY_TRAIN, PHOTOS_TEST, PHOTOS_TRAIN,
                              PROBE_PER_CLASS, PROBE_TRAIN, RUNS, SCENE_REPEAT, SCENES_TRAIN, STUDY_TRAIN,
                              VIEWS_TEST, VIEWS_TRAIN, StudyError, models, solver)


# ----------------------------------------------------------------------------- data
def prepare_data(runner, photo_repeat=PHOTO_REPEAT, per_class=PROBE_PER_CLASS, with_views=True):
    from ltc import embedded_photos, fashion, mixdata
    if not os.path.isfile(os.path.join(REPO, SCENES_TRAIN, "data.mdb")):
        runner.call("data_prep/fashion_scenes.py", [], fashion.build_testbed)
    if not os.path.isfile(os.path.join(REPO, PHOTOS_TRAIN, "data.mdb")):
        runner.call("data_prep/embedded.py", ["--set", "all"],
                    lambda: embedded_photos.build_photo_lmdbs(photo_set="all"))
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
    photos = prepare_photo_data(runner) if with_views else None
    return dict(study_train=STUDY_TRAIN, probe_train=PROBE_TRAIN % per_class, photos_train=photos)


def prepare_photo_data(runner, scene_repeat=SCENE_REPEAT):
    """The photo run's training LMDB: the train scenes x ``scene_repeat`` plus every view of the train
    photos (no view twice), after checking that no held-out view is among them."""
    from ltc import mixdata
    for path in (VIEWS_TRAIN, VIEWS_TEST):
        if not os.path.isfile(os.path.join(REPO, path, "data.mdb")):
            if runner.dry:   # a dry run names the step (make photos-all) instead of refusing
                runner.note(["python", "data_prep/photos.py", "--install", "--views", "20000", "# make photos-all"])
                break
            raise StudyError("%s is missing: build the photo views first with `make photos-all` (data_prep/photos.py "
                             "--install --views 20000; installing the Debian packages needs root) or leave the "
                             "photo run out (--runs main linear)" % path)
    out = os.path.join(REPO, PHOTOS_STUDY_TRAIN)
    if not os.path.isfile(os.path.join(out, "data.mdb")):
        runner.note(["ltc.mixdata.mix_lmdbs", SCENES_TRAIN, "x%d" % scene_repeat, "+", VIEWS_TRAIN, "->",
                     PHOTOS_STUDY_TRAIN])
        if not runner.dry:
            print(mixdata.mix_lmdbs([("scenes", os.path.join(REPO, SCENES_TRAIN), scene_repeat),
                                     ("photos", os.path.join(REPO, VIEWS_TRAIN), 1)], out))
    if not runner.dry:
        check_disjoint(os.path.join(REPO, VIEWS_TEST), out)
    return PHOTOS_STUDY_TRAIN


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


# ----------------------------------------------------------------------------- training
def latest_state(prefix):
    """(iteration, solverstate) of the newest intact snapshot pair of ``prefix`` (ltc.snapshots checks
    both files; damaged newer ones are named and skipped), or (0, None)."""
    found, skipped = snapshots.newest_intact(os.path.join(REPO, prefix))
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
            state = solver(solvers[parent]).snapshot_prefix + "_iter_%d.solverstate" % at
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
    s = solver(solver_path)
    done = models(s.snapshot_prefix)
    if s.max_iter in done:
        print("%s: complete (%s)" % (name, os.path.relpath(done[s.max_iter], REPO)))
        return None
    it, state = latest_state(s.snapshot_prefix)
    if state is None and name not in resume and name in branches:
        print("%s: waits for %s's snapshot at iteration %d, then branches off it" % ((name,) + branches[name]))
        waiting.append((name, solver_path))
        return None
    if state is None and name in resume:
        state = os.path.join(REPO, resume[name])
        if not os.path.isfile(state):
            raise StudyError("--resume %s=%s: no such solverstate" % (name, resume[name]))
        if not state.endswith(snapshots.STATE_EXT) or snapshots.snapshot_iter(state) is None:
            raise StudyError("--resume %s=%s: not a solverstate named <prefix>_iter_N.solverstate"
                             % (name, resume[name]))
        it = snapshots.snapshot_iter(state)
    log_path = os.path.join(REPO, os.path.dirname(s.snapshot_prefix), "train.log")
    if not runner.dry:
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
    argv = train_command(runner.caffe, solver_path, state)
    runner.note(argv + ["2>>", os.path.relpath(log_path, REPO)])
    print("%s: %s at iteration %d of %d" % (name, "resuming" if state else "starting", it, s.max_iter))
    if runner.dry:
        return None
    f = open(log_path, "a")
    return (name, subprocess.Popen(argv, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT),
            f, log_path, s.max_iter, s.snapshot_prefix)


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
                    if max_iter not in models(prefix):
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
