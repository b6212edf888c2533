"""Caffe snapshots: check .solverstate/.caffemodel pairs, find the newest intact one, and
say where the data stream of a resumed run must continue.

A run killed (SIGKILL, power cut) while Caffe writes a snapshot leaves truncated files, and
a protobuf cut exactly between two fields still parses: a .caffemodel cut between layers
loads with the missing layers left at their fillers, without a word from Caffe. So a pair
is called intact only when

- both files parse completely as SolverState / NetParameter, every blob holds as many
  values as its shape says, the solverstate carries its last field (current_step);
- the solverstate's ``iter`` is the N of its ``<prefix>_iter_N.solverstate`` name and its
  ``learned_net`` names an existing .caffemodel;
- the solver's history blobs (one per learnable parameter, two for Adam/AdaDelta) have
  the shapes of the caffemodel's learnable parameters, in order (shared parameters once).

Data stream position (see ``data_start``): the TRAIN data layer is called ``iter_size``
times per iteration, so a run resumed at iteration N continues with batch N * iter_size;
the TEST net is run ``test_iter`` times per test pass, so it continues after the test
passes the uninterrupted run made before iteration N. Under the ``caffe`` binary the counting
data layer finds its own position (``caffe_train_args`` of its command line); under pycaffe
``restore`` checks a pair, restores it and moves the data layers (``seek_to_iteration``).

Binary-proto snapshots only (Caffe's default ``snapshot_format: BINARYPROTO``).
"""
import glob
import os
import re

import numpy as np

STATE_EXT = ".solverstate"
MODEL_EXT = ".caffemodel"


class SnapshotError(ValueError):
    """A snapshot file is missing, truncated or inconsistent; the message names the file."""


def _pb2():
    from caffe.proto import caffe_pb2   # imported on use: importing this module stays cheap
    return caffe_pb2


def _read(path, what):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise SnapshotError("%s '%s' cannot be read: %s" % (what, path, e.strerror or e))
    if not data:
        raise SnapshotError("%s '%s' is empty (0 bytes): a snapshot killed while being written" % (what, path))
    return data


def _parse(msg, data, path, what):
    try:
        msg.ParseFromString(data)
    except Exception as e:  # google.protobuf.message.DecodeError and friends
        raise SnapshotError("%s '%s' (%d bytes) is truncated or corrupt: it does not parse as a Caffe %s (%s)"
                            % (what, path, len(data), type(msg).__name__, e))
    return msg


def blob_shape(blob):
    """Shape of a BlobProto (new ``shape`` field, or the legacy num/channels/height/width)."""
    if blob.HasField("shape"):
        return tuple(int(d) for d in blob.shape.dim)
    return tuple(int(d) for d in (blob.num, blob.channels, blob.height, blob.width))


def _check_blob(blob, path, what, where):
    n = int(np.prod(blob_shape(blob), dtype=np.int64))
    have = len(blob.data) or len(blob.double_data)
    if have != n:
        raise SnapshotError("%s '%s' is truncated or corrupt: %s holds %d values, its shape %s needs %d"
                            % (what, path, where, have, blob_shape(blob), n))


def read_solverstate(path):
    """Parse and check a binary .solverstate; returns the caffe_pb2.SolverState.

    Raises SnapshotError naming the file when it is missing, empty, cut or inconsistent.
    """
    what = "solver state"
    if str(path).endswith(".h5"):
        raise SnapshotError("%s '%s' is an HDF5 snapshot: this project checks and resumes binary-proto snapshots "
                            "only (the solver's default snapshot_format: BINARYPROTO)" % (what, path))
    state = _parse(_pb2().SolverState(), _read(path, what), path, what)
    if not state.HasField("iter"):
        raise SnapshotError("%s '%s' has no 'iter' field: not a Caffe solver state" % (what, path))
    if not state.HasField("current_step"):  # Caffe writes it last: missing = cut off after the history
        raise SnapshotError("%s '%s' is truncated: it ends before its last field (current_step)" % (what, path))
    for i, blob in enumerate(state.history):
        _check_blob(blob, path, what, "history blob %d" % i)
    return state


def learnable_shapes(net_param):
    """Shapes of a NetParameter's learnable parameters in Caffe's order (a parameter shared by
    name is counted at its first owner only), as Net::learnable_params() lists them."""
    seen, shapes = set(), []
    for layer in net_param.layer:
        for j, blob in enumerate(layer.blobs):
            name = layer.param[j].name if j < len(layer.param) else ""
            if name:
                if name in seen:
                    continue
                seen.add(name)
            shapes.append(blob_shape(blob))
    return shapes


