"""Every knob of the Python layers and of the net generator, declared once.

A knob is a key with a default, a kind (number, integer, text, true/false, or one of a few
choices), a range and a one-line meaning. Everything else is derived from the tables below:

    the layers' accepted param_str keys   python_layers/*.py parse with ``ltc.params.parse_params(
                                          param_str, knobs.DATA, ...)`` in setup (unknown keys,
                                          wrong kinds and out-of-range values refused there)
    the generator's options and defaults  ``NET`` (tools/make_prototxt.py's --custom options,
                                          ltc/nets.py's DEFAULTS); the options that reach a layer
                                          are that layer's knob under the generator's name
    the knob table                        docs/knobs.md (``doc_text()``, written and checked by
                                          tools/make_prototxt.py like the prototxts)

A value is checked twice in its life: when a net is generated (``check_net``, from nets.render;
tools/make_prototxt.py turns its refusal into "error: argument --margin: ..." and exit 2) and in
the layer's setup (the same words after "<Layer>: param_str key '<key>'"). The batch pipeline,
the transforms and the loss trust what they receive.

    DATA["batch_size"].default            -> 256
    DATA["batch_size"].accept(1)          -> KnobError("must be >= 2 (y comes from another ...), got 1")
    NET["margin"].layer_key               -> "counting_loss.M"

This module imports nothing of the project (ltc.params builds on it).
"""
import math

# Values of the data layer's "interpolation" knob: D's OpenCV methods in a fixed order (a random
# draw picks code 0..3 of INTERP_METHODS, so the order is part of the data stream), and the two
# random modes.
INTERP_METHODS = ("linear", "cubic", "area", "lanczos")
INTERPOLATION_MODES = ("per_batch", "per_sample") + INTERP_METHODS
CROP_SIZES = (228, 224)
PARTNER_MODES = ("batch", "same_source")
SOLVER_TYPES = ("SGD", "Adam")
# More data workers than this is a typo, not a machine (each worker is a forked process that
# holds ``prefetch`` shared-memory batches).
MAX_WORKERS = 64


class KnobError(ValueError):
    """A value its knob does not admit. The message is what is wrong ("must be ..., got ...");
    ``key`` names the knob, and the caller puts the name in front (param_str key, --option)."""

    def __init__(self, key, message):
        ValueError.__init__(self, message)
        self.key = key


_KIND_WORDS = {float: "a number", int: "an integer", str: "a string", bool: "true/false", list: "a list",
               dict: "an object"}


def _num(x):
    return "%d" % x if float(x).is_integer() and abs(x) < 1e15 else "%g" % x


