"""Table 1 pipelines: ROIPooling (reference loop, rbgirshick's semantics, finite differences, in
Caffe), SmoothL1, VOC scores on hand-computed cases, VOC readers on a handmade tree, the toy
VOC's exact ground truth, the multi-label loss on known logits, and each pipeline end to end."""
import math
import os
import pickle

import numpy as np
import pytest

import caffe
from ltc import detection, scoring, voc, voc_data, voc_toy
from ltc import roi_pooling as rp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _net(tmp_path, text, name="net.prototxt"):
    path = tmp_path / name
    path.write_text(text)
    return caffe.Net(str(path), caffe.TRAIN)


# ----------------------------------------------------------------------------- ROIPooling
def _distinct(shape, seed):
    """Values with distinct magnitudes (gaps >= 0.01) so no max is tied or flips under FD steps."""
    rng = np.random.RandomState(seed)
    return (rng.permutation(int(np.prod(shape))).reshape(shape) * 0.01 - 1.0).astype(np.float64)


ROIS = np.array([[0, 0, 0, 63, 63], [1, 8, 8, 40, 24], [0, 16, 0, 16, 0], [1, -40, -40, -20, -20],
                 [0, 24, 40, 200, 300], [1, 7.5, 23.9, 40.4, 56.5], [0, 40, 8, 47, 63]], np.float64)


def test_roi_pool_matches_the_reference_loop():
    x = _distinct((2, 3, 4, 5), 0)
    for ph, pw, scale in ((6, 6, 1.0 / 16), (2, 3, 0.125), (3, 2, 1.0)):
        out, arg = rp.roi_pool_forward(x, ROIS, ph, pw, scale)
        ref = rp.roi_pool_reference(x, ROIS, ph, pw, scale)
        assert np.array_equal(out, ref)
        flat = x.reshape(2, 3, -1)
        b = ROIS[:, 0].astype(int)
        for r in range(len(ROIS)):
            for c in range(3):
                m = arg[r, c] >= 0
                assert np.array_equal(flat[b[r], c][arg[r, c][m]], out[r, c][m])
                assert np.all(out[r, c][~m] == 0)


def test_roi_pool_published_semantics():
    # C round: 2.5 -> 3 (numpy's round gives 2); roi coordinates are rounded after scaling
    assert rp.c_round(2.5) == 3 and rp.c_round(-2.5) == -3 and rp.c_round(2.49) == 2
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    # scale 0.5: (1, 1, 5, 5) -> (0.5 -> 1, 2.5 -> 3): rows/cols 1..3, 3 px into 2 bins:
    # bin 0 = floor(0)..ceil(1.5) = 0..1 (+1 -> 1..2), bin 1 = floor(1.5)..ceil(3) = 1..2 (+1 -> 2..3)
    out, arg = rp.roi_pool_forward(x, np.array([[0, 1, 1, 5, 5]]), 2, 2, 0.5)
    assert out[0, 0].tolist() == [[x[0, 0, 2, 2], x[0, 0, 2, 3]], [x[0, 0, 3, 2], x[0, 0, 3, 3]]]
    assert arg[0, 0].tolist() == [[10, 11], [14, 15]]
    # an ROI wholly outside the map: every bin empty -> 0, argmax -1, no gradient
    out, arg = rp.roi_pool_forward(x + 100, np.array([[0, 100, 100, 120, 120]]), 2, 2, 1.0)
    assert np.all(out == 0) and np.all(arg == -1)
    assert np.all(rp.roi_pool_backward(np.ones_like(out), arg, np.array([[0, 100, 100, 120, 120]]), x.shape) == 0)
    # a 1-pixel ROI fills every bin with that pixel (bins overlap, each takes the same max)
    out, _ = rp.roi_pool_forward(x, np.array([[0, 2, 1, 2, 1]]), 3, 3, 1.0)
    assert np.all(out == x[0, 0, 1, 2])
    # ties: the first maximum in row-major order wins (strict '>')
    out, arg = rp.roi_pool_forward(np.ones((1, 1, 3, 3)), np.array([[0, 0, 0, 2, 2]]), 1, 1, 1.0)
    assert arg[0, 0, 0, 0] == 0
    with pytest.raises(ValueError, match="batch indices"):
        rp.roi_pool_forward(x, np.array([[1, 0, 0, 1, 1]]))