def read_caffemodel(path):
    """Parse and check a binary .caffemodel; returns the caffe_pb2.NetParameter."""
    what = "model"
    net = _parse(_pb2().NetParameter(), _read(path, what), path, what)
    if len(net.layers) and not len(net.layer):
        raise SnapshotError("model '%s' uses the legacy V1 'layers' format; upgrade it with upgrade_net_proto_binary"
                            % path)
    if not any(len(layer.blobs) for layer in net.layer):
        raise SnapshotError("model '%s' holds no weights (truncated, or not a trained model)" % path)
    for layer in net.layer:
        for j, blob in enumerate(layer.blobs):
            _check_blob(blob, path, what, "layer '%s' blob %d" % (layer.name, j))
    return net


def snapshot_iter(path):
    """N of '<prefix>_iter_N.solverstate' / '.caffemodel', or None."""
    m = re.search(r"_iter_(\d+)\.(solverstate|caffemodel)$", path)
    return int(m.group(1)) if m else None


def resolve_learned_net(state_path, learned_net):
    """The .caffemodel a solverstate names. Caffe opens ``learned_net`` as written (relative
    to the directory caffe runs in), so that path must exist; returns it."""
    if learned_net and os.path.isfile(learned_net):
        return learned_net
    beside = os.path.join(os.path.dirname(state_path), os.path.basename(learned_net or ""))
    hint = (" (a file of that name lies beside the solver state, '%s': run from the directory the training "
            "ran in, Caffe opens the path as written)" % beside) if learned_net and os.path.isfile(beside) else ""
    raise SnapshotError("solver state '%s' names the model '%s', which does not exist%s"
                        % (state_path, learned_net, hint))


def check_pair(state_path):
    """Check a .solverstate and the .caffemodel it names as a resumable pair.

    Returns (state, model_path). Raises SnapshotError naming the bad file and the reason.
    """
    state = read_solverstate(state_path)
    n = snapshot_iter(state_path)
    if n is not None and n != state.iter:
        raise SnapshotError("solver state '%s' says iter %d, its name says %d" % (state_path, state.iter, n))
    model_path = resolve_learned_net(state_path, state.learned_net)
    m = snapshot_iter(model_path)
    if m is not None and m != state.iter:
        raise SnapshotError("solver state '%s' (iter %d) names the model '%s' of iteration %d"
                            % (state_path, state.iter, model_path, m))
    net = read_caffemodel(model_path)
    params = learnable_shapes(net)
    hist = [blob_shape(b) for b in state.history]
    k = len(hist) // len(params) if params else 0
    if not params or k not in (1, 2, 3) or hist != params * k:
        raise SnapshotError("model '%s' does not match its solver state '%s': %d learnable blobs %s..., history "
                            "holds %d %s... (a truncated model loses its last layers without an error from Caffe)"
                            % (model_path, state_path, len(params), params[:2], len(hist), hist[:2]))
    return state, model_path


def _list(prefix, ext):
    found = []
    for path in glob.glob(glob.escape(prefix) + "_iter_*" + ext):
        n = snapshot_iter(path)
        if n is not None and path == "%s_iter_%d%s" % (prefix, n, ext):
            found.append((n, path))
    return sorted(found, reverse=True)


def list_snapshots(prefix):
    """[(iter, solverstate path)] for '<prefix>_iter_N.solverstate', newest first."""
    return _list(prefix, STATE_EXT)


def list_models(prefix):
    """[(iter, caffemodel path)] for '<prefix>_iter_N.caffemodel', newest first (files by name:
    check_pair / read_caffemodel check their contents)."""
    return _list(prefix, MODEL_EXT)


def newest_intact(prefix):
    """The newest intact pair of ``prefix``: (iter, state_path, model_path) or None, and the
    list of (path, reason) skipped on the way (newer than the pick, or all when None).

    A .caffemodel newer than every solverstate (killed between the two writes) is listed as
    skipped too.
    """
    skipped = []
    snaps = list_snapshots(prefix)
    newest_state = snaps[0][0] if snaps else -1
    models = []
    for path in glob.glob(glob.escape(prefix) + "_iter_*" + MODEL_EXT):
        n = snapshot_iter(path)
        if n is not None and n > newest_state and path == "%s_iter_%d%s" % (prefix, n, MODEL_EXT):
            models.append((n, path))
    for n, path in sorted(models, reverse=True):
        skipped.append((path, "no solver state of iteration %d (killed before Caffe wrote it)" % n))
    for n, path in snaps:
        try:
            state, model = check_pair(path)
        except SnapshotError as e:
            skipped.append((path, str(e)))
            continue
        return (n, path, model), skipped
    return None, skipped


# ----------------------------------------------------------------------------- data stream position

