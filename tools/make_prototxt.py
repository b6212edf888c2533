#!/usr/bin/env python3
"""Generate the counting network's prototxts into prototxt/ (the nets are ltc/nets.py).

    python tools/make_prototxt.py                 # regenerate every committed file
    python tools/make_prototxt.py --check         # exit 1 if a committed file is stale
    python tools/make_prototxt.py --custom DIR --dim 20 --interpolation area ...
                                                  # one net + solver + deploy with your options
"""
import argparse
import math
import shlex
import sys

from ltc import REPO, cli_checks, nets

# More data workers than this is a typo, not a machine (each worker is a forked process holding
# `prefetch` shared-memory batches).
MAX_WORKERS = 64


def workers_arg(text):
    """--workers: an integer 0..MAX_WORKERS or "auto"."""
    if text == "auto":
        return text
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a number or \"auto\", got %r" % text)
    if not 0 <= n <= MAX_WORKERS:
        raise argparse.ArgumentTypeError("expected 0..%d (or \"auto\"), got %d" % (MAX_WORKERS, n))
    return n


def int_at_least(lo):
    """An argparse type: an integer >= lo."""
    def parse(text):
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError("expected an integer, got %r" % text)
        if n < lo:
            raise argparse.ArgumentTypeError("expected an integer >= %d, got %d" % (lo, n))
        return n
    parse.__name__ = "integer >= %d" % lo
    return parse


def finite_float(positive=False, lo=None, hi=None):
    """An argparse type: a finite float, > 0 if positive, within [lo, hi] where given."""
    def parse(text):
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError("expected a number, got %r" % text)
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError("expected a finite number, got %r" % text)
        if positive and v <= 0:
            raise argparse.ArgumentTypeError("expected a number > 0, got %r" % text)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError("expected a number in [%g, %g], got %r" % (lo, hi, text))
        return v
    parse.__name__ = "number"
    return parse


# --custom's options with their argparse types (None: a string); used to build the parser and to
# refuse them without --custom, where they would be silently ignored.
NUMERIC_TYPES = dict(
    dim=int_at_least(1), batch=int_at_least(2), test_batch=int_at_least(1), seed=int_at_least(0),
    gray_prob=finite_float(lo=0.0, hi=1.0), margin=finite_float(positive=True),
    base_lr=finite_float(positive=True), max_iter=int_at_least(1), stepsize=int_at_least(1),
    snapshot=int_at_least(1), test_iter=int_at_least(1), test_interval=int_at_least(1),
    warmup=int_at_least(0), display=int_at_least(0),
    fc_bias=finite_float(), fc8_bias=finite_float(), fc8_std=finite_float(positive=True))


