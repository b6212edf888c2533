#!/usr/bin/env python3
"""Linear classifiers on frozen conv1..conv5 (Table 2 protocol), per model, as a table + CSV.

    python tools/linear_probe.py --model counting=runs/demo/caffenet_counting.caffemodel --random-init
    python tools/linear_probe.py --model counting=PORTED.caffemodel --train-lmdb data/imagenet/train_lmdb \\
        --val-lmdb data/imagenet/val_lmdb --iters 60000 --batch 256 --stepsize 20000

For each model (a CaffeNet-layout .caffemodel written by tools/port_weights.py, or a random
initialisation with --random-init) the tool generates the linear-probe net of
tools/make_transfer_prototxt.py (conv1..conv5 frozen at lr 0; each layer's output bilinearly
resized to conv1 10x10, conv2 6x6, conv3/conv4 5x5, conv5 6x6, pool5 native; BatchNorm without
learned scale; one InnerProduct + SoftmaxWithLoss per layer) on the given labelled LMDBs (Caffe's
Data layer: 227 crops, random + mirror for training, centre for testing, BGR means
104/117/123 subtracted), trains all six classifiers together with Caffe's SGD solver for
--iters iterations, then scores every validation image once (centre crop) and prints top-1
accuracy per layer. Rows are appended to the CSV.

Defaults are sized for the CPU check on the Fashion-MNIST items (10 classes, 256x256 images):
200 iterations of 32 images take about 2-4 minutes per model on 2 (shared) cores. Port the counting model
with --fold-std (tools/port_weights.py) so its conv1 sees inputs of the scale it was trained on.
Caffe's Data layer reads the LMDB in key order: the training LMDB must be shuffled (the tool
warns if its first labels look sorted).
"""
import argparse
import csv
import math
import os
import sys
import time

import numpy as np

from ltc import caffe_env
caffe_env.quiet_glog()   # before pycaffe loads: Caffe's per-layer log is long (GLOG_minloglevel=0 shows it)
from ltc import REPO

from ltc import cli_checks, lmdb_io, probe
from ltc import transfer_nets
from ltc.probe import ProbeError, check_weights, read_labels, warn_if_sorted

LAYERS = probe.LAYERS


