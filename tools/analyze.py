#!/usr/bin/env python3
"""The paper's analyses of a trained counting net (its section 5 and Tables 4-5), one subcommand each.

    python tools/analyze.py table5 --weights L.caffemodel C.caffemodel --train-methods linear cubic
    python tools/analyze.py mean-vector  --weights runs/demo/counting_demo_iter_600.caffemodel   # Fig. 3
    python tools/analyze.py norm-ranking --weights ...                                          # Fig. 4
    python tools/analyze.py crop-scale   --weights ...                                          # Fig. 5-6
    python tools/analyze.py neighbours   --weights ...                                          # Fig. 7
    python tools/analyze.py neurons      --weights ...                                          # Fig. 8
    python tools/analyze.py count-check  --weights ... --source data/fashion/scenes_val_lmdb    # beyond the paper
    python tools/analyze.py units --weights runs/demo/*.caffemodel --init-solver prototxt/demo/solver.prototxt
                                                # live fc8 units and |phi|^2 per snapshot (and at iteration 0)
    python tools/analyze.py log --log runs/demo/train.log                                       # training curves

Every image subcommand takes ``--deploy`` (default prototxt/deploy.prototxt), ``--weights``,
``--source`` (an LMDB of the project format or a folder of images), ``--out`` (default
runs/analysis/<subcommand>), ``--max-images``; it writes PNG figures plus CSV/JSON numbers
into --out and prints the headline numbers. Inputs are prepared with the data layer's own
transforms (see ltc/analysis/): one view per image (``--view full``: the whole image
resized to the net's input size; ``center``: the central --crop region downsampled), in
``--color-mode`` color or gray, each input normalised on its own like the data layer does.
Forward passes run ``--batch`` images at a time on the CPU.
"""
import argparse
import os
import sys
import time

import numpy as np

from ltc import REPO, caffe_env, cli_checks, params
caffe_env.quiet_glog()   # before pycaffe loads: keeps Caffe's net-setup log out of the output
from ltc.analysis import features, subcommands, trainlog, units  # noqa: E402

DEFAULT_DEPLOY = subcommands.DEFAULT_DEPLOY
DEFAULT_WEIGHTS = subcommands.DEFAULT_WEIGHTS
DEFAULT_SOURCE = subcommands.DEFAULT_SOURCE
DEFAULT_QUERIES = subcommands.DEFAULT_QUERIES
DEFAULT_SCENES = subcommands.DEFAULT_SCENES


