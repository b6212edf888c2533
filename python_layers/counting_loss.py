"""The contrastive counting loss of Noroozi et al. (ICCV 2017), eq. 4, as a Caffe Python layer.

For one sample with counting vectors (all K-dimensional)
    t_j = phi(T_j x), j = 1..4   (the four tiles of x)
    a   = phi(D x)               (x downsampled by 2)
    b   = phi(D y)               (another image y, downsampled)
    s   = t_1 + t_2 + t_3 + t_4
the loss is
    l(x, y) = |a - s|^2 + max(0, M - |b - s|^2)
with squared Euclidean norms over the *whole* vector (the hinge is on the squared
norm, not per dimension). The layer's loss is the mean of l over the N samples.

The maths lives in ltc/loss.py (``counting_loss_forward``, ``counting_loss_backward``:
float64 numpy, testable without Caffe); this layer is a thin shell around them.

Layer contract
--------------
bottoms, one of two layouts:
  * six bottoms  phi(T1), phi(T2), phi(T3), phi(T4), phi(Dx), phi(Dy), each N x K
    (or N x K x 1 x 1): the six-branch siamese net;
  * one bottom   6N x K, the six blocks stacked along the batch axis in that same
    order (the stacked-trunk variant).
tops: the scalar loss (shape ``()``; use ``loss_weight: 1`` in the prototxt), optionally
followed by the four diagnostics of ltc.loss.DIAGNOSTICS (give them ``loss_weight: 0``, so that
``caffe train`` prints them at every ``display`` and test pass without training on them):
  count_term     mean over the batch of |phi(Dx) - sum phi(T)|^2
  contrast_term  mean of max(0, M - |phi(Dy) - sum phi(T)|^2)
  hinge_active   fraction of samples whose hinge is active (|phi(Dy) - s|^2 < M)
  norm_dx        mean |phi(Dx)| (near 0 with the loss near M: the trivial solution)
Any prefix of these may be requested; loss = count_term + contrast_term.

param_str (JSON), every key optional (declared in ltc/knobs.py, LOSS; table: docs/knobs.md):
  M       number > 0, default 10   the margin of the hinge term (paper: M = 10)

Example::

    layer { name: "loss" type: "Python" top: "loss" loss_weight: 1
            bottom: "fc8" bottom: "fc8_t2" bottom: "fc8_t3" bottom: "fc8_t4"
            bottom: "fc8_dx" bottom: "fc8_dy"
            python_param { module: "counting_loss" layer: "CountingLossLayer"
                           param_str: '{"M": 10}' } }

Backward honours ``propagate_down`` per bottom. At the hinge's kink
(|b - s|^2 == M exactly) the hinge is treated as inactive.
"""
import numpy as np

import caffe

from ltc.loss import (DIAGNOSTICS, INPUT_NAMES, counting_loss_backward, counting_loss_diagnostics,
                      counting_loss_forward, parse_loss_params)
from ltc.params import ParamError, report_errors


class CountingLossLayer(caffe.Layer):
    """Caffe Python layer for eq. 4 (see the module docstring for the contract)."""

    @report_errors
    def setup(self, bottom, top):
        self.params = parse_loss_params(self.param_str)
        if len(bottom) not in (1, 6):
            raise ParamError("CountingLossLayer needs 6 bottoms (phi(T1..T4), phi(Dx), phi(Dy)) "
                            "or 1 stacked 6N x K bottom, got %d" % len(bottom))
        if not 1 <= len(top) <= 1 + len(DIAGNOSTICS):
            raise ParamError("CountingLossLayer has the loss top plus up to %d diagnostic tops (%s), got %d tops"
                             % (len(DIAGNOSTICS), ", ".join(DIAGNOSTICS), len(top)))
        self.stacked = len(bottom) == 1

    @report_errors
    def reshape(self, bottom, top):
        if self.stacked:
            shape = bottom[0].data.shape
            if shape[0] % 6:
                raise ValueError("CountingLossLayer: the stacked bottom's batch axis must be 6N "
                                "(blocks T1,T2,T3,T4,Dx,Dy), got shape %s" % (shape,))
            self.n = shape[0] // 6
            self.k = int(np.prod(shape[1:]))
        else:
            shape0 = bottom[0].data.shape
            for i in range(6):
                sh = bottom[i].data.shape
                if sh != shape0:
                    raise ValueError("CountingLossLayer: bottom %d (%s) has shape %s but bottom 0 (%s) has %s; "
                                    "all six counting vectors must have the same N x K shape"
                                    % (i, INPUT_NAMES[i], sh, INPUT_NAMES[0], shape0))
            self.n = shape0[0]
            self.k = int(np.prod(shape0[1:]))
        for i in range(len(top)):      # pycaffe's blob vector supports len() and [i] only
            top[i].reshape()

    def _inputs(self, bottom):
        if self.stacked:
            x = bottom[0].data.reshape(6, self.n, self.k)
            return [x[i] for i in range(6)]
        return [bottom[i].data.reshape(self.n, self.k) for i in range(6)]

    @report_errors
    def forward(self, bottom, top):
        f = self._inputs(bottom)
        loss, _, self.cache = counting_loss_forward(f[:4], f[4], f[5], self.params["M"])
        top[0].data[...] = loss
        if len(top) > 1:
            diag = counting_loss_diagnostics(f[4], self.cache, self.params["M"])
            for i in range(1, len(top)):
                top[i].data[...] = diag[DIAGNOSTICS[i - 1]]

    @report_errors
    def backward(self, top, propagate_down, bottom):
        g_tile, g_dx, g_dy = counting_loss_backward(self.cache, float(top[0].diff))
        grads = [g_tile, g_tile, g_tile, g_tile, g_dx, g_dy]
        if self.stacked:
            if propagate_down[0]:
                bottom[0].diff[...] = np.stack(grads).reshape(bottom[0].diff.shape)
            return
        for i in range(6):
            if propagate_down[i]:
                bottom[i].diff[...] = grads[i].reshape(bottom[i].diff.shape)