class Knob:
    """One key: default, kind, range, meaning. See the module docstring.

    kind: float, int, str or bool. choices: the allowed values (then kind is theirs).
    lo / hi: inclusive bounds; above: an exclusive lower bound. words: literal strings also
    admitted besides the integers of the range (workers "auto"). none_ok: None (JSON null) is a
    value (fc8_std: "the filler's"). why: the reason, said with a range refusal.
    """

    def __init__(self, key, default, kind, doc, choices=None, lo=None, hi=None, above=None, words=(),
                 none_ok=False, why="", required=False, layer_key=None, option=True):
        self.key, self.default, self.kind, self.doc = key, default, kind, doc
        self.choices, self.lo, self.hi, self.above, self.words = choices, lo, hi, above, tuple(words)
        self.none_ok, self.why, self.required = none_ok, why, required
        self.layer_key = layer_key     # NET knobs: "module.key" of the layer knob they set
        self.option = option           # NET knobs: a --custom option of tools/make_prototxt.py

    def __repr__(self):
        return "Knob(%r, %r)" % (self.key, self.default)

    # -------------------------------------------------------------- checking
    def kind_text(self):
        """What the knob takes, in words: "an integer", "one of 'a', 'b'", "an integer or 'auto'"."""
        if self.choices is not None:
            return "one of %s" % ", ".join(repr(c) for c in self.choices)
        text = _KIND_WORDS[self.kind]
        if self.words:
            text += " or " + " or ".join(repr(w) for w in self.words)
        if self.none_ok:
            text += " or null"
        return text

    def range_text(self):
        """The range in words ("> 0", ">= 2", "in [0, 1]"), "" when there is none."""
        if self.above is not None:
            return "> %s" % _num(self.above)
        if self.lo is not None and self.hi is not None:
            return "in [%s, %s]" % (_num(self.lo), _num(self.hi))
        if self.lo is not None:
            return ">= %s" % _num(self.lo)
        if self.hi is not None:
            return "<= %s" % _num(self.hi)
        return ""

    def _kind_error(self, value):
        return KnobError(self.key, "must be %s, got %r (%s)" % (self.kind_text(), value, type(value).__name__))

    def accept(self, value):
        """``value`` as the knob holds it (an int given for a number becomes a float), or KnobError."""
        if value is None and self.none_ok:
            return None
        if value in self.words and isinstance(value, str):
            return value
        if self.choices is not None:
            if isinstance(value, bool) or value not in self.choices:
                raise KnobError(self.key, "must be %s, got %r" % (self.kind_text(), value))
            return self.kind(value) if self.kind in (int, float) else value
        if self.kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self._kind_error(value)
            if not math.isfinite(value):
                raise KnobError(self.key, "must be a finite number, got %r" % (value,))
            value = float(value)
        elif self.kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise self._kind_error(value)
        elif not isinstance(value, self.kind):
            raise self._kind_error(value)
        if self.kind in (int, float):
            bad = ((self.above is not None and not value > self.above)
                   or (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi))
            if bad:
                raise KnobError(self.key, "must be %s%s%s, got %r"
                                % (self.range_text(), " (%s)" % self.why if self.why else "",
                                   " or %s" % " or ".join(repr(w) for w in self.words) if self.words else "", value))
        return value

    def from_text(self, text):
        """A command-line word as the knob's kind (no range check: that is ``accept``'s, once, when
        the net is generated). Raises KnobError for a word that is not of the kind."""
        if text in self.words:
            return text
        if self.none_ok and text in ("none", "null"):
            return None
        kind = type(self.choices[0]) if self.choices is not None else self.kind
        try:
            if kind is bool:
                if text not in ("true", "false"):
                    raise ValueError(text)
                return text == "true"
            if kind is int:
                return int(text, 10)
            if kind is float:
                value = float(text)
                if not math.isfinite(value):
                    raise KnobError(self.key, "must be a finite number, got %r" % text)
                return value
            return text
        except ValueError as e:
            if isinstance(e, KnobError):
                raise
            raise KnobError(self.key, "must be %s, got %r" % (self.kind_text(), text))


class LayerKnobs:
    """The knobs of one Python layer (or a few classes of one module that share them), in order.

    rules: (keys, test, message, doc) checks across keys, run after each key passed on its own:
    ``test(values)`` false refuses with KnobError(keys[0], message % values); doc: the rule in words.
    """

    def __init__(self, module, classes, knobs, rules=()):
        self.module, self.classes = module, tuple(classes)
        self.knobs = list(knobs)
        self._by_key = {k.key: k for k in self.knobs}
        self.rules = tuple(rules)

    def __getitem__(self, key):
        return self._by_key[key]

    def __contains__(self, key):
        return key in self._by_key

    def __iter__(self):
        return iter(self._by_key)

    def __len__(self):
        return len(self.knobs)

    def keys(self):
        return list(self._by_key)

    def defaults(self):
        return {k.key: k.default for k in self.knobs}

    @property
    def required(self):
        return tuple(k.key for k in self.knobs if k.required)

    def check_rules(self, values):
        for keys, test, message, _ in self.rules:
            if not test(values):
                raise KnobError(keys[0], message % values)

    @classmethod
    def from_spec(cls, spec, module="", classes=()):
        """A {key: (default, kind or tuple of choices or IntOr)} table as knobs (the older form)."""
        knobs = []
        for key, (default, kind) in spec.items():
            if isinstance(kind, tuple):
                knobs.append(Knob(key, default, type(kind[0]), "", choices=kind))
            elif isinstance(kind, IntOr):
                knobs.append(Knob(key, default, int, "", words=kind.words))
            else:
                knobs.append(Knob(key, default, kind, ""))
        return cls(module, classes, knobs)


class IntOr:
    """The older table form's "an integer, or one of these words" (``IntOr("auto")``)."""

    def __init__(self, *words):
        self.words = words

    def __repr__(self):
        return "an integer or %s" % " or ".join(repr(w) for w in self.words)


