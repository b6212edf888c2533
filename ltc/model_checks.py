"""Checks a prototxt and a .caffemodel pass before a tool hands them to ``caffe.Net``.

Caffe answers a wrong file with a failed CHECK: SIGABRT (exit 134) and a C++ stack, nothing
a user can act on. ``safe_net(prototxt, weights)`` finds those cases first and raises
``ModelError`` naming the file and what is wrong:

  prototxt  missing, a folder, empty, not a NetParameter (a solver prototxt is recognised and
            named), no layers, an unknown layer type, a bottom no layer produces;
  weights   missing, a folder, empty, truncated or corrupt (ltc.snapshots.read_caffemodel:
            every blob holds as many values as its shape needs), a solver state given as a
            model, a legacy V1 model;
  together  a layer of the weights whose blob count or shapes differ from the net's layer of
            that name (Net::CopyTrainedLayersFrom's CHECK), found by instantiating the net
            without weights and comparing shapes before copy_from.

The counting-vs-ported question (which kind of model a tool wants) stays with the tools'
own checkers (ltc.surgery.read_counting_model, ltc.probe.check_weights); this module makes
sure that whatever reaches Caffe cannot abort it.
"""
import os

from ltc import cli_checks


class ModelError(ValueError):
    """A prototxt or caffemodel Caffe would abort on; the message names the file."""


def _pb2():
    from caffe.proto import caffe_pb2
    return caffe_pb2


def _existing_file(path, what):
    try:
        cli_checks.model_file(path, what)
    except cli_checks.PathError as e:
        raise ModelError(str(e))


def read_net_prototxt(path, what="net prototxt"):
    """Parse ``path`` as a text NetParameter and check what Caffe would CHECK on; returns it."""
    from google.protobuf import text_format
    _existing_file(path, what)
    try:
        with open(path, "r", encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ModelError("%s '%s' cannot be read as text: %s" % (what, path, e))
    pb2 = _pb2()
    net = pb2.NetParameter()
    try:
        text_format.Merge(text, net)
    except text_format.ParseError as e:
        solver = pb2.SolverParameter()
        try:
            text_format.Merge(text, solver)
            is_solver = bool(solver.ListFields())
        except text_format.ParseError:
            is_solver = False
        if is_solver:
            raise ModelError("%s '%s' is a solver prototxt, not a net%s" % (
                what, path, " (its net is '%s')" % (solver.net or solver.train_net) if (solver.net or solver.train_net)
                else ""))
        raise ModelError("%s '%s' is not a Caffe net prototxt: %s" % (what, path, e))
    if not len(net.layer) and not len(net.layers):
        raise ModelError("%s '%s' holds no layers: not a Caffe net prototxt" % (what, path))
    if len(net.layer):
        import caffe
        known = set(caffe.layer_type_list())
        tops = set(net.input)
        for layer in net.layer:
            tops.update(layer.top)
        for layer in net.layer:
            if layer.type not in known:
                raise ModelError("%s '%s': layer '%s' has the unknown type '%s' (this Caffe knows %d types)"
                                 % (what, path, layer.name, layer.type, len(known)))
            missing = [b for b in layer.bottom if b not in tops]
            if missing:
                raise ModelError("%s '%s': layer '%s' reads blob(s) %s that no layer produces"
                                 % (what, path, layer.name, ", ".join(repr(b) for b in missing)))
    return net


def _looks_like_solverstate(path):
    """True when a file parses as a SolverState with an 'iter' (and not as weights)."""
    pb2 = _pb2()
    s = pb2.SolverState()
    try:
        with open(path, "rb") as f:
            s.ParseFromString(f.read())
    except Exception:  # noqa: BLE001 - any parse failure: not a solver state
        return False
    return s.HasField("iter") and (s.learned_net.endswith(".caffemodel") or s.HasField("current_step"))


def read_weights(path, what="weights"):
    """Parse and check a binary .caffemodel (ltc.snapshots.read_caffemodel); returns the
    NetParameter, or raises ModelError naming the file."""
    from ltc import snapshots
    _existing_file(path, what)
    if path.endswith(".solverstate") or _looks_like_solverstate(path):
        raise ModelError("%s '%s' is a solver state (.solverstate), not a model; give the .caffemodel "
                         "written beside it" % (what, path))
    try:
        return snapshots.read_caffemodel(path)
    except snapshots.SnapshotError as e:
        raise ModelError(str(e).replace("model '", "%s '" % what, 1))


def check_fit(net, weights_param, net_path, weights_path):
    """ModelError when a layer of ``weights_param`` does not fit the instantiated ``net``'s layer of
    the same name (blob count or shape), as Caffe's CopyTrainedLayersFrom would CHECK-fail."""
    from ltc.snapshots import blob_shape
    names = list(net._layer_names)
    index = {n: i for i, n in enumerate(names)}
    for layer in weights_param.layer:
        if layer.name not in index:
            continue
        target = net.layers[index[layer.name]].blobs
        if len(target) != len(layer.blobs):
            raise ModelError("weights '%s' do not fit net '%s': layer '%s' holds %d blobs, the net's layer has %d"
                             % (weights_path, net_path, layer.name, len(layer.blobs), len(target)))
        for j, (blob, t) in enumerate(zip(layer.blobs, target)):
            want = tuple(int(d) for d in t.data.shape)
            got = tuple(blob_shape(blob))
            if blob.HasField("shape"):
                fits = got == want
            else:  # Blob::ShapeEquals on legacy num/channels/height/width: the shape padded to 4 axes
                fits = len(want) <= 4 and got == (1,) * (4 - len(want)) + want
            if not fits:
                raise ModelError("weights '%s' do not fit net '%s': layer '%s' blob %d is %s, the net needs %s"
                                 % (weights_path, net_path, layer.name, j, "x".join(map(str, got)),
                                    "x".join(map(str, want))))


def safe_net(prototxt, weights=None, phase=None, net_what="net prototxt", weights_what="weights"):
    """caffe.Net(prototxt, phase) with ``weights`` copied in, after every check above; a wrong file
    raises ModelError instead of aborting the process."""
    import caffe
    phase = caffe.TEST if phase is None else phase
    read_net_prototxt(prototxt, net_what)
    wparam = read_weights(weights, weights_what) if weights else None
    net = caffe.Net(prototxt, phase)
    if wparam is not None:
        check_fit(net, wparam, prototxt, weights)
        net.copy_from(weights)
    return net
