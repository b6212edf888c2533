"""Generate the counting network's prototxts (caffe.NetSpec) into prototxt/.

    python tools/make_prototxt.py                 # regenerate every committed file
    python tools/make_prototxt.py --check         # exit 1 if a committed file is stale
    python tools/make_prototxt.py --custom DIR --dim 20 --interpolation area ...
                                                  # one net + solver with your options

What is written (all relative to prototxt/):

    train_val.prototxt, solver.prototxt, deploy.prototxt   the paper's net
    variants/<name>/{train_val,solver}.prototxt            Table 4 ablations:
        dim20, interp_linear, interp_cubic, interp_area, interp_lanczos, gray, color
    variants/dim20/deploy.prototxt                         the only variant whose deployed branch
                                                           differs (fc8 of 20); the others use
                                                           prototxt/deploy.prototxt
    stacked/{train_val,solver}.prototxt                    one trunk on the six inputs
                                                           stacked along the batch axis
    demo/{train_val,solver}.prototxt                       CPU demo: the small-scale recipe on
                                                           the Fashion scenes (make demo)
    study/{main,linear}/{train_val,solver}.prototxt        the reproduction study's nets
                                                           (tools/reproduce.py)

The six-branch net: a counting data layer (TRAIN and TEST phases, each with its own
LMDB) produces t1..t4 (the tiles), dx and dy (the downsampled x and y); one branch
function builds each column of the CaffeNet body (ltc/caffenet.py); the branch fed t1 carries
the plain layer names conv1..fc8, the others the suffixes _t2, _t3, _t4, _dx, _dy;
all branches share parameters by name (conv1_w, conv1_b, ...; weights lr 1 / decay 1,
biases lr 2 / decay 0); the contrastive counting loss (eq. 4) comes last.

Every generated file starts with a comment naming the command that regenerates it;
tests/test_prototxt.py regenerates into a temporary folder and requires byte equality.
"""
import json
import os

from ltc import REPO

import caffe
from caffe import layers as L
from caffe.proto import caffe_pb2

from ltc import caffenet, knobs

PROTOTXT_DIR = os.path.join(REPO, "prototxt")
GENERATOR = "python tools/make_prototxt.py"
BRANCHES = (("t1", ""), ("t2", "_t2"), ("t3", "_t3"), ("t4", "_t4"), ("dx", "_dx"), ("dy", "_dy"))
INTERPOLATIONS = knobs.INTERPOLATION_MODES   # per_batch, per_sample, linear, cubic, area, lanczos

# The paper's settings and the project's decisions (docs/design.md): every key is a knob of
# ltc/knobs.py (NET: default, kind, range, meaning; docs/knobs.md), most of them an option of
# tools/make_prototxt.py --custom. The ones that reach a layer are that layer's knob (batch is the
# data layer's batch_size, margin the loss layer's M), so their defaults are the layers'.
DEFAULTS = knobs.net_defaults()

# The start options (make_prototxt.py --custom, tools/demo_seeds.py arms): the keys of DEFAULTS that
# change the initial weights or the optimiser, not the task.
START_KEYS = ("fc_bias", "fc8_bias", "fc8_std", "warmup", "solver_type", "base_lr")
SOLVER_TYPES = knobs.SOLVER_TYPES

# The small-scale recipe (README "Does it reproduce?"): one stacked trunk (same loss and gradients as the
# six branches, faster), batch 32, the paper's lr 1e-4 from the first iteration (a warm-up to 5e-4 drifted
# back towards the trivial solution: README), snapshots every 100.
SMALL = dict(layout="stacked", batch=32, workers=2, base_lr=1e-4, warmup=0, train_lmdb="data/study/train_lmdb",
             val_lmdb="data/photos/val_lmdb", test_batch=8, test_iter=1, test_interval=100, display=10,
             snapshot=100, max_iter=600)

