"""Port a trained counting net into a plain CaffeNet-layout .caffemodel (conv1..conv5).

    python tools/port_weights.py runs/demo/counting_demo_iter_600.caffemodel runs/demo/caffenet_counting.caffemodel
    python tools/port_weights.py TRAINED.caffemodel OUT.caffemodel --fold-std data/imagenet/train_lmdb
    python tools/port_weights.py TRAINED.caffemodel OUT.caffemodel --keep-head      # + count_fc6..count_fc8

Input: a snapshot of any counting net of this project -- the six-branch training net
(prototxt/train_val.prototxt and variants), the stacked trunk (prototxt/stacked) or the deploy
net -- read directly from the binary NetParameter (no prototxt needed; the kind is detected
from the layer names). Caffe stores a copy of every shared blob under each branch's layer
(conv1, conv1_t2, ..., conv1_dy); the copies must be identical and the plain-named one is used.

Output: a NetParameter holding layers ``conv1``..``conv5`` (Convolution, CaffeNet shapes
96x3x11x11, 256x48x5x5, 384x256x3x3, 384x192x3x3, 256x192x3x3, with biases), which Caffe's
``-weights`` / ``Net.copy_from`` load by layer name into any CaffeNet-layout net (the linear
probe, FCN-AlexNet, Fast R-CNN in prototxt/transfer/). The counting head fc6-fc8 (fc6 is
4096x2304: it fits no CaffeNet fc6, which is 4096x9216) is dropped, or with ``--keep-head``
kept as ``count_fc6``..``count_fc8`` -- names no downstream net uses, so they are ignored
there. Every blob is logged as copied / dropped / renamed with its shape.

Refused (exit status 1, message naming the file): a file that is truncated or not a
NetParameter, a net that is not a counting net (no conv1..conv5, or an fc6 that does not
take 3x3x256 inputs), CaffeNet shapes that disagree, branches whose copies differ.

Input statistics (``--fold-std LMDB``): the counting net saw each input normalised on its
own, (v - mean) / std over its pixels and channels (0-255 scale). Downstream pipelines
(linear probe, FCN, Fast R-CNN) only subtract BGR pixel means (~104, 117, 123). With
--fold-std the tool measures the average per-image std s of the counting inputs (tiles and
D(x) of random 228 crops, as the data layer makes them, colour by default) over N images of
the LMDB and writes conv1 weights W / s (bias unchanged), so that conv1 on a mean-subtracted
image x - mu gives W (x - mu) / s + b, the response the net learned for a normalised input.
Use it for every downstream protocol that feeds mean-subtracted 0-255 BGR images (all of
prototxt/transfer/); omit it only if the downstream data layer itself normalises per image.
``--fold-std-value S`` folds a given std instead of measuring one.
"""
import math
import os

import numpy as np


from caffe.proto import caffe_pb2

from ltc import caffenet, lmdb_io
from ltc.params import CROP_SIZE, INTERPOLATION, SEED

CONV_SHAPES = caffenet.CONV_SHAPES
CONV_NAMES = caffenet.CONV_NAMES
HEAD_NAMES = ("fc6", "fc7", "fc8")
POOL5_DIM = caffenet.POOL5_DIM
BRANCH_SUFFIXES = ("_t2", "_t3", "_t4", "_dx", "_dy")
HEAD_PREFIX = "count_"
# a counting branch: the CaffeNet trunk, then the counting head
TRUNK_LAYERS = caffenet.TRUNK_LAYERS + ("fc6", "relu6", "fc7", "relu7", "fc8", "relu8")
COUNTING_LAYER_NAMES = frozenset([t + s for t in TRUNK_LAYERS for s in ("",) + BRANCH_SUFFIXES]
                                 + ["t1", "t2", "t3", "t4", "dx", "dy", "data", "loss"])

# Top-level fields of NetParameter that hold layers (caffe.proto): layer = 100, legacy layers = 2.
_LAYER_FIELD, _V1_LAYER_FIELD = 100, 2


