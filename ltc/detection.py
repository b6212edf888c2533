"""Fast R-CNN pieces in plain numpy: boxes, proposals, ROI sampling, SmoothL1, NMS.

Boxes are 0-based inclusive [x1, y1, x2, y2] (VOC pixels, widths x2 - x1 + 1), as in
py-faster-rcnn. Defaults follow Fast R-CNN's training config (fast_rcnn/config.py):
64 ROIs per image, a quarter foreground (IoU >= 0.5 with a ground-truth box), background
IoU in [0.1, 0.5), box-regression targets (dx, dy, dw, dh) divided by (0.1, 0.1, 0.2, 0.2)
(py-faster-rcnn's fixed normalisation), NMS at 0.3 per class, at most 100 boxes per image.
"""
import os
import pickle

import numpy as np

BBOX_STDS = np.array([0.1, 0.1, 0.2, 0.2])


def iou_matrix(a, b):
    """N x K IoU of boxes a (N x 4) and b (K x 4), inclusive pixel convention."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + 1
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + 1
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def nms(boxes, scores, thresh=0.3):
    """Indices kept by greedy NMS (highest score first; drop boxes with IoU > thresh to a kept one)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        if order.size == 1:
            break
        ov = iou_matrix(boxes[i:i + 1], boxes[order[1:]])[0]
        order = order[1:][ov <= thresh]
    return np.array(keep, np.int64)


def clip_boxes(boxes, width, height):
    b = np.array(boxes, np.float64, copy=True)
    b[:, 0::4] = np.clip(b[:, 0::4], 0, width - 1)
    b[:, 1::4] = np.clip(b[:, 1::4], 0, height - 1)
    b[:, 2::4] = np.clip(b[:, 2::4], 0, width - 1)
    b[:, 3::4] = np.clip(b[:, 3::4], 0, height - 1)
    return b


def bbox_targets(rois, gt):
    """Regression targets (dx, dy, dw, dh) from rois to gt boxes (both R x 4), not normalised."""
    rw = rois[:, 2] - rois[:, 0] + 1.0
    rh = rois[:, 3] - rois[:, 1] + 1.0
    rx = rois[:, 0] + 0.5 * rw
    ry = rois[:, 1] + 0.5 * rh
    gw = gt[:, 2] - gt[:, 0] + 1.0
    gh = gt[:, 3] - gt[:, 1] + 1.0
    gx = gt[:, 0] + 0.5 * gw
    gy = gt[:, 1] + 0.5 * gh
    return np.stack([(gx - rx) / rw, (gy - ry) / rh, np.log(gw / rw), np.log(gh / rh)], axis=1)


def apply_deltas(rois, deltas):
    """Inverse of bbox_targets: rois R x 4, deltas R x 4k -> boxes R x 4k."""
    rois = np.asarray(rois, np.float64)
    w = rois[:, 2] - rois[:, 0] + 1.0
    h = rois[:, 3] - rois[:, 1] + 1.0
    cx = rois[:, 0] + 0.5 * w
    cy = rois[:, 1] + 0.5 * h
    dx, dy, dw, dh = (deltas[:, i::4] for i in range(4))
    pcx = dx * w[:, None] + cx[:, None]
    pcy = dy * h[:, None] + cy[:, None]
    pw = np.exp(np.minimum(dw, 10)) * w[:, None]
    ph = np.exp(np.minimum(dh, 10)) * h[:, None]
    out = np.zeros(deltas.shape, np.float64)
    out[:, 0::4] = pcx - 0.5 * pw
    out[:, 1::4] = pcy - 0.5 * ph
    out[:, 2::4] = pcx + 0.5 * pw - 1
    out[:, 3::4] = pcy + 0.5 * ph - 1
    return out


# ----------------------------------------------------------------------------- proposals
def toy_proposals(gt_boxes, width, height, rng, n_jitter=20, n_random=150, jitter=0.25, min_size=8):
    """Proposals for the toy set: each ground-truth box jittered n_jitter times (centre shifts and
    log-size changes up to ``jitter`` of its size) plus n_random uniform random boxes. Stands in for
    selective search, which the toy has no need of; every proposal is clipped to the image."""
    gt = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    out = []
    for b in gt:
        w, h = b[2] - b[0] + 1, b[3] - b[1] + 1
        d = rng.uniform(-jitter, jitter, (n_jitter, 4))
        cx = (b[0] + b[2]) / 2 + d[:, 0] * w
        cy = (b[1] + b[3]) / 2 + d[:, 1] * h
        nw, nh = w * np.exp(d[:, 2]), h * np.exp(d[:, 3])
        out.append(np.stack([cx - nw / 2, cy - nh / 2, cx + nw / 2, cy + nh / 2], 1))
    x = np.sort(rng.uniform(0, width - 1, (n_random, 2)), 1)
    y = np.sort(rng.uniform(0, height - 1, (n_random, 2)), 1)
    out.append(np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], 1))
    p = np.round(clip_boxes(np.concatenate(out), width, height))
    keep = ((p[:, 2] - p[:, 0] + 1) >= min_size) & ((p[:, 3] - p[:, 1] + 1) >= min_size)
    return p[keep]