# The reproduction study's length, and the last leg over which its single-method (bilinear) run
# branches off the main run for Table 5 (ltc/study/common.py BRANCHES).
STUDY_ITERS = 6000
STUDY_SINGLE_METHOD_ITERS = 200
# The study's contrastive partner y (README "Does it reproduce?"): "same_source" since round 4. With "batch"
# (the paper's: any other image) the 3000-iteration study collapsed phi on the real photos, because about
# 88 % of a photo's partners were scenes, which a zero vector already keeps M away from.
STUDY_PARTNER = "same_source"
# The photo run of the study (issue 27): the demo's start (zero fc biases, Adam at 1e-4) on the Fashion
# scenes plus the 20,000 multi-scale views of the packaged photos (data_prep/photos.py), tested on the
# 1,000 views of the held-out photos (whole groups) every PHOTO_TEST_INTERVAL iterations.
PHOTO_ITERS = 3000
PHOTO_TEST_INTERVAL = 500

# (name, overrides) of every committed net besides the default one.
VARIANTS = [
    ("variants/dim20", dict(dim=20, snapshot_prefix="snapshots/counting_dim20")),
    ("variants/interp_linear", dict(interpolation="linear", snapshot_prefix="snapshots/counting_interp_linear")),
    ("variants/interp_cubic", dict(interpolation="cubic", snapshot_prefix="snapshots/counting_interp_cubic")),
    ("variants/interp_area", dict(interpolation="area", snapshot_prefix="snapshots/counting_interp_area")),
    ("variants/interp_lanczos", dict(interpolation="lanczos", snapshot_prefix="snapshots/counting_interp_lanczos")),
    ("variants/gray", dict(gray_prob=1.0, snapshot_prefix="snapshots/counting_gray")),
    ("variants/color", dict(gray_prob=0.0, snapshot_prefix="snapshots/counting_color")),
    ("stacked", dict(layout="stacked", snapshot_prefix="snapshots/counting_stacked")),
    # The CPU demo (make demo): the small-scale recipe on the Fashion scenes only, 600 iterations, tested
    # on 100 held-out scenes every 50 iterations; make demo then runs count-check. Its start (issue 26,
    # docs/design.md "The start"): zero fc biases and Adam at lr 1e-4 (the "adam" arm of tools/demo_seeds.py).
    ("demo", dict(SMALL, fc_bias=0.0, fc8_bias=0.0, solver_type="Adam", train_lmdb="data/fashion/scenes_train_lmdb",
                  val_lmdb="data/fashion/scenes_val_lmdb", test_batch=50, test_iter=2, test_interval=50,
                  max_iter=600, snapshot=300, snapshot_prefix="runs/demo/counting_demo", workers=1,
                  test_initialization=True)),
    # The reproduction study (tools/reproduce.py): the small-scale recipe on Fashion scenes + real photos,
    # tested on the 8 held-out photos; "linear" is the same with one fixed downsampling (Table 5): the study
    # starts it from main's snapshot STUDY_SINGLE_METHOD_ITERS before the end (ltc/study/common.py BRANCHES).
    ("study/main", dict(SMALL, partner=STUDY_PARTNER, max_iter=STUDY_ITERS,
                        snapshot_prefix="runs/study/main/counting")),
    ("study/linear", dict(SMALL, partner=STUDY_PARTNER, interpolation="linear", max_iter=STUDY_ITERS,
                          snapshot_prefix="runs/study/linear/counting")),
    ("study/photos", dict(SMALL, fc_bias=0.0, fc8_bias=0.0, solver_type="Adam", partner=STUDY_PARTNER,
                          train_lmdb="data/study/photos_train_lmdb", val_lmdb="data/photos_all/val_views_lmdb",
                          test_batch=50, test_iter=20, test_interval=PHOTO_TEST_INTERVAL, workers=1,
                          max_iter=PHOTO_ITERS, snapshot=PHOTO_TEST_INTERVAL,
                          snapshot_prefix="runs/study/photos/counting")),
]


