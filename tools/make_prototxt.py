#!/usr/bin/env python3
"""Generate the counting network's prototxts into prototxt/ (the nets are ltc/nets.py).

    python tools/make_prototxt.py                 # regenerate every committed file
    python tools/make_prototxt.py --check         # exit 1 if a committed file is stale
    python tools/make_prototxt.py --custom DIR --dim 20 --interpolation area ...
                                                  # one net + solver + deploy with your options
"""
import argparse
import shlex
import sys

from ltc import REPO, nets


def workers_arg(text):
    """--workers: a non-negative integer or "auto"."""
    if text == "auto":
        return text
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a number or \"auto\", got %r" % text)
    if n < 0:
        raise argparse.ArgumentTypeError("expected >= 0, got %d" % n)
    return n


def main(argv=None):
    ap = argparse.ArgumentParser(description=nets.__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out-root", default=REPO, help="folder that receives prototxt/...")
    ap.add_argument("--check", action="store_true", help="compare with the files on disk instead of writing")
    ap.add_argument("--custom", metavar="DIR", help="write one net (train_val, solver, deploy) with the options below into prototxt/DIR")
    g = ap.add_argument_group("options for --custom (defaults: the paper's net)")
    g.add_argument("--dim", type=int, default=nets.DEFAULTS["dim"], help="counting vector size")
    g.add_argument("--crop", type=int, choices=(228, 224), default=nets.DEFAULTS["crop"], help="random crop; inputs are crop/2")
    g.add_argument("--interpolation", choices=nets.INTERPOLATIONS, default=nets.DEFAULTS["interpolation"], help="D's interpolation")
    g.add_argument("--gray-prob", type=float, default=nets.DEFAULTS["gray_prob"], help="probability that a sample is grayscale")
    g.add_argument("--margin", type=float, default=nets.DEFAULTS["margin"], help="M of eq. 4")
    g.add_argument("--filler", choices=("xavier", "gaussian"), default=nets.DEFAULTS["filler"], help="weight initialisation")
    g.add_argument("--layout", choices=("six", "stacked"), default=nets.DEFAULTS["layout"], help="six branches or one stacked trunk")
    g.add_argument("--batch", type=int, default=nets.DEFAULTS["batch"], help="training samples per batch")
    g.add_argument("--test-batch", type=int, default=nets.DEFAULTS["test_batch"], help="test samples per batch")
    g.add_argument("--train-lmdb", default=nets.DEFAULTS["train_lmdb"], help="training LMDB")
    g.add_argument("--val-lmdb", default=nets.DEFAULTS["val_lmdb"], help="validation LMDB (TEST phase)")
    g.add_argument("--partner", choices=["batch", "same_source"], default=nets.DEFAULTS["partner"],
                   help="where y comes from: any other image of the batch (the paper), or one of the same "
                        "source (mixed LMDBs of ltc/mixdata.py)")
    g.add_argument("--workers", type=workers_arg, default=nets.DEFAULTS["workers"],
                   help="data worker processes: a number, or \"auto\" (one per spare CPU)")
    g.add_argument("--seed", type=int, default=nets.DEFAULTS["seed"], help="data and solver seed")
    for key in ("base_lr", "max_iter", "stepsize", "snapshot", "test_iter", "test_interval", "warmup", "display"):
        g.add_argument("--" + key.replace("_", "-"), type=type(nets.DEFAULTS[key]), default=nets.DEFAULTS[key])
    g.add_argument("--snapshot-prefix", default=None, help="default: snapshots/<DIR>")
    args = ap.parse_args(argv)
    print("make_prototxt:", {k: v for k, v in vars(args).items() if v is not None})

    if args.custom:
        cfg = {k: getattr(args, k) for k in ("dim", "crop", "interpolation", "gray_prob", "margin", "filler",
                                              "layout", "batch", "test_batch", "train_lmdb", "val_lmdb", "partner",
                                              "workers", "seed", "base_lr", "max_iter", "stepsize",
                                              "snapshot", "test_iter", "test_interval", "warmup", "display")}
        cfg["snapshot_prefix"] = args.snapshot_prefix or "snapshots/" + args.custom.strip("/").replace("/", "_")
        command = " ".join([nets.GENERATOR] + [shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])])
        files = nets.render(cfg, args.custom.strip("/"), command=command)
    else:
        files = nets.all_files()

    if args.check:
        return nets.check_files(files, args.out_root, nets.GENERATOR)
    nets.write_files(files, args.out_root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
