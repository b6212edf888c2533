"""Scores of the three Table 1 evaluations, in plain numpy (no Caffe).

Classification (VOC07 devkit, ``VOCevalcls``): per class, images are ranked by score; an
image is positive if it holds a non-difficult object of the class, ignored if it holds only
difficult ones (label 0), negative otherwise; AP is the 11-point interpolated AP.

Detection (VOC devkit ``VOCevaldet`` as ported in py-faster-rcnn's voc_eval.py): per class,
detections ranked by confidence are matched greedily to the unmatched ground-truth box of
highest IoU (VOC's inclusive pixel convention, +1 on widths) in the same image; IoU > 0.5
with a non-difficult box is a true positive (a second hit on it is a false positive), with a
difficult box neither; anything else is a false positive. Difficult boxes do not count in
the number of positives. AP: 11-point (VOC2007) or the area under the monotone precision
envelope (VOC2010+, ``use_07=False``).

Segmentation (fcn.berkeleyvision.org score.py): a confusion matrix over pixels whose label
is in [0, n) (255 = ignore drops out), then overall pixel accuracy, mean per-class accuracy,
mean IoU and frequency-weighted IoU.
"""
import numpy as np


def voc_ap(rec, prec, use_07=True):
    """Average precision from recall/precision arrays (ranked order).

    use_07: VOC2007's 11-point rule, mean over t in {0, 0.1, ..., 1} of max precision at
    recall >= t (0 where no such point); otherwise the area under the precision envelope.
    """
    rec = np.asarray(rec, np.float64)
    prec = np.asarray(prec, np.float64)
    if use_07:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            p = prec[rec >= t - 1e-12].max() if np.any(rec >= t - 1e-12) else 0.0
            ap += p / 11.0
        return float(ap)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


# ----------------------------------------------------------------------------- classification
def cls_gt_matrix(image_objects, num_classes):
    """Per-image class labels as the VOC07 devkit sees them.

    image_objects: list (one per image) of lists of (class_index, difficult) pairs.
    Returns an int array N x C: 1 = a non-difficult object of the class is present,
    0 = only difficult ones (ignored when scoring), -1 = absent.
    """
    gt = -np.ones((len(image_objects), num_classes), np.int64)
    for i, objs in enumerate(image_objects):
        for c, difficult in objs:
            if not (0 <= c < num_classes):
                raise ValueError("image %d: class index %d outside 0..%d" % (i, c, num_classes - 1))
            if difficult:
                if gt[i, c] < 0:
                    gt[i, c] = 0
            else:
                gt[i, c] = 1
    return gt


def cls_ap(scores, gt, use_07=True):
    """AP of one class: scores (N,), gt (N,) in {1, 0, -1} (0 = ignored). NaN without positives."""
    scores = np.asarray(scores, np.float64)
    gt = np.asarray(gt)
    keep = gt != 0
    scores, gt = scores[keep], gt[keep]
    npos = int(np.sum(gt > 0))
    if npos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(gt[order] > 0)
    fp = np.cumsum(gt[order] < 0)
    rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return voc_ap(rec, prec, use_07)


def cls_aps(scores, gt, use_07=True):
    """Per-class APs (C,) for scores N x C and gt N x C (cls_gt_matrix)."""
    scores = np.asarray(scores)
    gt = np.asarray(gt)
    if scores.shape != gt.shape:
        raise ValueError("scores %s and ground truth %s differ in shape" % (scores.shape, gt.shape))
    return np.array([cls_ap(scores[:, c], gt[:, c], use_07) for c in range(gt.shape[1])])


