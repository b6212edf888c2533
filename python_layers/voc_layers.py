"""VOC data layers of the Table 1 pipelines: thin Caffe shells over ltc/voc_data.py.

All read a JSON index written by data_prep/voc.py (or data_prep/voc.py --toy) and output
BGR images minus (104, 117, 123). Every layer takes ``index`` (required) and ``seed``.

VOCClsDataLayer   tops: data (batch x 3 x crop x crop), label (batch x C: 1 present, 0 absent,
                  -1 difficult-only = SigmoidCrossEntropyLoss's ignore_label)
  param_str keys: index, batch 16, resize 256, crop 227, mirror true, seed 0
VOCSegDataLayer   tops: data (1 x 3 x H x W), label (1 x 1 x H x W, 255 = ignore); one image per
                  step, reshaped to it (as fcn's voc_layers.py)
  param_str keys: index, mirror true, shuffle true, seed 0
VOCDetDataLayer   tops: data (1 x 3 x h x w), rois (R x 5), labels (R), bbox_targets (R x 4(C+1)),
                  bbox_loss_weights (R x 4(C+1)); R <= rois_per_image (Fast R-CNN's RoIDataLayer,
                  one image per step)
  param_str keys: index, proposals "toy" (or a .npz from data_prep/voc.py), scale 600,
                  max_size 1000, rois_per_image 64, fg_fraction 0.25, mirror true, seed 0

Example::

    layer { name: "data" type: "Python" top: "data" top: "label"
            python_param { module: "voc_layers" layer: "VOCSegDataLayer"
                           param_str: "{\\"index\\": \\"data/voc_toy/seg_train.json\\"}" } }
"""
from ltc import knobs
from ltc.params import ParamError, parse_params, report_errors
from ltc.voc_data import ClsBatcher, DetBatcher, SegBatcher

import caffe  # noqa: E402

CLS_SPEC, SEG_SPEC, DET_SPEC = knobs.VOC_CLS, knobs.VOC_SEG, knobs.VOC_DET   # declared in ltc/knobs.py


def _tops(layer, top, n):
    if len(top) != n:
        raise ParamError("%s: needs %d tops, got %d" % (layer, n, len(top)))


class VOCClsDataLayer(caffe.Layer):
    @report_errors
    def setup(self, bottom, top):
        _tops("VOCClsDataLayer", top, 2)
        p = parse_params(self.param_str, CLS_SPEC, "VOCClsDataLayer")
        self.src = ClsBatcher(p["index"], p["batch"], p["resize"], p["crop"], p["mirror"], p["seed"])

    @report_errors
    def reshape(self, bottom, top):
        self.batch_ = self.src.next()
        for i, b in enumerate(self.batch_):
            top[i].reshape(*b.shape)

    @report_errors
    def forward(self, bottom, top):
        for i, b in enumerate(self.batch_):
            top[i].data[...] = b

    @report_errors
    def backward(self, top, propagate_down, bottom):
        pass


class VOCSegDataLayer(VOCClsDataLayer):
    @report_errors
    def setup(self, bottom, top):
        _tops("VOCSegDataLayer", top, 2)
        p = parse_params(self.param_str, SEG_SPEC, "VOCSegDataLayer")
        self.src = SegBatcher(p["index"], p["mirror"], p["shuffle"], p["seed"])


class VOCDetDataLayer(VOCClsDataLayer):
    @report_errors
    def setup(self, bottom, top):
        _tops("VOCDetDataLayer", top, 5)
        p = parse_params(self.param_str, DET_SPEC, "VOCDetDataLayer")
        self.src = DetBatcher(p["index"], p["proposals"], p["scale"], p["max_size"], p["rois_per_image"],
                              p["fg_fraction"], p["mirror"], p["seed"])
