"""Caffe Python data layer of the counting pretext task: ``CountingDataLayer``.

A thin shell over ``ltc.pipeline.BatchPipeline`` (workers, shared memory) and
``ltc.transforms`` (crop, tiles, D, gray, normalisation, derangement; docs/design.md, Input pipeline).

Tops (no bottoms), S = crop_size / 2 (114 by default):
    stack false (default): six tops t1, t2, t3, t4, dx, dy, each N x 3 x S x S float32 --
                 the four tiles (TL, TR, BL, BR) of a random crop x, D(x), and D(y) of
                 another source image y of the batch;
    stack true:  one top (``data``) of 6N x 3 x S x S, blocks in the order t1,t2,t3,t4,dx,dy
                 (rows k*N .. k*N+N-1 hold input k), for the stacked single-trunk net.
Every input has zero mean and unit std on its own (over all its pixels and channels).

param_str (JSON): the keys of ``ltc.knobs.DATA``, declared there once with their defaults, kinds,
ranges and meanings (the table: docs/knobs.md). ``source`` is required. Setup refuses an unknown
key, a wrong kind or a value out of range with ltc.params.ParamError ("CountingDataLayer:
param_str key 'batch_size' must be >= 2 ..."); the batch pipeline then trusts the values.
Notes on a few keys:
    source        a missing or empty LMDB, or images smaller than the crop, raise
                  lmdb_io.LmdbError naming the path
    workers       "auto" (the default) = one per CPU of the process's affinity mask less one
                  (1..16), what a GPU solver needs; 0 = batches made in the caffe process.
                  Whatever the count, the layer prints a line when the net waits for data
                  more than 5 % of 100 steps. Memory = prefetch x 6N x 3 x S x S x 4 bytes.
    test_batches  set the solver's test_iter to this number for identical test passes.
    partner       "same_source": the source is the second '_' field of ltc/mixdata.py's keys
                  (<index>_<source>_...); on a single-source LMDB it draws like "batch".
    shard, num_shards  data-parallel training (tools/train_multigpu.py): this rank reads only
                  the LMDB keys at positions shard, shard + num_shards, ... and draws from its
                  own seed stream (ltc/sharding.py).
    TRAIN phase: batches walk a fresh seeded permutation of the LMDB per epoch.

Resuming (the stream continues where the interrupted run left it, in both phases):
    caffe binary  ``caffe train -solver S -snapshot X.solverstate``: in setup the layer reads
                  the ``-solver`` and ``-snapshot`` of its own command line (/proc/self/cmdline),
                  checks the solver state and the .caffemodel it names (ltc.snapshots.check_pair:
                  a truncated or unreadable one is refused with a message naming the file,
                  before Caffe's own abort or its silent partial load) and starts at
                  ltc.snapshots.data_start: TRAIN batch iter x iter_size; TEST after the test
                  passes run before iter (test_iter batches each).
    pycaffe       ``ltc.snapshots.restore(solver, "X.solverstate", "S")`` (S: the solver
                  .prototxt) instead of ``solver.restore(...)``: checks the pair, restores, and
                  moves the data layers of solver.net and solver.test_nets through their
                  ``seek_batch`` (``snapshots.seek_to_iteration(solver, S)`` does only the last part).

Workers: they are forked in setup and stop on ``close()``, or by themselves when the process
that owns them ends (also under the ``caffe`` binary, which never finalises Python). pycaffe
never frees a Python layer (the C++ layer and its Python object keep each other alive), so
deleting a ``caffe.Net`` does not stop them: in a long-lived process call
``net.layers[i].close()`` on the data layer before dropping a net.

Example:
    layer { name: "data" type: "Python" top: "t1" top: "t2" top: "t3" top: "t4" top: "dx" top: "dy"
      python_param { module: "counting_data" layer: "CountingDataLayer"
        param_str: "{\"source\": \"data/sample/train_lmdb\", \"batch_size\": 32, \"workers\": 1}" } }
"""
import hashlib
import sys

import caffe

from ltc import knobs, snapshots
from ltc.pipeline import BatchPipeline
from ltc.transforms import INPUT_NAMES
from ltc.params import ParamError, parse_params, report_errors

PARAM_KEYS = knobs.DATA    # the accepted keys, their defaults, kinds and ranges

_STATE_ITER = {}   # solverstate path -> iter, under `caffe train -snapshot`