def probe_one(name, weights, cfg, args, n_val, val_labels):
    """Train the six linear classifiers for one model; returns {layer: top-1 %}."""
    import caffe
    out_dir = os.path.join(args.out_dir, name)
    os.makedirs(out_dir, exist_ok=True)
    tv = os.path.join(out_dir, "train_val.prototxt")
    with open(tv, "w") as f:
        f.write(str(transfer_nets.linear_probe_net(cfg)))
    sp = transfer_nets.probe_solver(cfg, tv)
    sp.test_interval = 10 ** 9          # scored below, over every validation image once
    sp.snapshot = 0
    sp.snapshot_prefix = os.path.join(out_dir, "probe")
    sp.display = 0
    solver_path = os.path.join(out_dir, "solver.prototxt")
    with open(solver_path, "w") as f:
        f.write(str(sp))
    caffe.set_random_seed(args.seed)
    solver = caffe.SGDSolver(solver_path)
    net = solver.net
    if weights is not None:
        ref = check_weights(weights)
        net.copy_from(weights)
        for layer, blobs in ref.items():
            for i, b in enumerate(blobs):
                if not np.array_equal(net.params[layer][i].data, b):
                    raise ProbeError("%s: '%s' did not load into the probe net" % (weights, layer))
        print("[%s] loaded conv1..conv5 from %s" % (name, weights))
    else:
        print("[%s] random initialisation (Gaussian std 0.01, seed %d)" % (name, args.seed))
    frozen = {l: net.params[l][0].data.copy() for l in transfer_nets.CONV_NAMES}
    t0 = time.time()
    losses = np.zeros(len(LAYERS))
    try:
        from tqdm import tqdm
        bar = tqdm(range(args.iters), desc="[%s] training" % name, mininterval=5)
    except ImportError:  # pragma: no cover
        bar = range(args.iters)
    for it in bar:
        solver.step(1)
        cur = np.array([float(net.blobs[l + "_loss"].data) for l in LAYERS])
        losses = cur if it == 0 else 0.95 * losses + 0.05 * cur
        if hasattr(bar, "set_postfix_str"):
            bar.set_postfix_str(" ".join("%s %.2f" % (l, v) for l, v in zip(LAYERS, losses)), refresh=False)
    for l, w in frozen.items():
        if not np.array_equal(net.params[l][0].data, w):
            raise RuntimeError("%s changed during the probe: the conv layers must be frozen" % l)
    train_s = time.time() - t0
    test = solver.test_nets[0]
    test.share_with(net)   # what Solver::Test does: the test net uses the trained blobs (BN statistics too)
    batches = int(math.ceil(n_val / float(args.test_batch)))
    correct = np.zeros(len(LAYERS))
    seen = 0
    for _ in range(batches):
        test.forward()
        take = min(args.test_batch, n_val - seen)
        labels = test.blobs["label"].data[:take].astype(np.int64)
        if not np.array_equal(labels, val_labels[seen:seen + take]):
            raise RuntimeError("validation batches are out of step with the LMDB order")
        for j, l in enumerate(LAYERS):
            correct[j] += np.sum(test.blobs[l + "_fc"].data[:take].argmax(1) == labels)
        seen += take
    acc = {l: 100.0 * c / n_val for l, c in zip(LAYERS, correct)}
    print("[%s] trained %d iterations in %.0f s; scored %d validation images" % (name, args.iters, train_s, n_val))
    return acc, train_s


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--model", action="append", default=[], metavar="NAME=CAFFEMODEL",
                    help="a ported CaffeNet model (repeatable)")
    ap.add_argument("--random-init", action="store_true", help="add the random-initialisation baseline row")
    ap.add_argument("--train-lmdb", default="data/fashion/items_train_lmdb", help="labelled training LMDB (shuffled)")
    ap.add_argument("--val-lmdb", default="data/fashion/items_val_lmdb", help="labelled validation LMDB")
    ap.add_argument("--num-classes", type=cli_checks.int_range(0, 100000), default=0, help="0: 1 + the largest label of both LMDBs")
    ap.add_argument("--iters", type=cli_checks.int_range(1, 10 ** 7), default=200, help="SGD iterations")
    ap.add_argument("--batch", type=cli_checks.int_range(1, 4096), default=32, help="training batch")
    ap.add_argument("--test-batch", type=cli_checks.int_range(1, 4096), default=50, help="validation batch")
    ap.add_argument("--val-images", type=cli_checks.nonneg_int, default=0, help="score the first N validation images (0: all)")
    ap.add_argument("--base-lr", type=cli_checks.positive_float, default=0.001, help="learning rate of the classifiers")
    ap.add_argument("--stepsize", type=cli_checks.nonneg_int, default=0, help="lr x 0.1 every N iterations (0: 2/3 of --iters)")
    ap.add_argument("--crop", type=cli_checks.int_range(1, 4096), default=227, help="crop of the Data layer (CaffeNet input)")
    ap.add_argument("--seed", type=cli_checks.int_range(0, 2 ** 31 - 1), default=1701, help="Caffe seed (random init, classifier init)")
    ap.add_argument("--out-dir", default="runs/linear_probe", help="nets, solvers and the CSV go here")
    ap.add_argument("--csv", default=None, help="CSV to append rows to (default OUT_DIR/linear_probe.csv)")
    args = ap.parse_args(argv)
    if not os.path.isabs(args.out_dir):  # repo-relative, like every default path of the project
        args.out_dir = os.path.join(REPO, args.out_dir)
    args.csv = args.csv or os.path.join(args.out_dir, "linear_probe.csv")
    print("linear_probe:", vars(args))

    try:
        rows = []
        for spec in args.model:
            if "=" not in spec:
                raise ProbeError("--model wants NAME=CAFFEMODEL, got %r" % spec)
            name, path = spec.split("=", 1)
            path = lmdb_io.resolve_path(path)
            check_weights(path)
            rows.append((name, path))
        if args.random_init:
            rows.append(("random", None))
        if not rows:
            raise ProbeError("nothing to probe: give --model NAME=CAFFEMODEL and/or --random-init")
        train_lmdb, val_lmdb = lmdb_io.resolve_path(args.train_lmdb), lmdb_io.resolve_path(args.val_lmdb)
        try:
            cli_checks.writable_dir(args.out_dir, "--out-dir")
            cli_checks.writable_file(args.csv, "--csv")
        except cli_checks.PathError as e:
            raise ProbeError(str(e))
        try:
            for which, lm in (("--train-lmdb", train_lmdb), ("--val-lmdb", val_lmdb)):
                # the Data layer's crop and CaffeNet's conv1 need 3-channel images of at least --crop
                # pixels a side; Caffe CHECK-aborts otherwise
                for _, img, _ in lmdb_io.iter_images(lm, limit=1):
                    if min(img.shape[:2]) < args.crop:
                        raise ProbeError("%s '%s' holds %dx%d images, smaller than --crop %d"
                                         % (which, lm, img.shape[1], img.shape[0], args.crop))
            val_labels = read_labels(val_lmdb)
            train_head = read_labels(train_lmdb, limit=2000)
        except lmdb_io.LmdbError as e:
            raise ProbeError(str(e))
        num_classes = args.num_classes or int(max(val_labels.max(), train_head.max())) + 1
        if val_labels.min() < 0 or val_labels.max() >= num_classes:
            raise ProbeError("%s: labels span %d..%d, outside 0..%d" % (val_lmdb, val_labels.min(), val_labels.max(),
                                                                       num_classes - 1))
        warn_if_sorted(train_head, num_classes)
        n_val = len(val_labels) if not args.val_images else min(args.val_images, len(val_labels))
        val_labels = val_labels[:n_val]
        cfg = dict(train_lmdb=train_lmdb, val_lmdb=val_lmdb, num_classes=num_classes, batch=args.batch,
                   test_batch=args.test_batch, crop=args.crop, base_lr=args.base_lr,
                   stepsize=args.stepsize or max(1, 2 * args.iters // 3), max_iter=args.iters, seed=args.seed,
                   test_iter=1)
        print("%d classes; %d validation images scored" % (num_classes, n_val))
        results = []
        for name, path in rows:
            acc, secs = probe_one(name, path, cfg, args, n_val, val_labels)
            results.append((name, path, acc, secs))
    except ProbeError as e:
        print("linear_probe: error: %s" % e, file=sys.stderr)
        return 2

    print("\nTop-1 accuracy (%%) of linear classifiers on frozen layers; %s, %d images; %d iterations x %d"
          % (os.path.relpath(val_lmdb, REPO) if val_lmdb.startswith(REPO) else val_lmdb, n_val, args.iters, args.batch))
    width = max(8, max(len(r[0]) for r in results))
    print("%-*s " % (width, "model") + " ".join("%6s" % l for l in LAYERS))
    for name, _, acc, _ in results:
        print("%-*s " % (width, name) + " ".join("%6.1f" % acc[l] for l in LAYERS))
    print("(chance: %.1f%%)" % (100.0 / num_classes))
    os.makedirs(os.path.dirname(os.path.abspath(args.csv)), exist_ok=True)
    new = not os.path.exists(args.csv)
    with open(args.csv, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(["model", "weights"] + list(LAYERS) + ["iters", "batch", "base_lr", "train_lmdb", "val_lmdb",
                                                             "val_images", "num_classes", "seed", "train_seconds"])
        for name, path, acc, secs in results:
            w.writerow([name, path or "random-init"] + ["%.2f" % acc[l] for l in LAYERS]
                       + [args.iters, args.batch, args.base_lr, train_lmdb, val_lmdb, n_val, num_classes, args.seed,
                          "%.0f" % secs])
    print("appended %d row(s) to %s" % (len(results), args.csv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
