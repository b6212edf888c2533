"""ROI max pooling (Fast R-CNN's ROIPooling), numpy core; no Caffe needed.

Semantics are those of rbgirshick's ``roi_pooling_layer.cpp`` (his Caffe fork), which the
Fast R-CNN CaffeNet was trained with:

* an ROI row is (batch_index, x1, y1, x2, y2) in input-image pixels; each coordinate is
  multiplied by ``spatial_scale`` and rounded (C's ``round``: halves away from zero);
* roi_width = max(x2 - x1 + 1, 1), roi_height likewise (inclusive pixel ends);
* bin (ph, pw) covers rows floor(ph * h / PH) .. ceil((ph + 1) * h / PH) - 1 (h = roi_height,
  PH = pooled_h), shifted by the ROI start and clipped to the feature map; columns likewise;
* the output is the maximum over the bin (first maximum in row-major order wins), or 0 for
  an empty bin (the ROI lies outside the map), whose argmax is -1;
* backward: each output's gradient goes to its argmax position (summed over bins and ROIs
  that chose it); empty bins pass nothing; ROI coordinates get no gradient.
"""
import math

import numpy as np


def c_round(x):
    """C's round(): halves away from zero (numpy rounds them to even)."""
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def roi_bins(roi, height, width, pooled_h, pooled_w, spatial_scale):
    """[(hstart, hend, wstart, wend)] for the pooled_h * pooled_w bins of one ROI row (row-major)."""
    x1, y1, x2, y2 = (c_round(float(v) * spatial_scale) for v in roi[1:5])
    roi_h = max(y2 - y1 + 1, 1)
    roi_w = max(x2 - x1 + 1, 1)
    bh = roi_h / float(pooled_h)
    bw = roi_w / float(pooled_w)
    bins = []
    for ph in range(pooled_h):
        hs = min(max(int(math.floor(ph * bh)) + y1, 0), height)
        he = min(max(int(math.ceil((ph + 1) * bh)) + y1, 0), height)
        for pw in range(pooled_w):
            ws = min(max(int(math.floor(pw * bw)) + x1, 0), width)
            we = min(max(int(math.ceil((pw + 1) * bw)) + x1, 0), width)
            bins.append((hs, he, ws, we))
    return bins


def check_rois(rois, batch):
    rois = np.asarray(rois)
    if rois.ndim != 2 or rois.shape[1] != 5:
        raise ValueError("ROIs must be R x 5 rows (batch_index, x1, y1, x2, y2), got shape %s" % (rois.shape,))
    b = rois[:, 0]
    if len(b) and (np.any(b != np.round(b)) or b.min() < 0 or b.max() >= batch):
        raise ValueError("ROI batch indices must be integers in 0..%d, got %s" % (batch - 1, np.unique(b)))
    return rois


def roi_pool_forward(x, rois, pooled_h=6, pooled_w=6, spatial_scale=1.0 / 16):
    """x: N x C x H x W features, rois: R x 5 -> (R x C x PH x PW output, R x C x PH x PW argmax).

    argmax holds the flat index h * W + w into the ROI's image feature map, -1 for empty bins.
    """
    n, c, height, width = x.shape
    rois = check_rois(rois, n)
    out = np.zeros((len(rois), c, pooled_h, pooled_w), x.dtype)
    arg = -np.ones((len(rois), c, pooled_h, pooled_w), np.int64)
    for r, roi in enumerate(rois):
        b = int(roi[0])
        for k, (hs, he, ws, we) in enumerate(roi_bins(roi, height, width, pooled_h, pooled_w, spatial_scale)):
            if he <= hs or we <= ws:
                continue
            ph, pw = divmod(k, pooled_w)
            patch = x[b, :, hs:he, ws:we].reshape(c, -1)
            j = np.argmax(patch, axis=1)
            out[r, :, ph, pw] = patch[np.arange(c), j]
            bw = we - ws
            arg[r, :, ph, pw] = (hs + j // bw) * width + ws + j % bw
    return out, arg


def roi_pool_backward(top_diff, argmax, rois, bottom_shape):
    """Gradient w.r.t. the features (N x C x H x W) for top_diff R x C x PH x PW."""
    n, c, height, width = bottom_shape
    grad = np.zeros((n, c, height * width), top_diff.dtype)
    rois = np.asarray(rois)
    r_idx, c_idx = np.meshgrid(np.arange(len(rois)), np.arange(c), indexing="ij")
    b = rois[:, 0].astype(np.int64)[r_idx]                      # R x C
    for ph in range(argmax.shape[2]):
        for pw in range(argmax.shape[3]):
            a = argmax[:, :, ph, pw]
            m = a >= 0
            np.add.at(grad, (b[m], c_idx[m], a[m]), top_diff[:, :, ph, pw][m])
    return grad.reshape(bottom_shape)


def roi_pool_reference(x, rois, pooled_h=6, pooled_w=6, spatial_scale=1.0 / 16):
    """Scalar loop transcription of the C++ forward (for tests): -FLT_MAX start, strict '>'."""
    n, c, height, width = x.shape
    out = np.zeros((len(rois), c, pooled_h, pooled_w))
    for r, roi in enumerate(rois):
        b = int(roi[0])
        sw, sh, ew, eh = (c_round(float(v) * spatial_scale) for v in roi[1:5])
        rh, rw = max(eh - sh + 1, 1), max(ew - sw + 1, 1)
        bsh, bsw = float(rh) / pooled_h, float(rw) / pooled_w
        for ch in range(c):
            for ph in range(pooled_h):
                for pw in range(pooled_w):
                    hs = min(max(int(math.floor(ph * bsh)) + sh, 0), height)
                    he = min(max(int(math.ceil((ph + 1) * bsh)) + sh, 0), height)
                    ws = min(max(int(math.floor(pw * bsw)) + sw, 0), width)
                    we = min(max(int(math.ceil((pw + 1) * bsw)) + sw, 0), width)
                    if he <= hs or we <= ws:
                        out[r, ch, ph, pw] = 0
                        continue
                    m = -3.4028234663852886e38
                    for h in range(hs, he):
                        for w in range(ws, we):
                            if x[b, ch, h, w] > m:
                                m = x[b, ch, h, w]
                    out[r, ch, ph, pw] = m
    return out