class CountingDataLayer(caffe.Layer):
    """Counting pretext inputs t1..t4, dx, dy (or one stacked top); see the module docstring."""

    NAME = "CountingDataLayer"

    @report_errors
    def setup(self, bottom, top):
        self.pipeline = None
        p = parse_params(self.param_str, PARAM_KEYS, self.NAME)   # the one check of every value
        if len(bottom) != 0:
            raise ParamError("%s takes no bottoms, got %d" % (self.NAME, len(bottom)))
        want = 1 if p["stack"] else len(INPUT_NAMES)
        if len(top) != want:
            raise ParamError("%s: %s needs %d top(s) (%s), got %d"
                             % (self.NAME, "stack: true" if p["stack"] else "stack: false", want,
                                "data" if p["stack"] else ", ".join(INPUT_NAMES), len(top)))
        phase = "test" if self.phase == caffe.TEST else "train"
        start, resumed = self._resume_position(phase)
        self.pipeline = BatchPipeline(
            p["source"], p["batch_size"], crop_size=p["crop_size"], interpolation=p["interpolation"],
            gray_prob=p["gray_prob"], seed=p["seed"], phase=phase, workers=p["workers"],
            prefetch=p["prefetch"], eps=p["eps"], test_batches=p["test_batches"], who=self.NAME,
            start=start, shard=p["shard"], num_shards=p["num_shards"], partner=p["partner"])
        self.p = p
        self.phase_name = phase
        pl = self.pipeline
        s = pl.crop_size // 2
        self.top_shape = (6 * pl.batch_size, 3, s, s) if p["stack"] else (pl.batch_size, 3, s, s)
        extra = (", %d test batches per pass" % pl.test_batches) if phase == "test" else ""
        if p["num_shards"] > 1:
            extra += ", shard %d of %d" % (p["shard"], p["num_shards"])
        if p["partner"] != "batch":
            extra += ", partner %s (%d sources)" % (p["partner"], len(set(pl.groups.tolist())))
        extra += resumed
        print("%s[%s]: %s (%d images), batch %d, crop %d -> %dx%d, interpolation %s, gray_prob %.2f, seed %d, "
              "workers %d%s%s%s" % (self.NAME, phase, pl.source, pl.n_db, pl.batch_size, pl.crop_size, s, s,
                                  p["interpolation"], p["gray_prob"], p["seed"], pl.workers,
                                  " (auto, prefetch %d)" % pl.prefetch if pl.auto else "",
                                  " (pids %s)" % " ".join(map(str, pl.worker_pids)) if pl.workers else "", extra),
              file=sys.stderr, flush=True)

    def _resume_position(self, phase):
        """Under ``caffe train -snapshot X``: (first batch, note) for the iteration X holds."""
        solver_path, state_path = snapshots.caffe_train_args(snapshots.read_cmdline())
        if not state_path:
            return 0, ""
        if state_path not in _STATE_ITER:    # checked once for the TRAIN and TEST layers
            # the solver state and the model it names: a truncated one -> SnapshotError naming the file
            _STATE_ITER[state_path] = snapshots.check_pair(state_path)[0].iter
        it = _STATE_ITER[state_path]
        solver = snapshots.read_solver(solver_path) if solver_path else None
        if solver is None:
            raise snapshots.SnapshotError("%s: 'caffe train -snapshot %s' without -solver" % (self.NAME, state_path))
        if phase == "test" and len(set(solver.test_iter)) > 1:
            print("%s: warning: the solver has several test nets with different test_iter; the TEST stream resumes "
                  "as for test net 0" % self.NAME, file=sys.stderr, flush=True)
        start = snapshots.data_start(phase, it, solver)
        return start, ", resumed at iteration %d: first batch %d (from %s)" % (it, start, state_path)

    def seek_batch(self, b):
        """Make batch b the next one this layer serves."""
        self.pipeline.seek(b)

    @report_errors
    def reshape(self, bottom, top):
        for t in range(len(top)):
            top[t].reshape(*self.top_shape)

    @report_errors   # under the caffe binary: a dead worker's message is printed before Caffe aborts
    def forward(self, bottom, top):
        b = self.pipeline.position
        batch = self.pipeline.next_batch()
        if self.p["trace"]:
            with open(self.p["trace"], "a") as f:
                f.write("%s %d %s\n" % (self.phase_name, b, hashlib.sha256(batch.tobytes()).hexdigest()))
        if self.p["stack"]:
            top[0].data[...] = batch.reshape(self.top_shape)
        else:
            for k in range(len(INPUT_NAMES)):
                top[k].data[...] = batch[k]

    @report_errors
    def backward(self, top, propagate_down, bottom):
        pass

    def close(self):
        """Stop the worker processes now (also happens on deletion and when the process dies)."""
        if getattr(self, "pipeline", None) is not None:
            self.pipeline.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
