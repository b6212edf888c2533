#!/usr/bin/env python
"""Counting testbed: Fashion-MNIST items composed into scenes with a known count.

Reads Fashion-MNIST (70,000 labelled 28x28 items) from Debian's package
``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist/*-idx?-ubyte.gz``;
install it with ``sudo apt-get install -y dataset-fashion-mnist``) and writes:

  scenes  ``data/fashion/scenes_{train,val}_lmdb``: 256x256 BGR scenes holding k items,
          k uniform in 0..16, label = k. Each item is scaled to a random side in
          [--min-item, --max-item] px (bilinear), tinted with a random colour (or kept
          gray, --gray), and placed at a random position at least --margin px from the
          border (so a 228x228 centre crop sees every item) with no two items' boxes
          closer than --gap px (non-overlapping). Placement: largest item first, up to
          --tries random positions each; a scene that does not fit is redrawn.
          Train scenes use items of Fashion's training split, val scenes its test split.
  items   ``data/fashion/items_{train,val}_lmdb``: one item per image, resized to
          --item-size px (bilinear) and centred on a black 256x256 canvas (gray, 3 equal
          channels), label = Fashion class 0..9, for linear probes. Train items are a
          seeded sample of the training split, val items of the test split.

Everything is seeded (--seed); the defaults build in well under a minute.

Example:
  python data_prep/fashion_scenes.py              # all four LMDBs
  python data_prep/fashion_scenes.py --what scenes --train-scenes 20000 --overwrite
"""
import argparse
import os
import sys

from ltc import REPO, cli_checks, lmdb_build
from ltc.fashion import CLASSES, FASHION_DIR, FashionError, load_fashion, read_idx  # noqa: F401 (re-exported)
from ltc.fashion import compose_scene, item_image, place_boxes  # noqa: F401 (re-exported)
from ltc.fashion import build_testbed


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--fashion-dir", default=FASHION_DIR, help="folder of Fashion-MNIST's idx .gz files")
    p.add_argument("--out-dir", default=os.path.join(REPO, "data", "fashion"), help="where the LMDBs go")
    p.add_argument("--what", choices=("all", "scenes", "items"), default="all")
    p.add_argument("--train-scenes", type=cli_checks.int_range(1, 10 ** 7), default=2000)
    p.add_argument("--val-scenes", type=cli_checks.int_range(1, 10 ** 7), default=500)
    p.add_argument("--train-items", type=cli_checks.int_range(1, 10 ** 7), default=5000)
    p.add_argument("--val-items", type=cli_checks.int_range(1, 10 ** 7), default=1000)
    p.add_argument("--max-count", type=cli_checks.int_range(0, 1000), default=16, help="scenes hold 0..max-count items")
    p.add_argument("--canvas", type=cli_checks.int_range(16, 8192), default=256, help="scene side (px)")
    p.add_argument("--min-item", type=cli_checks.int_range(1, 8192), default=24, help="smallest item side in a scene (px)")
    p.add_argument("--max-item", type=cli_checks.int_range(1, 8192), default=48, help="largest item side in a scene (px)")
    p.add_argument("--margin", type=cli_checks.int_range(0, 4096), default=14, help="items stay this far from the border (px)")
    p.add_argument("--gap", type=cli_checks.int_range(0, 4096), default=2, help="minimum distance between item boxes (px)")
    p.add_argument("--tries", type=cli_checks.int_range(1, 10 ** 6), default=200, help="random positions tried per item")
    p.add_argument("--gray", action="store_true", help="gray items instead of random colour tints")
    p.add_argument("--item-size", type=cli_checks.int_range(1, 8192), default=224, help="item side in the items LMDBs (px)")
    p.add_argument("--seed", type=cli_checks.int_range(0, 2 ** 32 - 1), default=0)
    p.add_argument("--overwrite", action="store_true", help="replace existing LMDBs")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    print("fashion_scenes: " + " ".join("%s=%s" % kv for kv in sorted(vars(args).items())))
    def work():
        build_testbed(**vars(args))

    return lmdb_build.run_cli("fashion_scenes", work, input_errors=(FashionError,))


if __name__ == "__main__":
    sys.exit(main())
