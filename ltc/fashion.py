"""Fashion-MNIST from Debian's package ``dataset-fashion-mnist`` (idx files), read without a download,
and the composition of its items into counting scenes (``compose_scene``).

Used by ``build_testbed`` (the counting testbed's LMDBs; the command is data_prep/fashion_scenes.py),
ltc/probe_sklearn.py (the in-domain probe's items) and ltc/voc_toy.py (the toy VOC).
"""
import gzip
import os
import struct

import cv2
import numpy as np

from ltc import REPO

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


class FashionError(RuntimeError):
    pass


def read_idx(path):
    """An idx(.gz) file -> numpy array (uint8 images N x 28 x 28, or labels N)."""
    if not os.path.isfile(path):
        raise FashionError("Fashion-MNIST file '%s' is missing; install Debian's package with "
                           "'sudo apt-get install -y dataset-fashion-mnist' or pass --fashion-dir" % path)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise FashionError("'%s' is too short for an idx file" % path)
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise FashionError("'%s' is not an unsigned-byte idx file (magic %r)" % (path, data[:4]))
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise FashionError("'%s' holds %d bytes of data, its header says %s" % (path, arr.size, dims))
    return arr.reshape(dims)


def load_fashion(folder=FASHION_DIR, split="train"):
    """(images N x 28 x 28 uint8, labels N) of Fashion-MNIST's 'train' or 'test' split."""
    pre = "train" if split == "train" else "t10k"
    imgs = read_idx(os.path.join(folder, "%s-images-idx3-ubyte.gz" % pre))
    labels = read_idx(os.path.join(folder, "%s-labels-idx1-ubyte.gz" % pre))
    if len(imgs) != len(labels):
        raise FashionError("%s split: %d images but %d labels" % (split, len(imgs), len(labels)))
    return imgs, labels


def place_boxes(sizes, rng, canvas=256, margin=14, gap=2, tries=200):
    """Non-overlapping positions for squares of the given sides, or None if they do not fit.

    Returns a list of (x, y, side) in the order of ``sizes``; boxes stay ``margin`` px
    inside the canvas and at least ``gap`` px apart.
    """
    order = np.argsort(-np.asarray(sizes), kind="stable")
    placed = [None] * len(sizes)
    boxes = []
    for i in order:
        s = int(sizes[i])
        hi = canvas - margin - s
        if hi < margin:
            return None
        for _ in range(tries):
            x, y = int(rng.randint(margin, hi + 1)), int(rng.randint(margin, hi + 1))
            if all(x + s + gap <= bx or bx + bs + gap <= x or y + s + gap <= by or by + bs + gap <= y
                   for bx, by, bs in boxes):
                boxes.append((x, y, s))
                placed[i] = (x, y, s)
                break
        else:
            return None
    return placed


