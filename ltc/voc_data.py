"""Batch makers of the three Table 1 pipelines (numpy/OpenCV; the Caffe layers in
python_layers/voc_layers.py are thin shells over these).

All read a JSON index of ltc/voc.py and give Caffe blobs: BGR images minus the per-channel
means (104, 117, 123), 0-255 scale, N x 3 x H x W float32. Randomness comes from an explicit
seed; test-time outputs are deterministic.

* ClsBatcher (Kraehenbuehl et al.'s VOC07 classification): each image resized to
  resize x resize, a random crop x crop window, random mirror (train); labels N x C with
  1 = present, 0 = absent, -1 = only difficult instances (ignored by the loss, whose
  ignore_label is -1, and by the score). Test: ``ten_crops`` -- four corners and the centre
  of the resized image and their mirrors.
* SegBatcher (FCN): one whole image per batch, label 1 x 1 x H x W (255 = ignore).
* DetBatcher (Fast R-CNN): images scaled so the short side is ``scale`` (long side at most
  ``max_size``), random mirror (train), ROIs sampled by ltc.detection.sample_rois from the
  proposals: "toy" (jittered ground truth + random boxes, ltc.detection.toy_proposals) or a
  .npz of per-image-id arrays written by data_prep/voc.py from .mat/.pkl proposal files.
"""
import zlib

import numpy as np

from ltc import detection, voc

MEAN_BGR = (104.0, 117.0, 123.0)


def to_blob(img, mean=MEAN_BGR):
    """H x W x 3 uint8 BGR -> 3 x H x W float32 minus the means."""
    return (img.astype(np.float32) - np.asarray(mean, np.float32)).transpose(2, 0, 1)


def cls_labels(entry, num_classes):
    """C-vector of one index entry: 1 present, 0 absent, -1 difficult-only (ignored)."""
    lab = np.zeros(num_classes, np.float32)
    for o in entry["objects"]:
        c = o["class"]
        if o.get("difficult", 0):
            if lab[c] == 0:
                lab[c] = -1
        else:
            lab[c] = 1
    return lab


def sigmoid_cross_entropy(logits, labels, ignore=-1):
    """Caffe's SigmoidCrossEntropyLoss (batch-size normalisation): sum over the non-ignored
    entries of -[y log s(x) + (1 - y) log(1 - s(x))], divided by the batch size."""
    x = np.asarray(logits, np.float64)
    y = np.asarray(labels, np.float64)
    m = y != ignore
    per = np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))
    return float(per[m].sum() / x.shape[0])


def _seed_of(text):
    return zlib.crc32(text.encode()) & 0x7FFFFFFF


