"""Batch pipeline of the counting data layer: LMDB -> prepared batches, made by worker processes.

``BatchPipeline`` is what ``counting_data.CountingDataLayer`` wraps; it needs no Caffe net
and can be driven from any script (benchmarks, tests):

    with BatchPipeline("data/sample/train_lmdb", batch_size=32, workers=2, seed=1701) as pipe:
        batch = pipe.next_batch()        # float32 6 x 32 x 3 x 114 x 114: t1,t2,t3,t4,dx,dy
        plan = pipe.plan(0)              # the random choices behind batch 0 (ltc.transforms.BatchPlan)

Design:
- Batch b is fully determined by (seed, phase, b) (ltc.transforms.plan_batch), so the
  batches do not depend on the number of workers; the consumer gets them in index order.
- ``workers`` processes are forked at construction (before the caller starts threads of its
  own, if possible). Batch b goes to worker b mod workers and is written straight into slot
  b mod prefetch of a ring of ``prefetch`` batch buffers in anonymous shared memory (mmap
  made before the fork); only (batch, slot) pairs travel through pipes. prefetch >=
  workers + 1 keeps every worker busy.
- ``next_batch`` returns a view of the slot; the slot goes back to work at the next call,
  so copy what you need before calling again.
- Shutdown: ``close()`` (also from ``__del__`` / ``with``) stops and reaps the workers. If
  the owning process dies without closing (the ``caffe`` binary never runs atexit nor
  finalises Python), each worker gets SIGTERM through prctl(PR_SET_PDEATHSIG) and also
  notices the new parent pid within a second while idle, and exits.
- Resume: ``start`` (or ``seek(b)`` later) makes the stream begin at batch b, exactly the
  batches an uninterrupted stream serves from its b-th call on.
- Signals: workers ignore SIGINT and SIGHUP (a Ctrl-C or a hangup reaches the whole process
  group; the solver must be able to finish its iteration and snapshot), and keep serving.
- A worker that dies (SIGKILL, the OOM killer) is noticed at once through its closed pipe
  (at the latest within ``_DEATH_CHECK_S``): ``next_batch`` raises a RuntimeError naming the
  worker, its pid, how it died, the batch it had to make and the batch asked for; the
  pipeline is closed then and keeps raising that error, so no half-made batch is handed out.
- The arguments are trusted: the data layer's setup checked them against ltc/knobs.py (DATA).
- workers = 0 makes each batch in the calling process (for debugging). workers = "auto"
  forks one worker per CPU this process may run on, less one for the solver (at least 1, at
  most ``AUTO_MAX_WORKERS``), and raises prefetch to workers + 2: workers only run ahead by
  ``prefetch`` batches, so idle ones cost memory, not CPU, and a GPU solver gets every spare
  core (bench/gpu_check.py measures how many it needs). The ring of batch slots is kept within
  ``AUTO_MAX_RING_BYTES``: at batch 256 (228 MiB a slot) that is 8 slots and 6 workers, about
  15,000 samples/s by bench/data_layer.py's 2,500 per worker.
- Starvation check: the pipeline times how long the consumer waits in ``next_batch``. When,
  over a window of ``STARVE_WINDOW`` batches (the first is skipped: it waits for the workers
  to start), the waits exceed ``STARVE_FRACTION`` of the wall time between calls, it prints one
  line to stderr saying so, with the worker count and the CPU count (``wait_stats()`` gives
  the figures).
- Raw Datums are scanned without copies (the image is a view of the LMDB page during the
  read transaction); OpenCV runs single-threaded in workers.

Throughput check (samples/s; one sample = six inputs; also CPU seconds used by the makers):
    python bench/data_layer.py --lmdb data/sample/train_lmdb --workers 1 2
"""
import mmap
import os
import signal
import sys
import time
import traceback
from multiprocessing.connection import Pipe, wait

import cv2
import numpy as np

from ltc import knobs, sharding, transforms, workers
from ltc.lmdb_io import LmdbError, decode_datum, open_lmdb, resolve_path
from ltc.workers import death_message, reap

