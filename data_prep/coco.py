#!/usr/bin/env python
"""MS-COCO image folders -> train and val LMDBs (the paper's COCO pre-training variant).

Expects --root with ``train2014/`` and ``val2014/`` (``--year 2017``: ``train2017/``,
``val2017/``), each a flat folder of JPEGs. No labels are needed for counting
(label 0). Train is shuffled (--seed), val keeps file order; 256x256 warp by
default. Bad files are skipped and listed in ``<output>.skipped.tsv``.

Example:
  python data_prep/coco.py --root /data/coco               # data/coco/{train,val}_lmdb
  python data_prep/coco.py --root /data/coco --year 2017 --limit 5000
"""
import argparse
import os
import sys


from ltc import REPO, cli_checks, lmdb_build


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--root", required=True, help="folder holding train<year>/ and val<year>/")
    p.add_argument("--year", choices=("2014", "2017"), default="2014")
    p.add_argument("--out-dir", default=os.path.join(REPO, "data", "coco"), help="where the LMDBs go")
    p.add_argument("--split", choices=("both", "train", "val"), default="both")
    p.add_argument("--limit", type=cli_checks.nonneg_int, default=0, help="at most this many images per split (0: all)")
    lmdb_build.add_build_args(p)
    args = p.parse_args(argv)
    print("coco: " + " ".join("%s=%s" % kv for kv in sorted(vars(args).items())))
    splits = ["train", "val"] if args.split == "both" else [args.split]

    def work():
        lmdb_build.check_outputs([os.path.join(args.out_dir, "%s_lmdb" % s) for s in splits], args.overwrite,
                                 sources=[os.path.join(args.root, "%s%s" % (s, args.year)) for s in splits])
        for split in splits:
            folder = os.path.join(args.root, "%s%s" % (split, args.year))
            entries = lmdb_build.collect_folder(folder)
            if args.limit:
                entries = entries[:args.limit]
            if not entries:
                raise lmdb_build.BuildError("no images in '%s'" % folder)
            lmdb_build.build_split(split, entries, os.path.join(args.out_dir, "%s_lmdb" % split), args,
                                   shuffle=split == "train")

    return lmdb_build.run_cli("coco", work)


if __name__ == "__main__":
    sys.exit(main())
