"""The in-domain transfer probe as a library call (tools/domain_probe.py is its command line; the
classifier, items and statistics are ltc/probe_sklearn.py).

    python tools/domain_probe.py --model counting=runs/demo/counting_demo_iter_600.caffemodel
    python tools/domain_probe.py --model counting=M.caffemodel --dataset elpv --per-class 10 100 500

Items (ltc/probe_sklearn.py has the details):
  fashion  one Fashion-MNIST item placed as in the counting scenes (24-48 px, random tint and
           position), seen through the 114-px D(x) view; training pool --pool-per-class items of
           each class from Fashion's training split, --val-items from its test split
  elpv     the 2,624 solar-cell photos of the optional PyPI package elpv-dataset (CC BY-NC-SA 4.0;
           the user installs it: pip install elpv-dataset; the project does not ship it), label
           defective (probability >= 0.5) or not; each 300x300 cell resized to 256x256, then the same
           D(x) view. The package has no module ids: the split holds out whole blocks of
           consecutive cell numbers, a new block at every change of cell type (mono/poly, so a
           module boundary) and every --elpv-block cells within a run (the release stores a
           module's cells together, 60 to a module where none was dropped; a proxy, not a
           guarantee). Without the package: exit 0 with a "skipped" line.

Models: every --model (a counting .caffemodel or a deploy-layout one: conv1..conv5 are matched by
name) and --random-inits Xavier initialisations (seeds --random-seed, +1, ...). Features are
extracted once per model and cached in OUT_DIR (keyed by the weights' sha256 and the item set).
For each of --per-class n and --seeds label-subset seeds, the same n-per-class subset trains every
model's classifiers (RidgeClassifierCV, penalty by leave-one-out on the subset only); top-1 on all
val items. Output: OUT_DIR/accuracy.csv (every fit), OUT_DIR/gains.json and a table of
counting - mean(random) per layer with the paired 95 % t interval over the seeds.
"""
import argparse
import csv
import hashlib
import json
import os
import time

import numpy as np

from ltc import REPO
from ltc import probe_sklearn as ps
from ltc.probe_sklearn import DomainProbeError, LAYERS

ELPV_LICENCE = "CC BY-NC-SA 4.0"