# ============================================================================ the layers
# The counting data layer (python_layers/counting_data.py; docs/design.md says why each default is
# what it is).
DATA = LayerKnobs("counting_data", ["CountingDataLayer"], [
    Knob("source", "", str, "LMDB of 256x256 BGR Datums (path: the working folder first, then the repository)",
         required=True),
    Knob("batch_size", 256, int, "samples per batch (256: as the Jigsaw sibling)", lo=2,
         why="y comes from another member of the batch"),
    Knob("crop_size", 228, int, "random crop of the 256 x 256 image; the six inputs are crop / 2 (114 or 112)",
         choices=CROP_SIZES),
    Knob("interpolation", "per_batch", str, "D's OpenCV method: one random draw among linear, cubic, area, "
         "lanczos per batch or per sample, or one fixed method (the Table 4 ablations)", choices=INTERPOLATION_MODES),
    Knob("gray_prob", 0.67, float, "probability that a sample is gray, all six inputs alike (paper: 67 %)",
         lo=0.0, hi=1.0),
    Knob("seed", 1701, int, "every random choice of batch b is seeded with (seed, phase, b); the solver's seed too",
         lo=0),
    Knob("workers", "auto", int, "batch-making processes forked in setup; 0 = in the caffe process; \"auto\" = one "
         "per CPU of the affinity mask less one (1..16, within a 2 GiB batch ring)", lo=0, hi=MAX_WORKERS,
         words=("auto",)),
    Knob("prefetch", 4, int, "batches prepared ahead (shared-memory slots); >= workers + 1 keeps every worker busy "
         "(\"auto\" raises it to workers + 2)", lo=1),
    Knob("eps", 1e-5, float, "normalisation (v - mean) / (std + eps) of each input, pixels on the 0..255 scale",
         above=0.0),
    Knob("stack", False, bool, "one 6N-row top (blocks t1..t4, dx, dy) for the stacked trunk instead of six tops"),
    Knob("test_batches", 0, int, "TEST phase: the net sees batches 0..test_batches-1 over and over; "
         "0 = one pass over the LMDB", lo=0),
    Knob("shard", 0, int, "data-parallel rank: reads the LMDB keys at positions shard, shard + num_shards, ...",
         lo=0),
    Knob("num_shards", 1, int, "data-parallel ranks (tools/train_multigpu.py)", lo=1),
    Knob("trace", "", str, "a file: every forward appends \"phase batch sha256\" (compares the streams of two runs)"),
    Knob("partner", "batch", str, "where y comes from: any other image of the batch (the paper), or one of the same "
         "source (ltc/mixdata.py's keys)", choices=PARTNER_MODES),
], rules=[
    (("shard", "num_shards"), lambda p: p["shard"] < p["num_shards"],
     "must be < num_shards (%(num_shards)d), got %(shard)d", "shard < num_shards"),
])

# The contrastive counting loss (python_layers/counting_loss.py; maths in ltc/loss.py).
LOSS = LayerKnobs("counting_loss", ["CountingLossLayer"], [
    Knob("M", 10.0, float, "the margin of the hinge term of eq. 4 (paper: M = 10)", above=0.0),
])

RESIZE = LayerKnobs("resize_layer", ["BilinearResizeLayer"], [
    Knob("height", 0, int, "output height", lo=1, required=True),
    Knob("width", 0, int, "output width", lo=1, required=True),
    Knob("align_corners", True, bool, "true: corners map onto corners (DeepLab's Interp); false: OpenCV's "
         "INTER_LINEAR convention"),
])

ROI_POOLING = LayerKnobs("roi_pooling_layer", ["ROIPoolingLayer"], [
    Knob("pooled_h", 6, int, "output rows", lo=1),
    Knob("pooled_w", 6, int, "output columns", lo=1),
    Knob("spatial_scale", 0.0625, float, "feature-map pixels per image pixel (1/16 for CaffeNet's conv5)", above=0.0),
])

