#!/usr/bin/env python3
"""Print the closing lines of `make demo`: what the network learned, in plain words, and where
the figures are (reads the JSON written by `analyze.py count-check` and `analyze.py log`)."""
import argparse
import json
import os
import sys

from ltc import study


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--run", default="runs/demo", help="the demo's folder (count_check/ and curves/ inside)")
    args = ap.parse_args(argv)
    cc = os.path.join(args.run, "count_check", "count_check.json")
    lg = os.path.join(args.run, "curves", "log.json")
    for path in (cc, lg):
        if not os.path.isfile(path):
            print("demo_summary: '%s' is missing; run `make demo` (it writes it)" % path, file=sys.stderr)
            return 2
    for path in (cc, lg):
        try:
            with open(path) as f:
                json.load(f)
        except (OSError, ValueError) as e:
            print("demo_summary: '%s' cannot be read as JSON (%s); rerun `make demo` (it writes it)" % (path, e),
                  file=sys.stderr)
            return 2
    print(study.demo_summary(cc, lg, [
        ("norm-vs-k figure", os.path.join(args.run, "count_check", "count_check.png")),
        ("TEST-loss and loss-term curves", os.path.join(args.run, "curves", "curves.png")),
        ("training log", os.path.join(args.run, "train.log"))]))
    print(verdict(cc))
    return 0


def verdict(cc_path):
    """The success rule of tools/demo_seeds.py (Spearman >= 0.95 and the read-out within +-1 for >= 90 %
    of the scenes) applied to this run, in plain words, with its live fc8 units."""
    import json
    cc = json.load(open(cc_path))
    cm, units = cc.get("count_map") or {}, cc.get("units") or {}
    ok = cc["spearman"] >= 0.95 and cm.get("within1", 0.0) >= 0.90
    live = ("; %d of %d fc8 units were live (> 0 on at least one of the %d scenes)"
            % (units["live"], units["dim"], units["n_inputs"])) if units else ""
    return ("By the grid's rule (Spearman >= 0.95 and read-out within +-1 for >= 90 %% of the scenes) this run %s%s."
            % ("COUNTS" if ok else "DOES NOT COUNT", live))


if __name__ == "__main__":
    sys.exit(main())