# ============================================================================ printing
# The computing is ltc/analysis/subcommands.py (figures: ltc/analysis/plots.py); each function
# here prints the headline numbers of one subcommand's result.
def print_table5(res, args):
    print("\nTable 5 (eq. 6), %d images of %s:\n%s" % (res["n_images"], res["source"], res["table"]))
    if res["linear_equals_area"]:
        print("note: OpenCV's INTER_LINEAR and INTER_AREA give bit-identical images when shrinking by exactly 2 "
              "(%d -> %d), so the Linear and Area columns coincide" % (res["crop"], res["crop"] // 2))
    print("\npaper's Table 5 (ImageNet, 350K iterations):\n" + subcommands.paper_table5())


def print_mean_vector(res, args):
    st, dim = res["stats"], res["dim"]
    print("\nFig. 3: mean counting vector over %d images of %s (%d dims)" % (res["n_images"], res["source"], dim))
    print("  entries with mean > 0: %d of %d" % (st["n_nonzero"], dim))
    print("  entries with mean > %g: %d" % (res["threshold"], st["n_above_threshold"]))
    print("  entries with mean > 1%% of the largest mean (%.4g): %d" % (st["max_mean"], st["n_above_rel"]))
    print("  mean counting-vector norm: %.4g   (paper, ImageNet: 30 non-zero of 1000)" % st["mean_norm"])


def print_norm_ranking(res, args):
    norms = res["norms"]
    if res["k"] < res["k_asked"]:
        print("note: %d images, so %d per sheet (the highest and lowest sheets stay disjoint)"
              % (len(res["images"]), res["k"]))
    print("\nFig. 4: counting-vector norm over %d images: min %.4g, median %.4g, max %.4g"
          % (len(res["images"]), norms.min(), np.median(norms), norms.max()))


def print_crop_scale(res, args):
    s = res["summary"]
    print("\nFig. 6: counting-vector norm of %d crops per image (area %.0f-%.0f%%), sets of %d images"
          % (s["crops_per_image"], 100 * s["area_range"][0], 100 * s["area_range"][1], s["set_size"]))
    for set_name in ("highest", "lowest"):
        st = s["sets"][set_name]
        print("  %-8s set: " % set_name + "  ".join("%.2f-%.2f: %.3g+-%.2g" % (b["lo"], b["hi"], b["mean"], b["std"])
                                                    for b in st["bins"])
              + "   Spearman(area, norm) = %.3f" % st["spearman_area_norm"])


def print_neighbours(res, args):
    dist = res["dist"]
    print("\nFig. 7: %d queries from %s, %d nearest neighbours in %s; mean distance to the nearest %.4g, "
          "to the k-th %.4g, to the whole database %.4g" % (len(res["queries"]), res["images"].source, dist.shape[1],
                                                          res["db"].source, dist[:, 0].mean(), dist[:, -1].mean(),
                                                          res["mean_distance_to_database"]))


def print_neurons(res, args):
    F, mean = res["F"], res["mean"]
    print("\nFig. 8: the %d most active neurons (by mean response over %d images)"
          % (len(res["neurons"]), len(res["images"])))
    for j in res["neurons"]:
        print("  neuron %4d: mean %.4g, top activations %s"
              % (j, mean[j], " ".join("%.3g" % F[i, j] for i in res["top_images"][int(j)])))


def print_count_check(res, args):
    images = res["images"]
    print("\nCount check on %d images of %s: Spearman(norm, object count) = %.4f (p = %.3g)%s"
          % (len(images), images.source, res["spearman"], res["spearman_p"],
             "" if res["pearson"] is None else ", Pearson = %.4f" % res["pearson"]))
    for r in res["per_k"]:
        print("  k = %2d: %4d images, norm %.4g +- %.3g" % (r["k"], r["count"], r["mean"], r["std"]))
    print(units.units_line(res["units"]))
    print(units.amplitude_line(res["amplitude"]))
    fit = res["count_map"]
    if fit:
        print("Least-squares map phi -> k fitted on %d scenes of %s: on %s, round(prediction) == k for %.1f %%, "
              "within +-1 for %.1f %% (mean |error| %.3f; on the fitted scenes %.1f %% / %.1f %%)"
              % (fit["n_fit"], fit["fit_source"], images.source, 100 * fit["exact"], 100 * fit["within1"],
                 fit["mae"], 100 * fit["train"]["exact"], 100 * fit["train"]["within1"]))


def print_units(res, args):
    print("\nfc8 units on %d images of %s (live: > 0 on at least one image)" % (len(res["images"]), res["images"].source))
    for row in res["rows"]:
        print("  %s: live %d of %d, active per image %.1f, |phi|^2 mean %.4g%s"
              % (os.path.relpath(features.resolve_path(row["weights"]), os.getcwd()), row["live"], row["dim"],
                 row["active_per_input"], row["sq_norm_mean"],
                 ", Spearman(|phi|, k) %.3f" % row["spearman"] if "spearman" in row else ""))


def print_log(res, args):
    parsed = res["parsed"]
    last_train = parsed["train"][-1] if parsed["train"] else None
    print("\nlog %s: %d train rows, %d test rows, %d lr rows" % (res["path"], len(parsed["train"]), len(parsed["test"]),
                                                                len(parsed["lr"])))
    if last_train:
        print("  last train: iteration %d, loss %.5g, %.1f s" % (last_train["iteration"], last_train["loss"],
                                                               last_train["seconds"] or 0.0))
    for t in parsed["test"][-3:]:
        print("  test: iteration %d, %s" % (t["iteration"], ", ".join("%s %.5g" % (k, v) for k, v in t.items()
                                                                      if k.startswith("test_"))))
    for prefix, rows in (("train", parsed["train"]), ("test", parsed["test"])):
        last = [r for r in rows if "%s_norm_dx" % prefix in r][-1:]
        if last:
            print("  last %s diagnostics (iteration %d): %s" % (prefix, last[0]["iteration"], ", ".join(
                "%s %.4g" % (n, last[0]["%s_%s" % (prefix, n)]) for n in trainlog.DIAGNOSTICS
                if "%s_%s" % (prefix, n) in last[0])))
    for w in res["warnings"]:
        print(w)


PRINT = {"table5": print_table5, "mean-vector": print_mean_vector, "norm-ranking": print_norm_ranking,
         "crop-scale": print_crop_scale, "neighbours": print_neighbours, "neurons": print_neurons,
         "count-check": print_count_check, "units": print_units, "log": print_log}


def run_subcommand(args):
    """Compute (ltc.analysis.subcommands), print the headline numbers, write the files; the result."""
    opts = {k: v for k, v in vars(args).items() if k not in ("cmd", "out")}
    out = args.out or os.path.join(REPO, "runs", "analysis", args.cmd)
    if args.cmd == "units":   # it saves the iteration-0 net of --init-solver there
        os.makedirs(out, exist_ok=True)
        opts["out"] = out
    res = subcommands.COMPUTE[args.cmd](**opts)
    PRINT[args.cmd](res, args)
    os.makedirs(out, exist_ok=True)
    files = subcommands.WRITE[args.cmd](out, res, " ".join(sys.argv))
    print("wrote:")
    for f in files:
        print("  " + f)
    return res


# ============================================================================ argument parsing
_pos_int = cli_checks.int_range(1, 10 ** 7)   # the project's shared argument types (ltc/cli_checks.py)
_fraction = cli_checks.probability


def _image_args(p, source=DEFAULT_SOURCE):
    p.add_argument("--deploy", default=DEFAULT_DEPLOY, help="deploy prototxt (input blob data, output blob fc8)")
    p.add_argument("--weights", default=DEFAULT_WEIGHTS, help=".caffemodel of a counting net")
    p.add_argument("--source", default=source, help="LMDB (project format) or folder of images")
    p.add_argument("--out", default=None, help="output folder (default runs/analysis/<subcommand>)")
    p.add_argument("--max-images", type=_pos_int, default=1000, help="use the first N images (key / file-name order)")
    p.add_argument("--batch", type=_pos_int, default=64, help="images per forward pass")
    p.add_argument("--view", choices=features.VIEWS, default="full",
                   help="full: whole image resized to the input size; center: central --crop region downsampled")
    p.add_argument("--crop", type=_pos_int, default=params.CROP_SIZE, help="crop size of --view center (input size = crop / 2)")
    p.add_argument("--interp", choices=features.METHODS, default="area", help="OpenCV interpolation of the resize")
    p.add_argument("--color-mode", choices=features.COLOR_MODES, default="color", help="feed colour or gray inputs")
    p.add_argument("--seed", type=cli_checks.int_range(0, 2 ** 32 - 1), default=1701, help="seed of every random choice")


def build_parser():
    fmt = argparse.ArgumentDefaultsHelpFormatter
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("table5", formatter_class=fmt, help="Table 5: eq. 6 error by train/test downsampling")
    p.add_argument("--deploy", default=DEFAULT_DEPLOY, help="deploy prototxt shared by all models")
    p.add_argument("--deploys", nargs="+", default=None, help="one deploy prototxt per model (overrides --deploy)")
    p.add_argument("--weights", nargs="+", default=None, help="one .caffemodel per model (rows of the table)")
    p.add_argument("--train-methods", nargs="+", default=["mixed"], choices=features.TRAIN_METHODS,
                   help="the downsampling each model was trained with, one per --weights (mixed = random per batch)")
    p.add_argument("--source", default=DEFAULT_SOURCE, help="LMDB or image folder (images >= --crop on each side)")
    p.add_argument("--out", default=None, help="output folder (default runs/analysis/table5)")
    p.add_argument("--max-images", type=_pos_int, default=1000, help="use the first N images")
    p.add_argument("--batch", type=_pos_int, default=64, help="inputs per forward pass")
    p.add_argument("--crop", type=_pos_int, default=params.CROP_SIZE, help="pretext crop x (tiles and D(x) are crop/2)")
    p.add_argument("--gray-prob", type=_fraction, default=params.GRAY_PROB, help="probability of gray inputs per image (as training)")
    p.add_argument("--seed", type=cli_checks.int_range(0, 2 ** 32 - 1), default=1701, help="seed of the crops, colour modes and mixed methods")

    p = sub.add_parser("mean-vector", formatter_class=fmt, help="Fig. 3: mean counting vector and its sparsity")
    _image_args(p)
    p.add_argument("--threshold", type=cli_checks.finite_float, default=0.01, help="count the entries whose mean exceeds this")

    p = sub.add_parser("norm-ranking", formatter_class=fmt, help="Fig. 4: highest / lowest norm images")
    _image_args(p)
    p.add_argument("--k", type=_pos_int, default=16, help="images per contact sheet (at most half the images)")

    p = sub.add_parser("crop-scale", formatter_class=fmt, help="Fig. 5-6: norm against crop scale")
    _image_args(p)
    p.add_argument("--set-size", type=_pos_int, default=100, help="images in the highest- and lowest-norm sets")
    p.add_argument("--crops", type=_pos_int, default=10, help="random crops per image")
    p.add_argument("--min-area", type=_fraction, default=0.5, help="smallest crop area (fraction of the image)")
    p.add_argument("--max-area", type=_fraction, default=0.95, help="largest crop area (fraction of the image)")
    p.add_argument("--bins", type=_pos_int, default=5, help="crop-scale bins of the plot")

    p = sub.add_parser("neighbours", formatter_class=fmt, help="Fig. 7: nearest neighbours in counting space")
    _image_args(p, source=DEFAULT_QUERIES)
    p.add_argument("--database", default=DEFAULT_SOURCE,
                   help="LMDB/folder searched ('' = --source itself, each query excluded from its own list)")
    p.add_argument("--queries", type=_pos_int, default=8, help="random queries drawn from --source")
    p.add_argument("--k", type=_pos_int, default=7, help="neighbours per query")

    p = sub.add_parser("neurons", formatter_class=fmt, help="Fig. 8: top images of the most active neurons")
    _image_args(p)
    p.add_argument("--neurons", type=_pos_int, default=4, help="how many of the most active neurons")
    p.add_argument("--k", type=_pos_int, default=8, help="images per neuron")

    p = sub.add_parser("count-check", formatter_class=fmt, help="Spearman(norm, true object count) on scenes")
    _image_args(p, source=DEFAULT_SCENES)
    p.add_argument("--fit-source", default=None,
                   help="also fit a least-squares map phi -> k on these scenes (e.g. data/fashion/scenes_train_lmdb) "
                        "and score round(prediction) == k and +-1 on --source")
    p.add_argument("--fit-max-images", type=_pos_int, default=2000, help="scenes of --fit-source used")
    p.add_argument("--ridge", type=cli_checks.nonneg_float, default=1e-3, help="ridge penalty of the least-squares map")

    p = sub.add_parser("units", formatter_class=fmt, help="live fc8 units and |phi|^2 per snapshot (issue 26)")
    _image_args(p, source=DEFAULT_SCENES)
    p.set_defaults(weights=None, max_images=200)
    for action in p._actions:   # --weights takes several snapshots here
        if action.dest == "weights":
            action.nargs, action.help = "+", ".caffemodel files (e.g. every snapshot of a run)"
    p.add_argument("--init-solver", default=None,
                   help="also the iteration-0 net of this solver (its net's fillers drawn with its random_seed)")

    p = sub.add_parser("log", formatter_class=fmt, help="training curves from a Caffe log")
    p.add_argument("--log", required=True, help="Caffe training log (the stderr of caffe train)")
    p.add_argument("--out", default=None, help="output folder (default runs/analysis/log)")
    p.add_argument("--margin", type=cli_checks.positive_float, default=params.MARGIN, help="M of the loss (for the trivial-solution warning)")
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:  # the output folder, before any work
        if getattr(args, "out", None):
            cli_checks.writable_dir(args.out, "--out")
    except cli_checks.PathError as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    print("analyze.py %s: %s" % (args.cmd, ", ".join("%s=%s" % (k, v) for k, v in sorted(vars(args).items()))))
    t0 = time.time()
    try:
        res = run_subcommand(args)
    except (features.AnalysisError, features.LmdbError) as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    print("done in %.1f s" % (time.time() - t0))
    return 0 if res is not None else 1


if __name__ == "__main__":
    sys.exit(main())
