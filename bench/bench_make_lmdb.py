#!/usr/bin/env python
"""Benchmark tools/make_lmdb.py against Caffe's convert_imageset on generated JPEGs.

Writes N JPEGs of about 500x375 (random crops, scales and flips of the photos that
ship with scikit-image, scikit-learn and matplotlib) into --images (once; reused if
the count matches), then times:
  convert_imageset --resize_height S --resize_width S   (one process, the reference)
  make_lmdb.py --workers 0 / 1 / 2 ...                   (images/s from its summary)
with the CPU time per image of all processes (a measure the machine's load does not
change much), and checks that make_lmdb's warp output equals convert_imageset's pixel for pixel
where both decoders agree (reports the number of differing entries).

Example:
  python bench/bench_make_lmdb.py --n 2000 --workers 0 1 2 --repeat 3
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _p in (_ROOT, os.path.join(_ROOT, "python_layers")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import cv2  # noqa: E402
import numpy as np  # noqa: E402


def sample_photos():
    """The colour photos bundled with installed packages (no downloads)."""
    import matplotlib
    import skimage
    import sklearn.datasets
    sk = os.path.join(os.path.dirname(skimage.__file__), "data")
    paths = [os.path.join(sk, n) for n in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg",
                                           "motorcycle_left.png", "motorcycle_right.png", "hubble_deep_field.jpg")]
    paths += [os.path.join(os.path.dirname(sklearn.datasets.__file__), "images", n) for n in ("china.jpg", "flower.jpg")]
    paths.append(os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg"))
    imgs = [cv2.imread(p, cv2.IMREAD_COLOR) for p in paths if os.path.isfile(p)]
    return [im for im in imgs if im is not None]


def make_jpegs(folder, n, seed=0, quality=90):
    """Write n JPEGs (~500x375, landscape or portrait) into folder; returns the list file."""
    listfile = os.path.join(folder, "list.txt")
    if os.path.isfile(listfile) and sum(1 for _ in open(listfile)) == n:
        return listfile
    os.makedirs(folder, exist_ok=True)
    photos = sample_photos()
    rng = np.random.RandomState(seed)
    names = []
    for i in range(n):
        src = photos[rng.randint(len(photos))]
        h, w = src.shape[:2]
        ch, cw = int(h * rng.uniform(0.5, 1.0)), int(w * rng.uniform(0.5, 1.0))
        y, x = rng.randint(0, h - ch + 1), rng.randint(0, w - cw + 1)
        crop = src[y:y + ch, x:x + cw]
        size = (500, 375) if rng.rand() < 0.75 else (375, 500)
        img = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
        if rng.rand() < 0.5:
            img = img[:, ::-1]
        name = "img_%05d.jpg" % i
        cv2.imwrite(os.path.join(folder, name), img, [cv2.IMWRITE_JPEG_QUALITY, quality])
        names.append(name)
    with open(listfile, "w") as f:
        for k, name in enumerate(names):
            f.write("%s %d\n" % (name, k % 10))
    return listfile


def cpu_children():
    """User+system CPU seconds of finished child processes (and their waited-for children)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def caffe_bin(name):
    cand = os.path.join(os.path.dirname(sys.executable), name)
    return cand if os.path.isfile(cand) else shutil.which(name)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="number of JPEGs")
    p.add_argument("--images", default="/tmp/ltc_bench_jpegs", help="folder for the generated JPEGs")
    p.add_argument("--out", default="/tmp/ltc_bench_lmdb", help="scratch folder for the LMDBs")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="make_lmdb --workers values")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-caffe", action="store_true", help="do not run convert_imageset")
    p.add_argument("--repeat", type=int, default=3, help="runs per configuration (best and median reported)")
    args = p.parse_args(argv)
    print("bench_make_lmdb: %s" % vars(args))
    t = time.time()
    listfile = make_jpegs(args.images, args.n, args.seed)
    print("images ready in %s (%.1f s)" % (args.images, time.time() - t))
    os.makedirs(args.out, exist_ok=True)
    runs = {}  # name -> [(images/s of the whole command, CPU ms/image)]
    tool = caffe_bin("convert_imageset")
    configs = []
    if tool and not args.skip_caffe:
        db = os.path.join(args.out, "convert_imageset_lmdb")
        configs.append(("convert_imageset", db, [tool, "--resize_height=%d" % args.size,
                                                 "--resize_width=%d" % args.size, args.images + "/", listfile, db]))
    for w in args.workers:
        db = os.path.join(args.out, "make_lmdb_w%d" % w)
        configs.append(("make_lmdb --workers %d" % w, db, [
            sys.executable, os.path.join(_ROOT, "tools", "make_lmdb.py"), listfile, db, "--workers", str(w),
            "--size", str(args.size), "--overwrite", "--no-progress"]))
    for rep in range(args.repeat):  # interleaved, so a burst of load on the shared machine hits all alike
        for name, db, cmd in configs:
            shutil.rmtree(db, ignore_errors=True)
            t, c = time.time(), cpu_children()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wall, cpu = time.time() - t, cpu_children() - c
            runs.setdefault(name, []).append((args.n / wall, 1e3 * cpu / args.n))
            print("run %d  %-24s %7.1f images/s  CPU %.2f ms/image" % (rep + 1, name, args.n / wall, 1e3 * cpu / args.n))
    results = {}
    print("whole command incl. start-up; best of %d runs (median in brackets):" % args.repeat)
    for name, rs in runs.items():
        rate = sorted(r for r, _ in rs)
        cpu = sorted(c for _, c in rs)
        results[name] = max(rate)
        print("  %-24s %7.1f images/s (%.1f)  CPU %.2f ms/image (%.2f)"
              % (name, max(rate), rate[len(rate) // 2], cpu[0], cpu[len(cpu) // 2]))
    if "convert_imageset" in results and args.workers:
        import lmdb
        a = lmdb.open(os.path.join(args.out, "convert_imageset_lmdb"), readonly=True, lock=False)
        b = lmdb.open(os.path.join(args.out, "make_lmdb_w%d" % args.workers[0]), readonly=True, lock=False)
        with a.begin() as ta, b.begin() as tb:
            ka, kb = [k for k, _ in ta.cursor()], [k for k, _ in tb.cursor()]
            same_keys = ka == kb
            differ = sum(1 for k in ka if ta.get(k) != tb.get(k))
        print("keys equal to convert_imageset's: %s; entries whose Datum bytes differ: %d of %d"
              % (same_keys, differ, len(ka)))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
