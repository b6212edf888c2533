#!/usr/bin/env python
"""ILSVRC2012 -> train and val LMDBs with class labels (for pre-training and linear probes).

Expects the ILSVRC2012 layout under --root:
  train/nXXXXXXXX/*.JPEG          one folder per synset (1000)
  val/*.JPEG                      flat, with ground truth given by ONE of
    --val-list val.txt            Caffe's ilsvrc12 aux list "ILSVRC2012_val_00000001.JPEG 65"
                                  (labels already index the sorted synsets)
    --val-gt ILSVRC2012_validation_ground_truth.txt --meta meta.mat
                                  the devkit: one ILSVRC2012_ID (1..1000) per line for the
                                  val images in file-name order, and the devkit's meta.mat
                                  mapping ILSVRC2012_ID -> WNID (read with scipy.io)
  or val/nXXXXXXXX/*.JPEG         val already sorted into synset folders.
Labels: synset -> index in sorted-WNID order (Caffe's synsets.txt order); the
list is written to ``synsets.txt`` beside the outputs. Train is shuffled (--seed)
as in Caffe's ImageNet recipe, val keeps file order. Images: 256x256 warp by
default (``--resize shorter-crop`` for the alternative). Bad files are skipped and
listed in ``<output>.skipped.tsv`` (see tools/make_lmdb.py).

Example:
  python data_prep/imagenet.py --root /data/ILSVRC2012 --val-list caffe/data/ilsvrc12/val.txt
  python data_prep/imagenet.py --root /data/ILSVRC2012 --per-class 100 --split train   # a subset
"""
import argparse
import os
import sys


from ltc import REPO, cli_checks, lmdb_build
from ltc.lmdb_build import BuildError, Entry


def _is_wnid(name):
    return len(name) == 9 and name[0] == "n" and name[1:].isdigit()


def list_synsets(train_dir):
    if not os.path.isdir(train_dir):
        raise BuildError("ImageNet train folder '%s' does not exist" % train_dir)
    wnids = sorted(d for d in os.listdir(train_dir) if _is_wnid(d) and os.path.isdir(os.path.join(train_dir, d)))
    if not wnids:
        raise BuildError("'%s' holds no synset folders (nXXXXXXXX)" % train_dir)
    return wnids


def synset_entries(folder, wnids, per_class=0):
    """Entries for folder/<wnid>/<image> with label = index of wnid."""
    entries = []
    for label, w in enumerate(wnids):
        d = os.path.join(folder, w)
        if not os.path.isdir(d):
            continue
        names = sorted(n for n in os.listdir(d) if lmdb_build.is_image_name(n))
        if per_class:
            names = names[:per_class]
        entries += [Entry("%s/%s" % (w, n), os.path.join(d, n), label, None) for n in names]
    return entries


def devkit_mapping(meta_path):
    """ILSVRC2012_ID -> WNID from the devkit's meta.mat."""
    try:
        import scipy.io
        meta = scipy.io.loadmat(meta_path, squeeze_me=True)["synsets"]
    except (OSError, KeyError, ValueError) as e:
        raise BuildError("cannot read synsets from devkit meta file '%s': %s" % (meta_path, e))
    return {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in meta}


def val_entries(args, wnids):
    val_dir = os.path.join(args.root, "val")
    index = {w: i for i, w in enumerate(wnids)}
    if args.val_list:
        entries = lmdb_build.read_list_file(args.val_list, root=val_dir)
        for e in entries:
            if not e.reason and not 0 <= e.label < len(wnids):
                raise BuildError("%s: label %d of %s is outside 0..%d" % (args.val_list, e.label, e.key_path, len(wnids) - 1))
        return entries
    if args.val_gt:
        if not args.meta:
            raise BuildError("--val-gt needs --meta (the devkit's meta.mat)")
        id2wnid = devkit_mapping(args.meta)
        with open(args.val_gt) as f:
            ids = [int(x) for x in f.read().split()]
        names = sorted(n for n in os.listdir(val_dir) if lmdb_build.is_image_name(n))
        if len(names) != len(ids):
            raise BuildError("%s has %d labels but %s holds %d images" % (args.val_gt, len(ids), val_dir, len(names)))
        entries = []
        for n, i in zip(names, ids):
            w = id2wnid.get(i)
            if w not in index:
                raise BuildError("%s: ILSVRC2012_ID %d maps to %r, not one of the train synsets" % (args.val_gt, i, w))
            entries.append(Entry(n, os.path.join(val_dir, n), index[w], None))
        return entries
    if os.path.isdir(val_dir) and any(_is_wnid(d) for d in os.listdir(val_dir)):
        return synset_entries(val_dir, wnids)
    raise BuildError("val labels unknown: pass --val-list (Caffe's val.txt) or --val-gt with --meta, "
                     "or sort val/ into synset folders")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--root", required=True, help="ILSVRC2012 folder holding train/ and val/")
    p.add_argument("--out-dir", default=os.path.join(REPO, "data", "imagenet"), help="where the LMDBs go")
    p.add_argument("--split", choices=("both", "train", "val"), default="both")
    p.add_argument("--val-list", default="", help="Caffe's val.txt ('file label' per line)")
    p.add_argument("--val-gt", default="", help="devkit ILSVRC2012_validation_ground_truth.txt")
    p.add_argument("--meta", default="", help="devkit meta.mat (ILSVRC2012_ID -> WNID)")
    p.add_argument("--per-class", type=cli_checks.nonneg_int, default=0, help="at most this many train images per class (0: all)")
    lmdb_build.add_build_args(p)
    args = p.parse_args(argv)
    print("imagenet: " + " ".join("%s=%s" % kv for kv in sorted(vars(args).items())))

    def work():
        splits = [s for s in ("train", "val") if args.split in ("both", s)]
        lmdb_build.check_outputs([os.path.join(args.out_dir, "%s_lmdb" % s) for s in splits], args.overwrite,
                                 sources=[os.path.join(args.root, s) for s in splits])
        wnids = list_synsets(os.path.join(args.root, "train"))
        jobs = []
        if args.split in ("both", "train"):
            jobs.append(("train", synset_entries(os.path.join(args.root, "train"), wnids, args.per_class), True))
        if args.split in ("both", "val"):
            jobs.append(("val", val_entries(args, wnids), False))
        # written once every input was read: a failed run leaves no synsets.txt behind
        os.makedirs(args.out_dir, exist_ok=True)
        syn = os.path.join(args.out_dir, "synsets.txt")
        with open(syn, "w") as f:
            f.write("".join(w + "\n" for w in wnids))
        print("%d synsets; label = index in sorted order, written to %s" % (len(wnids), syn))
        for split, entries, shuffle in jobs:
            lmdb_build.build_split(split, entries, os.path.join(args.out_dir, "%s_lmdb" % split), args, shuffle)

    return lmdb_build.run_cli("imagenet", work)


if __name__ == "__main__":
    sys.exit(main())
