"""A toy VOC-layout data set built from Fashion-MNIST items, with exact ground truth.

Each image (width and height drawn in [min_side, max_side]) has a cluttered background --
low-frequency colour noise, pixel noise, random rectangles, ellipses and lines, and
"scrambled" Fashion items (an item cut into 4x4 tiles and shuffled: the texture of an
object, no object) -- and 1..max_objects Fashion items of random class, each scaled to a
random height in [min_obj, max_obj] px with aspect jitter, tinted with a random colour and
pasted as a cut-out (only its own pixels) at a random position, with no two item boxes
overlapping. By construction:

* the box of an item is the tight box of its pixels (value > mask_thresh after resizing);
* its mask is those pixels: the class map holds class index + 1 there, 0 on background, and
  255 (ignore) on a ``ring``-px band around each item's outline, like VOC's void border;
* an item whose box is smaller than ``difficult_below`` px on its short side is marked
  difficult (and, as in VOC, ignored by the scores);
* an image's class set is the set of its items' classes.

The ten Fashion classes get VOC-style one-word names (TOY_CLASSES). The tree written is
``<out>/JPEGImages``, ``Annotations``, ``SegmentationClass``, ``ImageSets/{Main,Segmentation}``
with ``train``, ``val``, ``trainval`` and ``test`` lists (train/val items from Fashion's
training split, test items from its test split), plus ``classes.txt``.
"""
import os

import numpy as np

from ltc import fashion, voc

TOY_CLASSES = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")
FASHION_DIR = fashion.FASHION_DIR

DEFAULTS = dict(min_side=160, max_side=224, min_obj=20, max_obj=96, max_objects=4, clutter=6, scrambled=2,
                mask_thresh=30, ring=1, difficult_below=16, gap=2, jpeg_quality=95)


def read_fashion(folder=FASHION_DIR, split="train"):
    """(images N x 28 x 28 uint8, labels N) of Fashion-MNIST's 'train' or 'test' split (ltc.fashion);
    a missing or malformed file is a VOCError, as every other input error of the toy builder."""
    try:
        return fashion.load_fashion(folder, split)
    except fashion.FashionError as e:
        raise voc.VOCError(str(e))


