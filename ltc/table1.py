"""The paper's Table 1 evaluations: train, test and score in BVLC Caffe (pycaffe).

Three pipelines, each a function ``run_<task>(cfg)`` that writes its nets into a run folder,
trains them with Caffe's SGDSolver starting from a ported CaffeNet model (conv1..conv5 by
layer name, tools/port_weights.py) or from the fillers (random init), tests and scores:

* cls -- VOC07 classification (Kraehenbuehl et al.): voc_cls nets of ltc.transfer_nets,
         sigmoid cross-entropy, 10-crop test (mean of the 10 sigmoid outputs), VOC07 11-point
         AP per class and mAP (ltc.scoring);
* det -- Fast R-CNN (Girshick) in plain BVLC Caffe: fast_rcnn(roi="python"), conv1 frozen
         unless train_conv1, one image and 64 ROIs per step; test on every proposal of each image,
         box regression, per-class NMS 0.3, VOC AP at IoU 0.5 (11-point for VOC2007) and mAP;
* seg -- FCN-AlexNet (Long et al.): fcn_alexnet(inputs="data_layer"), one image per step,
         unnormalised softmax loss with 255 ignored; test: argmax of the score map, one
         confusion matrix, pixel acc / mean acc / mIoU / fwIoU (fcn's score.py).

Schedules: FULL (the published recipes' sizes, for a GPU and real VOC) and QUICK (a few
hundred CPU steps on the toy VOC with narrow fc6/fc7; not a reproduction of any number).
FCN's loss is a sum over pixels (normalize: false), so its learning rate scales with the image
area: QUICK uses 2.5e-7 on the ~200 x 200 toy images (1e-6 diverged from the ported model).
Detection keeps boxes scoring above ``score_thresh`` before NMS: 0.05 as Fast R-CNN's test
(FULL); 0 in QUICK, where a briefly trained detector puts most foreground probabilities
below 0.05 and AP (a ranking score) would otherwise see no detections at all.
"""
import csv
import json
import os
import time

import numpy as np

from ltc import detection, scoring, voc, voc_data
from ltc import transfer_nets

FULL = {
    "cls": dict(fc_width=4096, batch=10, resize=256, crop=227, base_lr=0.001, gamma=0.1, stepsize=40000,
                max_iter=80000),
    "det": dict(fc_width=4096, scale=600, max_size=1000, rois_per_image=64, base_lr=0.001, gamma=0.1,
                stepsize=30000, max_iter=40000, score_thresh=0.05),
    "seg": dict(fc_width=4096, base_lr=1e-4, iter_size=20, max_iter=100000),
}
QUICK = {
    "cls": dict(fc_width=512, batch=8, resize=144, crop=128, base_lr=0.01, gamma=0.1, stepsize=450, max_iter=600),
    "det": dict(fc_width=512, scale=224, max_size=400, rois_per_image=64, base_lr=0.001, gamma=0.1, stepsize=400,
                max_iter=500, score_thresh=0.0),
    "seg": dict(fc_width=512, base_lr=2.5e-7, iter_size=1, max_iter=300),
}
COMMON = dict(momentum=0.9, weight_decay=5e-4, seed=1701)


class Table1Error(RuntimeError):
    """A pipeline cannot run; the message says which file or setting is wrong."""


def _log(msg):
    print(msg, flush=True)


def _caffe():
    os.environ.setdefault("GLOG_minloglevel", "2")
    import caffe
    caffe.set_mode_cpu()
    return caffe


def _write(path, text):
    with open(path, "w") as f:
        f.write(str(text))
    return path


def load_ported(net, model):
    """Copy conv1..conv5 of a ported .caffemodel into ``net`` by name and check every blob arrived."""
    from caffe.proto import caffe_pb2
    if not os.path.isfile(model):
        raise Table1Error("model '%s' is missing; port one with tools/port_weights.py" % model)
    p = caffe_pb2.NetParameter()
    with open(model, "rb") as f:
        try:
            p.ParseFromString(f.read())
        except Exception as e:
            raise Table1Error("model '%s' is not a .caffemodel (%s)" % (model, e))
    src = {l.name: [np.array(b.data, np.float32) for b in l.blobs] for l in p.layer if l.blobs}
    missing = [n for n in transfer_nets.CONV_NAMES if n not in src]
    if missing:
        raise Table1Error("model '%s' lacks %s; is it a ported CaffeNet (tools/port_weights.py)?" % (model, missing))
    net.copy_from(model)
    for name in transfer_nets.CONV_NAMES:
        for k, blob in enumerate(net.params[name]):
            if blob.data.size != src[name][k].size or not np.array_equal(blob.data.ravel(), src[name][k]):
                raise Table1Error("model '%s': %s blob %d did not load (shape %s)" % (model, name, k, blob.data.shape))
    _log("loaded %s from %s (checked blob by blob)" % (", ".join(transfer_nets.CONV_NAMES), model))


