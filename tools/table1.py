#!/usr/bin/env python3
"""Table 1 of the paper: train, test and score VOC classification, detection and segmentation.

    python data_prep/voc.py --toy                                        # the toy VOC (once)
    python tools/table1.py all --quick --model counting=runs/demo/caffenet_counting.caffemodel --random-init
    python tools/table1.py cls --model counting=PORTED.caffemodel \\
        --train-index data/voc/voc2007/main_trainval.json --test-index data/voc/voc2007/main_test.json

Subcommands: cls (VOC07 classification, Kraehenbuehl et al.'s framework: 10-crop test, VOC07
11-point AP, mAP), det (Fast R-CNN CaffeNet in BVLC Caffe with the Python ROIPooling layer:
per-class NMS, AP at IoU 0.5, mAP), seg (FCN-AlexNet: pixel acc, mean acc, mIoU, fwIoU),
all (the three). Each model named by --model NAME=PORTED.caffemodel (tools/port_weights.py
--fold-std) and, with --random-init, a Gaussian-filler baseline is trained with Caffe's
SGDSolver, tested and scored; per-class CSVs go to --out/<task>_<name>.csv and a summary
table is printed and written to --out/summary.csv (and summary.json).

Default indexes are the toy VOC's (data/voc_toy/main_{train,test}.json for cls/det,
seg_{train,test}.json for seg); --quick is a CPU schedule (ltc/table1.py QUICK), without it
the published recipes' sizes (FULL; days on a CPU). Exit status 2: bad arguments or input.
"""
import argparse
import csv
import os
import sys
import time

from ltc import cli_checks, table1, voc

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = os.path.join(_ROOT, "data", "voc_toy")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("task", choices=("cls", "det", "seg", "all"))
    p.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                   help="a ported CaffeNet .caffemodel (conv1..conv5); repeatable")
    p.add_argument("--random-init", action="store_true", help="also train from the fillers (baseline)")
    p.add_argument("--quick", action="store_true", help="the small CPU schedule (toy VOC)")
    p.add_argument("--iters", type=cli_checks.int_range(1, 10 ** 7), default=None, help="override the schedule's training iterations")
    p.add_argument("--base-lr", type=cli_checks.positive_float, default=None, help="override the schedule's base learning rate")
    p.add_argument("--train-index", default=None, help="cls/det: main_<set>.json, seg: seg_<set>.json (toy if unset)")
    p.add_argument("--test-index", default=None, help="as --train-index, for testing")
    p.add_argument("--proposals", default="toy", help="det: training proposals, 'toy' or a .npz from data_prep/voc.py")
    p.add_argument("--test-proposals", default="toy", help="det: test proposals, 'toy' or a .npz")
    p.add_argument("--train-conv1", action="store_true", help="det: fine-tune conv1 (Fast R-CNN freezes it)")
    p.add_argument("--voc-ap", choices=("07", "area"), default="07", help="det: VOC07 11-point AP or area (VOC2010+)")
    p.add_argument("--limit-test", type=cli_checks.nonneg_int, default=0, help="test on the first N images only (0: all)")
    p.add_argument("--out", default=os.path.join(_ROOT, "runs", "table1"), help="output folder")
    args = p.parse_args(argv)
    print("table1: " + " ".join("%s=%s" % kv for kv in sorted(vars(args).items())), flush=True)
    models = []
    for m in args.model:
        name, sep, path = m.partition("=")
        if not sep or not name or not path:
            p.error("--model takes NAME=PATH, got %r" % m)
        if not os.path.isfile(path):
            print("error: model '%s' is missing; port one with tools/port_weights.py" % path, file=sys.stderr)
            return 2
        try:  # a ported CaffeNet conv1..conv5 model, checked before any work (not Caffe's CHECK after training)
            from ltc import probe
            probe.check_weights(path)
        except probe.ProbeError as e:
            print("error: --model %s: %s" % (name, e), file=sys.stderr)
            return 2
        models.append((name, path))
    if args.random_init:
        models.append(("random", None))
    if not models:
        p.error("give at least one --model NAME=PATH or --random-init")
    tasks = ("cls", "det", "seg") if args.task == "all" else (args.task,)
    results = []
    try:
        cli_checks.writable_dir(args.out, "--out")
        if os.path.exists(os.path.join(args.out, "summary.csv")):
            cli_checks.writable_file(os.path.join(args.out, "summary.csv"), "--out's summary.csv")
    except cli_checks.PathError as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    for task in tasks:
        kind = "seg" if task == "seg" else "main"
        train_index = args.train_index or os.path.join(TOY, "%s_train.json" % kind)
        test_index = args.test_index or os.path.join(TOY, "%s_test.json" % kind)
        for path in (train_index, test_index):
            if not os.path.isfile(path):
                print("error: index '%s' is missing; build it with data_prep/voc.py (--toy for the toy VOC)" % path,
                      file=sys.stderr)
                return 2
        for name, path in models:
            print("=== %s: %s (%s)" % (task, name, path or "random init"), flush=True)
            kw = dict(model=path, quick=args.quick, name=name, limit_test=args.limit_test, max_iter=args.iters,
                      base_lr=args.base_lr)
            if task == "det":
                kw.update(proposals=args.proposals, test_proposals=args.test_proposals, train_conv1=args.train_conv1,
                          use_07=args.voc_ap == "07")
            t0 = time.time()
            try:
                r = table1.RUNNERS[task](train_index, test_index, os.path.join(args.out, task), **kw)
            except (voc.VOCError, table1.Table1Error) as e:
                print("error: %s" % e, file=sys.stderr)
                return 2
            r["wall_s"] = time.time() - t0
            print("%s %s: %s = %.4f  (train %.0f s, test %.0f s, wall %.0f s)"
                  % (task, name, r["metric"], r["value"], r["train_s"], r["test_s"], r["wall_s"]), flush=True)
            results.append(r)
    rows = table1.summary_rows(results)
    widths = [max(len(str(x)) for x in col) for col in zip(table1.SUMMARY_HEADER, *rows)]
    for row in [table1.SUMMARY_HEADER] + rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())
    with open(os.path.join(args.out, "summary.csv"), "a" if os.path.exists(os.path.join(args.out, "summary.csv"))
              else "w", newline="") as f:
        w = csv.writer(f)
        if f.tell() == 0:
            w.writerow(table1.SUMMARY_HEADER)
        w.writerows(rows)
    table1.write_json(os.path.join(args.out, "summary_%s_%s.json" % (args.task, "+".join(n for n, _ in models))), results)
    print("wrote %s" % os.path.join(args.out, "summary.csv"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