def fashion_items(args):
    from ltc.fashion import FASHION_DIR, load_fashion
    cache = os.path.join(args.out_dir, "items_fashion_p%d_v%d_s%d.npz" % (args.pool_per_class, args.val_items,
                                                                          args.items_seed))
    if os.path.isfile(cache):
        z = np.load(cache)
        return z["xtr"], z["ytr"], z["xva"], z["yva"]
    t = time.time()
    tr_imgs, tr_labels = load_fashion(args.fashion_dir or FASHION_DIR, "train")
    te_imgs, te_labels = load_fashion(args.fashion_dir or FASHION_DIR, "test")
    n_classes = len(np.unique(te_labels))
    if args.val_items % n_classes:
        raise DomainProbeError("--val-items must be a multiple of the %d classes" % n_classes)
    xtr, ytr, _ = ps.make_items(tr_imgs, tr_labels, args.pool_per_class, [args.items_seed, 1])
    xva, yva, _ = ps.make_items(te_imgs, te_labels, args.val_items // n_classes, [args.items_seed, 2])
    np.savez(cache, xtr=xtr, ytr=ytr, xva=xva, yva=yva)
    print("composed %d training-pool and %d val items in %.0f s" % (len(ytr), len(yva), time.time() - t))
    return xtr, ytr, xva, yva


def elpv_items(args):
    try:
        import elpv_dataset  # noqa: F401
    except ImportError:
        return None
    import cv2
    from elpv_dataset.utils import load_dataset
    images, probs, types = load_dataset()
    labels = (probs >= 0.5).astype(np.int64)
    views = []
    for img in images:
        img = np.asarray(img)
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        img = cv2.resize(img[:, :, :3].astype(np.uint8), (256, 256), interpolation=cv2.INTER_AREA)
        views.append(ps.d_view(img))
    views = np.stack(views)
    block = elpv_blocks(types, args.elpv_block)
    val_block = elpv_val_mask(block, args.items_seed, args.elpv_val_fraction)
    print("elpv: %d cells (%d defective), %d blocks of %d cell numbers, %d cells held out"
          % (len(labels), labels.sum(), block.max() + 1, args.elpv_block, val_block.sum()))
    return views[~val_block], labels[~val_block], views[val_block], labels[val_block]


def elpv_blocks(types, size):
    """Block id of every cell: a new block at every change of cell type (mono/poly: a module boundary)
    and every ``size`` cells within a run of one type."""
    block, b, run = np.zeros(len(types), np.int64), 0, 0
    for i in range(1, len(types)):
        run += 1
        if types[i] != types[i - 1] or run == size:
            b, run = b + 1, 0
        block[i] = b
    return block


def elpv_val_mask(block, seed, fraction):
    """True for the cells of held-out blocks: block b is held out when sha256("<seed>:<b>") / 2**256 < fraction."""
    held = {b for b in set(block.tolist())
            if int(hashlib.sha256(("%d:%d" % (seed, b)).encode()).hexdigest(), 16) / float(2 ** 256) < fraction}
    return np.array([b in held for b in block.tolist()])


def model_features(name, weights, seed, x, tag, args):
    """{layer: features} of items x for one model, cached under OUT_DIR."""
    key = ps.file_sha256(weights)[:16] if weights else "xavier%d" % seed
    cache = os.path.join(args.out_dir, "features_%s_%s.npz" % (tag, key))
    if os.path.isfile(cache):
        z = np.load(cache)
        if z["n"] == len(x):
            return {l: z[l] for l in LAYERS}
    t = time.time()
    net = ps.open_net(weights, seed, args.deploy)
    feats = ps.extract(net, ps.normalised(x) if x.dtype == np.uint8 else x, args.batch)
    np.savez(cache, n=len(x), **feats)
    print("[%s] features of %d items in %.0f s (%s)" % (name, len(x), time.time() - t,
                                                      ", ".join("%s %d" % (l, feats[l].shape[1]) for l in LAYERS)),
          flush=True)
    return feats


def add_arguments(ap):
    """The probe's options (tools/domain_probe.py's, and the study's defaults through ``arguments``)."""
    ap.add_argument("--model", action="append", default=[], metavar="NAME=CAFFEMODEL",
                    help="a counting model (the first is compared with the random inits)")
    ap.add_argument("--random-inits", type=int, default=3, help="Xavier random initialisations")
    ap.add_argument("--random-seed", type=int, default=1, help="seed of the first random init")
    ap.add_argument("--dataset", choices=("fashion", "elpv"), default="fashion")
    ap.add_argument("--per-class", type=int, nargs="+", default=[10, 100, 1000], help="labels per class")
    ap.add_argument("--seeds", type=int, default=5, help="label-subset seeds 1..S (paired across models)")
    ap.add_argument("--pool-per-class", type=int, default=1200, help="fashion: training pool per class")
    ap.add_argument("--val-items", type=int, default=5000, help="fashion: val items (balanced)")
    ap.add_argument("--items-seed", type=int, default=1701, help="seed of the items and of elpv's split")
    ap.add_argument("--elpv-block", type=int, default=60, help="elpv: cells per held-out block")
    ap.add_argument("--elpv-val-fraction", type=float, default=0.3, help="elpv: share of blocks held out")
    ap.add_argument("--fashion-dir", default=None, help="folder of Fashion-MNIST's idx files")
    ap.add_argument("--deploy", default=ps.DEPLOY, help="deploy prototxt (input 3 x 114 x 114)")
    ap.add_argument("--batch", type=int, default=100, help="items per forward pass")
    ap.add_argument("--out-dir", default="runs/domain_probe", help="caches, CSV and JSON")


def arguments(argv):
    """The parsed options of a tools/domain_probe.py command line (a list of strings)."""
    ap = argparse.ArgumentParser(prog="domain_probe.py")
    add_arguments(ap)
    return ap.parse_args(argv)


def run(args, command="python tools/domain_probe.py"):
    """The probe for parsed ``args``: writes OUT_DIR/<dataset>/accuracy.csv and gains.json and returns
    gains.json's dict (its "table": the printable table), or None when elpv is asked for and its
    optional package is not installed. Raises DomainProbeError on bad input."""
    if not os.path.isabs(args.out_dir):
        args.out_dir = os.path.join(REPO, args.out_dir)
    args.out_dir = os.path.join(args.out_dir, args.dataset)
    t0 = time.time()
    models = []
    for spec in args.model:
        if "=" not in spec:
            raise DomainProbeError("--model wants NAME=CAFFEMODEL, got %r" % spec)
        name, path = spec.split("=", 1)
        path = path if os.path.exists(path) else os.path.join(REPO, path)
        if not os.path.isfile(path):
            raise DomainProbeError("%s: no such file" % path)
        models.append((name, path, None))
    if not models:
        raise DomainProbeError("give the counting model: --model NAME=CAFFEMODEL")
    if args.random_inits < 1 or args.seeds < 2 or min(args.per_class) < 1:
        raise DomainProbeError("need --random-inits >= 1, --seeds >= 2 (for an interval), --per-class >= 1")
    models += [("random%d" % (args.random_seed + i), None, args.random_seed + i) for i in range(args.random_inits)]
    os.makedirs(args.out_dir, exist_ok=True)
    items = elpv_items(args) if args.dataset == "elpv" else fashion_items(args)
    if items is None:
        return None
    xtr, ytr, xva, yva = items
    classes = np.unique(ytr)
    counts = {int(c): int((ytr == c).sum()) for c in classes}
    too_many = [n for n in args.per_class if n > min(counts.values())]
    if too_many:
        raise DomainProbeError("--per-class %s exceeds the training pool (per class: %s)" % (too_many, counts))
    xall = np.concatenate([xtr, xva])
    items_tag = "%s_%s" % (args.dataset, hashlib.sha256(xall.tobytes()).hexdigest()[:12])   # the items, in order
    feats = {}
    for name, path, seed in models:
        f = model_features(name, path, seed, xall, items_tag, args)
        feats[name] = {l: (f[l][:len(xtr)], f[l][len(xtr):]) for l in LAYERS}
    acc, rows = {}, []
    for n in args.per_class:
        for s in range(1, args.seeds + 1):
            idx = ps.balanced_indices(ytr, n, np.random.RandomState([s, n]), classes)
            for name, _, _ in models:
                for l in LAYERS:
                    Xtr, Xva = feats[name][l]
                    a, alpha = ps.fit_score(Xtr[idx], ytr[idx], Xva, yva)
                    acc[(name, n, s, l)] = a
                    rows.append([name, n, s, l, "%.3f" % a, "%g" % alpha])
            print("n = %d per class, seed %d: %s" % (n, s, " ".join(
                "%s/%s %.1f" % (m, l, acc[(m, n, s, l)]) for m, _, _ in models[:2] for l in ("conv3", "conv5"))),
                flush=True)
    with open(os.path.join(args.out_dir, "accuracy.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "per_class", "seed", "layer", "top1", "alpha"])
        w.writerows(rows)
    counting = models[0][0]
    randoms = [m for m, p, _ in models if p is None]
    g = ps.gains(acc, counting, randoms)
    out = dict(command=command, dataset=args.dataset, models={m: p for m, p, _ in models}, train_pool=len(ytr),
               val_items=len(yva), classes=len(classes), seeds=args.seeds, per_class=list(args.per_class),
               wall_seconds=round(time.time() - t0), gains={"%d/%s" % k: v for k, v in g.items()})
    out["table"] = table(out, counting, len(randoms))
    with open(os.path.join(args.out_dir, "gains.json"), "w") as f:
        json.dump(out, f, indent=1)
    return out


def table(out, counting="counting", n_randoms=3):
    """The printable table of a gains.json dict: gains per layer with intervals, then the accuracies."""
    g = out["gains"]
    lines = ["%s probe: %s - mean of %d random inits, top-1 points (paired 95 %% t interval over %d label-subset "
             "seeds); %d val items, %d classes; features: per-channel spatial mean + max"
             % (out["dataset"], counting, n_randoms, out["seeds"], out["val_items"], out["classes"]),
             "%-9s " % "per class" + " ".join("%21s" % l for l in LAYERS)]
    for n in out["per_class"]:
        lines.append("%-9d " % n + " ".join("%+6.2f [%+6.2f,%+6.2f]" % (g["%d/%s" % (n, l)]["mean"], g["%d/%s" % (n, l)]["lo"],
                                                                     g["%d/%s" % (n, l)]["hi"]) for l in LAYERS))
    lines.append("accuracies (counting / random mean):")
    for n in out["per_class"]:
        lines.append("%-9d " % n + " ".join("%9.1f / %-9.1f" % (g["%d/%s" % (n, l)]["counting"],
                                                                g["%d/%s" % (n, l)]["random"]) for l in LAYERS))
    return "\n".join(lines)