_VOC_INDEX = Knob("index", "", str, "JSON index written by data_prep/voc.py", required=True)
_VOC_MIRROR = Knob("mirror", True, bool, "random horizontal flips")
_VOC_SEED = Knob("seed", 0, int, "random seed of the order, crops and flips", lo=0)
VOC_CLS = LayerKnobs("voc_layers", ["VOCClsDataLayer"], [
    _VOC_INDEX,
    Knob("batch", 16, int, "images per batch", lo=1),
    Knob("resize", 256, int, "images resized to resize x resize first", lo=1),
    Knob("crop", 227, int, "random crop (at most resize)", lo=1),
    _VOC_MIRROR, _VOC_SEED,
])
VOC_SEG = LayerKnobs("voc_layers", ["VOCSegDataLayer"], [
    _VOC_INDEX, _VOC_MIRROR,
    Knob("shuffle", True, bool, "a new random order every epoch"),
    _VOC_SEED,
])
VOC_DET = LayerKnobs("voc_layers", ["VOCDetDataLayer"], [
    _VOC_INDEX,
    Knob("proposals", "toy", str, "\"toy\" (boxes around the ground truth) or a .npz of data_prep/voc.py"),
    Knob("scale", 600, int, "shorter image side", lo=1),
    Knob("max_size", 1000, int, "longer image side at most", lo=1),
    Knob("rois_per_image", 64, int, "ROIs sampled per image", lo=1),
    Knob("fg_fraction", 0.25, float, "share of foreground ROIs", lo=0.0, hi=1.0),
    _VOC_MIRROR, _VOC_SEED,
])

# Every Python layer with param_str keys (smooth_l1_loss_layer takes none).
LAYERS = (DATA, LOSS, RESIZE, ROI_POOLING, VOC_CLS, VOC_SEG, VOC_DET)

# Defaults read by name across the project.
CROP_SIZE = DATA["crop_size"].default
INTERPOLATION = DATA["interpolation"].default
GRAY_PROB = DATA["gray_prob"].default
SEED = DATA["seed"].default
EPS = DATA["eps"].default
MARGIN = LOSS["M"].default


# ============================================================================ the generator
def _of(layer, key, cfg_key, default=None, doc=None, **kw):
    """A generator knob that sets ``layer``'s ``key``: its kind, range and meaning (and default
    unless given) are the layer knob's."""
    k = layer[key]
    return Knob(cfg_key, k.default if default is None else default, k.kind, doc or k.doc, choices=k.choices,
                lo=k.lo, hi=k.hi, above=k.above, words=k.words, none_ok=k.none_ok, why=k.why,
                layer_key="%s.%s" % (layer.module, key), **kw)


# ltc/nets.py's configuration: the paper's settings and the project's decisions (docs/design.md).
# Order: tools/make_prototxt.py's options in --help order, then the keys without an option.
NET = LayerKnobs("nets", [], [
    Knob("dim", 1000, int, "counting vector size (paper: 1000; Table 4 ablation: 20)", lo=1),
    _of(DATA, "crop_size", "crop"),
    _of(DATA, "interpolation", "interpolation"),
    _of(DATA, "gray_prob", "gray_prob"),
    _of(LOSS, "M", "margin"),
    Knob("filler", "xavier", str, "weight initialisation (gaussian: CaffeNet's std 0.01 for convs, 0.005 for "
         "fc6/fc7)", choices=("xavier", "gaussian")),
    Knob("layout", "six", str, "six branches sharing weights (the paper), or one trunk on the six inputs "
         "stacked along the batch axis", choices=("six", "stacked")),
    _of(DATA, "batch_size", "batch", doc="training samples per batch (256: as the Jigsaw sibling)"),
    _of(DATA, "batch_size", "test_batch", doc="test samples per batch"),
    _of(DATA, "source", "train_lmdb", default="data/imagenet/train_lmdb", doc="training LMDB"),
    _of(DATA, "source", "val_lmdb", default="data/imagenet/val_lmdb", doc="validation LMDB (TEST phase)"),
    _of(DATA, "partner", "partner", doc="where y comes from in the TRAIN phase: any other image of the batch (the "
        "paper), or one of the same source (ltc/mixdata.py's keys); the TEST phase keeps the paper's"),
    _of(DATA, "workers", "workers"),
    _of(DATA, "seed", "seed", doc="data seed (TEST: seed + 1) and solver seed"),
    Knob("base_lr", 1e-4, float, "learning rate (paper: 1e-4)", above=0.0),
    Knob("max_iter", 350000, int, "training iterations", lo=1),
    Knob("stepsize", 10000, int, "the step policy: lr x gamma every stepsize iterations", lo=1),
    Knob("snapshot", 5000, int, "iterations between snapshots", lo=1),
    Knob("test_iter", 20, int, "test batches per test pass (also the TEST data layer's test_batches)", lo=1),
    Knob("test_interval", 5000, int, "iterations between test passes", lo=1),
    Knob("display", 20, int, "iterations between loss lines (also average_loss, at most 20)", lo=0),
    Knob("snapshot_prefix", "snapshots/counting", str, "where snapshots go (--custom DIR: snapshots/<DIR>)"),
    Knob("fc_bias", 0.1, float, "constant bias of fc6 and fc7 at initialisation"),
    Knob("fc8_bias", 0.1, float, "constant bias of fc8 (the counting layer) at initialisation"),
    Knob("fc8_std", None, float, "fc8 weights Gaussian with this std instead of the filler's (a small-output "
         "start: |phi|^2 near M at iteration 0); null: the filler's", above=0.0, none_ok=True),
    Knob("warmup", 0, int, "N > 0: a sigmoid ramp of the lr up to base_lr (not beyond) over N iterations; "
         "0: the paper's step policy", lo=0),
    Knob("solver_type", "SGD", str, "SGD with momentum (ours), or Adam at base_lr (a departure; the paper names "
         "no optimiser)", choices=SOLVER_TYPES),
    _of(DATA, "prefetch", "prefetch", option=False),
    Knob("gamma", 0.9, float, "the step policy's factor", above=0.0, option=False),
    Knob("momentum", 0.9, float, "SGD momentum (Adam: beta1)", lo=0.0, hi=1.0, option=False),
    Knob("weight_decay", 5e-4, float, "L2 weight decay", lo=0.0, option=False),
    Knob("test_initialization", False, bool, "a test pass before the first iteration (off: a 350K-iteration run "
         "and every resume start training at once)", option=False),
])


