"""Generate the transfer nets (caffe.NetSpec) into prototxt/transfer/.

    python tools/make_transfer_prototxt.py            # regenerate every committed file
    python tools/make_transfer_prototxt.py --check    # exit 1 if a committed file is stale

What is written (relative to prototxt/transfer/); every net is CaffeNet-layout with the
layer names conv1..conv5 that tools/port_weights.py writes, so ``-weights PORTED.caffemodel``
(or ``Net.copy_from``) fills conv1-conv5 by name:

    features/deploy.prototxt         conv1..pool5 on a 227x227 mean-subtracted input (feature extraction)
    linear_probe/{train_val,solver}  Zhang et al.'s linear probe on ImageNet (1000 classes):
                                     conv1..conv5 frozen (lr 0); each layer's output (after its ReLU)
                                     bilinearly resized (python_layers/resize_layer.py) to conv1 10x10,
                                     conv2 6x6, conv3 5x5, conv4 5x5, conv5 6x6 (pool5 native 6x6);
                                     BatchNorm without learned scale; one InnerProduct + SoftmaxWithLoss
                                     + Accuracy per layer. Input: Caffe's Data layer on a labelled LMDB,
                                     227 crops (random + mirror in TRAIN, centre in TEST), BGR means
                                     104/117/123 subtracted, no std division.
    linear_probe_fashion/...         the same on data/fashion/items_{train,val}_lmdb (10 classes; CPU sizes)
    fcn_alexnet/{train,val,solver}   FCN-AlexNet (Long et al.) for VOC segmentation, BVLC Caffe: conv1
                                     pad 100, fc6 as a 6x6 convolution, fc7 1x1, score_fr, upscore =
                                     Deconvolution k63 s32 with a bilinear filler (group 21, lr 0), Crop,
                                     SoftmaxWithLoss (ignore 255, not normalised). Input blobs ``data``
                                     (mean-subtracted BGR, 1 x 3 x H x W) and ``label`` (1 x 1 x H x W):
                                     fed from pycaffe (reshape to each image), like fcn's solve.py.
    fast_rcnn/{train,test,solver}    Fast R-CNN CaffeNet (Girshick): conv1 pad 5, pool1/pool2 pad 1,
                                     ROIPooling 6x6 (spatial scale 1/16) named pool5, fc6 9216x4096.
                                     NEEDS rbgirshick's Caffe fork (ROIPooling, SmoothL1Loss) and the
                                     fast-rcnn tree (roi_data_layer): it does not load in BVLC Caffe.

In every net only conv1-conv5 come from the counting model: the counting fc6 (3x3x256 inputs)
fits neither FCN's 6x6 fc6 nor Fast R-CNN's 9216-input fc6, so fc6/fc7 start from Gaussian
fillers (CaffeNet's std 0.005, bias 0.1). Every generated file starts with a comment naming
this command; tests/test_transfer.py regenerates into a temporary folder and requires byte
equality.
"""
import json


import caffe
from caffe import layers as L
from caffe.coord_map import crop as coord_crop
from caffe.proto import caffe_pb2

from ltc import caffenet, nets

GENERATOR = "python tools/make_transfer_prototxt.py"
OUT_DIR = "prototxt/transfer"
CONV_NAMES = caffenet.CONV_NAMES

# Zhang et al.'s probe: spatial size each layer is resized to (channels x size^2 <= ~9.6K).
PROBE_SIZES = (("conv1", 10), ("conv2", 6), ("conv3", 5), ("conv4", 5), ("conv5", 6), ("pool5", None))