def compose_scene(items, rng, canvas=256, min_item=24, max_item=48, margin=14, gap=2, gray=False,
                  tries=200, redraws=50):
    """Compose one scene from ``items`` (a list of HxW uint8 gray items, len = k).

    Returns (canvas x canvas x 3 uint8 BGR image, boxes [(x, y, side)]) with exactly
    len(items) non-overlapping items. Raises FashionError if they never fit.
    """
    k = len(items)
    for _ in range(redraws):
        sizes = rng.randint(min_item, max_item + 1, size=k)
        boxes = place_boxes(sizes, rng, canvas, margin, gap, tries)
        if boxes is not None:
            break
    else:
        raise FashionError("could not place %d items of %d..%d px on a %d px canvas (margin %d, gap %d); "
                           "use smaller --max-item" % (k, min_item, max_item, canvas, margin, gap))
    img = np.zeros((canvas, canvas, 3), np.uint8)
    for item, (x, y, s) in zip(items, boxes):
        patch = cv2.resize(item, (s, s), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        colour = np.ones(3, np.float32) if gray else rng.uniform(0.35, 1.0, size=3).astype(np.float32)
        img[y:y + s, x:x + s] = np.clip(patch[:, :, None] * colour[None, None, :] + 0.5, 0, 255).astype(np.uint8)
    return img, boxes


# ----------------------------------------------------------------------------- the testbed's LMDBs
def item_image(item, canvas=256, item_size=224):
    """One item resized to item_size and centred on a black canvas, 3 equal channels."""
    patch = cv2.resize(item, (item_size, item_size), interpolation=cv2.INTER_LINEAR)
    img = np.zeros((canvas, canvas), np.uint8)
    o = (canvas - item_size) // 2
    img[o:o + item_size, o:o + item_size] = patch
    return np.ascontiguousarray(np.repeat(img[:, :, None], 3, axis=2))


def scene_datums(imgs, n, rng, o, max_count, min_count=0):
    """(key, Datum bytes) of ``n`` scenes of 0..max_count items; ``o``: build_testbed's options."""
    from ltc import lmdb_io
    counts = rng.randint(min_count, max_count + 1, size=n)
    for i in range(n):
        k = int(counts[i])
        pick = rng.randint(0, len(imgs), size=k)
        img, _ = compose_scene([imgs[j] for j in pick], rng, o.canvas, o.min_item, o.max_item,
                               o.margin, o.gap, o.gray, o.tries)
        yield "%08d_scene_k%02d" % (i, k), lmdb_io.image_datum_bytes(img, k)


def item_datums(imgs, labels, n, rng, o):
    from ltc import lmdb_io
    pick = rng.permutation(len(imgs))[:n]
    for i, j in enumerate(pick):
        yield ("%08d_item_%05d_c%d" % (i, j, labels[j]),
               lmdb_io.image_datum_bytes(item_image(imgs[j], o.canvas, o.item_size), int(labels[j])))


def build_testbed(out_dir=os.path.join(REPO, "data", "fashion"), fashion_dir=FASHION_DIR, what="all", train_scenes=2000, val_scenes=500,
                  train_items=5000, val_items=1000, max_count=16, canvas=256, min_item=24, max_item=48, margin=14,
                  gap=2, tries=200, gray=False, item_size=224, seed=0, overwrite=False, no_progress=False):
    """The counting testbed: ``out_dir`` (default data/fashion)/scenes_{train,val}_lmdb and
    items_{train,val}_lmdb (see data_prep/fashion_scenes.py, whose options these are, with the
    same defaults). Raises FashionError / lmdb_build.BuildError."""
    import time
    from types import SimpleNamespace
    from ltc import lmdb_build
    o = SimpleNamespace(**{k: v for k, v in locals().items() if k not in ("time", "SimpleNamespace", "lmdb_build")})
    if min_item < 1 or max_item < min_item or max_count < 0:
        raise lmdb_build.BuildError("need 1 <= --min-item <= --max-item and --max-count >= 0")
    jobs = []
    if what in ("all", "scenes"):
        jobs += [("scenes_train_lmdb", "train", train_scenes, 1), ("scenes_val_lmdb", "test", val_scenes, 2)]
    if what in ("all", "items"):
        jobs += [("items_train_lmdb", "train", train_items, 3), ("items_val_lmdb", "test", val_items, 4)]
    lmdb_build.check_outputs([os.path.join(out_dir, name) for name, _, _, _ in jobs], overwrite,
                             sources=[fashion_dir])
    splits = {s: load_fashion(fashion_dir, s) for s in ("train", "test")}
    print("read Fashion-MNIST from %s: %d train, %d test items"
          % (fashion_dir, len(splits["train"][0]), len(splits["test"][0])))
    for name, split, n, salt in jobs:
        out = os.path.join(out_dir, name)
        rng = np.random.RandomState([seed, salt])
        imgs, labels = splits[split]
        t = time.time()
        if name.startswith("scenes"):
            gen = scene_datums(imgs, n, rng, o, max_count)
        else:
            gen = item_datums(imgs, labels, n, rng, o)
        written = lmdb_build.write_datums(out, gen, total=n, overwrite=overwrite, progress=not no_progress, desc=name)
        print("wrote %d entries to %s (Fashion %s split) in %.1f s" % (written, out, split, time.time() - t))