class PortError(ValueError):
    """The source model cannot be ported; the message names the file and the reason."""


# ----------------------------------------------------------------------------- reading
def _layer_name_type(buf, start, end):
    name = typ = None
    for field, wt, span in lmdb_io.scan_fields(buf, start, end):
        if wt == 2:
            a, b = span
        if field == 1 and wt == 2:
            name = bytes(buf[a:b]).decode("utf-8", "replace")
        elif field == 2 and wt == 2:
            typ = bytes(buf[a:b]).decode("utf-8", "replace")
        if name is not None and typ is not None:
            break
    return name, typ


class CountingModel(object):
    """A counting-net .caffemodel, indexed lazily: layers are parsed only when asked for.

    Attributes: path, kind ("six-branch", "stacked" or "deploy"), names (layer names in
    file order), types ({name: type string}).
    """

    def __init__(self, path):
        self.path = path
        if not os.path.isfile(path):
            raise PortError("%s: no such file" % path)
        with open(path, "rb") as f:
            self.buf = memoryview(f.read())
        if len(self.buf) == 0:
            raise PortError("%s: the file is empty" % path)
        self.spans, self.names, self.types = {}, [], {}
        try:
            for field, wt, span in lmdb_io.scan_fields(self.buf, 0, len(self.buf)):
                if field == _V1_LAYER_FIELD and wt == 2:
                    a, b = span   # SolverState's field 2 is learned_net, a path: a solver state, not a model
                    if bytes(self.buf[a:b]).endswith((b".caffemodel", b".h5")):
                        raise PortError("%s: a solver state (.solverstate), not a model; give the .caffemodel "
                                        "written beside it (%s)" % (path, bytes(self.buf[a:b]).decode("utf-8", "replace")))
                    raise PortError("%s: a legacy (V1 'layers') caffemodel; upgrade it first with Caffe's "
                                    "upgrade_net_proto_binary" % path)
                if field == _LAYER_FIELD and wt == 2:
                    a, b = span
                    name, typ = _layer_name_type(self.buf, a, b)
                    if name is None:
                        raise ValueError("a layer without a name at byte %d" % a)
                    self.spans[name] = (a, b)
                    self.names.append(name)
                    self.types[name] = typ
        except PortError:
            raise
        except IndexError as e:
            raise PortError("%s: truncated or corrupt caffemodel (%s, file size %d bytes); "
                            "re-copy or re-snapshot it" % (path, str(e) or "a field runs past the end", len(self.buf)))
        except ValueError as e:
            raise PortError("%s: not a Caffe NetParameter (.caffemodel) file: %s" % (path, e))
        if not self.names:
            raise PortError("%s: holds no layers; not a Caffe .caffemodel (or an empty net)" % path)
        self.kind = self._detect()

    def layer(self, name):
        """The parsed LayerParameter of layer ``name``."""
        a, b = self.spans[name]
        msg = caffe_pb2.LayerParameter()
        try:
            msg.ParseFromString(bytes(self.buf[a:b]))
        except Exception as e:  # protobuf raises DecodeError (message varies by backend)
            raise PortError("%s: layer '%s' is corrupt (%s)" % (self.path, name, e))
        return msg

    def _detect(self):
        p = self.path
        present = [n for n in CONV_NAMES + HEAD_NAMES if n in self.spans]
        if not present:
            raise PortError("%s: not a counting net: it has none of the layers %s (its layers: %s)"
                            % (p, ", ".join(CONV_NAMES + HEAD_NAMES), _short(self.names)))
        foreign = [n for n in self.names if n not in COUNTING_LAYER_NAMES and self.types.get(n) != "Split"]
        if foreign:
            raise PortError("%s: not a counting net: layers %s are not part of one (a counting net has %s)"
                            % (p, _short(foreign), ", ".join(TRUNK_LAYERS)))
        missing = [n for n in CONV_NAMES + HEAD_NAMES if n not in self.spans]
        if missing:
            raise PortError("%s: not a complete counting net: layers %s are missing (truncated file?)"
                            % (p, ", ".join(missing)))
        six = [n + s for s in BRANCH_SUFFIXES for n in CONV_NAMES + HEAD_NAMES]
        present = [n for n in six if n in self.spans]
        if present:
            absent = [n for n in six if n not in self.spans]
            if absent:
                raise PortError("%s: six-branch counting net with branch layers missing: %s (truncated file?)"
                                % (p, ", ".join(absent[:8])))
            kind = "six-branch"
        else:
            kind = None
        loss = [n for n in self.names if self.types.get(n) == "Python" and self._is_counting_loss(n)]
        if kind is None:
            kind = "stacked" if loss else "deploy"
        # Caffe writes layers in net order: a training net ends with the loss, deploy with relu8.
        last = self.names[-1]
        expected = loss[-1] if loss else "relu8"
        if last != expected:
            raise PortError("%s: the file ends after layer '%s' but a complete %s counting net ends with '%s' "
                            "(truncated file?)" % (p, last, kind, expected))
        return kind

    def _is_counting_loss(self, name):
        layer = self.layer(name)
        return layer.python_param.module == "counting_loss"