# ----------------------------------------------------------------------------- net pieces
def _param(name, lr_w=1, decay_w=1, lr_b=2, decay_b=0):
    """Shared parameter specs: one place, so every branch agrees by construction."""
    return [dict(name=name + "_w", lr_mult=lr_w, decay_mult=decay_w),
            dict(name=name + "_b", lr_mult=lr_b, decay_mult=decay_b)]


def _fillers(kind, fc=False, bias=0.1, std=None):
    """Weight and bias fillers of a layer: convs get bias 0, fc layers ``bias``; ``std`` (fc only)
    replaces the weight filler by a Gaussian of that std."""
    b = dict(type="constant", value=bias if fc else 0)
    if std is not None:
        return dict(weight_filler=dict(type="gaussian", std=std), bias_filler=b)
    if kind == "xavier":
        return dict(weight_filler=dict(type="xavier"), bias_filler=b)
    if kind == "gaussian":  # CaffeNet's: std 0.01 for convs, 0.005 for fc6/fc7
        return dict(weight_filler=dict(type="gaussian", std=0.005 if fc else 0.01), bias_filler=b)
    raise ValueError("unknown filler %r (xavier or gaussian)" % kind)


def branch(n, bottom, suffix, dim, filler, start=None):
    """One CaffeNet column from ``bottom`` to the counting vector fc8 (ReLU'd in place).

    Layer and top names are conv1..fc8 plus ``suffix``; parameters are shared by name.
    start: dict(fc_bias, fc8_bias, fc8_std) (default DEFAULTS'). Returns the fc8 top.
    """
    start = dict({k: DEFAULTS[k] for k in ("fc_bias", "fc8_bias", "fc8_std")}, **(start or {}))

    def fc(name, x, num_output, bias, std=None):
        n[name + suffix] = L.InnerProduct(x, num_output=num_output, param=_param(name),
                                          **_fillers(filler, fc=True, bias=bias, std=std))
        n["relu" + name[-1] + suffix] = L.ReLU(n[name + suffix], in_place=True)
        return n[name + suffix]

    x = caffenet.trunk(n, bottom, suffix, param=_param, fillers=_fillers(filler))
    x = fc("fc6", x, 4096, start["fc_bias"])
    x = fc("fc7", x, 4096, start["fc_bias"])
    return fc("fc8", x, dim, start["fc8_bias"], start["fc8_std"])


def _start(cfg):
    return {k: cfg[k] for k in ("fc_bias", "fc8_bias", "fc8_std")}


def data_param_str(cfg, phase):
    """The counting data layer's JSON param_str for ``phase`` ("train" or "test")."""
    p = dict(source=cfg["train_lmdb"] if phase == "train" else cfg["val_lmdb"],
             batch_size=cfg["batch"] if phase == "train" else cfg["test_batch"],
             crop_size=cfg["crop"], interpolation=cfg["interpolation"], gray_prob=cfg["gray_prob"],
             seed=cfg["seed"] if phase == "train" else cfg["seed"] + 1,
             workers=cfg["workers"], prefetch=cfg["prefetch"])
    if phase == "test":  # every test pass sees the same test_iter batches
        p["test_batches"] = cfg["test_iter"]
    if cfg["layout"] == "stacked":
        p["stack"] = True
    if cfg["partner"] != "batch" and phase == "train":
        # TEST keeps the paper's partner (any other image of the batch): a test LMDB is one source, and a
        # held-out view LMDB's keys (<index>_<photo>_<box>) would otherwise pair views of one photo
        p["partner"] = cfg["partner"]
    return json.dumps(p, sort_keys=True)


DATA_MODULE = "counting_data"