_POLL_S = 1.0          # how often an idle worker checks that its parent still lives
_JOIN_S = 5.0          # how long close() waits for a worker before SIGKILL
_DEATH_CHECK_S = 2.0   # while waiting for a batch, how often the workers' pids are checked too
AUTO = "auto"
AUTO_MAX_WORKERS = 16  # workers "auto": never more than this many
AUTO_MAX_RING_BYTES = 2 << 30  # workers "auto": the shared batch ring stays within 2 GiB (at least 3 slots)
STARVE_WINDOW = 100    # batches per starvation check
STARVE_FRACTION = 0.05 # warn when the consumer waited more than this share of a window
_D = knobs.DATA.defaults()


def available_cpus():
    """CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def auto_workers(cpus=None, slot_bytes=0):
    """The worker count of workers = "auto": one per CPU less one for the solver, 1..AUTO_MAX_WORKERS,
    and no more than lets the ring of workers + 2 slots of ``slot_bytes`` fit AUTO_MAX_RING_BYTES."""
    cpus = available_cpus() if cpus is None else cpus
    n = min(AUTO_MAX_WORKERS, cpus - 1)
    if slot_bytes > 0:
        n = min(n, AUTO_MAX_RING_BYTES // slot_bytes - 2)
    return max(1, n)


def read_key_array(env):
    """All keys of an LMDB in key order as a numpy bytes array (no values read; fork-friendly)."""
    with env.begin() as txn:
        keys = list(txn.cursor().iternext(keys=True, values=False))
    return np.array(keys, dtype=np.bytes_)


def decode_chw(value, key, source):
    """Datum bytes/buffer -> 3 x H x W uint8 BGR (lmdb_io.decode_datum: zero-copy for raw Datums,
    so valid only inside the read transaction); errors name the LMDB and the key."""
    try:
        return decode_datum(value)[0]
    except LmdbError as e:
        raise LmdbError("LMDB '%s', key %r: %s" % (source, key, e))


class _Maker:
    """Makes batches: reads the member images of a plan from the LMDB and fills a buffer."""

    def __init__(self, cfg, keys, groups=None):
        self.cfg, self.keys, self.groups = cfg, keys, groups
        self.env = None
        self.perm_cache = {}

    def plan(self, b):
        c = self.cfg
        return transforms.plan_batch(c["seed"], c["phase"], b, len(self.keys), c["batch_size"], c["interpolation"],
                             c["gray_prob"], c["test_batches"], self.perm_cache, self.groups)

    def make(self, b, out, keep_open=False):
        """Fill ``out`` with batch b. keep_open=False closes the LMDB again afterwards: py-lmdb refuses
        a second open of an environment in one process, and a forked child inherits that
        bookkeeping, so the consumer process must not hold the LMDB open (two layers on one
        LMDB, or workers forked later by another layer, would fail)."""
        c = self.cfg
        if self.env is None:
            self.env = open_lmdb(c["source"], c["who"])
        try:
            self._make(b, out)
        finally:
            if not keep_open:
                self.close()

    def _make(self, b, out):
        c = self.cfg
        plan = self.plan(b)
        crop = c["crop_size"]
        cache = {}
        images = []
        with self.env.begin(buffers=True) as txn:
            for idx in plan.index:
                idx = int(idx)
                img = cache.get(idx)
                if img is None:
                    key = self.keys[idx]
                    value = txn.get(key)
                    if value is None:
                        raise LmdbError("%s: key %r vanished from LMDB '%s'" % (c["who"], key, c["source"]))
                    img = decode_chw(value, key, c["source"])
                    if img.shape[1] < crop or img.shape[2] < crop:
                        raise LmdbError("%s: LMDB '%s', key %r: image is %dx%d, smaller than crop_size %d"
                                        % (c["who"], c["source"], key, img.shape[1], img.shape[2], crop))
                    cache[idx] = img
                images.append(img)
            transforms.fill_batch(images, plan, crop, out, c["eps"])   # inside the txn: raw images are views of it

    def close(self):
        if self.env is not None:
            self.env.close()
            self.env = None


def _worker_main(maker, slots, tasks, results, parent_pid):
    """Worker loop (forked child): wait for (batch, slot), fill the slot, answer (batch, slot)."""
    # Ctrl-C (ignored by start_worker) and hangups reach the whole process group: they are the
    # parent's business (the solver finishes its iteration and snapshots, -sigint_effect /
    # -sighup_effect); keep serving.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if not workers.start_worker(parent_pid):  # gone already?
        return
    # No cv2.setNumThreads here: after a fork, reconfiguring the thread pool that OpenCV may
    # have started in the parent blocks for ever (pthread_cond_destroy on the pool's condition
    # variables). The parent sets one thread around the fork instead (_start_workers).
    while True:
        if not tasks.poll(_POLL_S):
            if not workers.parent_alive(parent_pid):
                return
            continue
        try:
            msg = tasks.recv()
        except EOFError:
            return
        if msg is None:
            return
        b, slot = msg
        try:
            maker.make(b, slots[slot], keep_open=True)
        except Exception:
            results.send(("error", b, traceback.format_exc()))
            return
        results.send(("ok", b, slot))


class BatchPipeline:
    """Prepared counting batches from an LMDB; see the module docstring.

    The arguments are the data layer's knobs (ltc/knobs.py DATA: defaults, kinds and ranges;
    prefetch: ring slots, used when workers > 0; with "auto" at least workers + 2), plus phase
    "train" | "test", ``who`` (the name in messages) and start >= 0: the index of the first batch
    served (a resumed run; see ``seek``). They are not checked again here: the layer's setup
    checked them (ltc.params.parse_params); a script that builds a pipeline itself passes values
    as DATA declares them (``knobs.DATA[key].accept(value)`` checks one).
    Errors: lmdb_io.LmdbError for a missing/empty/bad LMDB, RuntimeError when a worker fails
    (with its traceback).
    """

    def __init__(self, source, batch_size=_D["batch_size"], crop_size=_D["crop_size"],
                 interpolation=_D["interpolation"], gray_prob=_D["gray_prob"], seed=_D["seed"], phase="train",
                 workers=_D["workers"], prefetch=_D["prefetch"], eps=_D["eps"], test_batches=_D["test_batches"],
                 who="BatchPipeline", start=0, shard=_D["shard"], num_shards=_D["num_shards"], partner=_D["partner"]):
        self._pids = []
        self._closed = True
        self._owner = os.getpid()
        self.auto = workers == AUTO
        self.source = resolve_path(source)
        env = open_lmdb(source, who)
        try:
            keys = sharding.shard_keys(read_key_array(env), shard, num_shards)  # rank's disjoint part
            seed = sharding.shard_seed(seed, shard, num_shards)
            with env.begin() as txn:
                first = decode_chw(txn.get(keys[0]), keys[0], source)
        finally:
            env.close()
        if len(keys) < 2:
            raise LmdbError("%s: LMDB '%s' holds %d image; y must come from a different image, so at least 2 "
                            "are needed" % (who, self.source, len(keys)))
        if first.shape[1] < crop_size or first.shape[2] < crop_size:
            raise LmdbError("%s: LMDB '%s', key %r: image is %dx%d, smaller than crop_size %d"
                            % (who, self.source, keys[0], first.shape[1], first.shape[2], crop_size))
        self.n_db = len(keys)
        self.batch_size, self.crop_size, self.phase = batch_size, crop_size, phase
        self.test_batches = test_batches or -(-self.n_db // batch_size)
        self.shape = transforms.batch_shape(batch_size, crop_size)
        nbytes = int(np.prod(self.shape)) * 4        # one batch slot
        if self.auto:                                # the count, now that the slot size is known
            workers = auto_workers(slot_bytes=nbytes)
            prefetch = max(prefetch, workers + 2)
        self.workers, self.prefetch = workers, prefetch
        self.cfg = dict(source=self.source, batch_size=batch_size, crop_size=crop_size, interpolation=interpolation,
                        gray_prob=gray_prob, seed=seed, phase=phase, eps=eps, test_batches=test_batches, who=who)
        self.who = who
        self.partner = partner
        # partner "same_source": the source of each key (ltc/mixdata.py's <index>_<source>_... keys)
        self.groups = transforms.source_groups(keys) if partner == "same_source" else None
        self._maker = _Maker(self.cfg, keys, self.groups)
        self._next = start       # index of the next batch next_batch returns
        self._held = None        # slot handed out by the previous next_batch
        self._failed = None      # the error message once a worker has died or failed
        self._wanted = None      # the batch next_batch is waiting for
        self._waited = 0.0       # starvation check: seconds waited in this window,
        self._window_t0 = None   # when the window began,
        self._window_n = 0       # batches served in it,
        self.starved_windows = 0 # windows that crossed STARVE_FRACTION
        self.last_wait_fraction = None
        nslots = prefetch if workers > 0 else 1
        self._mm = mmap.mmap(-1, nslots * nbytes)   # MAP_SHARED | MAP_ANONYMOUS: shared with forked workers
        self._slots = np.frombuffer(self._mm, np.float32).reshape((nslots,) + self.shape)
        self._closed = False
        if workers > 0:
            self._start_workers()

    # ------------------------------------------------------------------ workers
    def _start_workers(self):
        self._tasks, self._results, self._done = [], [], {}
        parent = os.getpid()
        sys.stdout.flush()
        sys.stderr.flush()
        cv_threads = cv2.getNumThreads()
        cv2.setNumThreads(1)      # inherited by the workers: OpenCV runs serially there
        try:
            self._fork_workers(parent)
        finally:
            cv2.setNumThreads(cv_threads)
        self._in_flight = {}     # slot -> batch index
        for b in range(self._next, self._next + self.prefetch):
            self._dispatch(b)

    def _fork_workers(self, parent):
        for w in range(self.workers):
            t_recv, t_send = Pipe(duplex=False)
            r_recv, r_send = Pipe(duplex=False)
            pid = os.fork()
            if pid == 0:  # child
                code = 0
                try:
                    t_send.close()
                    r_recv.close()
                    for c in self._tasks + self._results:
                        c.close()
                    _worker_main(self._maker, self._slots, t_recv, r_send, parent)
                except BaseException:
                    code = 1
                    try:
                        traceback.print_exc()
                    except BaseException:
                        pass
                finally:
                    os._exit(code)
            t_recv.close()
            r_send.close()
            self._pids.append(pid)
            self._tasks.append(t_send)
            self._results.append(r_recv)

    def _dispatch(self, b):
        slot = b % self.prefetch
        self._in_flight[slot] = b
        w = b % self.workers
        try:
            self._tasks[w].send((b, slot))
        except OSError:  # a broken pipe: the worker is gone
            self._fail(self._death(w, reap(self._pids[w], wait_s=5.0)))

    def _pump(self):
        """Receive the answers that are ready (waiting up to _DEATH_CHECK_S); a dead or failed
        worker raises RuntimeError (see _fail)."""
        ready = wait(self._results, timeout=_DEATH_CHECK_S)
        for conn in ready:
            w = self._results.index(conn)
            try:
                msg = conn.recv()
            except (EOFError, OSError):  # its end of the pipe closed: the worker is gone
                self._fail(self._death(w, reap(self._pids[w], wait_s=5.0)))
            if msg[0] == "error":
                self._fail("%s: data worker %d of %d (pid %d) failed on batch %d:\n%s"
                           % (self.who, w, self.workers, self._pids[w], msg[1], msg[2]))
            self._done[msg[1]] = msg[2]
        if not ready:
            for w, pid in enumerate(self._pids):
                code = reap(pid)
                if code is not None:
                    self._fail(self._death(w, code))

    def _fail(self, message):
        """Remember the error, stop the other workers, raise RuntimeError(message) (and again on
        every later call: no half-made batch is ever handed out)."""
        self._failed = message
        for pid in self._pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.close()
        raise RuntimeError(message)

    def _wait_for(self, b):
        while b not in self._done:
            self._pump()
        self._wanted = None
        return self._done.pop(b)

    def _death(self, w, code):
        """The error for dead worker w: its pid, how it died, the batch (and images) it was on."""
        mine = [b for b in self._in_flight.values()
                if b % self.workers == w and b >= self._next - 1 and b not in self._done]
        doing = ""
        if mine:
            b = min(mine)
            keys = [self._maker.keys[int(i)].decode("utf-8", "replace") for i in self.plan(b).index]
            doing = "it had batch %d to make (%d images of LMDB '%s': %s%s)" % (
                b, len(keys), self.source, ", ".join(keys[:3]), ", ..." if len(keys) > 3 else "")
        asked = ("; batch %d was not delivered, no partial batch is served" % self._wanted
                 if self._wanted is not None else "")
        return death_message(self.who, "data worker %d of %d (pid %d)" % (w, self.workers, self._pids[w]),
                             code, doing) + asked

    # ------------------------------------------------------------------ public
    @property
    def worker_pids(self):
        return list(self._pids)

    def plan(self, b):
        """The random choices behind batch b (ltc.transforms.BatchPlan); cheap, no images read."""
        return self._maker.plan(b)

    @property
    def position(self):
        """Index of the batch the next ``next_batch`` call returns."""
        return self._next

    def seek(self, b):
        """Make batch b the next one served (drops the batches prepared ahead)."""
        if b < 0:
            raise ValueError("%s: seek(%d): batch index must be >= 0" % (self.who, b))
        self._check_open()
        if b == self._next:
            return
        if self.workers > 0:   # let the batches in flight land, then refill the ring from b
            pending = {bb for slot, bb in self._in_flight.items() if slot != self._held}
            while not pending <= set(self._done):
                self._pump()
            self._done.clear()
            self._in_flight.clear()
            self._held = None
            for bb in range(b, b + self.prefetch):
                self._dispatch(bb)
        self._next = b

    def _check_open(self):
        if self._failed is not None:
            raise RuntimeError(self._failed)
        if self._closed:
            raise RuntimeError("%s: next_batch() after close()" % self.who)

    def next_batch(self):
        """The next batch (float32 6 x N x 3 x S x S, blocks t1,t2,t3,t4,dx,dy), valid until the next call."""
        self._check_open()
        b = self._next
        self._next += 1
        if self.workers == 0:
            self._maker.make(b, self._slots[0])
            return self._slots[0]
        self._wanted = b
        if self._held is not None:       # the previous batch's slot is free again
            freed, self._held = self._held, None
            self._dispatch(self._in_flight[freed] + self.prefetch)
        t0 = time.monotonic()
        slot = self._wait_for(b)
        self._account_wait(t0, time.monotonic())
        self._held = slot
        return self._slots[slot]

    def _account_wait(self, t0, t1):
        """Starvation check (module docstring): one window every STARVE_WINDOW batches."""
        if self._window_t0 is None:       # the first batch waits for the workers to start
            self._window_t0 = t1
            return
        self._waited += t1 - t0
        self._window_n += 1
        if self._window_n < STARVE_WINDOW:
            return
        frac = self._waited / max(t1 - self._window_t0, 1e-9)
        self.last_wait_fraction = frac
        if frac > STARVE_FRACTION:
            self.starved_windows += 1
            print("%s: the consumer waited for data %.0f%% of the last %d batches (%d worker%s, %d CPUs): "
                  "the data layer is the bottleneck; raise workers%s" % (
                      self.who, 100 * frac, self._window_n, self.workers, "s" if self.workers != 1 else "",
                      available_cpus(), " (or make the images smaller)" if self.auto else
                      " or set workers to \"auto\""), file=sys.stderr, flush=True)
        self._waited, self._window_n, self._window_t0 = 0.0, 0, t1

    def wait_stats(self):
        """(share of time waited in the last full window or None, windows that crossed the limit)."""
        return self.last_wait_fraction, self.starved_windows

    def close(self):
        """Stop and reap the workers (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._pids and os.getpid() == self._owner:
            for conn in self._tasks:
                try:
                    conn.send(None)
                except (OSError, ValueError):
                    pass
            deadline = time.monotonic() + _JOIN_S
            for pid in self._pids:
                while True:
                    try:
                        done = os.waitpid(pid, os.WNOHANG)[0] != 0
                    except ChildProcessError:
                        done = True
                    if done:
                        break
                    if time.monotonic() > deadline:
                        try:
                            os.kill(pid, signal.SIGKILL)
                            os.waitpid(pid, 0)
                        except (ProcessLookupError, ChildProcessError):
                            pass
                        break
                    time.sleep(0.01)
            for conn in self._tasks + self._results:
                conn.close()
        self._pids = []
        self._maker.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
