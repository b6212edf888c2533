#!/usr/bin/env python3
"""Index a PASCAL VOC tree (or build the toy VOC) for the Table 1 pipelines (tools/table1.py).

    python data_prep/voc.py --toy                                   # data/voc_toy: toy tree + indexes
    python data_prep/voc.py --voc-root VOCdevkit/VOC2007 --out-dir data/voc/voc2007 \\
        --proposals selective_search_data/voc_2007_trainval.mat --proposals-set trainval \\
        --proposals selective_search_data/voc_2007_test.mat --proposals-set test
    python data_prep/voc.py --voc-root VOCdevkit/VOC2012 --out-dir data/voc/voc2012 --sbd-root benchmark_RELEASE/dataset

Writes, under --out-dir, one JSON index per split (ltc/voc.py documents the format):
  main_<set>.json   from ImageSets/Main/<set>.txt (+ Annotations): classification and detection
  seg_<set>.json    from ImageSets/Segmentation/<set>.txt (+ SegmentationClass PNGs): segmentation
  seg_sbd_<set>.json  SBD's train/val lists with its .mat class maps converted to PNGs (sbd_labels/)
  main_<set>_proposals.npz  the proposals of a .mat (selective search) or .pkl file, by image id
Sets: train, val, trainval, test -- whichever the tree lists. --toy first writes the toy tree
(ltc/voc_toy.py: Fashion-MNIST items on clutter, exact boxes/masks/difficult flags) under
<out-dir>/VOC_toy and then indexes it like a real tree (its proposals are generated: "toy").
"""
import argparse
import os
import shutil
import sys
import time

import numpy as np

from ltc import cli_checks, detection, voc, voc_toy

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETS = ("train", "val", "trainval", "test")


def index_tree(root, out_dir, sets=SETS):
    voc.check_tree(root)
    written = []
    for kind, prefix in (("Main", "main"), ("Segmentation", "seg")):
        for s in sets:
            if not os.path.isfile(os.path.join(root, "ImageSets", kind, s + ".txt")):
                continue
            classes, entries = voc.build_index(root, s, kind)
            path = voc.write_index(os.path.join(out_dir, "%s_%s.json" % (prefix, s)), classes, entries, root)
            nobj = sum(len(e["objects"]) for e in entries)
            ndiff = sum(o["difficult"] for e in entries for o in e["objects"])
            print("wrote %s: %d images, %d objects (%d difficult), %d classes" % (path, len(entries), nobj, ndiff,
                                                                                   len(classes)))
            written.append(path)
    if not written:
        raise voc.VOCError("'%s' has no ImageSets/Main or ImageSets/Segmentation lists of %s" % (root, ", ".join(sets)))
    return written


def index_sbd(sbd_root, out_dir, classes):
    lab_dir = os.path.join(out_dir, "sbd_labels")
    os.makedirs(lab_dir, exist_ok=True)
    for s in ("train", "val"):
        if not os.path.isfile(os.path.join(sbd_root, s + ".txt")):
            continue
        _, entries = voc.build_index(None, s, sbd_root=sbd_root, classes=classes)
        for e in entries:
            e["label"] = os.path.join(lab_dir, e["id"] + ".png")
            voc.write_label_png(e["label"], e.pop("label_array"))
        path = voc.write_index(os.path.join(out_dir, "seg_sbd_%s.json" % s), classes, entries)
        print("wrote %s: %d images (SBD class maps as PNGs in %s)" % (path, len(entries), lab_dir))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--toy", action="store_true", help="build the toy VOC from Fashion-MNIST, then index it")
    p.add_argument("--voc-root", help="a VOC tree, e.g. VOCdevkit/VOC2007")
    p.add_argument("--sbd-root", help="SBD's benchmark_RELEASE/dataset folder (with --voc-root VOC2012)")
    p.add_argument("--out-dir", default=None, help="where the indexes go (default data/voc_toy with --toy)")
    p.add_argument("--proposals", action="append", default=[], help=".mat or .pkl proposal file (repeatable)")
    p.add_argument("--proposals-set", action="append", default=[], help="the set each --proposals file covers")
    p.add_argument("--toy-train", type=cli_checks.int_range(1, 10 ** 6), default=300, help="toy train images")
    p.add_argument("--toy-val", type=cli_checks.int_range(1, 10 ** 6), default=50, help="toy val images")
    p.add_argument("--toy-test", type=cli_checks.int_range(1, 10 ** 6), default=150, help="toy test images")
    p.add_argument("--fashion-dir", default=voc_toy.FASHION_DIR)
    p.add_argument("--seed", type=cli_checks.int_range(0, 2 ** 32 - 1), default=0)
    args = p.parse_args(argv)
    print("data_prep/voc.py: " + " ".join("%s=%s" % kv for kv in sorted(vars(args).items())))
    if args.toy == bool(args.voc_root):
        p.error("give exactly one of --toy and --voc-root")
    if len(args.proposals) != len(args.proposals_set):
        p.error("each --proposals needs its --proposals-set")
    out = args.out_dir or os.path.join(_ROOT, "data", "voc_toy" if args.toy else "voc")
    try:
        cli_checks.writable_dir(out, "--out-dir")
    except cli_checks.PathError as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    t0 = time.time()
    made = None   # the toy tree this run creates: removed again if the run fails
    try:
        if args.toy:
            root = os.path.join(out, "VOC_toy")
            made = root
            while not os.path.lexists(os.path.dirname(made)):   # the topmost folder this run creates
                made = os.path.dirname(made)
            made = None if os.path.lexists(made) else made
            n = voc_toy.write_toy_voc(root, args.toy_train, args.toy_val, args.toy_test, args.seed, args.fashion_dir)
            print("wrote the toy VOC tree %s: %s" % (root, n))
        else:
            root = args.voc_root
        index_tree(root, out)
        if args.sbd_root:
            index_sbd(args.sbd_root, out, voc.read_classes(root))
        for path, s in zip(args.proposals, args.proposals_set):
            ids = voc.read_ids(os.path.join(root, "ImageSets", "Main", s + ".txt"))
            boxes = detection.load_proposals(path, ids)
            npz = os.path.join(out, "main_%s_proposals.npz" % s)
            np.savez_compressed(npz, **{i: b.astype(np.float32) for i, b in zip(ids, boxes)})
            print("wrote %s: proposals of %d images (%.0f per image)" % (npz, len(ids), np.mean([len(b) for b in boxes])))
    except (voc.VOCError, ValueError, OSError) as e:
        note = ""
        if made and os.path.isdir(made):
            shutil.rmtree(made, ignore_errors=True)
            note = "; removed %s, which this run had created" % made
        print("error: %s%s" % (e, note), file=sys.stderr)
        return 2 if not isinstance(e, OSError) else 1
    print("done in %.1f s" % (time.time() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