PROBE_DEFAULTS = dict(
    train_lmdb="data/imagenet/train_lmdb", val_lmdb="data/imagenet/val_lmdb",
    num_classes=1000, batch=256, test_batch=50, crop=227, mean=(104.0, 117.0, 123.0), mirror=True,
    align_corners=True,
    # solver (decision: no probe schedule is given that we follow exactly; lr 0.01 made the
    # BatchNorm'd ~9.6K-d heads oscillate on the Fashion check, 0.001 did not)
    base_lr=0.001, gamma=0.1, stepsize=20000, momentum=0.9, weight_decay=5e-4, max_iter=60000,
    test_iter=1000, test_interval=5000, display=100, snapshot=10000,
    snapshot_prefix="snapshots/linear_probe", seed=1701,
)
PROBE_VARIANTS = [
    ("linear_probe", {}),
    ("linear_probe_fashion", dict(train_lmdb="data/fashion/items_train_lmdb", val_lmdb="data/fashion/items_val_lmdb",
                                  num_classes=10, batch=32, test_batch=50, base_lr=0.001, stepsize=133,
                                  max_iter=200, test_iter=20, test_interval=200, display=20, snapshot=200,
                                  snapshot_prefix="runs/linear_probe_fashion/probe")),
]
FCN_DEFAULTS = dict(num_classes=21, size=500, fc_width=4096, inputs="input", index="", base_lr=1e-4, momentum=0.9, iter_size=20, weight_decay=5e-4,
                    max_iter=100000, snapshot=4000, snapshot_prefix="snapshots/fcn_alexnet", test_iter=736,
                    seed=1701)
FRCN_DEFAULTS = dict(num_classes=21, fc_width=4096, roi="native", train_conv1=False, index="", proposals="toy",
                     scale=600, max_size=1000, rois_per_image=64, seed=1701, base_lr=0.001, gamma=0.1, stepsize=30000, momentum=0.9,
                     weight_decay=5e-4, max_iter=40000, snapshot_prefix="snapshots/caffenet_fast_rcnn")

# VOC07 classification (Kraehenbuehl et al.'s framework: CaffeNet, 227 crops of 256x256 images,
# batch 10, lr 0.001 stepped; decision: we do not know their exact step schedule and use x0.1 at 50%)
VOC_CLS_DEFAULTS = dict(num_classes=20, fc_width=4096, index="data/voc/voc2007/main_trainval.json", batch=10,
                        resize=256, crop=227, base_lr=0.001, gamma=0.1, stepsize=40000, momentum=0.9,
                        weight_decay=5e-4, max_iter=80000, snapshot_prefix="snapshots/voc07_cls", seed=1701)

FROZEN = [dict(lr_mult=0, decay_mult=0), dict(lr_mult=0, decay_mult=0)]
LEARNED = [dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)]
CONV_FILLERS = dict(weight_filler=dict(type="gaussian", std=0.01), bias_filler=dict(type="constant", value=0))


# ----------------------------------------------------------------------------- the CaffeNet trunk
def caffenet_trunk(n, bottom, conv1_pad=0, pool_pad=(0, 0, 0), frozen=False, fillers=True, stop="pool5"):
    """conv1 .. pool5 of CaffeNet (ltc.caffenet.trunk) with the transfer nets' settings.

    frozen: lr_mult 0 on every parameter (the linear probe). fillers: Gaussian 0.01 weights,
    so a net trained without -weights is a random-init baseline.
    """
    return caffenet.trunk(n, bottom, param=lambda name: FROZEN if frozen else LEARNED,
                          fillers=CONV_FILLERS if fillers else None, conv1_pad=conv1_pad, pool_pad=pool_pad,
                          stop=stop)


def features_deploy(size=227, batch=1, name="caffenet_conv_features"):
    """Input ``data`` batch x 3 x size x size -> conv1..pool5 (no learning settings, no fillers)."""
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[batch, 3, size, size]))
    caffenet_trunk(n, n.data, fillers=False)
    net = n.to_proto()
    net.name = name
    caffenet.strip_learning(net.layer)
    return net


# ----------------------------------------------------------------------------- linear probe
def _lmdb_data_layer(cfg, phase):
    train = phase == "train"
    layer = caffe_pb2.LayerParameter(name="data", type="Data", top=["data", "label"])
    layer.include.add().phase = caffe_pb2.TRAIN if train else caffe_pb2.TEST
    t = layer.transform_param
    t.crop_size = cfg["crop"]
    t.mirror = bool(cfg["mirror"]) and train
    t.mean_value.extend(cfg["mean"])
    layer.data_param.source = cfg["train_lmdb"] if train else cfg["val_lmdb"]
    layer.data_param.batch_size = cfg["batch"] if train else cfg["test_batch"]
    layer.data_param.backend = caffe_pb2.DataParameter.LMDB
    return layer