def _train(caffe, solver_path, model, iters, log_every=20):
    solver = caffe.SGDSolver(solver_path)
    if model:
        load_ported(solver.net, model)
    else:
        _log("random init: conv1..conv5 from the Gaussian fillers")
    t0 = time.time()
    done = 0
    losses = []
    while done < iters:
        k = min(log_every, iters - done)
        solver.step(k)
        done += k
        loss = sum(float(solver.net.blobs[b].data.sum()) for b in solver.net.outputs)
        losses.append((done, loss))
        _log("  iter %d/%d  loss %.4f  (%.1f s)" % (done, iters, loss, time.time() - t0))
    return solver, time.time() - t0, losses


def _cfg(task, quick, over):
    cfg = dict(COMMON, **(QUICK if quick else FULL)[task])
    cfg.update({k: v for k, v in over.items() if v is not None})
    return cfg


def _save_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    _log("wrote %s" % path)


# ----------------------------------------------------------------------------- the three legs
def _fine_tune(caffe, task, out_dir, name, cfg, model, nets, solver_text, eval_net):
    """Write the leg's prototxts ({suffix: text}) and solver, fine-tune from ``model`` (None: random
    init) and save; returns (the trained weights loaded into the ``eval_net`` prototxt, train seconds,
    losses). ``solver_text(paths)`` makes the solver from the written prototxt paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {k: _write(os.path.join(out_dir, "%s_%s_%s.prototxt" % (task, name, k)), text) for k, text in nets.items()}
    solver_path = _write(os.path.join(out_dir, "%s_%s_solver.prototxt" % (task, name)), solver_text(paths))
    caffe.set_random_seed(cfg["seed"])
    solver, t_train, losses = _train(caffe, solver_path, model, cfg["max_iter"])
    weights = os.path.join(out_dir, "%s_%s_trained.caffemodel" % (task, name))
    solver.net.save(weights)
    return caffe.Net(paths[eval_net], weights, caffe.TEST), t_train, losses


def _ap_result(task, name, out_dir, classes, aps, metric_col, cfg, t_train, t_test, n_images, losses):
    """The result dict of an AP task (cls, det), and its per-class CSV."""
    res = dict(task=task, name=name, metric="mAP", value=scoring.nanmean(aps), per_class=dict(zip(classes, aps)),
               train_s=t_train, test_s=t_test, iters=cfg["max_iter"], images=n_images, final_loss=losses[-1][1])
    _save_csv(os.path.join(out_dir, "%s_%s.csv" % (task, name)), ["task", "model", "class", metric_col],
              [(task, name, c, "%.4f" % a) for c, a in zip(classes, aps)] + [(task, name, "mAP", "%.4f" % res["value"])])
    return res


# ----------------------------------------------------------------------------- classification
def run_cls(train_index, test_index, out_dir, model=None, quick=True, name="model", limit_test=0, **over):
    caffe = _caffe()
    cfg = _cfg("cls", quick, over)
    classes, _ = voc.read_index(train_index)
    cfg.update(num_classes=len(classes), index=os.path.abspath(train_index),
               snapshot_prefix=os.path.join(out_dir, "cls"))
    net, t_train, losses = _fine_tune(caffe, "cls", out_dir, name, cfg, model,
                                      dict(train=transfer_nets.voc_cls(cfg, "train"), deploy=transfer_nets.voc_cls(cfg, "deploy")),
                                      lambda p: transfer_nets.step_solver(cfg, p["train"]), "deploy")
    tb = voc_data.ClsBatcher(test_index, 1, cfg["resize"], cfg["crop"], mirror=False)
    entries = tb.entries[:limit_test] if limit_test else tb.entries
    t0 = time.time()
    scores = np.zeros((len(entries), len(classes)))
    for i, e in enumerate(entries):
        net.blobs["data"].data[...] = tb.ten_crops(e)
        scores[i] = net.forward()["prob"].mean(0)
    t_test = time.time() - t0
    gt = scoring.cls_gt_matrix([[(o["class"], o.get("difficult", 0)) for o in e["objects"]] for e in entries],
                               len(classes))
    aps = scoring.cls_aps(scores, gt, use_07=True)
    return _ap_result("cls", name, out_dir, classes, aps, "AP", cfg, t_train, t_test, len(entries), losses)


# ----------------------------------------------------------------------------- detection
def run_det(train_index, test_index, out_dir, model=None, quick=True, name="model", proposals="toy",
            test_proposals="toy", train_conv1=False, limit_test=0, use_07=True, **over):
    caffe = _caffe()
    cfg = _cfg("det", quick, over)
    classes, _ = voc.read_index(train_index)
    cfg.update(num_classes=len(classes) + 1, index=os.path.abspath(train_index), roi="python",
               proposals=proposals if proposals == "toy" else os.path.abspath(proposals), train_conv1=train_conv1,
               snapshot_prefix=os.path.join(out_dir, "det"))
    net, t_train, losses = _fine_tune(caffe, "det", out_dir, name, cfg, model,
                                      dict(train=transfer_nets.fast_rcnn(cfg, "train"), test=transfer_nets.fast_rcnn(cfg, "test")),
                                      lambda p: transfer_nets.step_solver(cfg, p["train"]), "test")
    tb = voc_data.DetBatcher(test_index, test_proposals, cfg["scale"], cfg["max_size"], mirror=False,
                             seed=cfg["seed"] + 1)
    entries = tb.entries[:limit_test] if limit_test else tb.entries
    k = len(classes)
    all_dets = [[] for _ in range(k)]
    t0 = time.time()
    for i, e in enumerate(entries):
        blob, s = tb.scaled(e)
        props = tb.image_proposals(e)
        rois = np.hstack([np.zeros((len(props), 1)), props * s]).astype(np.float32)
        net.blobs["data"].reshape(*blob.shape)
        net.blobs["rois"].reshape(*rois.shape)
        net.blobs["data"].data[...] = blob
        net.blobs["rois"].data[...] = rois
        out = net.forward()
        deltas = net.blobs["bbox_pred"].data.astype(np.float64) * np.tile(detection.BBOX_STDS, k + 1)
        boxes = detection.clip_boxes(detection.apply_deltas(props, deltas), e["width"], e["height"])
        for c, d in enumerate(detection.detect_image(out["cls_prob"].astype(np.float64), boxes, cfg["score_thresh"])):
            all_dets[c].extend((i, float(r[4]), r[:4]) for r in d)
    t_test = time.time() - t0
    aps = scoring.det_aps(all_dets, [dict(boxes=[o["bbox"] for o in e["objects"]],
                                          classes=[o["class"] for o in e["objects"]],
                                          difficult=[o.get("difficult", 0) for o in e["objects"]]) for e in entries],
                          k, 0.5, use_07)
    return _ap_result("det", name, out_dir, classes, aps, "AP@0.5", cfg, t_train, t_test, len(entries), losses)


# ----------------------------------------------------------------------------- segmentation
def run_seg(train_index, test_index, out_dir, model=None, quick=True, name="model", limit_test=0, **over):
    caffe = _caffe()
    cfg = _cfg("seg", quick, over)
    classes, _ = voc.read_index(train_index)
    n = len(classes) + 1
    cfg.update(num_classes=n, inputs="data_layer", index=os.path.abspath(train_index),
               snapshot_prefix=os.path.join(out_dir, "seg"), snapshot=0, test_iter=1)
    net, t_train, losses = _fine_tune(caffe, "seg", out_dir, name, cfg, model,
                                      dict(train=transfer_nets.fcn_alexnet(cfg, "train"),
                                           val=transfer_nets.fcn_alexnet(dict(cfg, inputs="input"), "val")),
                                      lambda p: transfer_nets.fcn_solver(cfg, p["train"], p["val"]), "val")
    tb = voc_data.SegBatcher(test_index, mirror=False, shuffle=False)
    entries = tb.entries[:limit_test] if limit_test else tb.entries
    hist = np.zeros((n, n), np.int64)
    t0 = time.time()
    for e in entries:
        data, label = tb.load(e)
        net.blobs["data"].reshape(*data.shape)
        net.blobs["label"].reshape(*label.shape)
        net.blobs["data"].data[...] = data
        net.blobs["label"].data[...] = label
        net.forward()
        hist += scoring.fast_hist(label[0, 0], net.blobs["score"].data[0].argmax(0), n)
    t_test = time.time() - t0
    sc = scoring.seg_scores(hist)
    names = ("background",) + tuple(classes)
    res = dict(task="seg", name=name, metric="mIoU", value=sc["mean_iou"], per_class=dict(zip(names, sc["iou"])),
               pixel_acc=sc["pixel_acc"], mean_acc=sc["mean_acc"], fw_iou=sc["fw_iou"], train_s=t_train,
               test_s=t_test, iters=cfg["max_iter"], images=len(entries), final_loss=losses[-1][1])
    _save_csv(os.path.join(out_dir, "seg_%s.csv" % name), ["task", "model", "class", "IoU"],
              [("seg", name, c, "%.4f" % a) for c, a in zip(names, sc["iou"])]
              + [("seg", name, m, "%.4f" % sc[m]) for m in ("pixel_acc", "mean_acc", "mean_iou", "fw_iou")])
    return res


RUNNERS = {"cls": run_cls, "det": run_det, "seg": run_seg}


def summary_rows(results):
    rows = []
    for r in results:
        extra = ("pixel acc %.3f, mean acc %.3f, fwIoU %.3f" % (r["pixel_acc"], r["mean_acc"], r["fw_iou"])
                 if r["task"] == "seg" else "")
        rows.append((r["task"], r["name"], r["metric"], "%.4f" % r["value"], r["iters"], "%.0f" % r["train_s"],
                     r["images"], "%.0f" % r["test_s"], "%.4f" % r["final_loss"], extra))
    return rows


SUMMARY_HEADER = ["task", "model", "metric", "value", "train_iters", "train_s", "test_images", "test_s",
                  "final_loss", "extra"]


def write_json(path, results):
    with open(path, "w") as f:
        json.dump([{k: (v if not isinstance(v, dict) else {a: float(b) for a, b in v.items()}) for k, v in r.items()}
                   for r in results], f, indent=1)
