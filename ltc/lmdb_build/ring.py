"""Decoding in worker processes: the pool, its shared-memory ring of slots, and the worker side.

Worker processes (spawned, so safe whatever threads this process runs) read and decode the
files themselves; each writes its serialised Datum into a slot of a shared-memory buffer and
sends back only the length, so the pipe carries paths and small tuples, not pixels. The
consumer takes the results in task order and frees each slot after writing it; the feeder
hands out task j only once the result of task j - nslots (the slot's previous user) has been
taken. A worker that dies (OOM kill, decoder crash, SIGBUS) ends the build with a
``WorkerDied`` naming it, its signal and the image it was on, instead of a hang. The ring is
sized to what /dev/shm can hold (fewer slots, else pipes, else decoding in this process,
each said).
"""
import multiprocessing
import os
import signal
import threading
import time

import cv2
import numpy as np

from ltc import workers
from ltc.lmdb_build.errors import WorkerDied
from ltc.lmdb_build.images import datum_into, make_datum_bytes, prepare_image, quiet_opencv, read_file_checked
from ltc.lmdb_build.writer import free_bytes, mib
from ltc.workers import death_message, is_no_space


# ----------------------------------------------------------------------------- the worker side

_CFG = {}


def _worker_init(cfg, parent_pid):
    if not workers.start_worker(parent_pid, signal.SIGKILL):  # the parent handles Ctrl-C; gone already?
        os._exit(1)
    cv2.setNumThreads(1)
    quiet_opencv()
    _CFG.clear()
    _CFG.update(cfg)
    _CFG["parent_pid"] = parent_pid


_SHM = []      # this worker's view of the ring (a SharedMemory), once attached
_STATUS = []   # (SharedMemory, array) of the status table, once attached


def _status_table():
    """This worker's view of the pool's status table (rows: pid, task number, 1 busy / 2 done), or None."""
    name = _CFG.get("status_name")
    if not name:
        return None
    if not _STATUS:
        from multiprocessing import shared_memory
        shm = shared_memory.SharedMemory(name=name)
        _STATUS.append((shm, np.ndarray((_CFG["nslots"], 3), np.int64, buffer=shm.buf)))
    return _STATUS[0][1]


def process_chunk(tasks):
    """process_entry over a list of tasks (one pool message per chunk).

    Each task's row of the status table says which process works on it and whether it
    is done, so that a worker killed mid-image is reported with that image.
    """
    table = _status_table()
    out = []
    pid = os.getpid()
    for t in tasks:
        if table is not None:
            row = table[t[0] % _CFG["nslots"]]
            row[2] = 0
            row[1] = t[0]
            row[0] = pid
            row[2] = 1
        out.append(process_entry(t))
        if table is not None:
            row[2] = 2
    return out


def process_entry(task, cfg=None):
    """(slot, index, abs_path, label) -> (index, value, skip reason or None, bytes read).

    value: None (skipped), the Datum bytes, or -- when the pool shares a slot buffer
    (cfg["shm_name"]) -- the Datum's length in slot ``slot % nslots`` of that buffer,
    so the pixels do not travel through a pipe.
    """
    cfg = cfg or _CFG
    if "parent_pid" in cfg and not workers.parent_alive(cfg["parent_pid"]):
        os._exit(1)
    slot, idx, path, label = task
    if cfg.get("delay"):
        time.sleep(cfg["delay"])
    data, reason = read_file_checked(path)
    if data is None:
        return idx, None, reason, 0
    img, reason = prepare_image(data, cfg["size"], cfg["resize"], cfg["min_side"], cfg["max_pixels"])
    if img is None:
        return idx, None, reason, len(data)
    if cfg.get("shm_name"):
        if not _SHM:
            from multiprocessing import shared_memory
            _SHM.append(shared_memory.SharedMemory(name=cfg["shm_name"]))
        size = cfg["slot_size"]
        value = datum_into(_SHM[0].buf, (slot % cfg["nslots"]) * size, size, img, label, cfg["encoded"],
                           cfg["encode_format"], cfg["jpeg_quality"])
        return idx, value, None, len(data)
    return idx, make_datum_bytes(img, label, cfg["encoded"], cfg["encode_format"], cfg["jpeg_quality"]), None, len(data)


# ----------------------------------------------------------------------------- the pool side