def linear_probe_net(cfg, inputs="data_layer"):
    """Zhang et al.'s linear probe (see the module docstring) as a NetParameter.

    inputs: "data_layer" (Caffe Data layers, TRAIN and TEST) or "input" (Input blobs ``data``
    batch x 3 x crop x crop and ``label`` batch, for feeding from pycaffe).
    """
    cfg = dict(PROBE_DEFAULTS, **cfg)
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[cfg["batch"], 3, cfg["crop"], cfg["crop"]]))
    n.label = L.Input(shape=dict(dim=[cfg["batch"]]))
    caffenet_trunk(n, n.data, frozen=True)
    for name, size in PROBE_SIZES:
        x = n[name]
        if size is not None:
            n[name + "_resize"] = L.Python(x, module="resize_layer", layer="BilinearResizeLayer",
                                           param_str=json.dumps(dict(height=size, width=size,
                                                                     align_corners=cfg["align_corners"]),
                                                                sort_keys=True))
            x = n[name + "_resize"]
        # batch norm without a learned scale; its three statistics blobs are not learned by SGD
        n[name + "_bn"] = L.BatchNorm(x, param=[dict(lr_mult=0, decay_mult=0)] * 3)
        n[name + "_fc"] = L.InnerProduct(n[name + "_bn"], num_output=cfg["num_classes"], param=LEARNED,
                                         weight_filler=dict(type="gaussian", std=0.01),
                                         bias_filler=dict(type="constant", value=0))
        n[name + "_loss"] = L.SoftmaxWithLoss(n[name + "_fc"], n.label)
        n[name + "_acc"] = L.Accuracy(n[name + "_fc"], n.label)
    net = n.to_proto()
    net.name = "caffenet_linear_probe"
    return nets.with_inputs(net, inputs, _lmdb_data_layer, cfg)


def probe_solver(cfg, net_path):
    """The probe's solver: the counting solver's layout (nets.solver), probe numbers."""
    return nets.solver(dict(PROBE_DEFAULTS, test_initialization=False, **cfg), net_path)


# ----------------------------------------------------------------------------- FCN-AlexNet
def fcn_alexnet(cfg, split="train"):
    """FCN-AlexNet (fcn.berkeleyvision.org voc-fcn-alexnet).

    cfg["inputs"]: "input" (Input blobs data and label, fed from pycaffe) or "data_layer"
    (python_layers/voc_layers.py VOCSegDataLayer on cfg["index"], the train net of tools/table1.py).
    cfg["fc_width"]: fc6/fc7 channels (4096 in FCN-AlexNet; smaller for CPU schedules).
    """
    cfg = dict(FCN_DEFAULTS, **cfg)
    k, s, fw = cfg["num_classes"], cfg["size"], cfg["fc_width"]
    n = caffe.NetSpec()
    if cfg["inputs"] == "data_layer":
        n.data, n.label = L.Python(module="voc_layers", layer="VOCSegDataLayer", ntop=2,
                                   param_str=json.dumps(dict(index=cfg["index"], seed=cfg["seed"]), sort_keys=True))
    else:
        n.data = L.Input(shape=dict(dim=[1, 3, s, s]))
        n.label = L.Input(shape=dict(dim=[1, 1, s, s]))
    x = caffenet_trunk(n, n.data, conv1_pad=100)
    fc_fill = dict(weight_filler=dict(type="gaussian", std=0.005), bias_filler=dict(type="constant", value=0.1))
    n.fc6 = L.Convolution(x, num_output=fw, kernel_size=6, param=LEARNED, **fc_fill)
    n.relu6 = L.ReLU(n.fc6, in_place=True)
    n.drop6 = L.Dropout(n.relu6, dropout_ratio=0.5, in_place=True)
    n.fc7 = L.Convolution(n.drop6, num_output=fw, kernel_size=1, param=LEARNED, **fc_fill)
    n.relu7 = L.ReLU(n.fc7, in_place=True)
    n.drop7 = L.Dropout(n.relu7, dropout_ratio=0.5, in_place=True)
    n.score_fr = L.Convolution(n.drop7, num_output=k, kernel_size=1, param=LEARNED,
                               weight_filler=dict(type="gaussian", std=0.01), bias_filler=dict(type="constant", value=0))
    # group = num_output: one bilinear kernel per class (the "bilinear" filler's documented use);
    # equal to fcn's surgery.interp on a k x k x 63 x 63 kernel with zero off-diagonal blocks.
    n.upscore = L.Deconvolution(n.score_fr, param=[dict(lr_mult=0, decay_mult=0)],
                                convolution_param=dict(num_output=k, group=k, kernel_size=63, stride=32,
                                                       bias_term=False, weight_filler=dict(type="bilinear")))
    n.score = coord_crop(n.upscore, n.data)
    n.loss = L.SoftmaxWithLoss(n.score, n.label, loss_param=dict(normalize=False, ignore_label=255))
    net = n.to_proto()
    net.name = "fcn_alexnet_%s" % split
    return net