def test_passes_before(iteration, solver_param):
    """How many test passes Solver::Step ran before starting iteration ``iteration``
    (a pass at iteration t when t % test_interval == 0 and (t > 0 or test_initialization))."""
    interval = solver_param.test_interval
    if not interval or not len(solver_param.test_iter) or iteration <= 0:
        return 0
    passes = (iteration - 1) // interval + 1        # t = 0, interval, ... < iteration
    if not solver_param.test_initialization:
        passes -= 1
    return passes


def data_start(phase, iteration, solver_param, test_net=0):
    """Index of the first batch a data layer serves in a run resumed at ``iteration``.

    phase "train": iteration * iter_size (Solver::Step runs the train net iter_size times
    per iteration). phase "test": test passes before ``iteration`` x test_iter[test_net]
    (the counting data layer reduces it modulo its test_batches; with test_batches equal
    to test_iter, the generated nets' setting, that is 0 at every pass).
    """
    if phase == "train":
        return iteration * max(1, solver_param.iter_size)
    if not len(solver_param.test_iter):
        return 0
    test_iter = solver_param.test_iter[min(test_net, len(solver_param.test_iter) - 1)]
    return test_passes_before(iteration, solver_param) * test_iter


def read_solver(path):
    """A solver .prototxt as caffe_pb2.SolverParameter; SnapshotError naming the file when unreadable."""
    from google.protobuf import text_format
    try:
        with open(path) as f:
            text = f.read()
        return text_format.Merge(text, _pb2().SolverParameter())
    except OSError as e:
        raise SnapshotError("solver '%s' cannot be read: %s" % (path, e.strerror or e))
    except text_format.ParseError as e:
        raise SnapshotError("solver '%s' is not a valid SolverParameter text file: %s" % (path, e))


def caffe_train_args(argv):
    """(solver, snapshot) named on a ``caffe train`` command line (gflags spellings -x v,
    --x v, -x=v, --x=v); (None, None) unless argv is a caffe tool's 'train' command (a python
    interpreter's argv never counts)."""
    if len(argv) < 2 or argv[1] != "train" or os.path.basename(argv[0]).startswith("python"):
        return None, None
    found = {}
    i = 2
    while i < len(argv):
        a = argv[i]
        if a.startswith("-"):
            name, eq, value = a.lstrip("-").partition("=")
            if name in ("solver", "snapshot"):
                if not eq:
                    value = argv[i + 1] if i + 1 < len(argv) else ""
                    i += 1
                found[name] = value
        i += 1
    return found.get("solver") or None, found.get("snapshot") or None


def read_cmdline(pid="self"):
    """argv of a process from /proc (Linux); [] when unavailable."""
    try:
        with open("/proc/%s/cmdline" % pid, "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [a.decode("utf-8", "surrogateescape") for a in raw.split(b"\0")[:-1]]


# ----------------------------------------------------------------------------- resuming under pycaffe

def data_layers(net):
    """The layers of a caffe.Net that can move their data stream (a ``seek_batch(b)`` method:
    the counting data layer), in net order."""
    return [layer for layer in net.layers if callable(getattr(layer, "seek_batch", None))]


def _solver_param(solver_file):
    if isinstance(solver_file, str):
        return read_solver(solver_file)
    return solver_file   # a caffe_pb2.SolverParameter


def seek_to_iteration(solver, solver_file, iteration=None):
    """Move every data layer (``data_layers``) of a pycaffe solver to where a run that reached
    ``iteration`` (default: solver.iter) continues: TRAIN batch iteration x iter_size, TEST
    after the test passes made before it. ``solver_file``: the solver .prototxt (or its
    caffe_pb2.SolverParameter; pycaffe's solver.param does not expose iter_size and the test
    settings). Returns {(net, layer number): first batch}."""
    it = solver.iter if iteration is None else iteration
    param = _solver_param(solver_file)
    moved = {}
    for k, layer in enumerate(data_layers(solver.net)):
        b = data_start("train", it, param)
        layer.seek_batch(b)
        moved[("train", k)] = b
    for t, net in enumerate(solver.test_nets):
        for k, layer in enumerate(data_layers(net)):
            b = data_start("test", it, param, test_net=t)
            layer.seek_batch(b)
            moved[("test%d" % t, k)] = b
    return moved


def restore(solver, state_path, solver_file):
    """pycaffe's resume: check ``state_path`` and the .caffemodel it names (SnapshotError naming
    a truncated or inconsistent file), ``solver.restore`` it, and continue the data streams
    (seek_to_iteration). Use this instead of a bare ``solver.restore``:

        from ltc import snapshots
        solver = caffe.get_solver("prototxt/solver.prototxt")
        snapshots.restore(solver, "snapshots/counting_iter_5000.solverstate", "prototxt/solver.prototxt")
        solver.step(1000)
    """
    param = _solver_param(solver_file)   # read first: a bad solver file fails before anything changes
    check_pair(state_path)
    solver.restore(state_path)
    return seek_to_iteration(solver, param)
