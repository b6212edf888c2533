"""Export a trained counting net (or a ported CaffeNet model) to PyTorch and ONNX.

The source is read from its binary .caffemodel without Caffe's net code: a counting
snapshot of any layout (six-branch, stacked, deploy; read and branch-checked by the weight
porter) or a CaffeNet-layout model written by tools/port_weights.py (conv1..conv5, and
count_fc6..count_fc8 with --keep-head). The blobs go unchanged (bit for bit) into the
state dict of :class:`ltc.torch_caffenet.CaffeNet`; ``--fold-std`` divides conv1 by the
average input std exactly as the porter does.

torch (and onnx for ONNX files) are optional: this module imports them only when writing.
"""
import json
import os

import numpy as np

from caffe.proto import caffe_pb2

from ltc import caffenet, lmdb_io, surgery
from ltc.params import EPS, SEED

CONV_NAMES = surgery.CONV_NAMES
HEAD_NAMES = surgery.HEAD_NAMES
BGR_MEAN = (104.0, 117.0, 123.0)
DEFAULT_EPS = EPS   # the data layer's (ltc/knobs.py)
COUNTING_INPUT = 114
NORMALIZATIONS = ("per-image", "bgr-mean")
EXTRAS_HINT = "install the optional extras with `make extras`"


class ExportError(ValueError):
    """The source cannot be exported as asked; the message names the file and the reason."""


class MissingDependency(ExportError):
    """An optional package (torch, onnx) is not installed."""


class Trained(object):
    """Blobs of a trained model: kind, {layer: (weights, bias)} float32 arrays, head sizes."""

    def __init__(self, path, kind, blobs, head):
        self.path, self.kind, self.blobs, self.head = path, kind, blobs, head

    @property
    def has_head(self):
        return self.head is not None


def _arrays(layer):
    return tuple(surgery.blob_array(b) for b in layer.blobs)


def _read_ported(path, log):
    """A CaffeNet-layout model (conv1..conv5, optionally count_fc6..8); None if the file is no
    NetParameter, False if it is one but not of that layout."""
    net = caffe_pb2.NetParameter()
    try:
        with open(path, "rb") as f:
            net.ParseFromString(f.read())
    except Exception:  # protobuf's DecodeError (class varies by backend)
        return None
    layers = {l.name: l for l in net.layer}
    if not all(n in layers for n in CONV_NAMES) or any(n in layers for n in HEAD_NAMES):
        return False
    blobs = {}
    for name, shape in surgery.CONV_SHAPES:
        layer = layers[name]
        if layer.type != "Convolution" or len(layer.blobs) != 2:
            raise ExportError("%s: layer '%s' is a %s layer with %d blobs; a CaffeNet conv layer is a Convolution "
                              "with weights and bias" % (path, name, layer.type, len(layer.blobs)))
        w, b = _arrays(layer)
        if w.shape != shape or b.shape != (shape[0],):
            raise ExportError("%s: shape mismatch: '%s' weights %s, bias %s; CaffeNet's %s is %s with %d biases"
                              % (path, name, "x".join(map(str, w.shape)), "x".join(map(str, b.shape)), name,
                                 "x".join(map(str, shape)), shape[0]))
        blobs[name] = (w, b)
    head = None
    heads = [surgery.HEAD_PREFIX + n for n in HEAD_NAMES]
    if any(n in layers for n in heads):
        missing = [n for n in heads if n not in layers]
        if missing:
            raise ExportError("%s: has part of the counting head but not %s" % (path, ", ".join(missing)))
        prev, head = surgery.POOL5_DIM, []
        for name, src in zip(HEAD_NAMES, heads):
            w, b = _arrays(layers[src])
            if w.ndim != 2 or w.shape[1] != prev or b.shape != (w.shape[0],):
                raise ExportError("%s: '%s' weights are %s, bias %s; expected %d inputs"
                                  % (path, src, "x".join(map(str, w.shape)), "x".join(map(str, b.shape)), prev))
            blobs[name] = (w, b)
            head.append(int(w.shape[0]))
            prev = w.shape[0]
    ignored = [n for n in layers if n not in CONV_NAMES and n not in heads and layers[n].blobs]
    if ignored:
        log("ignored layers with parameters (not part of the CaffeNet trunk or counting head): %s" % ", ".join(ignored))
    return Trained(path, "ported-caffenet", blobs, head)