def fcn_solver(cfg, train_path, val_path):
    cfg = dict(FCN_DEFAULTS, **cfg)
    s = caffe_pb2.SolverParameter()
    s.train_net = train_path
    s.test_net.append(val_path)
    s.test_iter.append(cfg["test_iter"])
    s.test_interval = 999999999   # as fcn: the test net is built but scored by the caller
    s.test_initialization = False
    s.display = 20
    s.average_loss = 20
    s.lr_policy = "fixed"
    s.base_lr = cfg["base_lr"]
    s.momentum = cfg["momentum"]
    s.iter_size = cfg["iter_size"]
    s.max_iter = cfg["max_iter"]
    s.weight_decay = cfg["weight_decay"]
    s.snapshot = cfg["snapshot"]
    s.snapshot_prefix = cfg["snapshot_prefix"]
    s.random_seed = cfg["seed"]
    return s


# ----------------------------------------------------------------------------- VOC07 classification
def voc_cls(cfg, split="train"):
    """CaffeNet for multi-label VOC07 classification (Kraehenbuehl et al.'s framework).

    conv1..pool5, fc6/fc7 (cfg["fc_width"], dropout 0.5), fc8 with one output per class and
    SigmoidCrossEntropyLoss (ignore_label -1: classes present only as 'difficult' objects).
    split "train": python_layers/voc_layers.py VOCClsDataLayer on cfg["index"]; "deploy": Input
    ``data`` (10 x 3 x crop x crop, the ten crops of one image) -> ``prob`` (Sigmoid of fc8).
    """
    cfg = dict(VOC_CLS_DEFAULTS, **cfg)
    n = caffe.NetSpec()
    if split == "train":
        n.data, n.label = L.Python(module="voc_layers", layer="VOCClsDataLayer", ntop=2, param_str=json.dumps(dict(
            index=cfg["index"], batch=cfg["batch"], resize=cfg["resize"], crop=cfg["crop"], seed=cfg["seed"]),
            sort_keys=True))
    else:
        n.data = L.Input(shape=dict(dim=[10, 3, cfg["crop"], cfg["crop"]]))
    x = caffenet_trunk(n, n.data, fillers=split == "train")
    fc_fill = dict(weight_filler=dict(type="gaussian", std=0.005), bias_filler=dict(type="constant", value=0.1))
    n.fc6 = L.InnerProduct(x, num_output=cfg["fc_width"], param=LEARNED, **fc_fill)
    n.relu6 = L.ReLU(n.fc6, in_place=True)
    if split == "train":
        n.drop6 = L.Dropout(n.fc6, dropout_ratio=0.5, in_place=True)
    n.fc7 = L.InnerProduct(n.fc6, num_output=cfg["fc_width"], param=LEARNED, **fc_fill)
    n.relu7 = L.ReLU(n.fc7, in_place=True)
    if split == "train":
        n.drop7 = L.Dropout(n.fc7, dropout_ratio=0.5, in_place=True)
    n.fc8 = L.InnerProduct(n.fc7, num_output=cfg["num_classes"], param=LEARNED,
                           weight_filler=dict(type="gaussian", std=0.01), bias_filler=dict(type="constant", value=0))
    if split == "train":
        n.loss = L.SigmoidCrossEntropyLoss(n.fc8, n.label, loss_param=dict(ignore_label=-1))
    else:
        n.prob = L.Sigmoid(n.fc8)
    net = n.to_proto()
    net.name = "caffenet_voc07_cls_%s" % split
    if split != "train":
        caffenet.strip_learning(net.layer)
    return net


