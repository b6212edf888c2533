"""Fashion-MNIST from Debian's package ``dataset-fashion-mnist`` (idx files), read without a download.

Used by data_prep/fashion_scenes.py (the counting testbed) and ltc/voc_toy.py (the toy VOC).
"""
import gzip
import os
import struct

import numpy as np

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
