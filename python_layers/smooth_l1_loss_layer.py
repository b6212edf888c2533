"""Fast R-CNN's SmoothL1Loss as a Caffe Python layer (BVLC Caffe has none).

loss = sum(w * f(pred - target)) / N with f(x) = 0.5 x^2 for |x| < 1, |x| - 0.5 otherwise
(sigma 1, rbgirshick's fast-rcnn fork); numpy core: ltc.detection.smooth_l1_forward.

Blobs: bottom[0] bbox_pred N x D, bottom[1] bbox_targets N x D, bottom[2] bbox_loss_weights
N x D -> top[0] scalar. Gradient only to bottom[0]. No param_str (loss_weight as usual).
"""
import numpy as np

from ltc.detection import smooth_l1_forward
from ltc.params import ParamError, report_errors

import caffe  # noqa: E402


class SmoothL1LossLayer(caffe.Layer):
    @report_errors
    def setup(self, bottom, top):
        if len(bottom) != 3 or len(top) != 1:
            raise ParamError("SmoothL1LossLayer: needs 3 bottoms (pred, targets, weights) and 1 top")
        if self.param_str.strip():
            raise ParamError("SmoothL1LossLayer: takes no param_str, got %r" % self.param_str)

    @report_errors
    def reshape(self, bottom, top):
        shapes = [bottom[i].data.shape for i in range(3)]
        if not (shapes[0] == shapes[1] == shapes[2]):
            raise ValueError("SmoothL1LossLayer: bottoms must have one shape, got %s" % shapes)
        top[0].reshape()   # a scalar, like Caffe's own loss layers

    @report_errors
    def forward(self, bottom, top):
        loss, self.grad = smooth_l1_forward(bottom[0].data, bottom[1].data, bottom[2].data)
        top[0].data[...] = loss

    @report_errors
    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = (self.grad * float(top[0].diff)).astype(np.float32)