def _data_layer(cfg, phase):
    tops = ["data"] if cfg["layout"] == "stacked" else [b for b, _ in BRANCHES]
    layer = caffe_pb2.LayerParameter(name="data", type="Python", top=tops)
    layer.include.add().phase = caffe_pb2.TRAIN if phase == "train" else caffe_pb2.TEST
    layer.python_param.module = DATA_MODULE
    layer.python_param.layer = "CountingDataLayer"
    layer.python_param.param_str = data_param_str(cfg, phase)
    return layer


def _train_phase(layer):
    """True for a layer that runs in the TRAIN phase (no include rule, or include phase TRAIN)."""
    if not layer.include:
        return True
    return any(rule.HasField("phase") and rule.phase == caffe_pb2.TRAIN for rule in layer.include)


def train_data_layers(net):
    """The TRAIN-phase counting data layers of a NetParameter (the layer messages themselves)."""
    return [layer for layer in net.layer
            if layer.type == "Python" and layer.python_param.module == DATA_MODULE and _train_phase(layer)]


# The loss layer's diagnostic tops (ltc.loss.DIAGNOSTICS), weight 0: caffe prints them at every
# display and test pass; they do not change the loss or the gradients.
LOSS_DIAGNOSTICS = ("count_term", "contrast_term", "hinge_active", "norm_dx")


def _loss(n, bottoms, margin):
    tops = L.Python(*bottoms, module="counting_loss", layer="CountingLossLayer",
                    param_str=json.dumps({"M": margin}), ntop=1 + len(LOSS_DIAGNOSTICS),
                    loss_weight=[1] + [0] * len(LOSS_DIAGNOSTICS))
    for name, top in zip(("loss",) + LOSS_DIAGNOSTICS, tops):
        n[name] = top


def counting_net(cfg, inputs="data_layer"):
    """The training net as a NetParameter.

    inputs: "data_layer" (the counting data layer, TRAIN and TEST) or "input"
    (plain Input blobs of the same names and shapes, for feeding from pycaffe).
    """
    size = cfg["crop"] // 2
    n = caffe.NetSpec()
    if cfg["layout"] == "stacked":
        n.data = L.Input(shape=dict(dim=[6 * cfg["batch"], 3, size, size]))
        _loss(n, [branch(n, n.data, "", cfg["dim"], cfg["filler"], _start(cfg))], cfg["margin"])
    elif cfg["layout"] == "six":
        for name, _ in BRANCHES:
            n[name] = L.Input(shape=dict(dim=[cfg["batch"], 3, size, size]))
        feats = [branch(n, n[name], suffix, cfg["dim"], cfg["filler"], _start(cfg)) for name, suffix in BRANCHES]
        _loss(n, feats, cfg["margin"])
    else:
        raise ValueError("unknown layout %r (six or stacked)" % cfg["layout"])
    net = n.to_proto()
    net.name = "counting_%s" % cfg["layout"]
    return with_inputs(net, inputs, _data_layer, cfg)


def with_inputs(net, inputs, data_layer, cfg):
    """inputs="input": ``net`` as built (Input blobs); "data_layer": its Input layers replaced by
    ``data_layer(cfg, "train")`` and ``data_layer(cfg, "test")`` at the top."""
    if inputs == "data_layer":
        body = [l for l in net.layer if l.type != "Input"]
        del net.layer[:]
        net.layer.extend([data_layer(cfg, "train"), data_layer(cfg, "test")] + body)
    elif inputs != "input":
        raise ValueError("inputs must be 'data_layer' or 'input'")
    return net


def deploy_net(cfg):
    """One branch: input ``data`` 1 x 3 x S x S, output ``fc8`` (the counting vector)."""
    size = cfg["crop"] // 2
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, size, size]))
    branch(n, n.data, "", cfg["dim"], cfg["filler"], _start(cfg))
    net = n.to_proto()
    net.name = "counting_deploy"
    caffenet.strip_learning(net.layer)  # deploy needs no learning-rate settings or fillers
    return net