def read_trained(path, log=print):
    """Read a counting snapshot (six-branch, stacked, deploy) or a ported CaffeNet model."""
    try:
        kind, layers = surgery.read_counting_model(path, log=log)
    except surgery.PortError as e:
        if not os.path.isfile(path):
            raise ExportError("%s: no such file" % path)
        ported = _read_ported(path, log)
        if ported is None:
            raise ExportError(str(e))
        if ported is False:
            raise ExportError("%s (nor is it a CaffeNet-layout model from tools/port_weights.py: no conv1..conv5 "
                              "without a counting head)" % e)
        return ported
    blobs = {name: _arrays(layers[name]) for name in CONV_NAMES + HEAD_NAMES}
    head = [int(blobs[n][0].shape[0]) for n in HEAD_NAMES]
    return Trained(path, kind, blobs, head)


def input_convention(normalization, size=COUNTING_INPUT, eps=DEFAULT_EPS, folded_std=None):
    """The metadata entry that says how to feed the exported net."""
    if normalization not in NORMALIZATIONS:
        raise ValueError("normalization must be one of %s" % ", ".join(NORMALIZATIONS))
    per_image = normalization == "per-image"
    return {
        "channels": "BGR", "range": "0-255", "layout": "NCHW", "size": int(size),
        "normalization": normalization,
        "eps": float(eps) if per_image else None,
        "mean_bgr": None if per_image else list(BGR_MEAN),
        "folded_std": None if folded_std is None else float(folded_std),
        "rule": ("(v - mean) / (std + eps), mean and std over all pixels and channels of the 0-255 BGR image"
                 if per_image else
                 "v - mean_bgr per channel on the 0-255 BGR image (the per-image std is folded into conv1)"),
    }


def prepare(trained, normalization=None, fold_std=None, head=False, size=COUNTING_INPUT, eps=DEFAULT_EPS, log=print):
    """(ordered {param name: float32 array}, metadata) of the export.

    normalization: for a counting snapshot "per-image" (its own convention; the default) or,
    with ``fold_std`` S, "bgr-mean" (conv1 / S). For a ported model it must be given: the
    .caffemodel does not record whether --fold-std was used when porting.
    """
    p = trained.path
    if trained.kind == "ported-caffenet":
        if normalization is None:
            raise ExportError("%s is a ported CaffeNet model; its file does not record whether conv1 has the input std "
                              "folded in: give --input bgr-mean (ported with --fold-std) or --input per-image" % p)
        if fold_std is not None:
            raise ExportError("%s is a ported CaffeNet model: fold the std when porting (tools/port_weights.py "
                              "--fold-std), not again here" % p)
    else:
        if normalization is None:
            normalization = "bgr-mean" if fold_std is not None else "per-image"
        if normalization == "bgr-mean" and fold_std is None:
            raise ExportError("%s is a %s counting snapshot, trained on per-image normalised inputs: for BGR-mean "
                              "inputs fold the std with --fold-std LMDB or --fold-std-value S" % (p, trained.kind))
        if normalization == "per-image" and fold_std is not None:
            raise ExportError("--fold-std makes a BGR-mean model; it cannot be combined with --input per-image")
    if head and not trained.has_head:
        raise ExportError("%s has no counting head (a ported model keeps it only with port_weights.py --keep-head); "
                          "export it without --head" % p)
    if size < 67:
        raise ExportError("--input-size %d is too small for CaffeNet (pool5 needs at least 67 pixels)" % size)
    if head and _pooled_size(size) ** 2 * 256 != surgery.POOL5_DIM:
        raise ExportError("with --head the input side must give a 3x3 pool5 (fc6 takes %d values), as 114 does; "
                          "--input-size %d gives %dx%d" % (surgery.POOL5_DIM, size, _pooled_size(size), _pooled_size(size)))
    names = CONV_NAMES + (HEAD_NAMES if head else ())
    params = {}
    for name in names:
        w, b = trained.blobs[name]
        if name == "conv1" and fold_std is not None:
            w = w / np.float32(fold_std)
            log("conv1 weights x 1/%.4f (folded input std)" % fold_std)
        params[name + ".weight"] = np.ascontiguousarray(w, dtype=np.float32)
        params[name + ".bias"] = np.ascontiguousarray(b, dtype=np.float32)
    meta = {
        "source": os.path.basename(p),
        "source_kind": trained.kind,
        "layers": list(names),
        "head": list(trained.head) if head else None,
        "input": input_convention(normalization, size, eps, fold_std),
        "activations": "conv1..conv5 and fc6..fc8 are the rectified outputs (Caffe's in-place ReLU blobs)",
    }
    return params, meta


def _pooled_size(size):
    return caffenet.pooled_size(size)