class ClsBatcher(object):
    def __init__(self, index, batch=16, resize=256, crop=227, mirror=True, seed=0, mean=MEAN_BGR):
        self.classes, self.entries = voc.read_index(index)
        if not self.entries:
            raise voc.VOCError("index '%s' lists no images" % index)
        if crop > resize:
            raise ValueError("crop (%d) must not exceed resize (%d)" % (crop, resize))
        self.batch, self.resize, self.crop, self.mirror, self.mean = batch, resize, crop, mirror, mean
        self.rng = np.random.RandomState(seed)
        self.order, self.pos = self.rng.permutation(len(self.entries)), 0

    def image(self, e):
        import cv2
        return cv2.resize(voc.load_image(e["image"]), (self.resize, self.resize), interpolation=cv2.INTER_LINEAR)

    def next(self):
        c = self.crop
        data = np.zeros((self.batch, 3, c, c), np.float32)
        labels = np.zeros((self.batch, len(self.classes)), np.float32)
        for b in range(self.batch):
            if self.pos == len(self.order):
                self.order, self.pos = self.rng.permutation(len(self.entries)), 0
            e = self.entries[self.order[self.pos]]
            self.pos += 1
            img = self.image(e)
            y, x = self.rng.randint(0, self.resize - c + 1, 2)
            img = img[y:y + c, x:x + c]
            if self.mirror and self.rng.randint(2):
                img = img[:, ::-1]
            data[b] = to_blob(img, self.mean)
            labels[b] = cls_labels(e, len(self.classes))
        return data, labels

    def ten_crops(self, e):
        """10 x 3 x crop x crop: corners + centre of the resized image, then their mirrors."""
        img = self.image(e)
        c, r = self.crop, self.resize
        offs = [(0, 0), (0, r - c), (r - c, 0), (r - c, r - c), ((r - c) // 2, (r - c) // 2)]
        crops = [img[y:y + c, x:x + c] for y, x in offs]
        crops += [cr[:, ::-1] for cr in crops]
        return np.stack([to_blob(cr, self.mean) for cr in crops])


class SegBatcher(object):
    def __init__(self, index, mirror=True, shuffle=True, seed=0, mean=MEAN_BGR):
        self.classes, self.entries = voc.read_index(index)
        missing = [e["id"] for e in self.entries if not e.get("label")]
        if missing or not self.entries:
            raise voc.VOCError("index '%s': %s" % (index, "no images" if not self.entries else
                                                   "%d images have no class map, e.g. %s" % (len(missing), missing[0])))
        self.mirror, self.shuffle, self.mean = mirror, shuffle, mean
        self.rng = np.random.RandomState(seed)
        self.order = self.rng.permutation(len(self.entries)) if shuffle else np.arange(len(self.entries))
        self.pos = 0

    def load(self, e, flip=False):
        img = voc.load_image(e["image"])
        lab = voc.read_label_png(e["label"])
        if lab.shape != img.shape[:2]:
            raise voc.VOCError("class map '%s' is %s, its image is %s" % (e["label"], lab.shape, img.shape[:2]))
        if flip:
            img, lab = img[:, ::-1], lab[:, ::-1]
        return to_blob(img, self.mean)[None], lab[None, None].astype(np.float32)

    def next(self):
        if self.pos == len(self.order):
            self.pos = 0
            if self.shuffle:
                self.order = self.rng.permutation(len(self.entries))
        e = self.entries[self.order[self.pos]]
        self.pos += 1
        return self.load(e, self.mirror and bool(self.rng.randint(2)))


class DetBatcher(object):
    def __init__(self, index, proposals="toy", scale=600, max_size=1000, rois_per_image=64, fg_fraction=0.25,
                 mirror=True, seed=0, mean=MEAN_BGR):
        self.classes, self.entries = voc.read_index(index)
        if not self.entries:
            raise voc.VOCError("index '%s' lists no images" % index)
        self.proposals = proposals
        if proposals != "toy":
            try:
                self.props = dict(np.load(proposals))
            except (OSError, ValueError) as e:
                raise voc.VOCError("proposals '%s' cannot be read (%s); write them with data_prep/voc.py "
                                   "--proposals" % (proposals, e))
        self.scale, self.max_size, self.rpi, self.fgf = scale, max_size, rois_per_image, fg_fraction
        self.mirror, self.mean, self.seed = mirror, mean, seed
        self.rng = np.random.RandomState(seed)
        self.order, self.pos = self.rng.permutation(len(self.entries)), 0

    def gt(self, e, with_difficult=False):
        objs = [o for o in e["objects"] if with_difficult or not o.get("difficult", 0)]
        return (np.array([o["bbox"] for o in objs], np.float64).reshape(-1, 4),
                np.array([o["class"] for o in objs], np.int64))

    def image_proposals(self, e):
        if self.proposals == "toy":
            rng = np.random.RandomState([self.seed, _seed_of(e["id"])])
            return detection.toy_proposals(self.gt(e, True)[0], e["width"], e["height"], rng)
        if e["id"] not in self.props:
            raise voc.VOCError("proposals '%s' hold nothing for image '%s'" % (self.proposals, e["id"]))
        return np.asarray(self.props[e["id"]], np.float64).reshape(-1, 4)

    def scaled(self, e, flip=False):
        """(1 x 3 x h x w blob, scale factor) of an entry's image, optionally mirrored."""
        import cv2
        img = voc.load_image(e["image"])
        if flip:
            img = img[:, ::-1]
        h, w = img.shape[:2]
        s = float(self.scale) / min(h, w)
        if round(s * max(h, w)) > self.max_size:
            s = float(self.max_size) / max(h, w)
        img = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_LINEAR)
        return to_blob(img, self.mean)[None], s

    def next(self):
        if self.pos == len(self.order):
            self.order, self.pos = self.rng.permutation(len(self.entries)), 0
        e = self.entries[self.order[self.pos]]
        self.pos += 1
        flip = self.mirror and bool(self.rng.randint(2))
        blob, s = self.scaled(e, flip)
        gtb, gtc = self.gt(e)
        props = self.image_proposals(e)
        if flip:
            w = e["width"]
            gtb = np.stack([w - 1 - gtb[:, 2], gtb[:, 1], w - 1 - gtb[:, 0], gtb[:, 3]], 1) if len(gtb) else gtb
            props = np.stack([w - 1 - props[:, 2], props[:, 1], w - 1 - props[:, 0], props[:, 3]], 1)
        rois, labels, targets, weights = detection.sample_rois(props, gtb, gtc, len(self.classes), self.rng,
                                                               self.rpi, self.fgf)
        rois5 = np.hstack([np.zeros((len(rois), 1)), rois * s]).astype(np.float32)
        return blob, rois5, labels.astype(np.float32), targets.astype(np.float32), weights.astype(np.float32)
