"""Long runs that survive interruption: a resumed run continues the data stream exactly (caffe
binary and pycaffe), Ctrl-C / SIGHUP snapshot cleanly with data workers in the process group,
truncated snapshots are skipped or refused by name, a killed data worker is a clear error.

The nets are the counting net with fc6/fc7 shrunk (tests/counting_models.py), batch 2, on
tiny LMDBs; one BLAS thread. The data layer's `trace` key records "phase batch sha256"
for every batch it serves."""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from conftest import write_test_lmdb
from counting_models import small_train_net
from ltc import nets, snapshots
from ltc.pipeline import BatchPipeline
from test_counting_data import _running, assert_processes_gone

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAFFE = os.path.join(REPO, ".venv", "bin", "caffe")
RESUME = os.path.join(REPO, "tools", "resume.py")
ENV = dict(os.environ, GLOG_minloglevel="0", GLOG_logtostderr="1", OPENBLAS_NUM_THREADS="1")
TIMEOUT = 300          # generous bound for one caffe run (a few seconds when the machine is idle)
WEIGHT_RTOL, WEIGHT_ATOL = 1e-6, 1e-7    # final weights, resumed vs uninterrupted (one BLAS thread)


@pytest.fixture(scope="module")
def lmdbs(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume_lmdb")
    write_test_lmdb(str(root / "train"), 6, seed=1)
    write_test_lmdb(str(root / "val"), 3, seed=2, encoded=True)
    return root / "train", root / "val"


def write_solver(tmp_path, lmdbs, name, max_iter, iter_size=1, workers=1, snapshot=0, test_iter=2, test_batches=3,
                 tag=None, **extra):
    """Net + solver under tmp_path/name; snapshot prefix tmp_path/name/snap; the data layers trace the
    batches they serve to tmp_path/name/TAG.trace (TAG: default max_iter). TEST: test_iter=2 batches
    per pass out of test_batches=3, so the TEST stream position depends on the passes made."""
    tag = str(max_iter) if tag is None else tag
    d = tmp_path / name
    d.mkdir(exist_ok=True)
    netp = small_train_net(*lmdbs, workers=workers, test_batches=test_batches)
    for layer in netp.layer:
        if layer.python_param.module == "counting_data":
            p = json.loads(layer.python_param.param_str)
            p["trace"] = str(d / (tag + ".trace"))
            layer.python_param.param_str = json.dumps(p)
    net = d / ("net_%s.prototxt" % tag)
    net.write_text(str(netp))
    cfg = dict(nets.DEFAULTS, test_iter=test_iter, test_interval=2, max_iter=max_iter, snapshot=snapshot,
               snapshot_prefix=str(d / "snap"), display=1, test_initialization=True)
    s = nets.solver(cfg, str(net))
    s.iter_size = iter_size
    for k, v in extra.items():
        setattr(s, k, v)
    path = d / ("solver_%s.prototxt" % tag)
    path.write_text(str(s))
    return path


def caffe_train(args, cwd, timeout=TIMEOUT):
    return subprocess.run([CAFFE, "train"] + [str(a) for a in args], cwd=str(cwd), capture_output=True, text=True,
                          timeout=timeout, env=ENV)


def read_trace(path):
    out = {"train": [], "test": []}
    for line in open(path):
        phase, b, digest = line.split()
        out[phase].append((int(b), digest))
    return out


def weights(path):
    net = snapshots.read_caffemodel(str(path))
    return {(l.name, j): np.array(b.data, np.float32) for l in net.layer for j, b in enumerate(l.blobs)}


def assert_weights_close(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_allclose(wb[k], wa[k], rtol=WEIGHT_RTOL, atol=WEIGHT_ATOL, err_msg=str(k))


def assert_stream_continues(full, part, resumed, n, iter_size, test_iter=2, test_initialization=True):
    """The resumed run served exactly the batches the uninterrupted run served from iteration n on."""
    skip_train = n * iter_size
    assert resumed["train"][0][0] == skip_train
    assert resumed["train"] == full["train"][skip_train:skip_train + len(resumed["train"])]
    assert len(resumed["train"]) >= 3 * iter_size
    assert part["train"] == full["train"][:len(part["train"])]
    assert full["train"][0][1] != full["train"][skip_train][1]   # a restart at batch 0 would differ
    passes = len([t for t in range(n) if t % 2 == 0 and (t > 0 or test_initialization)])
    skip_test = passes * test_iter
    assert resumed["test"] and resumed["test"] == full["test"][skip_test:skip_test + len(resumed["test"])]
    assert full["test"][0][1] != full["test"][skip_test][1]


# ----------------------------------------------------------------------------- resume: caffe binary

@pytest.mark.parametrize("iter_size", [1, 2])
def test_caffe_binary_resume_continues_the_data_stream_and_the_weights(tmp_path, lmdbs, iter_size):
    n, m = 3, 3
    full = write_solver(tmp_path, lmdbs, "full", n + m, iter_size)
    res = caffe_train(["-solver", full], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    part = write_solver(tmp_path, lmdbs, "part", n, iter_size, tag="part")
    res = caffe_train(["-solver", part], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    state = tmp_path / "part" / ("snap_iter_%d.solverstate" % n)
    cont = write_solver(tmp_path, lmdbs, "part", n + m, iter_size, tag="resumed")
    res = caffe_train(["-solver", cont, "-snapshot", state], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "CountingDataLayer[train]" in res.stderr
    assert "resumed at iteration %d: first batch %d" % (n, n * iter_size) in res.stderr
    assert_stream_continues(read_trace(tmp_path / "full" / "6.trace"), read_trace(tmp_path / "part" / "part.trace"),
                            read_trace(tmp_path / "part" / "resumed.trace"), n, iter_size)
    assert_weights_close(tmp_path / "full" / "snap_iter_6.caffemodel", tmp_path / "part" / "snap_iter_6.caffemodel")


# ----------------------------------------------------------------------------- resume: pycaffe

PYCAFFE_RUN = r"""
import sys
import caffe
from ltc import snapshots
solver_file, steps, restore = sys.argv[1], [int(s) for s in sys.argv[2].split(",")], sys.argv[3:]
solver = caffe.get_solver(solver_file)
if restore:
    print("moved", snapshots.restore(solver, restore[0], solver_file), flush=True)
for k in steps:
    solver.step(k)
    solver.snapshot()
"""


def pycaffe_run(solver, steps, restore=None):
    args = [sys.executable, "-c", PYCAFFE_RUN, str(solver), ",".join(map(str, steps))] + ([str(restore)] if restore else [])
    res = subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT, env=ENV)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def test_pycaffe_restore_continues_the_data_stream_and_the_weights(tmp_path, lmdbs):
    n, m, iter_size = 3, 3, 2
    full = write_solver(tmp_path, lmdbs, "full", n + m, iter_size)
    pycaffe_run(full, [n + m])
    part = write_solver(tmp_path, lmdbs, "part", n + m, iter_size, tag="part")
    pycaffe_run(part, [n])
    cont = write_solver(tmp_path, lmdbs, "part", n + m, iter_size, tag="resumed")
    res = pycaffe_run(cont, [m], restore=tmp_path / "part" / "snap_iter_3.solverstate")
    assert "('train', 0): %d" % (n * iter_size) in res.stdout and "('test0', 0): 4" in res.stdout
    assert_stream_continues(read_trace(tmp_path / "full" / "6.trace"), read_trace(tmp_path / "part" / "part.trace"),
                            read_trace(tmp_path / "part" / "resumed.trace"), n, iter_size)
    assert_weights_close(tmp_path / "full" / "snap_iter_6.caffemodel", tmp_path / "part" / "snap_iter_6.caffemodel")


def test_data_start_positions():
    from caffe.proto import caffe_pb2
    s = caffe_pb2.SolverParameter(iter_size=4, test_interval=10, test_initialization=False)
    s.test_iter.append(3)
    assert snapshots.data_start("train", 25, s) == 100
    assert snapshots.test_passes_before(25, s) == 2                 # tests at 10 and 20
    assert snapshots.data_start("test", 25, s) == 6
    assert snapshots.data_start("test", 20, s) == 3                 # the test at 20 is still to come
    s.test_initialization = True
    assert snapshots.data_start("test", 20, s) == 6 and snapshots.data_start("test", 0, s) == 0
    assert snapshots.caffe_train_args(["caffe", "train", "--solver=s.prototxt", "-snapshot", "x.solverstate"]) == \
        ("s.prototxt", "x.solverstate")
    assert snapshots.caffe_train_args(["caffe", "test", "-snapshot", "x"]) == (None, None)
    assert snapshots.caffe_train_args(["/usr/bin/python3", "train", "-snapshot", "x"]) == (None, None)


def test_pipeline_start_and_seek_equal_the_uninterrupted_stream(lmdbs):
    with BatchPipeline(str(lmdbs[0]), batch_size=4, workers=2, prefetch=3, seed=3) as p:
        ref = [p.next_batch().copy() for _ in range(8)]
    with BatchPipeline(str(lmdbs[0]), batch_size=4, workers=2, prefetch=3, seed=3, start=5) as p:
        assert all(np.array_equal(p.next_batch(), ref[b]) for b in (5, 6, 7))
        p.seek(2)
        assert np.array_equal(p.next_batch(), ref[2]) and p.position == 3
    with BatchPipeline(str(lmdbs[0]), batch_size=4, workers=0, seed=3) as p:
        p.seek(7)
        assert np.array_equal(p.next_batch(), ref[7])


# ----------------------------------------------------------------------------- Ctrl-C and SIGHUP

class CaffeRun:
    """`caffe train` in its own process group (like a terminal job), stderr read by a thread."""

    def __init__(self, args, cwd):
        self.lines, self.events = [], {}
        self.proc = subprocess.Popen([CAFFE, "train"] + [str(a) for a in args], cwd=str(cwd), env=ENV,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self.pgid = self.proc.pid
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stderr:
            with self.lock:
                self.lines.append(line)
                for pattern, ev in self.events.items():
                    if re.search(pattern, line):
                        ev.set()
        with self.lock:
            for ev in self.events.values():
                ev.set()   # the process ended: nobody waits for ever

    def wait_for(self, pattern, timeout=TIMEOUT):
        with self.lock:
            ev = self.events.setdefault(pattern, threading.Event())
            if any(re.search(pattern, line) for line in self.lines):
                ev.set()
        assert ev.wait(timeout), "no line matching %r within %d s:\n%s" % (pattern, timeout, self.text[-3000:])
        assert any(re.search(pattern, line) for line in self.lines), \
            "caffe ended before %r:\n%s" % (pattern, self.text[-3000:])

    def finish(self, timeout=TIMEOUT):
        rc = self.proc.wait(timeout)
        self.thread.join(timeout)
        return rc

    @property
    def text(self):
        return "".join(self.lines)

    def worker_pids(self, phase="\\w+"):
        return [int(p) for line in re.findall(r"CountingDataLayer\[%s\].*\(pids ([\d ]+)\)" % phase, self.text)
                for p in line.split()]


def group_members(pgid):
    """Running (non-zombie) processes of process group pgid."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                out.append(int(entry))
    return out


@pytest.mark.parametrize("sig,effect", [("SIGINT", "snapshot"), ("SIGINT", "stop"), ("SIGHUP", "snapshot")])
def test_signal_to_the_process_group_snapshots_and_the_snapshot_resumes(tmp_path, lmdbs, sig, effect):
    # the signal goes out once iteration 2 is logged; on a loaded machine the solver has run up to
    # 6 more iterations before it acts on it, so the run must be long enough to still be going
    max_iter = 20
    solver = write_solver(tmp_path, lmdbs, "run", max_iter, workers=2)
    flag = "-sigint_effect" if sig == "SIGINT" else "-sighup_effect"
    run = CaffeRun(["-solver", solver, flag, effect], tmp_path)
    run.wait_for(r"Iteration 2 \(.*loss = ")
    workers = run.worker_pids()
    assert len(workers) == 4 and all(_running(p) for p in workers)   # 2 TRAIN + 2 TEST data workers
    os.killpg(run.pgid, getattr(signal, sig))     # what a terminal's Ctrl-C / hangup does
    rc = run.finish()
    text = run.text
    assert rc == 0, text[-3000:]
    assert "Aborted" not in text and "error_already_set" not in text
    snaps = [int(n) for n in re.findall(r"Snapshotting solver state to binary proto file \S+_iter_(\d+)\.solverstate",
                                        text)]
    assert snaps and 3 <= snaps[0] <= max_iter, text[-3000:]
    if effect == "stop":
        assert "Optimization stopped early" in text and snaps[0] < max_iter
    else:   # snapshot and train on to max_iter
        assert re.search(r"Iteration %d, loss = " % max_iter, text)
        assert snaps[-1] == max_iter and snaps[0] < max_iter
    assert_processes_gone(workers)
    assert group_members(run.pgid) == []
    k = snaps[0]
    state = tmp_path / "run" / ("snap_iter_%d.solverstate" % k)
    snapshots.check_pair(str(state))
    more = write_solver(tmp_path, lmdbs, "run", k + 2, workers=2)
    res = caffe_train(["-solver", more, "-snapshot", state], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resumed at iteration %d: first batch %d" % (k, k) in res.stderr
    assert re.search(r"Iteration %d, loss = " % (k + 2), res.stderr)


# ----------------------------------------------------------------------------- truncated snapshots

@pytest.fixture(scope="module")
def two_snapshots(tmp_path_factory, lmdbs):
    """Snapshots at iterations 2 and 4 (pycaffe, workers 1); returns (dir, solver for 6 iterations)."""
    tmp = tmp_path_factory.mktemp("snaps")
    solver = write_solver(tmp, lmdbs, "run", 6)
    pycaffe_run(solver, [2, 2])
    return tmp / "run", solver


def fresh_copy(src_dir, dst_dir):
    """Copy the snapshots, rewriting learned_net to the copy's model path (as Caffe wrote it)."""
    from caffe.proto import caffe_pb2
    dst_dir.mkdir()
    for n in (2, 4):
        model = dst_dir / ("snap_iter_%d.caffemodel" % n)
        model.write_bytes((src_dir / model.name).read_bytes())
        state = caffe_pb2.SolverState()
        state.ParseFromString((src_dir / ("snap_iter_%d.solverstate" % n)).read_bytes())
        state.learned_net = str(model)
        (dst_dir / ("snap_iter_%d.solverstate" % n)).write_bytes(state.SerializeToString())
    return dst_dir / "snap"


def cut_at_layer_boundary(path):
    """Cut a .caffemodel just before the last layer that owns a learned parameter (the six-branch
    net's other branches only hold copies of shared ones): the rest still parses."""
    from caffe.proto import caffe_pb2
    data = path.read_bytes()
    net = caffe_pb2.NetParameter()
    net.ParseFromString(data)
    seen, last = set(), None
    for i, layer in enumerate(net.layer):
        names = [layer.param[j].name if j < len(layer.param) else "" for j in range(len(layer.blobs))]
        if any(not n or n not in seen for n in names):
            last = i
        seen.update(n for n in names if n)
    del net.layer[last:]
    prefix = net.SerializeToString()
    assert data.startswith(prefix) and len(prefix) < len(data)
    path.write_bytes(prefix)


TRUNCATIONS = {
    "model cut mid-blob": (lambda d: _cut(d / "snap_iter_4.caffemodel", 0.6), r"snap_iter_4\.caffemodel.*truncated"),
    "model cut between layers": (lambda d: cut_at_layer_boundary(d / "snap_iter_4.caffemodel"),
                                 r"snap_iter_4\.caffemodel' does not match"),
    "state cut mid-history": (lambda d: _cut(d / "snap_iter_4.solverstate", 0.5),
                              r"snap_iter_4\.solverstate.*truncated or corrupt"),
    "state cut before current_step": (lambda d: _cut(d / "snap_iter_4.solverstate", -2),
                                      r"snap_iter_4\.solverstate' is truncated: it ends before"),
    "state empty": (lambda d: _cut(d / "snap_iter_4.solverstate", 0), r"snap_iter_4\.solverstate' is empty"),
    "state missing": (lambda d: (d / "snap_iter_4.solverstate").unlink(),
                      r"snap_iter_4\.caffemodel: no solver state of iteration 4"),
}


def _cut(path, keep):
    data = path.read_bytes()
    n = len(data) + keep if keep < 0 else int(len(data) * keep)
    path.write_bytes(data[:n])


@pytest.mark.parametrize("case", sorted(TRUNCATIONS))
def test_newest_truncated_snapshot_is_skipped_for_the_previous_intact_one(two_snapshots, tmp_path, case):
    prefix = fresh_copy(two_snapshots[0], tmp_path / "copy")
    assert snapshots.newest_intact(str(prefix))[0][0] == 4
    damage, why = TRUNCATIONS[case]
    damage(prefix.parent)
    pick, skipped = snapshots.newest_intact(str(prefix))
    assert pick[0] == 2 and pick[1] == str(prefix) + "_iter_2.solverstate"
    assert len(skipped) == 1 and re.search(why, "%s: %s" % skipped[0]), skipped


def test_resume_tool_skips_the_truncated_newest_and_runs_caffe_on_the_intact_one(two_snapshots, tmp_path):
    src, solver = two_snapshots
    prefix = fresh_copy(src, tmp_path / "copy")
    cut_at_layer_boundary(prefix.parent / "snap_iter_4.caffemodel")
    s = snapshots.read_solver(str(solver))
    s.snapshot_prefix, s.max_iter = str(prefix), 3
    (tmp_path / "solver.prototxt").write_text(str(s))
    res = subprocess.run([sys.executable, RESUME, str(prefix), "--solver", str(tmp_path / "solver.prototxt")],
                         capture_output=True, text=True, timeout=TIMEOUT, env=ENV, cwd=str(tmp_path))
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert re.search(r"resume: skipped \S+snap_iter_4\.solverstate: model \S+snap_iter_4\.caffemodel' does not match",
                     out)
    assert "Resuming from %s_iter_2.solverstate" % prefix in out
    assert "resumed at iteration 2: first batch 2" in out
    assert (prefix.parent / "snap_iter_3.caffemodel").exists()


def test_a_truncated_snapshot_named_directly_is_refused_by_name(two_snapshots, tmp_path):
    src, solver = two_snapshots
    prefix = fresh_copy(src, tmp_path / "copy")
    state = prefix.parent / "snap_iter_4.solverstate"
    _cut(state, 0.5)
    res = subprocess.run([sys.executable, RESUME, str(state), "--solver", str(solver)],
                         capture_output=True, text=True, timeout=TIMEOUT, env=ENV, cwd=str(tmp_path))
    assert res.returncode == 1 and "refused: solver state '%s'" % state in res.stderr, res.stderr
    assert "Resuming" not in res.stdout + res.stderr
    # caffe itself, handed the file: the data layer names it before Caffe's own check aborts
    res = caffe_train(["-solver", solver, "-snapshot", state], tmp_path)
    assert res.returncode != 0
    assert re.search(r"ERROR in Python layer CountingDataLayer\.setup: SnapshotError: solver state '%s' "
                     r"\(\d+ bytes\) is truncated or corrupt" % re.escape(str(state)), res.stderr), res.stderr[-3000:]
    assert "Resuming from" not in res.stderr


# ----------------------------------------------------------------------------- a killed data worker

def wait_until(cond, timeout=60.0):
    """Poll cond() until it holds (an event wait with a generous bound, not a deadline under test)."""
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached within %.0f s" % timeout
        time.sleep(0.01)


def test_killed_worker_is_an_error_naming_worker_and_batch(lmdbs):
    pipe = BatchPipeline(str(lmdbs[0]), batch_size=4, workers=2, prefetch=3, seed=1)
    try:
        pipe.next_batch()
        victim = pipe.worker_pids[1]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: not _running(victim))    # dead (a zombie until the pipeline reaps it)
        t0 = time.monotonic()
        with pytest.raises(RuntimeError) as err:
            for _ in range(10):      # batches finished before the kill may still be served, whole
                pipe.next_batch()
        elapsed = time.monotonic() - t0
        msg = str(err.value)
        assert re.search(r"data worker 1 of 2 \(pid %d\) was killed by SIGKILL \(.*\) while it had batch \d+ to make "
                         r".*; batch \d+ was not delivered, no partial batch is served" % victim, msg), msg
        assert elapsed < 30, elapsed    # noticed through the closed pipe: well under a second here
        with pytest.raises(RuntimeError, match="pid %d. was killed" % victim):
            pipe.next_batch()           # stays failed: never a half-made batch
        assert_processes_gone(pipe.worker_pids or [victim])
    finally:
        pipe.close()


def test_killed_worker_stops_caffe_train_with_the_message(tmp_path, lmdbs):
    solver = write_solver(tmp_path, lmdbs, "run", 200, workers=2)
    run = CaffeRun(["-solver", solver], tmp_path)
    run.wait_for(r"Iteration 2 \(.*loss = ")
    train_workers, all_workers = run.worker_pids("train"), run.worker_pids()
    victim = train_workers[0]
    os.kill(victim, signal.SIGKILL)
    t0 = time.monotonic()
    rc = run.finish()
    elapsed = time.monotonic() - t0
    text = run.text
    assert rc != 0
    assert re.search(r"ERROR in Python layer CountingDataLayer\.forward: RuntimeError: CountingDataLayer: data worker 0 "
                     r"of 2 \(pid %d\) was killed by SIGKILL .* while it had batch \d+ to make" % victim, text), text[-3000:]
    assert not re.search(r"Iteration 200\b", text)
    assert elapsed < 60, elapsed
    assert_processes_gone(all_workers)


def test_workers_ignore_sigint_and_sighup_and_keep_serving(lmdbs):
    """A terminal's Ctrl-C / hangup reaches the whole process group: under pycaffe (no caffe
    handler inherited) the workers must ignore both, or the default action kills them."""
    with BatchPipeline(str(lmdbs[0]), batch_size=4, workers=2, prefetch=3, seed=2) as pipe:
        ref = [pipe.next_batch().copy()]
        for pid in pipe.worker_pids:
            os.kill(pid, signal.SIGINT)
            os.kill(pid, signal.SIGHUP)
        ref += [pipe.next_batch().copy() for _ in range(5)]
        assert all(_running(p) for p in pipe.worker_pids)
    with BatchPipeline(str(lmdbs[0]), batch_size=4, workers=0, seed=2) as pipe:
        assert all(np.array_equal(pipe.next_batch(), r) for r in ref)


def test_caffe_refuses_a_model_cut_between_layers_that_caffe_would_load_silently(two_snapshots, tmp_path):
    """Caffe's CopyTrainedLayersFrom skips layers missing from the file: without the check the run
    would go on with the lost layers at their fillers."""
    src, solver = two_snapshots
    prefix = fresh_copy(src, tmp_path / "copy")
    model = prefix.parent / "snap_iter_4.caffemodel"
    cut_at_layer_boundary(model)
    res = caffe_train(["-solver", solver, "-snapshot", prefix.parent / "snap_iter_4.solverstate"], tmp_path)
    assert res.returncode != 0
    assert re.search(r"ERROR in Python layer CountingDataLayer\.setup: SnapshotError: model '%s' does not match its "
                     r"solver state" % re.escape(str(model)), res.stderr), res.stderr[-3000:]
    assert "Resuming from" not in res.stderr


PYCAFFE_KILL = r"""
import os, signal, sys
import caffe
from ltc import snapshots
solver = caffe.get_solver(sys.argv[1])
solver.step(1)
victim = snapshots.data_layers(solver.net)[0].pipeline.worker_pids[1]
os.kill(victim, signal.SIGKILL)
try:
    solver.step(5)
except RuntimeError as e:
    print("victim %d error: %s" % (victim, e), flush=True)
    sys.exit(3)
"""


def test_killed_worker_under_pycaffe_raises_from_solver_step(tmp_path, lmdbs):
    solver = write_solver(tmp_path, lmdbs, "run", 200, workers=2)
    res = subprocess.run([sys.executable, "-c", PYCAFFE_KILL, str(solver)], capture_output=True, text=True,
                         timeout=TIMEOUT, env=ENV)
    assert res.returncode == 3, res.stdout + res.stderr[-3000:]
    victim = int(re.search(r"victim (\d+)", res.stdout).group(1))
    assert re.search(r"error: CountingDataLayer: data worker 1 of 2 \(pid %d\) was killed by SIGKILL" % victim,
                     res.stdout), res.stdout


def test_fault_latency_bench_end_to_end(tmp_path, lmdbs):
    out = tmp_path / "fault.csv"
    res = subprocess.run([sys.executable, os.path.join(REPO, "bench", "fault_latency.py"), "--lmdb", str(lmdbs[0]),
                          "--batch", "4", "--repeats", "1", "--out", str(out)],
                         capture_output=True, text=True, timeout=TIMEOUT, env=ENV, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Table 1" in res.stdout and "Table 2" in res.stdout
    rows = out.read_text().splitlines()
    assert rows[0] == "table,batch,state,repeats,median_s,max_s,served" and len(rows) == 4