# ----------------------------------------------------------------------------- writers
def _need(module):
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError as e:
        missing = getattr(e, "name", None) or module
        raise MissingDependency("this export needs the Python package '%s', which is not installed: %s"
                          % (missing, EXTRAS_HINT))


def require(fmt):
    """Raise MissingDependency unless the packages that writing ``fmt`` needs are importable."""
    _need("torch")
    if fmt == "onnx":
        _need("onnx")


def measure_input_std(lmdb_path, n_images=256, seed=SEED):
    """The porter's average per-input std (surgery.measure_input_std, its defaults)."""
    try:
        return surgery.measure_input_std(lmdb_path, n_images, seed=seed)
    except (surgery.PortError, lmdb_io.LmdbError) as e:
        raise ExportError(str(e))


def _atomic(out, write):
    """Write via OUT.partial and rename: a failed export leaves any existing OUT untouched."""
    d = os.path.dirname(os.path.abspath(out))
    os.makedirs(d, exist_ok=True)
    tmp = out + ".partial"
    try:
        write(tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_torch(params, meta, out):
    torch = _need("torch")
    from ltc import torch_caffenet as tc

    state = {k: torch.from_numpy(v.copy()) for k, v in params.items()}
    net = tc.build(meta)
    net.load_state_dict(state, strict=True)   # the file loads into the module: checked before writing
    blob = {"format": tc.FORMAT, "version": tc.FORMAT_VERSION, "metadata": meta, "state_dict": state}
    _atomic(out, lambda tmp: torch.save(blob, tmp))


ONNX_OPSET = 17


def onnx_outputs(meta):
    """The named outputs of an exported ONNX model."""
    return list(CONV_NAMES) + ["pool5"] + (list(HEAD_NAMES) if meta["head"] else [])


def write_onnx(params, meta, out):
    torch = _need("torch")
    onnx = _need("onnx")
    from ltc import torch_caffenet as tc

    net = tc.build(meta)
    net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in params.items()}, strict=True)
    net.eval()
    outputs = onnx_outputs(meta)
    wrapped = tc.Outputs(net, outputs).eval()
    size = meta["input"]["size"]
    dyn = {"data": {0: "batch"}} if meta["head"] else {"data": {0: "batch", 2: "height", 3: "width"}}
    for name in outputs:
        dyn[name] = {0: "batch"} if (meta["head"] or name in HEAD_NAMES) else {0: "batch", 2: "h_" + name,
                                                                               3: "w_" + name}

    def write(tmp):
        import warnings
        # the TorchScript exporter warns about its own deprecation and about the shape checks
        # inside F.local_response_norm, which tracing fixes as constants (correct here: the
        # ONNX model is checked against Caffe at several input sizes by the tests)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapped, (torch.zeros(1, 3, size, size),), tmp, input_names=["data"],
                              output_names=outputs, dynamic_axes=dyn, opset_version=ONNX_OPSET, dynamo=False)
        model = onnx.load(tmp)
        onnx.checker.check_model(model)
        model.doc_string = ("CaffeNet trunk%s exported from %s by learning-to-count's tools/export.py; input 'data' "
                            "is %s" % (" and counting head" if meta["head"] else "", meta["source"],
                                       meta["input"]["rule"]))
        onnx.helper.set_model_props(model, {"ltc.metadata": json.dumps(meta, sort_keys=True),
                                            "ltc.input": json.dumps(meta["input"], sort_keys=True)})
        onnx.save(model, tmp)

    _atomic(out, write)


def onnx_metadata(path):
    """The metadata dict stored in an exported ONNX file."""
    onnx = _need("onnx")
    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    if "ltc.metadata" not in props:
        raise ExportError("%s: no learning-to-count metadata (not written by tools/export.py)" % path)
    return json.loads(props["ltc.metadata"])


def export(trained_path, out, fmt="torch", normalization=None, fold_std=None, head=False, size=COUNTING_INPUT,
           eps=DEFAULT_EPS, log=print):
    """Read ``trained_path`` and write ``out`` (fmt "torch" or "onnx"); returns the metadata."""
    if os.path.abspath(out) == os.path.abspath(trained_path):
        raise ExportError("%s: the output would overwrite the source model" % out)
    trained = read_trained(trained_path, log=log)
    log("source: %s (%s)" % (trained_path, trained.kind))
    params, meta = prepare(trained, normalization, fold_std, head, size, eps, log)
    (write_torch if fmt == "torch" else write_onnx)(params, meta, out)
    log("wrote %s (%s: %s; input %s, %s, size %d)" % (out, fmt, ", ".join(meta["layers"]), meta["input"]["channels"],
                                                     meta["input"]["normalization"], meta["input"]["size"]))
    return meta