def solver(cfg, net_path):
    s = caffe_pb2.SolverParameter()
    s.net = net_path
    s.test_iter.append(cfg["test_iter"])
    s.test_interval = cfg["test_interval"]
    s.test_initialization = cfg["test_initialization"]
    s.base_lr = cfg["base_lr"]
    if cfg.get("warmup"):
        # BVLC Caffe has no warm-up policy; "sigmoid" gives lr = base_lr / (1 + exp(-gamma (it - stepsize))),
        # a ramp from 0.7 % to 99.3 % of base_lr over iterations 0..warmup, then flat at base_lr.
        s.lr_policy = "sigmoid"
        s.gamma = 10.0 / cfg["warmup"]
        s.stepsize = cfg["warmup"] // 2
    else:
        s.lr_policy = "step"
        s.gamma = cfg["gamma"]
        s.stepsize = cfg["stepsize"]
    if cfg.get("solver_type", "SGD") != "SGD":
        # Adam (a departure: the paper names no optimiser): Caffe's defaults beta1 = momentum 0.9,
        # beta2 = momentum2 0.999, delta 1e-8; the same lr policy and weight decay as SGD.
        s.type = cfg["solver_type"]
    s.momentum = cfg["momentum"]
    s.weight_decay = cfg["weight_decay"]
    s.display = cfg["display"]
    s.average_loss = min(cfg["display"], 20)
    s.max_iter = cfg["max_iter"]
    s.snapshot = cfg["snapshot"]
    s.snapshot_prefix = cfg["snapshot_prefix"]
    s.random_seed = cfg["seed"]
    s.solver_mode = caffe_pb2.SolverParameter.CPU
    return s


# ----------------------------------------------------------------------------- writing
def _header(command):
    return ("# Generated by `%s` -- do not edit by hand; change tools/make_prototxt.py and rerun.\n"
            "# Paths are relative to the repository root (run caffe from there).\n" % command)


def render(cfg, rel_dir, command=GENERATOR, shared_deploy=False):
    """{relative path: file text} for one configuration (train_val, solver, deploy).

    shared_deploy: leave out a deploy net identical to prototxt/deploy.prototxt (the committed
    variants whose options change only training, not the deployed branch, use that one).
    Every value is checked against its knob first (ltc/knobs.py): a value no layer or solver
    would take raises knobs.KnobError (its ``key`` is the configuration key) and nothing is written."""
    cfg = knobs.check_net(dict(DEFAULTS, **cfg))
    files = {}
    tv = os.path.join("prototxt", rel_dir, "train_val.prototxt") if rel_dir else "prototxt/train_val.prototxt"
    files[tv] = _header(command) + str(counting_net(cfg))
    files[tv.replace("train_val.prototxt", "solver.prototxt")] = _header(command) + str(solver(cfg, tv))
    if cfg["layout"] == "six" and rel_dir != "demo" and not (shared_deploy and str(deploy_net(cfg)) == str(deploy_net(DEFAULTS))):
        files[tv.replace("train_val.prototxt", "deploy.prototxt")] = _header(command) + str(deploy_net(cfg))
    return files


def all_files():
    files = render({}, "")
    for rel_dir, overrides in VARIANTS:
        files.update(render(overrides, rel_dir, shared_deploy=True))
    return files


def write_files(files, root):
    for rel, text in sorted(files.items()):
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        print("wrote %s" % os.path.relpath(path, os.getcwd()))


def check_files(files, root, generator, what="generated files"):
    """--check: 0 if every file in ``files`` exists under ``root`` with that text, else list and 1."""
    stale = [rel for rel, text in sorted(files.items())
             if not os.path.exists(os.path.join(root, rel)) or open(os.path.join(root, rel)).read() != text]
    for rel in stale:
        print("stale or missing: %s" % rel)
    if stale:
        print("run `%s` to regenerate" % generator)
        return 1
    print("all %d %s are up to date" % (len(files), what))
    return 0