def load_proposals(path, ids=None):
    """Precomputed proposals -> list of N x 4 arrays (0-based x1, y1, x2, y2), one per image.

    .mat: Fast R-CNN's selective-search files (``boxes`` cell array of y1, x1, y2, x2, 1-based,
    and ``images`` with the ids; when ``ids`` is given the rows are reordered to them).
    .pkl: py-faster-rcnn's proposal lists (x1, y1, x2, y2, 0-based, optional 5th score column)
    in the image-set order.
    """
    if not os.path.isfile(path):
        raise ValueError("proposal file '%s' is missing" % path)
    if path.endswith(".mat"):
        from scipy.io import loadmat
        try:
            m = loadmat(path)
            raw = m["boxes"].ravel()
        except (KeyError, ValueError, OSError) as e:
            raise ValueError("'%s' is not a selective-search .mat with a 'boxes' cell array (%s)" % (path, e))
        boxes = [np.asarray(b, np.float64)[:, (1, 0, 3, 2)] - 1 for b in raw]
        if ids is not None and "images" in m:
            names = [str(np.asarray(x).ravel()[0]) for x in m["images"].ravel()]
            pos = {n: i for i, n in enumerate(names)}
            missing = [i for i in ids if i not in pos]
            if missing:
                raise ValueError("'%s' has no proposals for %d images, e.g. %s" % (path, len(missing), missing[:3]))
            boxes = [boxes[pos[i]] for i in ids]
    elif path.endswith(".pkl"):
        with open(path, "rb") as f:
            try:
                raw = pickle.load(f, encoding="latin1")
            except Exception as e:
                raise ValueError("'%s' cannot be unpickled (%s)" % (path, e))
        boxes = [np.asarray(b, np.float64)[:, :4] for b in raw]
    else:
        raise ValueError("proposal file '%s': expected .mat (selective search) or .pkl" % path)
    if ids is not None and len(boxes) != len(ids):
        raise ValueError("'%s' holds proposals for %d images, the image set has %d" % (path, len(boxes), len(ids)))
    return boxes


# ----------------------------------------------------------------------------- ROI sampling
def sample_rois(proposals, gt_boxes, gt_classes, num_classes, rng, rois_per_image=64, fg_fraction=0.25,
                fg_thresh=0.5, bg_hi=0.5, bg_lo=0.1):
    """Fast R-CNN's minibatch sampling for one image.

    Ground-truth boxes join the candidates (as in fast-rcnn's roidb). Returns (rois R x 4,
    labels R (0 = background, c + 1 = class c), targets R x 4(K+1), weights R x 4(K+1)) with the
    targets normalised by BBOX_STDS and placed in the label's four columns.
    """
    gt = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    cand = np.concatenate([gt, np.asarray(proposals, np.float64).reshape(-1, 4)])
    if len(gt):
        ov = iou_matrix(cand, gt)
        best = ov.argmax(1)
        max_ov = ov.max(1)
    else:
        best = np.zeros(len(cand), np.int64)
        max_ov = np.zeros(len(cand))
    fg = np.where(max_ov >= fg_thresh)[0]
    n_fg = min(int(round(fg_fraction * rois_per_image)), len(fg))
    fg = rng.choice(fg, n_fg, replace=False) if n_fg else fg[:0]
    bg = np.where((max_ov < bg_hi) & (max_ov >= bg_lo))[0]
    if len(bg) == 0:
        bg = np.where(max_ov < bg_hi)[0]
    n_bg = min(rois_per_image - n_fg, len(bg))
    bg = rng.choice(bg, n_bg, replace=False) if n_bg else bg[:0]
    keep = np.concatenate([fg, bg]).astype(np.int64)
    rois = cand[keep]
    labels = np.zeros(len(keep), np.int64)
    labels[:n_fg] = np.asarray(gt_classes, np.int64)[best[fg]] + 1
    k = num_classes + 1
    targets = np.zeros((len(keep), 4 * k))
    weights = np.zeros((len(keep), 4 * k))
    if n_fg:
        t = bbox_targets(rois[:n_fg], gt[best[fg]]) / BBOX_STDS
        for r in range(n_fg):
            targets[r, 4 * labels[r]:4 * labels[r] + 4] = t[r]
            weights[r, 4 * labels[r]:4 * labels[r] + 4] = 1.0
    return rois, labels, targets, weights


# ----------------------------------------------------------------------------- SmoothL1
def smooth_l1_forward(pred, target, weight):
    """Fast R-CNN's SmoothL1Loss (sigma 1): sum(w * f(pred - target)) / N, f(x) = 0.5x^2 if |x| < 1 else |x| - 0.5.

    Returns (loss, gradient w.r.t. pred for a top gradient of 1). N = pred.shape[0].
    """
    d = weight * (pred - target)
    a = np.abs(d)
    n = max(pred.shape[0], 1)
    loss = np.where(a < 1, 0.5 * d * d, a - 0.5).sum() / n
    grad = weight * np.where(a < 1, d, np.sign(d)) / n
    return float(loss), grad


# ----------------------------------------------------------------------------- test-time
def detect_image(cls_prob, boxes_per_class, score_thresh=0.05, nms_thresh=0.3, max_per_image=100):
    """Per-class NMS of one image's scored boxes.

    cls_prob: R x (K+1) softmax; boxes_per_class: R x 4(K+1) (class c + 1 in columns 4(c+1)..).
    Returns a list over the K classes of M x 5 arrays (x1, y1, x2, y2, score).
    """
    k = cls_prob.shape[1] - 1
    dets = []
    for c in range(k):
        s = cls_prob[:, c + 1]
        m = s > score_thresh
        b = boxes_per_class[m, 4 * (c + 1):4 * (c + 2)]
        d = np.hstack([b, s[m, None]])
        dets.append(d[nms(b, s[m], nms_thresh)] if len(d) else d.reshape(0, 5))
    if max_per_image:
        allsc = np.concatenate([d[:, 4] for d in dets])
        if len(allsc) > max_per_image:
            th = np.sort(allsc)[-max_per_image]
            dets = [d[d[:, 4] >= th] for d in dets]
    return dets
