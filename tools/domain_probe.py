#!/usr/bin/env python3
"""In-domain transfer probe: linear classifiers (scikit-learn) on frozen conv1..pool5 features of a
counting model against random inits, with paired 95 % intervals.

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
import os
import sys

from ltc import caffe_env
caffe_env.quiet_glog()
from ltc import domain_probe  # noqa: E402
from ltc.probe_sklearn import DomainProbeError  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    domain_probe.add_arguments(ap)
    args = ap.parse_args(argv)
    print("domain_probe: " + " ".join("%s=%s" % kv for kv in sorted(vars(args).items())))
    command = " ".join(["python", "tools/domain_probe.py"] + list(argv if argv is not None else sys.argv[1:]))
    try:
        out = domain_probe.run(args, command=command)
    except DomainProbeError as e:
        print("domain_probe: error: %s" % e, file=sys.stderr)
        return 2
    if out is None:
        print("elpv probe skipped: the optional package elpv-dataset (%s) is not installed; install it "
              "with '%s -m pip install elpv-dataset'" % (domain_probe.ELPV_LICENCE, sys.executable))
        return 0
    print("\n" + out["table"])
    print("wrote %s and %s; %d s" % (os.path.join(args.out_dir, "accuracy.csv"),
                                     os.path.join(args.out_dir, "gains.json"), out["wall_seconds"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