# ----------------------------------------------------------------------------- detection
def box_iou(box, boxes):
    """IoU of one box [x1, y1, x2, y2] (inclusive pixels, VOC) with boxes K x 4."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    ix1 = np.maximum(boxes[:, 0], box[0])
    iy1 = np.maximum(boxes[:, 1], box[1])
    ix2 = np.minimum(boxes[:, 2], box[2])
    iy2 = np.minimum(boxes[:, 3], box[3])
    iw = np.maximum(ix2 - ix1 + 1.0, 0.0)
    ih = np.maximum(iy2 - iy1 + 1.0, 0.0)
    inter = iw * ih
    area = (box[2] - box[0] + 1.0) * (box[3] - box[1] + 1.0)
    areas = (boxes[:, 2] - boxes[:, 0] + 1.0) * (boxes[:, 3] - boxes[:, 1] + 1.0)
    return inter / (area + areas - inter)


def det_ap(detections, gt_boxes, gt_difficult, iou_thresh=0.5, use_07=True):
    """AP of one class.

    detections: list of (image_index, score, [x1, y1, x2, y2]).
    gt_boxes: {image_index: K x 4 array} of this class's boxes; gt_difficult: {image_index: K bools}.
    Returns (ap, recall array, precision array); ap is NaN if the class has no non-difficult box.
    """
    npos = int(sum(int(np.sum(~np.asarray(d, bool))) for d in gt_difficult.values()))
    used = {i: np.zeros(len(np.asarray(b).reshape(-1, 4)), bool) for i, b in gt_boxes.items()}
    dets = sorted(detections, key=lambda d: -float(d[1]))
    tp = np.zeros(len(dets))
    fp = np.zeros(len(dets))
    for k, (img, _score, box) in enumerate(dets):
        gts = np.asarray(gt_boxes.get(img, np.zeros((0, 4))), np.float64).reshape(-1, 4)
        if len(gts) == 0:
            fp[k] = 1
            continue
        ious = box_iou(np.asarray(box, np.float64), gts)
        j = int(np.argmax(ious))
        if ious[j] > iou_thresh:
            if np.asarray(gt_difficult[img], bool)[j]:
                continue                      # neither true nor false positive
            if not used[img][j]:
                tp[k] = 1
                used[img][j] = True
            else:
                fp[k] = 1
        else:
            fp[k] = 1
    if npos == 0:
        return float("nan"), np.zeros(0), np.zeros(0)
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return voc_ap(rec, prec, use_07), rec, prec


def det_aps(all_dets, annotations, num_classes, iou_thresh=0.5, use_07=True):
    """Per-class detection APs (C,).

    all_dets: list over classes of lists (image_index, score, box).
    annotations: list over images of dicts with 'boxes' (K x 4), 'classes' (K,), 'difficult' (K,).
    """
    aps = []
    for c in range(num_classes):
        gtb, gtd = {}, {}
        for i, a in enumerate(annotations):
            m = np.asarray(a["classes"]) == c
            gtb[i] = np.asarray(a["boxes"], np.float64).reshape(-1, 4)[m]
            gtd[i] = np.asarray(a["difficult"], bool)[m]
        aps.append(det_ap(all_dets[c], gtb, gtd, iou_thresh, use_07)[0])
    return np.array(aps)


# ----------------------------------------------------------------------------- segmentation
def fast_hist(label, pred, n):
    """n x n confusion matrix (rows: ground truth, columns: prediction); labels outside [0, n) ignored."""
    label = np.asarray(label).ravel().astype(np.int64)
    pred = np.asarray(pred).ravel().astype(np.int64)
    if label.shape != pred.shape:
        raise ValueError("label (%d px) and prediction (%d px) differ in size" % (label.size, pred.size))
    k = (label >= 0) & (label < n)
    return np.bincount(n * label[k] + pred[k], minlength=n * n).reshape(n, n)


def seg_scores(hist):
    """{'pixel_acc', 'mean_acc', 'mean_iou', 'fw_iou', 'iou' (per class)} from a confusion matrix.

    Classes absent from both ground truth and prediction give NaN IoU and are left out of
    the means (np.nanmean), as fcn's score.py does.
    """
    hist = np.asarray(hist, np.float64)
    diag = np.diag(hist)
    with np.errstate(divide="ignore", invalid="ignore"):
        acc_cls = diag / hist.sum(1)
        iou = diag / (hist.sum(1) + hist.sum(0) - diag)
        freq = hist.sum(1) / hist.sum()
    return dict(pixel_acc=float(diag.sum() / hist.sum()), mean_acc=float(np.nanmean(acc_cls)),
                mean_iou=float(np.nanmean(iou)), fw_iou=float((freq[freq > 0] * iou[freq > 0]).sum()),
                iou=iou)


def nanmean(x):
    """Mean over the non-NaN entries (classes with no positives are left out of a mAP)."""
    x = np.asarray(x, np.float64)
    return float(np.nanmean(x)) if np.any(~np.isnan(x)) else float("nan")