def step_solver(cfg, train_path):
    """A step-lr SGD solver on a train net only (the caller tests), for voc_cls and Fast R-CNN."""
    s = caffe_pb2.SolverParameter()
    s.train_net = train_path
    s.base_lr = cfg["base_lr"]
    s.lr_policy = "step"
    s.gamma = cfg["gamma"]
    s.stepsize = cfg["stepsize"]
    s.display = cfg.get("display", 20)
    s.average_loss = cfg.get("average_loss", 20)
    s.momentum = cfg["momentum"]
    s.weight_decay = cfg["weight_decay"]
    s.max_iter = cfg["max_iter"]
    s.snapshot = 0
    s.snapshot_prefix = cfg["snapshot_prefix"]
    s.random_seed = cfg["seed"]
    return s


# ----------------------------------------------------------------------------- Fast R-CNN
_ROI_TYPE = '  type: "ROIPooling"\n  bottom: "conv5"\n  bottom: "rois"\n  top: "pool5"\n'
_ROI_PARAM = "  roi_pooling_param {\n    pooled_w: 6\n    pooled_h: 6\n    spatial_scale: 0.0625\n  }\n"


def fast_rcnn(cfg, split="train"):
    """Fast R-CNN CaffeNet (rbgirshick/fast-rcnn models/CaffeNet) as prototxt TEXT.

    cfg["roi"]: "native" -- rbgirshick's fork: its ROIPooling and SmoothL1Loss layers and
    fast-rcnn's roi_data_layer; BVLC's caffe_pb2 has no roi_pooling_param, so the ROIPooling
    parameters are inserted into the text (parse with allow_unknown_field=True).
    "python" -- plain BVLC Caffe: python_layers/roi_pooling_layer.py (same semantics),
    smooth_l1_loss_layer.py and voc_layers.VOCDetDataLayer on cfg["index"].
    cfg["train_conv1"]: False (default) freezes conv1 (lr_mult 0) as fast-rcnn's CaffeNet
    train.prototxt does; True fine-tunes it. cfg["fc_width"]: fc6/fc7 outputs (4096).
    """
    cfg = dict(FRCN_DEFAULTS, **cfg)
    k, fw, native = cfg["num_classes"], cfg["fc_width"], cfg["roi"] == "native"
    if cfg["roi"] not in ("native", "python"):
        raise ValueError("fast_rcnn: roi must be 'native' or 'python', got %r" % cfg["roi"])
    n = caffe.NetSpec()
    if split == "train" and native:
        n.data, n.rois, n.labels, n.bbox_targets, n.bbox_loss_weights = L.Python(
            module="roi_data_layer.layer", layer="RoIDataLayer", param_str="'num_classes': %d" % k, ntop=5)
    elif split == "train":
        n.data, n.rois, n.labels, n.bbox_targets, n.bbox_loss_weights = L.Python(
            module="voc_layers", layer="VOCDetDataLayer", ntop=5, param_str=json.dumps(dict(
                index=cfg["index"], proposals=cfg["proposals"], scale=cfg["scale"], max_size=cfg["max_size"],
                rois_per_image=cfg["rois_per_image"], seed=cfg["seed"]), sort_keys=True))
    else:
        n.data = L.Input(shape=dict(dim=[1, 3, 227, 227]))
        n.rois = L.Input(shape=dict(dim=[1, 5]))
    x = caffenet_trunk(n, n.data, conv1_pad=5, pool_pad=(1, 1, 0), stop="relu5")
    if native:
        n.pool5 = L.ROIPooling(x, n.rois)
    else:
        n.pool5 = L.Python(x, n.rois, module="roi_pooling_layer", layer="ROIPoolingLayer",
                           param_str=json.dumps(dict(pooled_h=6, pooled_w=6, spatial_scale=0.0625), sort_keys=True))
    fc_fill = dict(weight_filler=dict(type="gaussian", std=0.005), bias_filler=dict(type="constant", value=0.1))
    n.fc6 = L.InnerProduct(n.pool5, num_output=fw, param=LEARNED, **fc_fill)
    n.relu6 = L.ReLU(n.fc6, in_place=True)
    if split == "train":
        n.drop6 = L.Dropout(n.fc6, dropout_ratio=0.5, in_place=True)
    n.fc7 = L.InnerProduct(n.fc6, num_output=fw, param=LEARNED, **fc_fill)
    n.relu7 = L.ReLU(n.fc7, in_place=True)
    if split == "train":
        n.drop7 = L.Dropout(n.fc7, dropout_ratio=0.5, in_place=True)
    n.cls_score = L.InnerProduct(n.fc7, num_output=k, param=LEARNED,
                                 weight_filler=dict(type="gaussian", std=0.01), bias_filler=dict(type="constant", value=0))
    n.bbox_pred = L.InnerProduct(n.fc7, num_output=4 * k, param=LEARNED,
                                 weight_filler=dict(type="gaussian", std=0.001), bias_filler=dict(type="constant", value=0))
    if split == "train":
        n.loss_cls = L.SoftmaxWithLoss(n.cls_score, n.labels, loss_weight=1)
        if native:
            n.loss_bbox = L.SmoothL1Loss(n.bbox_pred, n.bbox_targets, n.bbox_loss_weights, loss_weight=1)
        else:
            n.loss_bbox = L.Python(n.bbox_pred, n.bbox_targets, n.bbox_loss_weights, module="smooth_l1_loss_layer",
                                   layer="SmoothL1LossLayer", loss_weight=1)
    else:
        n.cls_prob = L.Softmax(n.cls_score)
    net = n.to_proto()
    net.name = "CaffeNet_fast_rcnn_%s" % split
    for layer in net.layer:
        if layer.name == "pool5":
            layer.name = "roi_pool5"  # Fast R-CNN's name; its top keeps CaffeNet's "pool5"
        if split == "train" and layer.name == "conv1" and not cfg["train_conv1"]:
            del layer.param[:]
            layer.param.extend([caffe_pb2.ParamSpec(lr_mult=0, decay_mult=0)] * 2)
    if split == "test":
        caffenet.strip_learning(net.layer)
    text = str(net)
    if native:
        if text.count(_ROI_TYPE) != 1:
            raise RuntimeError("fast_rcnn: could not place roi_pooling_param")
        text = text.replace(_ROI_TYPE, _ROI_TYPE + _ROI_PARAM)
    return text