def _short(names, k=10):
    return ", ".join(names[:k]) + (" ..." if len(names) > k else "")


def blob_shape(blob):
    """Shape tuple of a BlobProto (new ``shape`` or legacy num/channels/height/width)."""
    if blob.HasField("shape"):
        return tuple(int(d) for d in blob.shape.dim)
    dims = (blob.num, blob.channels, blob.height, blob.width)
    while len(dims) > 1 and dims[0] == 1:  # legacy InnerProduct weights are 1 x 1 x O x I
        dims = dims[1:]
    return tuple(int(d) for d in dims)


def blob_array(blob):
    """float32 numpy array of a BlobProto in its shape."""
    data = blob.data if len(blob.data) else blob.double_data
    return np.asarray(data, dtype=np.float32).reshape(blob_shape(blob))


def _check_blobs(model, name, layer, weight_shape):
    p = model.path
    if len(layer.blobs) != 2:
        raise PortError("%s: layer '%s' holds %d blobs; a counting-net layer has 2 (weights, bias)"
                        % (p, name, len(layer.blobs)))
    for i, blob in enumerate(layer.blobs):
        n = int(np.prod(blob_shape(blob)))
        got = len(blob.data) or len(blob.double_data)
        if got != n:
            raise PortError("%s: blob %d of layer '%s' has shape %s (%d values) but holds %d values "
                            "(truncated or corrupt file)" % (p, i, name, "x".join(map(str, blob_shape(blob))), n, got))
    w, b = blob_shape(layer.blobs[0]), blob_shape(layer.blobs[1])
    if weight_shape is not None and w != weight_shape:
        raise PortError("%s: shape mismatch: '%s' weights are %s, CaffeNet's %s is %s"
                        % (p, name, "x".join(map(str, w)), name, "x".join(map(str, weight_shape))))
    if b != (w[0],):
        raise PortError("%s: shape mismatch: '%s' bias is %s for %d outputs" % (p, name, "x".join(map(str, b)), w[0]))