def net_defaults():
    """{configuration key: default} of ltc/nets.py (its DEFAULTS)."""
    return NET.defaults()


def check_net(cfg):
    """Refuse a configuration the generator must not write: every key of ``cfg`` declared in NET
    must be admitted by its knob. Returns a copy with the values as the knobs hold them; raises
    KnobError (``key`` is the configuration key) otherwise."""
    out = dict(cfg)
    for key, value in cfg.items():
        if key in NET:
            out[key] = NET[key].accept(value)
    return out


# ============================================================================ the table
DOC_PATH = "docs/knobs.md"


def _cell(text):
    return str(text).replace("|", "\\|")


def _default_text(k):
    if k.required:
        return "(required)"
    if k.default is None:
        return "null"
    if isinstance(k.default, bool):
        return "true" if k.default else "false"
    if isinstance(k.default, str):
        return '"%s"' % k.default
    return "%r" % k.default


def _layer_table(layer):
    rows = ["| key | default | kind | range | meaning |", "|---|---|---|---|---|"]
    for k in layer.knobs:
        rows.append("| `%s` | %s | %s | %s | %s |" % (k.key, _cell(_default_text(k)), _cell(k.kind_text()),
                                                     _cell(k.range_text()), _cell(k.doc)))
    return rows


def doc_text(command):
    """docs/knobs.md: every layer's param_str keys and the generator's options, from the tables above."""
    out = ["<!-- Generated by `%s` from ltc/knobs.py -- do not edit by hand; change ltc/knobs.py and rerun. -->"
           % command, "",
           "# Knobs", "",
           "Every param_str key of the Python layers and every option of `tools/make_prototxt.py --custom`, "
           "declared once in `ltc/knobs.py`. A value outside its range is refused when a net is generated "
           "(exit 2, `error: argument --OPTION: ...`) and again in the layer's setup "
           "(`<Layer>: param_str key '<key>' ...`), in the same words.", ""]
    for layer in LAYERS:
        out += ["## %s (`python_layers/%s.py`)" % (", ".join(layer.classes), layer.module), ""]
        out += _layer_table(layer) + [""]
        for _, _, _, doc in layer.rules:
            out += ["Across keys: `%s`." % doc, ""]
    out += ["## The generator (`tools/make_prototxt.py --custom DIR`, `ltc/nets.py` DEFAULTS)", "",
            "| option | default | kind | range | sets | meaning |", "|---|---|---|---|---|---|"]
    for k in NET.knobs:
        name = "`--%s`" % k.key.replace("_", "-") if k.option else "`%s` (no option)" % k.key
        out.append("| %s | %s | %s | %s | %s | %s |" % (
            name, _cell(_default_text(k)), _cell(k.kind_text()), _cell(k.range_text()),
            "`%s`" % k.layer_key if k.layer_key else "", _cell(k.doc)))
    out.append("")
    return "\n".join(out)