def _shm_create(nbytes):
    """A shared-memory block of ``nbytes`` whose pages are all backed now (posix_fallocate).

    A sparse block on a small /dev/shm kills the first worker that writes past the free
    space with SIGBUS; reserving it here turns that into an OSError (ENOSPC) up front.
    """
    from multiprocessing import shared_memory
    shm = shared_memory.SharedMemory(create=True, size=nbytes)
    try:
        fd = getattr(shm, "_fd", -1)
        if fd >= 0:
            os.posix_fallocate(fd, 0, nbytes)
    except BaseException:
        shm.close()
        shm.unlink()
        raise
    return shm


def _shm_free():
    try:
        return free_bytes("/dev/shm")
    except OSError:
        return None


def _open_ring(workers, chunksize, slot_size, log):
    """(shared memory or None, nslots, chunksize): the worker ring sized to what /dev/shm holds.

    The ring wants max(64, 4 x workers x chunksize) slots; it takes at most half of the
    free /dev/shm (the rest is for semaphores and everyone else), with fewer slots and
    smaller chunks when it must, and no ring at all (Datums come back through the pool's
    pipes) below 2 slots per worker. Every fallback is logged.
    """
    want = max(64, 4 * workers * chunksize)
    free = _shm_free()
    n = want if free is None else min(want, (free // 2) // slot_size)
    least = 2 * workers
    shm, why = None, ""
    while n >= least:
        try:
            shm = _shm_create(n * slot_size)
            break
        except OSError as e:
            why = e.strerror or str(e)
            if not is_no_space(e):
                break
            n //= 2
    free_txt = "%s free" % mib(free) if free is not None else "unknown free space"
    if shm is None:
        log("shared memory: /dev/shm has %s, too little for a ring of %d image slots (%s; the ring takes at most "
            "half the free space)%s; sending the images through the pool's pipes instead"
            % (free_txt, least, mib(least * slot_size), ": %s" % why if why else ""))
        return None, want, chunksize
    if n < want:
        chunksize = max(1, min(chunksize, n // (4 * workers)))
        log("shared memory: /dev/shm has %s, too little for a ring of %d image slots (%s; the ring takes at most "
            "half the free space); using %d slots (%s), %d image(s) per chunk"
            % (free_txt, want, mib(want * slot_size), n, mib(n * slot_size), chunksize))
    return shm, n, chunksize


def _pool_pids(pool):
    return [p.pid for p in list(pool._pool)]


def end_pool(pool, graceful, wait_s=10.0):
    """Stop a pool without ever hanging.

    Pool.join()/terminate() wait for the locks of the task queues; a worker killed while
    holding one never releases it, so they run in a daemon thread, and workers still
    alive after ``wait_s`` are killed (the pool is abandoned; nothing of it is needed).
    """
    procs = list(pool._pool)

    def stop():
        if graceful:
            pool.close()
            pool.join()
        else:
            pool.terminate()
            pool.join()
    t = threading.Thread(target=stop, daemon=True, name="lmdb_build-pool-stop")
    t.start()
    t.join(wait_s)
    if t.is_alive():
        for p in procs + list(pool._pool):
            try:
                p.kill()
            except (OSError, ValueError, AttributeError):
                pass
        t.join(wait_s)
    return not t.is_alive()


def _watch_workers(pool, it, n, describe, poll=1.0):
    """Yield the n results of the imap iterator ``it``; raise WorkerDied if a worker dies meanwhile.

    multiprocessing.Pool silently replaces a dead worker and loses its tasks, so a
    plain loop over imap would wait forever after a crash or an OOM kill. Every
    ``poll`` seconds without a result the original workers are checked; the error
    names the worker, how it died and (``describe(pid)``) the image it was on.
    """
    procs = list(pool._pool)
    pids = set(p.pid for p in procs)
    for _ in range(n):
        while True:
            try:
                value = it.next(timeout=poll)
                break
            except multiprocessing.TimeoutError:
                for w, p in enumerate(procs):
                    code = p.exitcode
                    if code is not None:
                        raise WorkerDied(death_message(
                            "a worker process died", "decoding worker %d of %d (pid %d)" % (w + 1, len(procs), p.pid),
                            code, describe(p.pid)))
                if set(_pool_pids(pool)) != pids:
                    raise WorkerDied("a worker process died and was replaced by the pool; its images are lost")
        yield value


def _free_shm(*blocks):
    for b in blocks:
        if b is not None:
            try:
                b.close()
            finally:
                b.unlink()


class DecodePool(object):
    """The decoders of one build: ``workers`` processes and their ring, or this process.

    ``start`` returns the results (index, value, skip reason, bytes read) in task order; the
    consumer turns each value into the Datum bytes with ``datum(j, value)`` (j: the result's
    position) and then calls ``done()``, which frees its slot for the feeder. ``finish()`` ends
    the workers after the last result, ``stop_feeding()`` and ``terminate()`` end them on a
    failure, and ``close()`` (always) frees the shared memory. ``workers`` ends as the number
    that really ran (0 when the pool could not start).
    """

    def __init__(self, tasks, entries, cfg, workers, log=print):
        self.tasks, self.entries, self.cfg, self.workers, self.log = tasks, entries, cfg, workers, log
        self.pool = self.shm = self.status = None
        self.nslots, self.slot_size, self.chunksize = 1, 0, 1
        self.stop = threading.Event()
        self.free = None

    def start(self, chunksize=8, start_method="spawn"):
        if self.workers > 0:
            self._start_pool(chunksize, start_method)
        if self.workers > 0:
            # imap over chunks with chunksize 1: its iterator then has next(timeout) (with
            # chunksize > 1 imap returns a plain generator), which _watch_workers needs
            n_chunks = (len(self.tasks) + self.chunksize - 1) // self.chunksize
            chunks = _watch_workers(self.pool, self.pool.imap(process_chunk, self._feed(), chunksize=1), n_chunks,
                                    self._describe)
            return (r for chunk in chunks for r in chunk)
        quiet_opencv()   # in-process
        self.cfg.pop("shm_name", None)
        self.cfg.pop("status_name", None)
        return (process_entry(t, self.cfg) for t in self.tasks)

    def _start_pool(self, chunksize, start_method):
        """The ring, the status table (which worker is on which task) and the worker processes;
        ``workers`` drops to 0 when the processes cannot start."""
        cfg = self.cfg
        self.chunksize = max(1, int(chunksize))
        self.slot_size = 3 * cfg["size"] * cfg["size"] + 64
        self.shm, self.nslots, self.chunksize = _open_ring(self.workers, self.chunksize, self.slot_size, self.log)
        self.free = threading.Semaphore(self.nslots)
        if self.shm is not None:
            cfg.update(shm_name=self.shm.name, slot_size=self.slot_size)
        cfg.update(nslots=self.nslots)
        try:  # one row per slot: which worker works on which task (for a dead worker's message)
            self.status = _shm_create(self.nslots * 3 * 8)
            np.ndarray((self.nslots, 3), np.int64, buffer=self.status.buf)[...] = 0
            cfg.update(status_name=self.status.name)
        except OSError:
            self.status = None
        # spawn, not fork: a forked child inherits OpenCV's thread-pool locks in whatever
        # state the parent's threads left them and can deadlock in cv2.resize/imdecode
        ctx = multiprocessing.get_context(start_method)
        try:
            self.pool = ctx.Pool(self.workers, initializer=_worker_init, initargs=(cfg, os.getpid()))
        except OSError as e:  # e.g. no room in /dev/shm for the pool's semaphores
            self.log("cannot start worker processes (%s); decoding in this process instead" % (e.strerror or e))
            self.pool, self.workers = None, 0

    def _feed(self):
        """Chunks of tasks, each task waiting for a free slot."""
        tasks, chunksize = self.tasks, self.chunksize
        for c in range(0, len(tasks), chunksize):
            chunk = tasks[c:c + chunksize]
            for _ in chunk:
                while not self.free.acquire(timeout=0.2):
                    if self.stop.is_set():
                        return
            yield chunk

    def _describe(self, pid):
        """The image a worker was on, from the status table."""
        if self.status is None:
            return ""
        table = np.ndarray((self.nslots, 3), np.int64, buffer=self.status.buf)
        busy = [int(r[1]) for r in table if r[0] == pid and r[2] == 1]
        if not busy:
            return "between images"
        t = self.tasks[min(busy)]
        return "decoding image %d '%s'" % (t[1], self.entries[t[1]].key_path)

    def datum(self, j, value):
        """The Datum bytes of result ``j``: ``value`` itself, or read from the ring slot it names."""
        if isinstance(value, int):
            off = (j % self.nslots) * self.slot_size
            return bytes(self.shm.buf[off:off + value])
        return value

    def done(self):
        """Result taken: its slot may be reused."""
        if self.pool is not None:
            self.free.release()

    def finish(self):
        if self.pool is not None:
            end_pool(self.pool, graceful=True)
            self.pool = None

    def stop_feeding(self):
        self.stop.set()

    def terminate(self):
        if self.pool is not None:
            end_pool(self.pool, graceful=False)

    def close(self):
        _free_shm(self.shm, self.status)
        self.shm = self.status = None