def _background(rng, h, w, cfg, items):
    import cv2
    low = rng.randint(0, 140, (rng.randint(2, 6), rng.randint(2, 6), 3)).astype(np.uint8)
    img = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    for _ in range(rng.randint(cfg["clutter"] // 2, cfg["clutter"] + 1)):
        colour = tuple(int(v) for v in rng.randint(0, 256, 3))
        kind = rng.randint(3)
        x, y = int(rng.randint(0, w)), int(rng.randint(0, h))
        if kind == 0:
            cv2.rectangle(img, (x, y), (x + int(rng.randint(5, 50)), y + int(rng.randint(5, 50))), colour, -1)
        elif kind == 1:
            cv2.ellipse(img, (x, y), (int(rng.randint(4, 30)), int(rng.randint(4, 30))), float(rng.uniform(0, 180)),
                        0, 360, colour, -1)
        else:
            cv2.line(img, (x, y), (int(rng.randint(0, w)), int(rng.randint(0, h))), colour, int(rng.randint(1, 4)))
    for _ in range(rng.randint(0, cfg["scrambled"] + 1)):      # object texture, no object
        it = items[rng.randint(len(items))]
        tiles = [it[r:r + 7, c:c + 7] for r in range(0, 28, 7) for c in range(0, 28, 7)]
        order = rng.permutation(16)
        scr = np.block([[tiles[order[4 * r + c]] for c in range(4)] for r in range(4)])
        s = int(rng.randint(cfg["min_obj"], cfg["max_obj"] + 1))
        patch = cv2.resize(scr, (s, s), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
        x, y = int(rng.randint(0, max(1, w - s))), int(rng.randint(0, max(1, h - s)))
        tint = rng.uniform(0.3, 1.0, 3).astype(np.float32) * 255
        region = img[y:y + s, x:x + s]
        a = patch[:region.shape[0], :region.shape[1], None]
        img[y:y + s, x:x + s] = region * (1 - a) + tint * a
    img += rng.normal(0, 6, img.shape).astype(np.float32)
    return img


def compose(rng, items, labels, cfg=None):
    """One toy image: (BGR uint8 H x W x 3, class map H x W uint8, objects [dict(class, bbox, difficult)])."""
    import cv2
    cfg = dict(DEFAULTS, **(cfg or {}))
    h, w = (int(rng.randint(cfg["min_side"], cfg["max_side"] + 1)) for _ in range(2))
    img = _background(rng, h, w, cfg, items)
    label = np.zeros((h, w), np.uint8)
    ring = np.zeros((h, w), bool)
    taken = []
    objects = []
    for _ in range(rng.randint(1, cfg["max_objects"] + 1)):
        j = rng.randint(len(items))
        oh = int(rng.randint(cfg["min_obj"], cfg["max_obj"] + 1))
        ow = max(cfg["min_obj"] // 2, int(round(oh * rng.uniform(0.75, 1.33))))
        if oh >= h or ow >= w:
            continue
        for _try in range(50):
            x, y = int(rng.randint(0, w - ow + 1)), int(rng.randint(0, h - oh + 1))
            g = cfg["gap"]
            if all(x + ow + g <= a or c + g <= x or y + oh + g <= b or d + g <= y for a, b, c, d in taken):
                break
        else:
            continue
        patch = cv2.resize(items[j], (ow, oh), interpolation=cv2.INTER_LINEAR)
        mask = patch > cfg["mask_thresh"]
        if mask.sum() < 8:
            continue
        ys, xs = np.nonzero(mask)
        taken.append((x, y, x + ow, y + oh))
        tint = rng.uniform(0.35, 1.0, 3).astype(np.float32)
        region = img[y:y + oh, x:x + ow]
        region[mask] = patch[mask, None].astype(np.float32) * tint[None, :]
        c = int(labels[j])
        label[y:y + oh, x:x + ow][mask] = c + 1
        if cfg["ring"] > 0:
            k = np.ones((2 * cfg["ring"] + 1,) * 2, np.uint8)
            m8 = mask.astype(np.uint8)
            band = (cv2.dilate(m8, k) - cv2.erode(m8, k)) > 0
            ring[y:y + oh, x:x + ow] |= band
        bbox = [x + int(xs.min()), y + int(ys.min()), x + int(xs.max()), y + int(ys.max())]
        short = min(bbox[2] - bbox[0] + 1, bbox[3] - bbox[1] + 1)
        objects.append({"class": c, "bbox": bbox, "difficult": int(short < cfg["difficult_below"])})
    label[ring] = voc.IGNORE
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), label, objects


def write_toy_voc(out, n_train=200, n_val=50, n_test=100, seed=0, fashion_dir=FASHION_DIR, cfg=None, progress=None):
    """Write the toy VOC tree under ``out``; returns {split: number of images}."""
    import cv2
    cfg = dict(DEFAULTS, **(cfg or {}))
    for sub in ("JPEGImages", "Annotations", "SegmentationClass", "ImageSets/Main", "ImageSets/Segmentation"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    with open(os.path.join(out, "classes.txt"), "w") as f:
        f.write("\n".join(TOY_CLASSES) + "\n")
    sets = {}
    for split, n, fsplit, salt in (("train", n_train, "train", 1), ("val", n_val, "train", 2), ("test", n_test, "test", 3)):
        items, labels = read_fashion(fashion_dir, fsplit)
        rng = np.random.RandomState([seed, salt])
        ids = []
        for k in range(n):
            img, label, objects = compose(rng, items, labels, cfg)
            i = "%s_%06d" % (split, k)
            cv2.imwrite(os.path.join(out, "JPEGImages", i + ".jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, cfg["jpeg_quality"]])
            voc.write_label_png(os.path.join(out, "SegmentationClass", i + ".png"), label)
            voc.write_annotation(os.path.join(out, "Annotations", i + ".xml"), i + ".jpg", img.shape[1], img.shape[0],
                                 [dict(o, name=TOY_CLASSES[o["class"]]) for o in objects], folder="VOC_toy")
            ids.append(i)
            if progress:
                progress(split, k + 1, n)
        sets[split] = ids
    sets["trainval"] = sets["train"] + sets["val"]
    for kind in ("Main", "Segmentation"):
        for split, ids in sets.items():
            with open(os.path.join(out, "ImageSets", kind, split + ".txt"), "w") as f:
                f.write("".join(i + "\n" for i in ids))
    return {k: len(v) for k, v in sets.items()}