def read_counting_model(path, verify_branches=True, log=print):
    """Read and validate a counting-net caffemodel.

    Returns (kind, {layer name: LayerParameter}) for conv1..conv5 and fc6..fc8 (plain names).
    With verify_branches, every branch copy of a six-branch net must equal the plain one.
    """
    model = CountingModel(path)
    layers = {}
    for name, shape in CONV_SHAPES:
        layer = model.layer(name)
        if model.types[name] != "Convolution":
            raise PortError("%s: layer '%s' is a %s layer, expected Convolution" % (path, name, model.types[name]))
        _check_blobs(model, name, layer, shape)
        layers[name] = layer
    prev = POOL5_DIM
    for name in HEAD_NAMES:
        layer = model.layer(name)
        _check_blobs(model, name, layer, None)
        w = blob_shape(layer.blobs[0])
        if len(w) != 2 or w[1] != prev:
            hint = ""
            if name == "fc6" and len(w) == 2 and w[1] == 256 * 6 * 6:
                hint = " (this looks like an ImageNet CaffeNet, whose fc6 takes 6x6x256 = 9216 inputs)"
            raise PortError("%s: not a counting net: '%s' weights are %s, a counting net's %s takes %d inputs%s"
                            % (path, name, "x".join(map(str, w)), name, prev, hint))
        prev = w[0]
        layers[name] = layer
    if model.kind == "six-branch" and verify_branches:
        for name in CONV_NAMES + HEAD_NAMES:
            ref = [b.SerializeToString() for b in layers[name].blobs]
            for s in BRANCH_SUFFIXES:
                other = model.layer(name + s)
                if [b.SerializeToString() for b in other.blobs] != ref:
                    raise PortError("%s: branch layer '%s' differs from '%s': the six branches do not share "
                                    "their parameters, so this is not a siamese counting net" % (path, name + s, name))
        log("verified: the %d branch copies (%s) of each layer equal the plain-named layer"
            % (len(BRANCH_SUFFIXES), ", ".join(BRANCH_SUFFIXES)))
    return model.kind, layers


# ----------------------------------------------------------------------------- input statistics
def add_fold_std_arguments(parser, title):
    """The --fold-std options of the tools that port or export weights (port_weights.py, export.py)."""
    from ltc import cli_checks
    from ltc.transforms import INTERPOLATION_MODES
    g = parser.add_argument_group(title)
    g.add_argument("--fold-std", metavar="LMDB", help="measure the average per-image input std on this LMDB and fold it")
    g.add_argument("--fold-std-value", type=cli_checks.positive_float, help="fold this std instead of measuring one")
    g.add_argument("--fold-std-images", type=cli_checks.int_range(1, 100000), default=256, help="images to measure on")
    g.add_argument("--fold-std-gray-prob", type=cli_checks.probability, default=0.0,
                   help="probability of the grayscale mode while measuring (downstream nets see colour)")
    g.add_argument("--fold-std-crop", type=cli_checks.int_range(2, 256), default=CROP_SIZE, help="random crop of the counting pipeline")
    g.add_argument("--fold-std-interpolation", choices=INTERPOLATION_MODES, default=INTERPOLATION,
                   help="the data layer's interpolation setting while measuring")
    g.add_argument("--seed", type=cli_checks.int_range(0, 2 ** 31 - 1), default=SEED, help="seed of the crops used for measuring (and of Caffe)")
    return g


def fold_std_from_arguments(args):
    """The std to fold (None: none) from add_fold_std_arguments' options; PortError when they are
    wrong or the LMDB cannot be read. A measured value is printed with what it was measured on."""
    if args.fold_std and args.fold_std_value is not None:
        raise PortError("give --fold-std LMDB or --fold-std-value S, not both")
    if args.fold_std_value is not None:
        if not (args.fold_std_value > 0 and math.isfinite(args.fold_std_value)):
            raise PortError("--fold-std-value must be > 0, got %r" % args.fold_std_value)
        return args.fold_std_value
    if not args.fold_std:
        return None
    try:
        fold, n = measure_input_std(args.fold_std, args.fold_std_images, args.fold_std_crop,
                                    args.fold_std_gray_prob, args.seed, args.fold_std_interpolation)
    except lmdb_io.LmdbError as e:
        raise PortError(str(e))
    print("measured input std %.4f (0-255 scale) over %d inputs of %s" % (fold, n, args.fold_std))
    return fold