def test_roi_pool_backward_by_finite_differences():
    x = _distinct((2, 2, 5, 6), 1)
    rois = ROIS[:, :]
    ph, pw, scale = 3, 3, 0.125
    out, arg = rp.roi_pool_forward(x, rois, ph, pw, scale)
    w = np.random.RandomState(2).randn(*out.shape)
    grad = rp.roi_pool_backward(w, arg, rois, x.shape)
    eps = 1e-3
    num = np.zeros_like(x)
    for i in np.ndindex(*x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        num[i] = (np.sum(w * rp.roi_pool_forward(xp, rois, ph, pw, scale)[0])
                  - np.sum(w * rp.roi_pool_forward(xm, rois, ph, pw, scale)[0])) / (2 * eps)
    assert np.abs(grad).max() > 0
    np.testing.assert_allclose(grad, num, atol=1e-6)


ROI_NET = """name: "roi"
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 4 dim: 5 } } }
layer { name: "rois" type: "Input" top: "rois" input_param { shape { dim: 7 dim: 5 } } }
layer { name: "pool" type: "Python" bottom: "x" bottom: "rois" top: "pool"
  python_param { module: "roi_pooling_layer" layer: "ROIPoolingLayer" param_str: "%s" } }
"""


def test_roi_pooling_layer_in_caffe(tmp_path):
    net = _net(tmp_path, ROI_NET % '{\\"pooled_h\\": 2, \\"pooled_w\\": 3, \\"spatial_scale\\": 0.125}')
    x = _distinct((2, 3, 4, 5), 3).astype(np.float32)
    net.blobs["x"].data[...] = x
    net.blobs["rois"].data[...] = ROIS
    net.forward()
    ref = rp.roi_pool_reference(x.astype(np.float64), ROIS, 2, 3, 0.125)
    assert net.blobs["pool"].data.shape == (7, 3, 2, 3)
    np.testing.assert_array_equal(net.blobs["pool"].data, ref.astype(np.float32))
    g = np.random.RandomState(4).randn(7, 3, 2, 3).astype(np.float32)
    net.blobs["pool"].diff[...] = g
    net.layers[list(net._layer_names).index("pool")].backward([net.blobs["pool"]], [True, False],
                                                              [net.blobs["x"], net.blobs["rois"]])
    _, arg = rp.roi_pool_forward(x.astype(np.float64), ROIS, 2, 3, 0.125)
    np.testing.assert_allclose(net.blobs["x"].diff, rp.roi_pool_backward(g.astype(np.float64), arg, ROIS, x.shape),
                               atol=1e-6)


def test_roi_pooling_layer_rejects_bad_params(tmp_path):
    with pytest.raises(Exception):
        _net(tmp_path, ROI_NET % '{\\"pooled\\": 2}')
    with pytest.raises(Exception):
        _net(tmp_path, ROI_NET % '{\\"spatial_scale\\": 0}')


# ----------------------------------------------------------------------------- SmoothL1
def test_smooth_l1_values_and_finite_differences(tmp_path):
    pred = np.array([[0.2, -3.0, 1.5, 0.0]])
    target = np.array([[0.0, 0.0, 0.0, 5.0]])
    weight = np.array([[1.0, 1.0, 1.0, 0.0]])
    loss, grad = detection.smooth_l1_forward(pred, target, weight)
    assert loss == pytest.approx(0.5 * 0.04 + 2.5 + 1.0)
    np.testing.assert_allclose(grad, [[0.2, -1.0, 1.0, 0.0]])
    rng = np.random.RandomState(0)
    p, t, w = rng.randn(3, 8) * 2, rng.randn(3, 8), (rng.rand(3, 8) > 0.3).astype(float)
    _, g = detection.smooth_l1_forward(p, t, w)
    eps = 1e-6
    for i in np.ndindex(*p.shape):
        pp, pm = p.copy(), p.copy()
        pp[i] += eps
        pm[i] -= eps
        num = (detection.smooth_l1_forward(pp, t, w)[0] - detection.smooth_l1_forward(pm, t, w)[0]) / (2 * eps)
        assert g[i] == pytest.approx(num, abs=1e-5)
    net = _net(tmp_path, """name: "l1" force_backward: true
layer { name: "in" type: "Input" top: "p" top: "t" top: "w" input_param { shape { dim: 3 dim: 8 } } }
layer { name: "loss" type: "Python" bottom: "p" bottom: "t" bottom: "w" top: "loss" loss_weight: 1
  python_param { module: "smooth_l1_loss_layer" layer: "SmoothL1LossLayer" } }
""")
    for name, v in (("p", p), ("t", t), ("w", w)):
        net.blobs[name].data[...] = v
    net.forward()
    assert float(net.blobs["loss"].data) == pytest.approx(detection.smooth_l1_forward(p, t, w)[0], rel=1e-5)
    net.backward()
    np.testing.assert_allclose(net.blobs["p"].diff, g, atol=1e-6)


# ----------------------------------------------------------------------------- scores
def test_voc07_eleven_point_ap_by_hand():
    # ranked: TP, FP, TP, FP; 2 positives -> recall .5 .5 1 1, precision 1 .5 .667 .5
    rec, prec = [0.5, 0.5, 1.0, 1.0], [1.0, 0.5, 2 / 3.0, 0.5]
    # t = 0..0.5 (6 points): max prec = 1; t = 0.6..1.0 (5 points): 2/3
    assert scoring.voc_ap(rec, prec, use_07=True) == pytest.approx((6 * 1.0 + 5 * 2 / 3.0) / 11)
    # area: 0.5 * 1 + 0.5 * 2/3
    assert scoring.voc_ap(rec, prec, use_07=False) == pytest.approx(0.5 + 0.5 * 2 / 3.0)
    # never reaching recall 1: the missing points count 0
    assert scoring.voc_ap([0.5], [1.0], use_07=True) == pytest.approx(6 / 11.0)


def test_cls_ap_ignores_difficult_only_images():
    objs = [[(0, 0)], [(0, 1)], [], [(0, 0), (1, 1)], [(1, 0)]]
    gt = scoring.cls_gt_matrix(objs, 2)
    assert gt.tolist() == [[1, -1], [0, -1], [-1, -1], [1, 0], [-1, 1]]
    # class 0 ranking: img1 (difficult, ignored) 0.9, img2 (neg) 0.8, img0 (pos) 0.7, img3 (pos) 0.6, img4 0.1
    s0 = [0.7, 0.9, 0.8, 0.6, 0.1]
    # without img1: neg, pos, pos -> prec at recall .5 = 1/2, at 1.0 = 2/3 -> 11-point = 2/3
    assert scoring.cls_ap(s0, gt[:, 0]) == pytest.approx(2 / 3.0)
    # if the difficult image counted as a negative it would be lower
    assert scoring.cls_ap(s0, np.where(gt[:, 0] == 0, -1, gt[:, 0])) < 2 / 3.0 - 0.1
    aps = scoring.cls_aps(np.array([s0, [0.1, 0.2, 0.3, 0.9, 0.8]]).T, gt)
    # class 1: img3 is difficult-only (ignored) -> img4 (pos) ranks first among img0,1,2,4 -> AP 1
    assert aps[1] == pytest.approx(1.0)
    assert math.isnan(scoring.cls_ap([0.1, 0.2], [-1, 0]))


def test_det_ap_difficult_duplicates_and_iou():
    gtb = {0: np.array([[0, 0, 9, 9], [20, 20, 29, 29]]), 1: np.array([[0, 0, 9, 9]])}
    gtd = {0: np.array([False, True]), 1: np.array([False])}
    dets = [(0, 0.9, [0, 0, 9, 9]),      # TP (image 0, box 0)
            (0, 0.8, [0, 0, 9, 8]),      # duplicate of a matched box -> FP
            (0, 0.7, [20, 20, 29, 29]),  # hits a difficult box -> ignored
            (1, 0.6, [5, 5, 14, 14]),    # IoU 25/175 < 0.5 -> FP
            (1, 0.5, [0, 0, 9, 10])]     # IoU 100/110 > 0.5 -> TP
    ap, rec, prec = scoring.det_ap(dets, gtb, gtd)
    # npos = 2 (difficult not counted); ranked TP FP (ignored) FP TP: rec .5 .5 .5 .5 1, prec 1 .5 .5 1/3 .5
    np.testing.assert_allclose(rec, [0.5, 0.5, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(prec, [1, 0.5, 0.5, 1 / 3.0, 0.5])
    assert ap == pytest.approx((6 * 1.0 + 5 * 0.5) / 11)
    assert scoring.box_iou(np.array([0, 0, 9, 9]), np.array([[5, 5, 14, 14]]))[0] == pytest.approx(25 / 175.0)
    aps = scoring.det_aps([dets, []], [dict(boxes=gtb[0], classes=[0, 0], difficult=gtd[0]),
                                       dict(boxes=gtb[1], classes=[0], difficult=gtd[1])], 2)
    assert aps[0] == pytest.approx(ap) and math.isnan(aps[1])


def test_seg_scores_by_hand():
    label = np.array([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, 2]])
    hist = scoring.fast_hist(label, pred, 3)
    assert hist.tolist() == [[1, 1, 0], [0, 2, 1], [1, 0, 1]]   # the 255 pixel is ignored
    s = scoring.seg_scores(hist)
    assert s["pixel_acc"] == pytest.approx(4 / 7.0)
    assert s["mean_acc"] == pytest.approx((1 / 2.0 + 2 / 3.0 + 1 / 2.0) / 3)
    iou = [1 / 3.0, 2 / 4.0, 1 / 3.0]        # diag / (row + col - diag)
    np.testing.assert_allclose(s["iou"], iou)
    assert s["mean_iou"] == pytest.approx(np.mean(iou))
    assert s["fw_iou"] == pytest.approx(2 / 7.0 * iou[0] + 3 / 7.0 * iou[1] + 2 / 7.0 * iou[2])
    # a class absent from label and prediction is left out of the mean (NaN), as fcn's score.py
    s4 = scoring.seg_scores(scoring.fast_hist(label, pred, 4))
    assert math.isnan(s4["iou"][3]) and s4["mean_iou"] == pytest.approx(np.mean(iou))


# ----------------------------------------------------------------------------- detection helpers
def test_nms_and_box_transforms():
    boxes = np.array([[0, 0, 9, 9], [1, 1, 10, 10], [20, 20, 29, 29], [0, 0, 9, 8]])
    keep = detection.nms(boxes, np.array([0.9, 0.8, 0.7, 0.95]), 0.3)
    assert keep.tolist() == [3, 2]
    rois = np.array([[0, 0, 9, 9], [10, 5, 30, 40]], np.float64)
    gt = np.array([[2, 1, 12, 15], [8, 8, 33, 35]], np.float64)
    t = detection.bbox_targets(rois, gt)
    np.testing.assert_allclose(detection.apply_deltas(rois, t), gt, atol=1e-9)
    rng = np.random.RandomState(0)
    r, lab, tg, w = detection.sample_rois(detection.toy_proposals(gt, 60, 50, rng), gt, np.array([3, 1]), 5, rng, 32)
    ov = detection.iou_matrix(r, gt).max(1)
    assert np.all(ov[lab > 0] >= 0.5) and np.all(ov[lab == 0] < 0.5) and len(r) <= 32
    assert set(lab[lab > 0].tolist()) <= {4, 2} and np.all(w.sum(1) == 4 * (lab > 0))
    fg = np.where(lab > 0)[0][0]
    k = lab[fg]
    best = detection.iou_matrix(r[fg:fg + 1], gt).argmax()
    np.testing.assert_allclose(tg[fg, 4 * k:4 * k + 4] * detection.BBOX_STDS,
                               detection.bbox_targets(r[fg:fg + 1], gt[best:best + 1])[0])


def test_load_proposals_mat_and_pkl(tmp_path):
    from scipy.io import savemat
    b0 = np.array([[2, 1, 11, 21]], np.float64)       # y1 x1 y2 x2, 1-based
    b1 = np.array([[1, 1, 5, 5], [3, 4, 9, 9]], np.float64)
    cell = np.empty((1, 2), object)
    cell[0, 0], cell[0, 1] = b0, b1
    names = np.empty((2, 1), object)
    names[0, 0], names[1, 0] = "000005", "000007"
    savemat(str(tmp_path / "ss.mat"), {"boxes": cell, "images": names})
    got = detection.load_proposals(str(tmp_path / "ss.mat"), ["000007", "000005"])
    np.testing.assert_array_equal(got[1], [[0, 1, 20, 10]])
    np.testing.assert_array_equal(got[0], [[0, 0, 4, 4], [3, 2, 8, 8]])
    with open(str(tmp_path / "p.pkl"), "wb") as f:
        pickle.dump([np.array([[0, 0, 4, 4, 0.9]]), np.zeros((0, 5))], f)
    got = detection.load_proposals(str(tmp_path / "p.pkl"), ["a", "b"])
    assert got[0].tolist() == [[0, 0, 4, 4]] and got[1].shape == (0, 4)
    with pytest.raises(ValueError, match="3 images, the image set has 2|holds proposals"):
        detection.load_proposals(str(tmp_path / "p.pkl"), ["a", "b", "c"])


# ----------------------------------------------------------------------------- VOC readers
XML = """<annotation><folder>VOC2007</folder><filename>{id}.jpg</filename>
<size><width>40</width><height>30</height><depth>3</depth></size>
<object><name>dog</name><pose>Left</pose><truncated>0</truncated><difficult>0</difficult>
<bndbox><xmin>1</xmin><ymin>2</ymin><xmax>20</xmax><ymax>25</ymax></bndbox></object>
<object><name>person</name><difficult>1</difficult>
<bndbox><xmin>21</xmin><ymin>5</ymin><xmax>40</xmax><ymax>30</ymax></bndbox></object>
<object><name>cat</name><bndbox><xmin>3</xmin><ymin>3</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object>
</annotation>"""


def _handmade_tree(root):
    import cv2
    from PIL import Image
    for sub in ("JPEGImages", "Annotations", "SegmentationClass", "ImageSets/Main", "ImageSets/Segmentation"):
        os.makedirs(os.path.join(root, sub))
    for i in ("000001", "000002"):
        cv2.imwrite(os.path.join(root, "JPEGImages", i + ".jpg"), np.full((30, 40, 3), 128, np.uint8))
        with open(os.path.join(root, "Annotations", i + ".xml"), "w") as f:
            f.write(XML.format(id=i))
    lab = np.zeros((30, 40), np.uint8)
    lab[1:25, 0:20] = 12          # dog
    lab[0, :] = 255               # void border
    im = Image.fromarray(lab, mode="P")
    im.putpalette([0, 0, 0, 128, 0, 0] + [64] * 762)
    im.save(os.path.join(root, "SegmentationClass", "000001.png"))
    with open(os.path.join(root, "ImageSets", "Main", "trainval.txt"), "w") as f:
        f.write("000001\n000002\n")
    with open(os.path.join(root, "ImageSets", "Segmentation", "val.txt"), "w") as f:
        f.write("000001\n")
    return lab


def test_voc_readers_on_a_handmade_tree(tmp_path):
    root = str(tmp_path / "VOC2007")
    lab = _handmade_tree(root)
    ann = voc.read_annotation(os.path.join(root, "Annotations", "000001.xml"))
    assert (ann["width"], ann["height"]) == (40, 30)
    assert [(o["name"], o["class"], o["bbox"], o["difficult"]) for o in ann["objects"]] == [
        ("dog", 11, [0, 1, 19, 24], 0), ("person", 14, [20, 4, 39, 29], 1), ("cat", 7, [2, 2, 8, 8], 0)]
    got = voc.read_label_png(os.path.join(root, "SegmentationClass", "000001.png"))
    assert got.dtype == np.uint8 and np.array_equal(got, lab)          # palette indices, 255 kept
    classes, entries = voc.build_index(root, "trainval", "Main")
    assert classes == voc.VOC_CLASSES and [e["id"] for e in entries] == ["000001", "000002"]
    assert entries[0]["label"].endswith("000001.png") and entries[1]["label"] is None
    _, seg = voc.build_index(root, "val", "Segmentation")
    assert len(seg) == 1 and seg[0]["objects"][0]["class"] == 11
    idx = voc.write_index(str(tmp_path / "out" / "main_trainval.json"), classes, entries, root)
    c2, e2 = voc.read_index(idx)
    assert c2 == classes and e2[0]["objects"] == entries[0]["objects"] and os.path.isfile(e2[0]["image"])
    # the classification labels the loss sees: dog, cat present; person difficult-only -> ignored
    v = voc_data.cls_labels(e2[0], 20)
    assert v[11] == 1 and v[7] == 1 and v[14] == -1 and v.sum() == 1
    # writer round trip
    voc.write_annotation(str(tmp_path / "w.xml"), "x.jpg", 40, 30, ann["objects"])
    assert voc.read_annotation(str(tmp_path / "w.xml"))["objects"] == ann["objects"]


def test_voc_readers_refuse_bad_files(tmp_path):
    from PIL import Image
    root = str(tmp_path / "VOC2007")
    _handmade_tree(root)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(str(tmp_path / "rgb.png"))
    with pytest.raises(voc.VOCError, match="rgb.png.*mode RGB"):
        voc.read_label_png(str(tmp_path / "rgb.png"))
    (tmp_path / "bad.xml").write_text(XML.format(id="x").replace("dog", "wolf"))
    with pytest.raises(voc.VOCError, match="bad.xml.*'wolf'"):
        voc.read_annotation(str(tmp_path / "bad.xml"))
    (tmp_path / "trunc.xml").write_text(XML.format(id="x")[:100])
    with pytest.raises(voc.VOCError, match="trunc.xml"):
        voc.read_annotation(str(tmp_path / "trunc.xml"))
    os.remove(os.path.join(root, "Annotations", "000002.xml"))
    with pytest.raises(voc.VOCError, match="000002.xml.*missing"):
        voc.build_index(root, "trainval", "Main")
    with pytest.raises(voc.VOCError, match="not a VOC tree"):
        voc.build_index(str(tmp_path), "trainval")


def test_data_prep_voc_cli(tmp_path, capsys):
    import importlib.util
    spec = importlib.util.spec_from_file_location("voc_cli", os.path.join(REPO, "data_prep", "voc.py"))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    root = str(tmp_path / "VOC2007")
    _handmade_tree(root)
    from scipy.io import savemat
    cell = np.empty((1, 2), object)
    cell[0, 0] = np.array([[1, 1, 10, 10]], np.float64)
    cell[0, 1] = np.array([[2, 2, 8, 8]], np.float64)
    savemat(str(tmp_path / "ss.mat"), {"boxes": cell})
    out = str(tmp_path / "idx")
    assert cli.main(["--voc-root", root, "--out-dir", out, "--proposals", str(tmp_path / "ss.mat"),
                     "--proposals-set", "trainval"]) == 0
    assert sorted(os.listdir(out)) == ["main_trainval.json", "main_trainval_proposals.npz", "seg_val.json"]
    props = np.load(os.path.join(out, "main_trainval_proposals.npz"))
    assert props["000002"].tolist() == [[1, 1, 7, 7]]
    assert cli.main(["--voc-root", str(tmp_path), "--out-dir", out]) == 2
    assert "not a VOC tree" in capsys.readouterr().err
    # SBD: cls/<id>.mat (GTcls.Segmentation) -> PNG class maps + seg_sbd_train.json
    import cv2
    sbd = tmp_path / "sbd"
    for sub in ("img", "cls"):
        (sbd / sub).mkdir(parents=True)
    seg = np.zeros((6, 8), np.uint8)
    seg[2:4, 3:7] = 15
    cv2.imwrite(str(sbd / "img" / "2008_000002.jpg"), np.zeros((6, 8, 3), np.uint8))
    savemat(str(sbd / "cls" / "2008_000002.mat"), {"GTcls": {"Segmentation": seg, "Boundaries": np.zeros(1)}})
    (sbd / "train.txt").write_text("2008_000002\n")
    assert cli.main(["--voc-root", root, "--out-dir", out, "--sbd-root", str(sbd)]) == 0
    classes, entries = voc.read_index(os.path.join(out, "seg_sbd_train.json"))
    assert [e["id"] for e in entries] == ["2008_000002"]
    assert np.array_equal(voc.read_label_png(entries[0]["label"]), seg)


# ----------------------------------------------------------------------------- toy VOC
def test_toy_ground_truth_is_exact():
    items = np.zeros((10, 28, 28), np.uint8)
    items[:, 4:24, 6:22] = 200                    # solid rectangles: the mask is known exactly
    labels = np.arange(10)
    rng = np.random.RandomState(0)
    for _ in range(5):
        img, lab, objs = voc_toy.compose(rng, items, labels, dict(ring=1))
        assert objs and img.shape[:2] == lab.shape
        for o in objs:
            x1, y1, x2, y2 = o["bbox"]
            inside = lab[y1:y2 + 1, x1:x2 + 1]
            # the box is tight: every edge row/column holds the item (its class or its void ring)
            for edge in (inside[0], inside[-1], inside[:, 0], inside[:, -1]):
                assert np.all((edge == o["class"] + 1) | (edge == 255))
            assert np.any(inside == o["class"] + 1)
            short = min(x2 - x1 + 1, y2 - y1 + 1)
            assert o["difficult"] == int(short < voc_toy.DEFAULTS["difficult_below"])
        present = set(np.unique(lab)) - {0, 255}
        assert present == {o["class"] + 1 for o in objs}


# ----------------------------------------------------------------------------- multi-label loss
def test_multilabel_loss_on_known_logits(tmp_path):
    logits = np.array([[2.0, -1.0, 0.0], [-3.0, 0.5, 4.0]])
    labels = np.array([[1, 0, -1], [0, 1, 1]])
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    by_hand = (-(math.log(sig(2.0)) + math.log(1 - sig(-1.0)))
               - (math.log(1 - sig(-3.0)) + math.log(sig(0.5)) + math.log(sig(4.0)))) / 2
    assert voc_data.sigmoid_cross_entropy(logits, labels) == pytest.approx(by_hand)
    net = _net(tmp_path, """name: "ml" force_backward: true
layer { name: "in" type: "Input" top: "x" top: "y" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "loss" type: "SigmoidCrossEntropyLoss" bottom: "x" bottom: "y" top: "loss"
  loss_param { ignore_label: -1 } }
""")
    net.blobs["x"].data[...] = logits
    net.blobs["y"].data[...] = labels
    net.forward()
    assert float(net.blobs["loss"].data) == pytest.approx(by_hand, rel=1e-5)
    net.backward()
    grad = (1 / (1 + np.exp(-logits)) - labels) / 2
    grad[labels == -1] = 0
    np.testing.assert_allclose(net.blobs["x"].diff, grad, atol=1e-6)


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def toy_index(tmp_path_factory):
    if not os.path.isfile(os.path.join(voc_toy.FASHION_DIR, "train-images-idx3-ubyte.gz")):
        pytest.skip("Fashion-MNIST (Debian's dataset-fashion-mnist) is not installed")
    d = tmp_path_factory.mktemp("toyvoc")
    voc_toy.write_toy_voc(str(d / "VOC_toy"), 4, 1, 3, seed=5, cfg=dict(min_side=120, max_side=140))
    out = {}
    for kind in ("Main", "Segmentation"):
        for s in ("train", "test"):
            c, e = voc.build_index(str(d / "VOC_toy"), s, kind)
            out[kind, s] = voc.write_index(str(d / ("%s_%s.json" % (kind, s))), c, e)
    return out


def _ported(tmp_path):
    """A CaffeNet-layout .caffemodel with conv1..conv5 only (what tools/port_weights.py writes)."""
    from ltc import transfer_nets
    net = caffe.Net(_write(tmp_path / "feat.prototxt", transfer_nets.features_deploy(size=67)), caffe.TEST)
    rng = np.random.RandomState(0)
    for name in transfer_nets.CONV_NAMES:
        for b in net.params[name]:
            b.data[...] = rng.randn(*b.data.shape) * 0.01
    net.save(str(tmp_path / "ported.caffemodel"))
    return str(tmp_path / "ported.caffemodel"), {n: net.params[n][0].data.copy() for n in transfer_nets.CONV_NAMES}


def _write(path, text):
    path.write_text(str(text))
    return str(path)


@pytest.mark.parametrize("task", ["cls", "det", "seg"])
def test_pipeline_end_to_end(task, toy_index, tmp_path):
    from ltc import table1
    model, src = _ported(tmp_path)
    kind = "Segmentation" if task == "seg" else "Main"
    over = dict(max_iter=2, fc_width=16)
    if task == "cls":
        over.update(batch=2, resize=80, crop=67)
    if task == "det":
        over.update(scale=100, max_size=200, rois_per_image=8)
    r = table1.RUNNERS[task](toy_index[kind, "train"], toy_index[kind, "test"], str(tmp_path / "run"), model=model,
                             quick=True, name="t", **over)
    assert r["iters"] == 2 and r["images"] == 3 and np.isfinite(r["final_loss"])
    assert 0 <= r["value"] <= 1
    csv_path = tmp_path / "run" / ("%s_t.csv" % task)
    rows = csv_path.read_text().splitlines()
    assert rows[0].startswith("task,model,class") and len(rows) == 1 + 10 + (4 + 1 if task == "seg" else 1)
    if task == "det":
        # conv1 is frozen (Fast R-CNN), conv2 learns
        tr = caffe.Net(str(tmp_path / "run" / "det_t_train.prototxt"), str(tmp_path / "run" / "det_t_trained.caffemodel"),
                       caffe.TEST)
        assert np.array_equal(tr.params["conv1"][0].data, src["conv1"])
        assert not np.array_equal(tr.params["conv2"][0].data, src["conv2"])


def test_load_ported_refuses_a_model_without_convs(tmp_path):
    from ltc import table1
    net = _net(tmp_path, 'name: "x"\nlayer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 } } }\n')
    net.save(str(tmp_path / "empty.caffemodel"))
    with pytest.raises(table1.Table1Error, match="lacks"):
        table1.load_ported(net, str(tmp_path / "empty.caffemodel"))


@pytest.mark.parametrize("sub", ["fast_rcnn", "fast_rcnn_bvlc"])
def test_fast_rcnn_freezes_conv1_unless_asked(sub):
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format
    from ltc import transfer_nets

    def lr(text):
        net = caffe_pb2.NetParameter()
        text_format.Parse(text, net, allow_unknown_field=True)
        return {l.name: [p.lr_mult for p in l.param] for l in net.layer if l.name in ("conv1", "conv2")}
    with open(os.path.join(REPO, "prototxt", "transfer", sub, "train.prototxt")) as f:
        assert lr(f.read()) == {"conv1": [0, 0], "conv2": [1, 2]}     # as fast-rcnn's CaffeNet train.prototxt
    roi = "native" if sub == "fast_rcnn" else "python"
    assert lr(transfer_nets.fast_rcnn(dict(roi=roi, train_conv1=True), "train")) == {"conv1": [1, 2], "conv2": [1, 2]}


def test_bvlc_fast_rcnn_nets_load_in_plain_caffe(tmp_path):
    """The committed BVLC test net instantiates in this Caffe (no fork) and pools 6x6 per ROI."""
    net = caffe.Net(os.path.join(REPO, "prototxt", "transfer", "fast_rcnn_bvlc", "test.prototxt"), caffe.TEST)
    net.blobs["data"].reshape(1, 3, 100, 120)
    net.blobs["rois"].reshape(3, 5)
    net.blobs["rois"].data[...] = [[0, 0, 0, 50, 50], [0, 10, 20, 119, 99], [0, 5, 5, 5, 5]]
    net.forward()
    assert net.blobs["pool5"].data.shape == (3, 256, 6, 6)
    assert net.blobs["cls_prob"].data.shape == (3, 21) and net.blobs["bbox_pred"].data.shape == (3, 84)


def test_caffe_binary_trains_the_bvlc_fast_rcnn_net(toy_index, tmp_path):
    """`caffe train` (the BVLC binary, no pycaffe driver) runs the Fast R-CNN net with the Python
    ROIPooling, SmoothL1 and VOC data layers, and starts from a ported model via -weights."""
    import subprocess
    from ltc import transfer_nets
    model, _ = _ported(tmp_path)
    cfg = dict(roi="python", index=toy_index["Main", "train"], proposals="toy", scale=100, max_size=200,
               rois_per_image=8, fc_width=16, num_classes=11)
    train = _write(tmp_path / "train.prototxt", transfer_nets.fast_rcnn(cfg, "train"))
    solver = _write(tmp_path / "solver.prototxt", transfer_nets.step_solver(
        dict(transfer_nets.FRCN_DEFAULTS, max_iter=2, display=1, snapshot_prefix=str(tmp_path / "frcn"), seed=1), train))
    env = dict(os.environ, GLOG_minloglevel="0", OPENBLAS_NUM_THREADS="1")
    r = subprocess.run([os.path.join(REPO, ".venv", "bin", "caffe"), "train", "-solver", solver, "-weights", model],
                       capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Iteration 1" in r.stderr and "loss_bbox" in r.stderr and "loss_cls" in r.stderr
    assert os.path.isfile(str(tmp_path / "frcn_iter_2.caffemodel"))
