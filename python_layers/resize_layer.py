"""Bilinear resize of a feature map, as a Caffe Python layer (BVLC Caffe has no Interp layer).

Used by the linear-probe nets (prototxt/transfer/linear_probe*) to bring each frozen conv
layer's output under ~9.6K values (Zhang et al.'s protocol: conv1 10x10, conv2 6x6,
conv3/conv4 5x5, conv5 6x6).

The resize is separable and linear, so it is written as two interpolation matrices:
``top[n, c] = Ry @ bottom[n, c] @ Rx.T`` (Ry: out_h x in_h, Rx: out_w x in_w), and the
backward pass is the exact transpose, ``dbottom[n, c] = Ry.T @ dtop[n, c] @ Rx``.

Sampling convention (param ``align_corners``):
  true  (default)  source = i * (in - 1) / (out - 1): the corner pixels map onto each other,
                   as in DeepLab's Caffe ``Interp`` layer that the probe protocol used;
  false            source = (i + 0.5) * in / out - 0.5, clamped to [0, in - 1]: OpenCV's
                   ``cv2.resize(..., INTER_LINEAR)`` convention (equal to it for any size).
Both are pure 2-tap bilinear sampling (no anti-aliasing), like the layers they imitate.

param_str (JSON), keys:
  height         int, required   output height (>= 1)
  width          int, required   output width  (>= 1)
  align_corners  bool, true      sampling convention above

Example::

    layer { name: "conv1_resize" type: "Python" bottom: "conv1" top: "conv1_resize"
            python_param { module: "resize_layer" layer: "BilinearResizeLayer"
                           param_str: "{\\"height\\": 10, \\"width\\": 10}" } }

Blobs: bottom[0] N x C x H x W (any H, W >= 1) -> top[0] N x C x height x width, float32.
The numpy core (``interp_matrix``, ``resize_forward``, ``resize_backward``) is ltc/resize.py.
"""
import numpy as np

import caffe

from ltc import knobs
from ltc.params import ParamError, parse_params, report_errors
from ltc.resize import interp_matrix, resize_backward, resize_forward

PARAM_KEYS = knobs.RESIZE   # height, width (required, >= 1), align_corners


class BilinearResizeLayer(caffe.Layer):
    """Caffe shell over resize_forward/resize_backward; see the module docstring."""

    @report_errors
    def setup(self, bottom, top):
        if len(bottom) != 1 or len(top) != 1:
            raise ParamError("BilinearResizeLayer: needs exactly 1 bottom and 1 top, got %d and %d"
                             % (len(bottom), len(top)))
        p = parse_params(self.param_str, PARAM_KEYS, "BilinearResizeLayer")
        self.out_h, self.out_w, self.align = p["height"], p["width"], p["align_corners"]
        self.in_hw = None

    @report_errors
    def reshape(self, bottom, top):
        if bottom[0].data.ndim != 4:
            raise ValueError("BilinearResizeLayer: bottom must be N x C x H x W, got shape %s"
                             % (bottom[0].data.shape,))
        n, c, h, w = bottom[0].data.shape
        if self.in_hw != (h, w):
            self.in_hw = (h, w)
            self.ry = interp_matrix(self.out_h, h, self.align).astype(np.float32)
            self.rx = interp_matrix(self.out_w, w, self.align).astype(np.float32)
        top[0].reshape(n, c, self.out_h, self.out_w)

    @report_errors
    def forward(self, bottom, top):
        top[0].data[...] = resize_forward(bottom[0].data, self.ry, self.rx)

    @report_errors
    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = resize_backward(top[0].diff, self.ry, self.rx)
