#!/usr/bin/env python3
"""The reproduction study in one command: data, training (resumable), evaluation, report.

    python tools/reproduce.py                       # everything; rerun to resume after a stop
    python tools/reproduce.py --stage evaluate      # only re-evaluate the trained snapshots
    python tools/reproduce.py --dry-run             # print the commands without running them

Trains the nets of prototxt/study/main (the small-scale recipe, a random downsampling method
per batch) and prototxt/study/linear (the same with bilinear downsampling only, for Table 5) on
data/study/train_lmdb (Fashion scenes + the 34 training photos), and prototxt/study/photos (the
demo's start on the scenes + 20,000 views of the packaged photos, tested on views of held-out
photos), in parallel with one BLAS thread each; each run resumes from its newest snapshot. Then evaluates (see ltc/study/) and
writes OUT/report.md, OUT/results.json, OUT/commands.txt and the PNGs under OUT/.
"""
import argparse
import os
import sys
import time

from ltc import caffe_env
caffe_env.quiet_glog()   # before pycaffe loads: the evaluation's nets are set up in this process
from ltc import cli_checks, study  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out", default="runs/study/results", help="results folder (relative to the repository root)")
    ap.add_argument("--stage", choices=("all", "data", "train", "evaluate", "report"), default="all",
                    help="run one stage only (report rewrites report.md from results.json)")
    ap.add_argument("--resume", action="append", default=[], metavar="RUN=SOLVERSTATE",
                    help="start run RUN (main or linear) from this solverstate when its folder has no snapshot yet")
    ap.add_argument("--runs", nargs="+", choices=[n for n, _ in study.RUNS], default=[n for n, _ in study.RUNS],
                    help="the runs to train and evaluate (data: photos needs make photos-all's views)")
    ap.add_argument("--seeds", type=cli_checks.int_range(0, 2 ** 31 - 1), nargs="+", default=[1701, 1702], help="linear-probe seeds")
    ap.add_argument("--probe-iters", type=cli_checks.int_range(1, 10 ** 7), default=200, help="linear-probe SGD iterations")
    ap.add_argument("--per-class", type=cli_checks.positive_int, default=study.PROBE_PER_CLASS, help="probe training labels per class")
    ap.add_argument("--iteration", type=cli_checks.nonneg_int, default=None, help="evaluate this snapshot of the main run (default: its last)")
    ap.add_argument("--photo-iteration", type=cli_checks.nonneg_int, default=None,
                    help="evaluate this snapshot of the photo run (default: its last)")
    ap.add_argument("--no-domain-probe", action="store_true",
                    help="photo run: leave out the in-domain probes (about 20 min on 2 cores)")
    ap.add_argument("--probe-val-images", type=cli_checks.nonneg_int, default=0, help="score the first N probe validation images (0: all)")
    ap.add_argument("--threads", type=cli_checks.int_range(1, 256), default=1,
                    help="BLAS threads per training run (with the speed patches, also the threads over the images of "
                         "a batch); a resumed run may change it, at the price of another float summation order")
    ap.add_argument("--poll", type=cli_checks.float_range(0.1, 86400), default=60, help="seconds between progress lines while training")
    ap.add_argument("--dry-run", action="store_true", help="print the commands only")
    ap.add_argument("--fresh", action="store_true",
                    help="rerun every evaluation command (default: reuse outputs newer than their inputs)")
    args = ap.parse_args(argv)
    resume = {}
    for spec in args.resume:
        name, sep, path = spec.partition("=")
        if not sep or name not in dict(study.RUNS):
            print("reproduce: --resume wants RUN=SOLVERSTATE with RUN in %s, got %r"
                  % ("/".join(dict(study.RUNS)), spec), file=sys.stderr)
            return 2
        resume[name] = path
    if not args.dry_run:
        try:
            cli_checks.writable_dir(os.path.join(study.REPO, args.out), "--out")
        except cli_checks.PathError as e:
            print("reproduce: error: %s" % e, file=sys.stderr)
            return 2
    t0 = time.time()
    runner = study.Runner(os.path.join(study.REPO, args.out), dry=args.dry_run, reuse=not args.fresh)
    out = args.out
    try:
        if args.stage in ("all", "data"):
            study.prepare_data(runner, per_class=args.per_class, with_views="photos" in args.runs)
        if args.stage in ("all", "train"):
            study.train_runs(runner, runs=[r for r in study.RUNS if r[0] in args.runs], resume=resume,
                             poll=args.poll, threads=args.threads)
        if args.dry_run:
            return 0
        if args.stage in ("all", "evaluate") and "main" in args.runs:
            # the main run's earlier leg (a --resume source written by the same net and solver) joins its curves
            legs = [os.path.join(os.path.dirname(resume["main"]), "counting")] if "main" in resume else []
            study.evaluate(runner, out, seeds=args.seeds, probe_iters=args.probe_iters,
                           per_class=args.per_class, iteration=args.iteration, extra_prefixes=legs,
                           probe_val_images=args.probe_val_images)
        if args.stage in ("all", "evaluate") and "photos" in args.runs:
            study.update_results(out, photos=study.evaluate_photos(runner, out, iteration=args.photo_iteration,
                                                                   probe=not args.no_domain_probe))
        if args.stage in ("all", "evaluate", "report"):
            import json
            with open(os.path.join(study.REPO, out, "results.json")) as f:
                res = json.load(f)
            with open(runner.log_path) as f:
                commands = f.read()
            path = study.write_report(res, out, commands=commands,
                                      wall=None if args.stage == "report" else
                                      "%.0f s for this invocation (stage %s)" % (time.time() - t0, args.stage))
            print("\n".join("%-60s %-10s %s" % (g, m, "met" if ok else "NOT met") for g, m, ok in study.goals(res)))
            print("report: %s" % os.path.relpath(path, os.getcwd()))
    except study.StudyError as e:
        print("reproduce: %s" % e, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("reproduce: interrupted; rerun the same command to resume from the newest snapshots", file=sys.stderr)
        return 130
    print("reproduce: done in %.0f s" % (time.time() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