def frcn_solver(cfg, train_path):
    """rbgirshick's CaffeNet solver: the step solver with his display/averaging and no random_seed
    (fast-rcnn seeds from its own config; its tools/train_net.py snapshots, hence snapshot 0)."""
    s = step_solver(dict(FRCN_DEFAULTS, display=20, average_loss=100, **cfg), train_path)
    s.ClearField("random_seed")
    return s


# ----------------------------------------------------------------------------- writing
def _header(note=""):
    return ("# Generated by `%s` -- do not edit by hand; change tools/make_transfer_prototxt.py and rerun.\n"
            "# Paths are relative to the repository root (run caffe from there).\n%s" % (GENERATOR, note))


FRCN_NOTE = ("# NEEDS rbgirshick's Caffe fork (layers ROIPooling, SmoothL1Loss) and the fast-rcnn tree\n"
             "# (python layer roi_data_layer.layer): it does not load in BVLC Caffe. Copy it into fast-rcnn's\n"
             "# models/ and train with its tools/train_net.py --weights PORTED.caffemodel.\n")
FCN_NOTE = ("# Input blobs: data = mean-subtracted BGR image (1 x 3 x H x W, reshape per image), label = class\n"
            "# map (1 x 1 x H x W, 255 = ignore); feed them from pycaffe as fcn's solve.py + data layers do.\n")
