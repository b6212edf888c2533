"""make_lmdb under resource faults: a full disk, a small /dev/shm, dead workers (issue 19).

The small filesystems are made by the tests themselves: tmpfs mounts inside a private
mount namespace (``unshare -m``, needs root), so nothing outside the test sees them and
they vanish with it. Without that the tests that need them are skipped with the reason.
What is left on a small filesystem is listed from inside the namespace (the mount is
gone afterwards). Timeouts are generous subprocess limits that only catch a hang.
"""
import faulthandler
import os
import re
import signal
import subprocess
import sys

import cv2
import lmdb
import numpy as np
import pytest

from ltc import REPO as ROOT
from ltc import lmdb_build
from ltc import workers as wk

TOOL = os.path.join(ROOT, "tools", "make_lmdb.py")
HANG_S = 300  # a hang, not a slow run under load: the runs below take seconds


def _namespace_reason():
    """None if a tmpfs can be mounted in a private mount namespace here, else why not."""
    if os.geteuid() != 0:
        return "needs root for unshare -m and tmpfs mounts"
    try:
        r = subprocess.run(["unshare", "-m", "sh", "-c",
                            "mount --make-rprivate / && mount -t tmpfs -o size=1m tmpfs /mnt && echo mounted"],
                           capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return "unshare -m failed: %s" % e
    if r.returncode != 0 or "mounted" not in r.stdout:
        return "cannot mount a tmpfs in a private mount namespace: %s" % r.stderr.strip()[-300:]
    return None


_REASON = []


@pytest.fixture(scope="module")
def namespace():
    if not _REASON:
        _REASON.append(_namespace_reason())
    if _REASON[0]:
        pytest.skip(_REASON[0])


def run_in_namespace(script, timeout=HANG_S):
    """bash ``script`` in a private mount namespace; its mounts vanish when it ends."""
    return subprocess.run(["unshare", "-m", "bash", "-c", "set -u; mount --make-rprivate / && " + script],
                          capture_output=True, text=True, timeout=timeout)


def make_photos(folder, n):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.RandomState(0)
    for i in range(n):
        small = (rng.rand(8, 8, 3) * 255).astype(np.uint8)
        cv2.imwrite(os.path.join(folder, "%03d.png" % i), cv2.resize(small, (64, 48), interpolation=cv2.INTER_CUBIC))
    return folder


def tool_cmd(src, out, *extra):
    return " ".join([sys.executable, TOOL, src, out, "--no-progress"] + list(extra))


def split_listing(stdout):
    """(tool stdout, entries left on the small filesystem) from a script ending in 'echo LEFT:; ls -A'."""
    head, _, tail = stdout.partition("LEFT:\n")
    return head, tail.split()


# ----------------------------------------------------------------------------- disk full

@pytest.mark.parametrize("mode,workers", [("writemap", 2), ("no-writemap", 2), ("writemap", 0)])
def test_disk_full_is_a_clear_error(tmp_path, namespace, mode, workers):
    """60 raw 256x256 Datums (12 MB) onto a 3 MiB filesystem, past the up-front check (--force):
    a message naming the output, what was written, needed vs free; exit 1; no SIGBUS; nothing left."""
    src = make_photos(str(tmp_path / "src"), 60)
    small = str(tmp_path / "small")
    os.makedirs(small)
    out = os.path.join(small, "out_lmdb")
    extra = ["--force", "--batch", "4", "--workers", str(workers)] + (["--no-writemap"] if mode == "no-writemap" else [])
    r = run_in_namespace("mount -t tmpfs -o size=3m tmpfs %s && %s; echo RC=$?; echo LEFT:; ls -A %s"
                         % (small, tool_cmd(src, out, *extra), small))
    stdout, left = split_listing(r.stdout)
    rc = int(re.search(r"RC=(\d+)", stdout).group(1))
    assert rc == 1, (rc, r.stderr[-3000:])  # a SIGBUS would be 135
    err = r.stderr
    assert "Traceback" not in err and "Bus error" not in err, err
    m = re.search(r"disk full: the filesystem of OUTPUT '(.+?)' ran out of space \((.+?)\) after (\d+) of (\d+) "
                  r"images were written \(([\d.]+) MiB in the partial database\); the database needs about "
                  r"([\d.]+) MiB, ([\d.]+) MiB were free when the build started", err)
    assert m, err
    assert m.group(1) == out and int(m.group(4)) == 60
    assert 0 < int(m.group(3)) < 60          # batches of 4 were committed before the disk filled
    assert float(m.group(6)) > 10.0 and 2.5 < float(m.group(7)) <= 3.0   # needs ~12 MiB, 3 MiB were free
    partial = re.search(r"removed the partial database (\S+);", err).group(1)
    assert partial.startswith(out + ".partial-") and "nothing at %s" % out in err
    assert left == [], left                  # neither the partial folder nor a report


@pytest.mark.parametrize("mode", ["writemap", "no-writemap"])
def test_already_full_disk(tmp_path, namespace, mode):
    """A filesystem with no space at all (--force past the check): the error comes when the partial
    database is created (lock.mdb is reserved before LMDB maps it), exit 1, nothing left but the filler."""
    src = make_photos(str(tmp_path / "src"), 8)
    small = str(tmp_path / "small")
    os.makedirs(small)
    out = os.path.join(small, "out_lmdb")
    extra = ["--force"] + (["--no-writemap"] if mode == "no-writemap" else [])
    r = run_in_namespace("mount -t tmpfs -o size=1m tmpfs %s && (head -c 2000000 /dev/zero > %s/filler 2>/dev/null; "
                         "%s; echo RC=$?; echo LEFT:; ls -A %s)" % (small, small, tool_cmd(src, out, *extra), small))
    stdout, left = split_listing(r.stdout)
    assert re.search(r"RC=1\b", stdout), (stdout, r.stderr[-3000:])
    assert ("disk full: the filesystem of OUTPUT '%s' ran out of space (creating the partial database: No space left "
            "on device) after 0 of 8 images were written" % out) in r.stderr, r.stderr
    assert "removed the partial database %s.partial-" % out in r.stderr and "Traceback" not in r.stderr
    assert left == ["filler"], left


def test_up_front_refusal(tmp_path, namespace):
    """Without --force a job that clearly does not fit is refused before anything is written;
    a job that fits on the same filesystem is built (the check is not a blanket refusal), also
    when a killed build's stale partial folder holds most of the space (it is removed first)."""
    src = make_photos(str(tmp_path / "src"), 24)
    fits = make_photos(str(tmp_path / "fits"), 8)
    small = str(tmp_path / "small")
    os.makedirs(small)
    out, out2 = os.path.join(small, "out_lmdb"), os.path.join(small, "fits_lmdb")
    stale = "true & wait $!; mkdir %s.partial-$! && head -c 2000000 /dev/zero > %s.partial-$!/data.mdb; " % (out2, out2)
    r = run_in_namespace("mount -t tmpfs -o size=3m tmpfs %s && %s; echo RC=$?; %s%s; echo RC2=$?; echo LEFT:; ls -A %s"
                         % (small, tool_cmd(src, out), stale, tool_cmd(fits, out2), small))
    stdout, left = split_listing(r.stdout)
    assert re.search(r"RC=1\b", stdout) and re.search(r"RC2=0\b", stdout), (stdout, r.stderr[-3000:])
    m = re.search(r"not enough space for OUTPUT '(.+?)': the database needs about ([\d.]+) MiB \(24 images x "
                  r"[\d.]+ KiB, raw 3x256x256 Datums\) and its filesystem has ([\d.]+) MiB free; nothing was written\. "
                  r".*--force", r.stderr)
    assert m, r.stderr
    assert m.group(1) == out and float(m.group(2)) > float(m.group(3))
    assert 4.5 < float(m.group(2)) < 5.0     # 24 x (49 overflow pages + leaf node)
    assert sorted(left) == ["fits_lmdb", "fits_lmdb.skipped.tsv"], left
    assert "removing stale partial build %s.partial-" % out2 in stdout


def test_space_estimate_matches_a_real_database(tmp_path):
    """The raw estimate is an upper bound within 3% of what LMDB really takes."""
    src = make_photos(str(tmp_path / "src"), 40)
    out = str(tmp_path / "db")
    s = lmdb_build.build_lmdb(lmdb_build.collect_folder(src), out, workers=0, progress=False)
    entries = lmdb_build.collect_folder(src)
    keys = {i: ("%08d_%s" % (i, e.key_path)).encode() for i, e in enumerate(entries)}
    tasks = [(i, i, e.abs_path, 0) for i, e in enumerate(entries)]
    need, how = lmdb_build.estimate_db_bytes(tasks, keys, dict(encoded=False, size=256))
    data = os.path.getsize(os.path.join(out, "data.mdb")) + os.path.getsize(os.path.join(out, "lock.mdb"))
    assert s["written"] == 40 and "40 images" in how
    assert data <= need <= data * 1.03, (data, need)


# ----------------------------------------------------------------------------- small /dev/shm

@pytest.mark.parametrize("shm", ["1m", "4m", "full"])
def test_small_dev_shm(tmp_path, namespace, shm):
    """/dev/shm of 1 MiB (pipes), 4 MiB (fewer slots) and 1 MiB already full (no semaphores: decoding
    in-process), 2 workers, 100 images: the build finishes with every image, says what it fell back
    to, and leaves no partial folder and nothing in /dev/shm."""
    n = 100  # above SMALL_JOB, so the worker pool is used
    src = make_photos(str(tmp_path / "src"), n)
    out = str(tmp_path / "db")
    size = "1m" if shm == "full" else shm
    fill = "head -c 1048576 /dev/zero > /dev/shm/filler 2>/dev/null; " if shm == "full" else ""
    r = run_in_namespace("mount -t tmpfs -o size=%s tmpfs /dev/shm && %s%s; echo RC=$?; echo LEFT:; ls -A /dev/shm"
                         % (size, fill, tool_cmd(src, out, "--workers", "2")))
    stdout, left = split_listing(r.stdout)
    assert re.search(r"RC=0\b", stdout), (stdout, r.stderr[-3000:])
    expect = {"1m": "sending the images through the pool's pipes instead",
              "4m": r"using \d+ slots \([\d.]+ MiB\), 1 image\(s\) per chunk",
              "full": "cannot start worker processes \\(No space left on device\\); decoding in this process"}[shm]
    assert re.search(expect, stdout), stdout
    assert "shared memory: /dev/shm has" in stdout
    assert left == (["filler"] if shm == "full" else []), left
    assert not [p for p in os.listdir(str(tmp_path)) if ".partial-" in p]
    env = lmdb.open(out, readonly=True, lock=False)
    with env.begin() as txn:
        assert txn.stat()["entries"] == n
        first = txn.get(b"00000000_000.png")
    env.close()
    ref = cv2.resize(cv2.imread(os.path.join(src, "000.png")), (256, 256), interpolation=cv2.INTER_LINEAR)
    assert first is not None and first[-4 - 3 * 256 * 256:-4] == np.ascontiguousarray(ref.transpose(2, 0, 1)).tobytes()


# ----------------------------------------------------------------------------- workers

def test_pool_teardown_does_not_hang_on_a_lock_held_by_a_dead_worker():
    """Idle pool workers wait for tasks holding the task queue's read lock; kill them and
    Pool.terminate() waits for that lock for ever. end_pool returns and leaves no worker alive."""
    code = r"""
import multiprocessing, os, signal
from ltc import lmdb_build
if __name__ == "__main__":
    pool = multiprocessing.get_context("spawn").Pool(2)
    pool.map(abs, [1, 2])             # both workers started, then idle in the task queue's get()
    procs = list(pool._pool)
    for p in procs:
        os.kill(p.pid, signal.SIGKILL)
    for p in procs:
        p.join()
    lmdb_build.end_pool(pool, graceful=False, wait_s=2.0)
    alive = [p.pid for p in procs + list(pool._pool) if p.is_alive()]
    print("ended; alive:", alive)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_S)
    assert r.returncode == 0 and "ended; alive: []" in r.stdout, (r.stdout, r.stderr[-2000:])


def test_exit_text_names_the_signal():
    assert wk.exit_text(-signal.SIGBUS).startswith("was killed by SIGBUS (bus error")
    assert wk.exit_text(-signal.SIGKILL).startswith("was killed by SIGKILL (")
    assert wk.exit_text(3) == "exited with status 3"
    assert wk.death_message("x", "worker 1 (pid 5)", -9, "decoding 'a.jpg'") == \
        "x: worker 1 (pid 5) " + wk.exit_text(-9) + " while decoding 'a.jpg'"


@pytest.mark.parametrize("sig", [signal.SIGBUS, signal.SIGKILL])
def test_counting_pipeline_names_a_dead_worker(tmp_path, sig):
    """The counting data layer's workers: a worker killed by a signal ends next_batch with an error
    naming the worker, its pid, the signal and the batch it had, within a few batches."""
    from ltc.pipeline import BatchPipeline
    src = make_photos(str(tmp_path / "src"), 12)
    db = str(tmp_path / "db")
    lmdb_build.build_lmdb(lmdb_build.collect_folder(src), db, workers=0, progress=False)
    was = faulthandler.is_enabled()
    faulthandler.disable()  # else the forked workers inherit pytest's handler and print a stack when killed
    try:
        pipe = BatchPipeline(db, batch_size=4, workers=2, prefetch=3, seed=1)
    finally:
        if was:
            faulthandler.enable()
    with pipe:
        pipe.next_batch()
        victim = pipe.worker_pids[1]
        os.kill(victim, sig)
        with pytest.raises(RuntimeError) as e:
            for _ in range(50):   # worker 1 is due every second batch
                pipe.next_batch()
    msg = str(e.value)
    assert "data worker 1 of 2 (pid %d) was killed by %s" % (victim, signal.Signals(sig).name) in msg, msg
    b = int(re.search(r"while it had batch (\d+) to make \(4 images of LMDB '([^']+)': ", msg).group(1))
    assert b % 2 == 1 and db in msg


def test_interrupt_during_cleanup_still_removes_the_partial(tmp_path, monkeypatch):
    """A SIGINT that arrives while a failed build cleans up (signals_raise.hold) does not cut the
    cleanup short: the partial folder the message names as removed is gone."""
    src = make_photos(str(tmp_path / "src"), 30)
    out = str(tmp_path / "db")
    calls = []
    real_abort, real_put = lmdb_build.SafeLmdbWriter.abort, lmdb_build.SafeLmdbWriter.put

    def abort(self):
        if not calls:
            calls.append(self.partial)
            os.kill(os.getpid(), signal.SIGINT)   # a second Ctrl-C during the cleanup
        return real_abort(self)

    def put(self, key, value):
        if self.count + len(self.pending) >= 10:
            raise lmdb_build.BuildError("planted failure after 10 puts")
        return real_put(self, key, value)

    monkeypatch.setattr(lmdb_build.SafeLmdbWriter, "abort", abort)
    monkeypatch.setattr(lmdb_build.SafeLmdbWriter, "put", put)
    with pytest.raises(lmdb_build.BuildError) as e:
        lmdb_build.build_lmdb(lmdb_build.collect_folder(src), out, workers=0, progress=False, batch=4)
    assert "planted failure" in str(e.value)
    assert calls and not os.path.exists(calls[0]) and not os.path.exists(out)
    assert e.value.cleanup == "removed the partial database %s" % calls[0]