def measure_input_std(lmdb_path, n_images=256, crop=CROP_SIZE, gray_prob=0.0, seed=SEED, interpolation=INTERPOLATION):
    """Average per-input std (0-255 scale) of the counting net's inputs: the scale the data
    layer's per-image normalisation divides out, and so the one to fold into conv1.

    The first ``n_images`` images (key order) form one batch sampled by the data layer's own
    code (transforms.plan_batch and batch_views: its crops, partners, interpolation setting
    and gray draws, seeded with ``seed``); each of the six inputs of every member contributes
    the std normalize_into would divide by. Returns (mean std, number of inputs measured).
    """
    from ltc import transforms

    images = [np.ascontiguousarray(img.transpose(2, 0, 1))
              for _, img, _ in lmdb_io.iter_images(lmdb_path, limit=n_images)]
    if len(images) < 2:
        raise PortError("%s: %d image(s); measuring the input std needs at least 2 (the data layer pairs "
                        "each image with another)" % (lmdb_path, len(images)))
    small = [i for i, img in enumerate(images) if min(img.shape[1:]) < crop]
    if small:
        raise PortError("%s: image %d is smaller than the crop %d" % (lmdb_path, small[0], crop))
    plan = transforms.plan_batch(seed, "test", 0, len(images), len(images), interpolation, gray_prob)
    stds = [transforms.input_std(v, bool(plan.gray[i]))
            for i, views in enumerate(transforms.batch_views(images, plan, crop)) for v in views]
    return float(np.mean(stds)), len(stds)


# ----------------------------------------------------------------------------- writing
def _out_layer(name, src, typ, blobs):
    layer = caffe_pb2.LayerParameter(name=name, type=typ)
    if typ == "Convolution":
        layer.convolution_param.CopyFrom(src.convolution_param)
    else:
        layer.inner_product_param.CopyFrom(src.inner_product_param)
    caffenet.strip_learning([layer], params=False)
    for b in blobs:
        layer.blobs.add().CopyFrom(b)
    return layer


def fmt_shape(shape):
    return "x".join(map(str, shape))


def port(src_path, out_path, keep_head=False, fold_std=None, log=print):
    """Port ``src_path`` to ``out_path``; fold_std: None or the std s (conv1 weights / s).

    Returns the written NetParameter.
    """
    kind, layers = read_counting_model(src_path, log=log)
    log("source: %s (%s counting net)" % (src_path, kind))
    net = caffe_pb2.NetParameter(name="caffenet_from_counting")
    for name in CONV_NAMES:
        src = layers[name]
        blobs = [caffe_pb2.BlobProto() for _ in src.blobs]
        for dst, b in zip(blobs, src.blobs):
            dst.CopyFrom(b)
        if name == "conv1" and fold_std is not None:
            w = blob_array(src.blobs[0]) / np.float32(fold_std)
            blobs[0].ClearField("data")
            blobs[0].ClearField("double_data")
            blobs[0].data.extend(w.ravel().tolist())
            log("copied  %-6s -> %-10s weights %s  (x 1/%.4f: folded input std)" % (name, name, fmt_shape(blob_shape(src.blobs[0])), fold_std))
        else:
            log("copied  %-6s -> %-10s weights %s" % (name, name, fmt_shape(blob_shape(src.blobs[0]))))
        log("copied  %-6s -> %-10s bias    %s" % (name, name, fmt_shape(blob_shape(src.blobs[1]))))
        for b in blobs:  # always write the modern shape field
            if not b.HasField("shape"):
                shape = blob_shape(b)
                for f in ("num", "channels", "height", "width"):
                    b.ClearField(f)
                b.shape.dim.extend(shape)
        net.layer.extend([_out_layer(name, src, "Convolution", blobs)])
    for name in HEAD_NAMES:
        src = layers[name]
        if keep_head:
            new = HEAD_PREFIX + name
            net.layer.extend([_out_layer(new, src, "InnerProduct", src.blobs)])
            log("renamed %-6s -> %-10s weights %s" % (name, new, fmt_shape(blob_shape(src.blobs[0]))))
            log("renamed %-6s -> %-10s bias    %s" % (name, new, fmt_shape(blob_shape(src.blobs[1]))))
        else:
            log("dropped %-6s               weights %s (counting head)" % (name, fmt_shape(blob_shape(src.blobs[0]))))
            log("dropped %-6s               bias    %s" % (name, fmt_shape(blob_shape(src.blobs[1]))))
    if kind == "six-branch":
        log("dropped the %d branch copies of each layer (%s): identical to the plain-named layers"
            % (len(BRANCH_SUFFIXES), ", ".join(BRANCH_SUFFIXES)))
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "wb") as f:
        f.write(net.SerializeToString())
    log("wrote %s (%d layers: %s)" % (out_path, len(net.layer), ", ".join(l.name for l in net.layer)))
    return net


