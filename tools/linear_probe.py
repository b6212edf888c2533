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
import os
import sys

from ltc import caffe_env
caffe_env.quiet_glog()   # before pycaffe loads: Caffe's per-layer log is long (GLOG_minloglevel=0 shows it)
from ltc import REPO  # noqa: E402
from ltc import cli_checks, probe  # noqa: E402
from ltc.probe import ProbeError  # noqa: E402

LAYERS = probe.LAYERS


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
        models = []
        for spec in args.model:
            if "=" not in spec:
                raise ProbeError("--model wants NAME=CAFFEMODEL, got %r" % spec)
            models.append(tuple(spec.split("=", 1)))
        opts = {k: v for k, v in vars(args).items() if k not in ("model", "csv")}
        res = probe.linear_probe(models=models, csv_path=args.csv, **opts)
    except ProbeError as e:
        print("linear_probe: error: %s" % e, file=sys.stderr)
        return 2
    results, val_lmdb = res["results"], res["val_lmdb"]
    print("\nTop-1 accuracy (%%) of linear classifiers on frozen layers; %s, %d images; %d iterations x %d"
          % (os.path.relpath(val_lmdb, REPO) if val_lmdb.startswith(REPO) else val_lmdb, res["n_val"], args.iters,
             args.batch))
    width = max(8, max(len(r[0]) for r in results))
    print("%-*s " % (width, "model") + " ".join("%6s" % l for l in LAYERS))
    for name, _, acc, _ in results:
        print("%-*s " % (width, name) + " ".join("%6.1f" % acc[l] for l in LAYERS))
    print("(chance: %.1f%%)" % (100.0 / res["num_classes"]))
    print("appended %d row(s) to %s" % (len(results), args.csv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