FRCN_BVLC_NOTE = ("# Plain BVLC Caffe: ROIPooling, SmoothL1Loss and the data layer are Python layers in python_layers/\n"
                  "# (roi_pooling_layer, smooth_l1_loss_layer, voc_layers). conv1 is frozen as in fast-rcnn's CaffeNet.\n"
                  "# Trained and scored by `python tools/table1.py det`.\n")
CLS_NOTE = ("# VOC07 multi-label classification; trained and scored (10-crop) by `python tools/table1.py cls`.\n")
FCN_VOC_NOTE = ("# FCN-AlexNet fed by python_layers/voc_layers.py VOCSegDataLayer (image + class-map PNG, 255 ignore);\n"
                "# trained and scored by `python tools/table1.py seg`.\n")
PROBE_NOTE = ("# Needs python_layers/ on PYTHONPATH (BilinearResizeLayer). Load a ported model with\n"
              "# -weights (tools/port_weights.py); without it the frozen convs stay random (baseline).\n")


def all_files():
    """{relative path: file text} of every committed transfer file."""
    files = {}
    d = OUT_DIR
    files[d + "/features/deploy.prototxt"] = _header() + str(features_deploy())
    for name, over in PROBE_VARIANTS:
        tv = "%s/%s/train_val.prototxt" % (d, name)
        files[tv] = _header(PROBE_NOTE) + str(linear_probe_net(over))
        files[tv.replace("train_val", "solver")] = _header() + str(probe_solver(over, tv))
    for split in ("train", "val"):
        files["%s/fcn_alexnet/%s.prototxt" % (d, split)] = _header(FCN_NOTE) + str(fcn_alexnet({}, split))
    files[d + "/fcn_alexnet/solver.prototxt"] = _header() + str(
        fcn_solver({}, d + "/fcn_alexnet/train.prototxt", d + "/fcn_alexnet/val.prototxt"))
    for split in ("train", "test"):
        files["%s/fast_rcnn/%s.prototxt" % (d, split)] = _header(FRCN_NOTE) + fast_rcnn({}, split)
    files[d + "/fast_rcnn/solver.prototxt"] = _header(FRCN_NOTE) + str(frcn_solver({}, d + "/fast_rcnn/train.prototxt"))
    bv = dict(roi="python", index="data/voc/voc2007/main_trainval.json",
              proposals="data/voc/voc2007/main_trainval_proposals.npz")
    for split in ("train", "test"):
        files["%s/fast_rcnn_bvlc/%s.prototxt" % (d, split)] = _header(FRCN_BVLC_NOTE) + fast_rcnn(bv, split)
    files[d + "/fast_rcnn_bvlc/solver.prototxt"] = _header() + str(
        step_solver(dict(FRCN_DEFAULTS, display=20, average_loss=100), d + "/fast_rcnn_bvlc/train.prototxt"))
    for split in ("train", "deploy"):
        files["%s/voc_cls/%s.prototxt" % (d, split)] = _header(CLS_NOTE) + str(voc_cls({}, split))
    files[d + "/voc_cls/solver.prototxt"] = _header() + str(step_solver(VOC_CLS_DEFAULTS, d + "/voc_cls/train.prototxt"))
    files[d + "/fcn_alexnet/train_voc.prototxt"] = _header(FCN_VOC_NOTE) + str(
        fcn_alexnet(dict(inputs="data_layer", index="data/voc/voc2012/seg_sbd_train.json"), "train"))
    return files