# ----------------------------------------------------------------------------- data-dependent init
def rescale_init(net_path, weights, lmdb_path, layers, n_images=16, size=227, seed=1701, mean=(104.0, 117.0, 123.0),
                 log=print):
    """Kraehenbuehl et al. (ICLR 2016) within-layer data-dependent initialisation, in real Caffe.

    Builds ``net_path`` (a downstream net whose images enter through an Input blob ``data``,
    e.g. prototxt/transfer/fcn_alexnet/train.prototxt), loads ``weights`` (the ported
    conv1..conv5), feeds ``n_images`` images of ``lmdb_path`` (resized to size x size,
    BGR means subtracted, as downstream training does) and, for each layer of ``layers`` in
    net order (the randomly initialised ones, e.g. fc6, fc7, score_fr), scales every output
    channel so that its pre-activation has zero mean and unit std over the batch and all
    positions: W_c <- W_c / std_c, b_c <- -mean_c / std_c. Returns the caffe.Net.
    (The paper's between-layer rate equalisation is not applied.)
    """
    import cv2

    import caffe

    from google.protobuf import text_format

    spec = caffe_pb2.NetParameter()
    try:
        with open(net_path) as f:
            text_format.Merge(f.read(), spec)
    except (OSError, text_format.ParseError) as e:
        raise PortError("%s: cannot read the --rescale-net prototxt (%s)" % (net_path, e))
    inputs = [t for l in spec.layer if l.type == "Input" for t in l.top] + list(spec.input)
    if "data" not in inputs:
        raise PortError("%s: --rescale needs a net whose images come from an Input blob 'data' (its inputs: %s)"
                        % (net_path, ", ".join(inputs) or "none"))
    caffe.set_mode_cpu()
    caffe.set_random_seed(seed)
    net = caffe.Net(net_path, caffe.TEST)   # TEST: statistics without dropout
    net.copy_from(weights)
    try:
        images = [img for _, img, _ in lmdb_io.iter_images(lmdb_path, limit=n_images)]
    except lmdb_io.LmdbError as e:
        raise PortError(str(e))
    batch = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1)
                      for im in images]).astype(np.float32) - np.array(mean, np.float32).reshape(1, 3, 1, 1)
    for name in net.inputs:
        shape = list(net.blobs[name].data.shape)
        if name == "data":
            net.blobs[name].reshape(*batch.shape)
        elif len(shape) == 4:
            net.blobs[name].reshape(len(batch), shape[1], size, size)
        else:
            net.blobs[name].reshape(len(batch), *shape[1:])
    net.reshape()
    net.blobs["data"].data[...] = batch
    names = list(net._layer_names)
    for name in layers:
        if name not in net.params:
            raise PortError("%s: --rescale-layers names '%s', which is not a layer with parameters there" % (net_path, name))
        layer = net.layers[names.index(name)]
        top = net.top_names[name][0]
        net.forward(end=name)
        z = net.blobs[top].data
        axes = (0,) + tuple(range(2, z.ndim))
        mu, sd = z.mean(axis=axes), z.std(axis=axes) + 1e-8
        w, b = net.params[name][0].data, net.params[name][1].data
        w /= sd.reshape((-1,) + (1,) * (w.ndim - 1))
        b[...] = (b - mu) / sd
        net.forward(end=name)
        z = net.blobs[top].data
        log("rescaled %-9s (%s) %s: pre-activation mean %.3g std %.3g over %d images (was mean %.3g, std %.3g)"
            % (name, layer.type, "x".join(map(str, w.shape)), float(z.mean()), float(z.std()), len(batch),
               float(mu.mean()), float(sd.mean())))
    return net