def main(argv=None):
    ap = argparse.ArgumentParser(description=nets.__doc__.split("\n\n")[0], allow_abbrev=False,
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out-root", default=REPO, help="folder that receives prototxt/...")
    ap.add_argument("--check", action="store_true", help="compare with the files on disk instead of writing")
    ap.add_argument("--custom", metavar="DIR", help="write one net (train_val, solver, deploy) with the options below into prototxt/DIR")
    g = ap.add_argument_group("options for --custom (defaults: the paper's net)")
    T = NUMERIC_TYPES
    g.add_argument("--dim", type=T["dim"], default=nets.DEFAULTS["dim"], help="counting vector size")
    g.add_argument("--crop", type=int, choices=(228, 224), default=nets.DEFAULTS["crop"], help="random crop; inputs are crop/2")
    g.add_argument("--interpolation", choices=nets.INTERPOLATIONS, default=nets.DEFAULTS["interpolation"], help="D's interpolation")
    g.add_argument("--gray-prob", type=T["gray_prob"], default=nets.DEFAULTS["gray_prob"], help="probability that a sample is grayscale")
    g.add_argument("--margin", type=T["margin"], default=nets.DEFAULTS["margin"], help="M of eq. 4")
    g.add_argument("--filler", choices=("xavier", "gaussian"), default=nets.DEFAULTS["filler"], help="weight initialisation")
    g.add_argument("--layout", choices=("six", "stacked"), default=nets.DEFAULTS["layout"], help="six branches or one stacked trunk")
    g.add_argument("--batch", type=T["batch"], default=nets.DEFAULTS["batch"], help="training samples per batch")
    g.add_argument("--test-batch", type=T["test_batch"], default=nets.DEFAULTS["test_batch"], help="test samples per batch")
    g.add_argument("--train-lmdb", default=nets.DEFAULTS["train_lmdb"], help="training LMDB")
    g.add_argument("--val-lmdb", default=nets.DEFAULTS["val_lmdb"], help="validation LMDB (TEST phase)")
    g.add_argument("--partner", choices=["batch", "same_source"], default=nets.DEFAULTS["partner"],
                   help="where y comes from: any other image of the batch (the paper), or one of the same "
                        "source (mixed LMDBs of ltc/mixdata.py)")
    g.add_argument("--workers", type=workers_arg, default=nets.DEFAULTS["workers"],
                   help="data worker processes: a number, or \"auto\" (one per spare CPU)")
    g.add_argument("--seed", type=T["seed"], default=nets.DEFAULTS["seed"], help="data and solver seed")
    for key in ("base_lr", "max_iter", "stepsize", "snapshot", "test_iter", "test_interval", "display"):
        g.add_argument("--" + key.replace("_", "-"), type=T[key], default=nets.DEFAULTS[key])
    g.add_argument("--snapshot-prefix", default=None, help="default: snapshots/<DIR>")
    s = ap.add_argument_group("the start (docs/design.md; defaults: the paper's net)")
    s.add_argument("--fc-bias", type=T["fc_bias"], default=nets.DEFAULTS["fc_bias"],
                   help="constant bias of fc6 and fc7 at initialisation")
    s.add_argument("--fc8-bias", type=T["fc8_bias"], default=nets.DEFAULTS["fc8_bias"],
                   help="constant bias of fc8 (the counting layer) at initialisation")
    s.add_argument("--fc8-std", type=T["fc8_std"], default=nets.DEFAULTS["fc8_std"],
                   help="fc8 weights Gaussian with this std instead of --filler's (a small-output start: "
                        "|phi|^2 near M at iteration 0)")
    s.add_argument("--warmup", type=T["warmup"], default=nets.DEFAULTS["warmup"],
                   help="N > 0: a sigmoid ramp of the lr up to --base-lr (not beyond) over N iterations")
    s.add_argument("--solver-type", choices=nets.SOLVER_TYPES, default=nets.DEFAULTS["solver_type"],
                   help="SGD with momentum (ours), or Adam at --base-lr (a departure; the paper names no optimiser)")
    args = ap.parse_args(argv)
    custom_flags = {o for action in g._group_actions + s._group_actions for o in action.option_strings}
    given = sorted({a.split("=", 1)[0] for a in (argv if argv is not None else sys.argv[1:])} & custom_flags)
    if given and not args.custom:
        ap.error("%s: used only with --custom DIR (without it every committed net is regenerated and the "
                 "option would be ignored)" % ", ".join(given))
    print("make_prototxt:", {k: v for k, v in vars(args).items() if v is not None})

    if args.custom:
        cfg = {k: getattr(args, k) for k in ("dim", "crop", "interpolation", "gray_prob", "margin", "filler",
                                              "layout", "batch", "test_batch", "train_lmdb", "val_lmdb", "partner",
                                              "workers", "seed", "base_lr", "max_iter", "stepsize",
                                              "snapshot", "test_iter", "test_interval", "warmup", "display",
                                              "fc_bias", "fc8_bias", "fc8_std", "solver_type")}
        cfg["snapshot_prefix"] = args.snapshot_prefix or "snapshots/" + args.custom.strip("/").replace("/", "_")
        command = " ".join([nets.GENERATOR] + [shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])])
        files = nets.render(cfg, args.custom.strip("/"), command=command)
    else:
        files = nets.all_files()

    try:
        cli_checks.writable_dir(args.out_root, "--out-root")
    except cli_checks.PathError as e:
        print("make_prototxt: error: %s" % e, file=sys.stderr)
        return 2
    if args.check:
        return nets.check_files(files, args.out_root, nets.GENERATOR)
    nets.write_files(files, args.out_root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
