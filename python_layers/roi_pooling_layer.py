"""ROIPooling as a Caffe Python layer, so Fast R-CNN runs in plain BVLC Caffe.

Semantics: rbgirshick's ROIPooling (see ltc/roi_pooling.py, the numpy core): ROI coordinates
scaled by ``spatial_scale`` and rounded, bins floor/ceil, max per bin, empty bins 0, gradient
to each bin's argmax.

param_str (JSON), keys:
  pooled_h       int, 6          output rows
  pooled_w       int, 6          output columns
  spatial_scale  float, 0.0625   feature-map pixels per image pixel (1/16 for CaffeNet conv5)

Example::

    layer { name: "roi_pool5" type: "Python" bottom: "conv5" bottom: "rois" top: "pool5"
            python_param { module: "roi_pooling_layer" layer: "ROIPoolingLayer"
                           param_str: "{\\"pooled_h\\": 6, \\"pooled_w\\": 6, \\"spatial_scale\\": 0.0625}" } }

Blobs: bottom[0] N x C x H x W features; bottom[1] R x 5 ROIs (batch_index, x1, y1, x2, y2) in
image pixels -> top[0] R x C x pooled_h x pooled_w. No gradient reaches the ROIs.
"""

from ltc import knobs
from ltc.params import ParamError, parse_params, report_errors
from ltc.roi_pooling import check_rois, roi_pool_backward, roi_pool_forward

SPEC = knobs.ROI_POOLING   # pooled_h, pooled_w (>= 1), spatial_scale (> 0)

import caffe  # noqa: E402


class ROIPoolingLayer(caffe.Layer):
    """Caffe shell over ltc.roi_pooling; see the module docstring."""

    @report_errors
    def setup(self, bottom, top):
        if len(bottom) != 2 or len(top) != 1:
            raise ParamError("ROIPoolingLayer: needs 2 bottoms (features, rois) and 1 top, got %d and %d"
                             % (len(bottom), len(top)))
        p = parse_params(self.param_str, SPEC, "ROIPoolingLayer")
        self.ph, self.pw, self.scale = p["pooled_h"], p["pooled_w"], p["spatial_scale"]

    @report_errors
    def reshape(self, bottom, top):
        if bottom[0].data.ndim != 4:
            raise ValueError("ROIPoolingLayer: bottom[0] must be N x C x H x W, got %s" % (bottom[0].data.shape,))
        rois = bottom[1].data.reshape(bottom[1].data.shape[0], -1)
        if rois.shape[1] != 5:
            raise ValueError("ROIPoolingLayer: bottom[1] must be R x 5 ROIs, got %s" % (bottom[1].data.shape,))
        top[0].reshape(rois.shape[0], bottom[0].data.shape[1], self.ph, self.pw)

    @report_errors
    def forward(self, bottom, top):
        rois = check_rois(bottom[1].data.reshape(-1, 5), bottom[0].data.shape[0])
        out, self.argmax = roi_pool_forward(bottom[0].data, rois, self.ph, self.pw, self.scale)
        top[0].data[...] = out

    @report_errors
    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = roi_pool_backward(top[0].diff, self.argmax, bottom[1].data.reshape(-1, 5),
                                                    bottom[0].data.shape)
        if len(propagate_down) > 1 and propagate_down[1]:
            bottom[1].diff[...] = 0
