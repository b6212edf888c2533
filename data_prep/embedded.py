#!/usr/bin/env python
"""The embedded default data set: the real photos that ship inside installed packages.

No download: the photos are read from the package folders of
  scikit-image  data/astronaut.png, chelsea.png, coffee.png, rocket.jpg,
                motorcycle_left.png, motorcycle_right.png, hubble_deep_field.jpg
                (bundled files; skimage's other photos are fetched at run time: not used)
  scikit-learn  datasets/images/china.jpg, flower.jpg (load_sample_images' two photos)
  matplotlib    mpl-data/sample_data/grace_hopper.jpg
  foolbox 3.3.4 data/imagenet_NN_CLASS.jpg (20 ImageNet validation photos; the package
                is installed with ``pip install --no-deps foolbox==3.3.4`` if its files
                are absent; it is never imported, only its data files are read)
30 photos in all (``--set sample``). ``--set all`` adds the 12 other real photographs that
scikit-image bundles (brick, camera, cell, clock_motion, coins, grass, gravel, ihc, moon, page,
retina, text; its drawings, test patterns, the 102-px microaneurysms crop and the 25-px LFW
faces are left out): 42 photos, written to data/photos by default. Split (deterministic): the photos sorted by their file name
``<package>_<name>``; every 5th one (positions 4, 9, 14, ...) goes to val: 24 train, 6 val.

Writes the photo files unchanged into ``<out>/images/{train,val}/`` and builds
``<out>/train_lmdb`` and ``<out>/val_lmdb`` (256x256 warp, label 0) with the same
builder as tools/make_lmdb.py. ``<out>`` defaults to ``data/sample``.

Example:
  python data_prep/embedded.py            # data/sample/{train,val}_lmdb + images/
  python data_prep/embedded.py --overwrite --resize shorter-crop
"""
import argparse
import os
import subprocess
import sys


from ltc import cli_checks, lmdb_build

from ltc.embedded_photos import (FOOLBOX_SPEC, PHOTO_SETS, SKIMAGE_MORE_PHOTOS, SKIMAGE_PHOTOS,  # noqa: F401
                                 SKLEARN_PHOTOS, VAL_EVERY, _package_dir, build_photo_lmdbs, collect_photos,
                                 foolbox_photos, split_photos)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--set", dest="photo_set", choices=PHOTO_SETS, default="sample",
                   help="sample: the 30 photos of the demo; all: also scikit-image's 12 other photographs")
    p.add_argument("--out", default=None, help="output folder (default: data/sample, or data/photos for --set all)")
    p.add_argument("--size", type=cli_checks.int_range(1, 8192), default=256, help="LMDB image side")
    p.add_argument("--resize", choices=lmdb_build.RESIZE_MODES, default="warp")
    p.add_argument("--val-every", type=cli_checks.int_range(2, 1000), default=VAL_EVERY, help="every n-th photo (sorted by name) goes to val")
    p.add_argument("--workers", type=cli_checks.workers_int, default=min(os.cpu_count() or 1, cli_checks.MAX_WORKERS), help="decoding processes (0: in-process)")
    p.add_argument("--no-install", action="store_true", help="do not pip-install foolbox when its photos are absent")
    p.add_argument("--overwrite", action="store_true", help="replace existing LMDBs and image folders")
    args = p.parse_args(argv)
    print("embedded: " + " ".join("%s=%s" % kv for kv in sorted(vars(args).items())))

    def work():
        build_photo_lmdbs(**vars(args))

    return lmdb_build.run_cli("embedded", work, failures=(subprocess.CalledProcessError,))


if __name__ == "__main__":
    sys.exit(main())
