"""The project's LMDB format: one Caffe ``Datum`` per image, read and written here.

Format (what ``tools/make_lmdb.py`` writes and the counting data layer reads):
  key    ``%08d_<relative path>`` (ASCII/UTF-8), like Caffe's ``convert_imageset``;
  value  a serialised ``caffe_pb2.Datum``:
         raw:     channels=3, height=H, width=W, ``data`` = uint8 bytes in C x H x W order, BGR;
         encoded: ``encoded=True``, ``data`` = the JPEG/PNG file bytes (decoded with OpenCV, BGR);
         ``label`` = class index, or the object count for the Fashion scenes (0 if none).

Only ``caffe.proto.caffe_pb2`` is needed (no Caffe net), so this module also runs in
worker processes.
"""
import os

import cv2
import lmdb
import numpy as np

try:  # importing caffe.proto only needs caffe/proto/caffe_pb2.py on the path
    from caffe.proto import caffe_pb2
except ImportError:  # pragma: no cover - without pycaffe nothing of this package runs
    caffe_pb2 = None


class LmdbError(ValueError):
    """The LMDB is missing, empty or holds something that is not an image Datum."""


def image_to_datum(img, label=0, encoded_bytes=None):
    """HxWx3 uint8 BGR image -> Datum (raw CHW), or wrap already-encoded bytes."""
    d = caffe_pb2.Datum()
    if encoded_bytes is not None:
        d.encoded = True
        d.data = bytes(encoded_bytes)
        if img is not None:
            d.height, d.width, d.channels = img.shape[0], img.shape[1], 3
    else:
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError("image_to_datum wants HxWx3 uint8, got %s %s" % (img.dtype, img.shape))
        d.channels, d.height, d.width = 3, img.shape[0], img.shape[1]
        d.data = np.ascontiguousarray(img.transpose(2, 0, 1)).tobytes()
    d.label = int(label)
    return d


def datum_to_image(value):
    """Serialised Datum bytes (or a Datum) -> (HxWx3 uint8 BGR image, label)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        d = caffe_pb2.Datum()
        d.ParseFromString(bytes(value))
    else:
        d = value
    if d.encoded:
        img = cv2.imdecode(np.frombuffer(d.data, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise LmdbError("encoded Datum could not be decoded")
        return img, d.label
    c, h, w = d.channels, d.height, d.width
    if c != 3 or len(d.data) != c * h * w:
        if d.float_data:
            raise LmdbError("Datum holds float_data; this project expects uint8 images")
        raise LmdbError("Datum is %dx%dx%d with %d data bytes; expected 3 channels of uint8"
                        % (c, h, w, len(d.data)))
    return np.frombuffer(d.data, np.uint8).reshape(c, h, w).transpose(1, 2, 0), d.label


def read_varint(buf, pos, end=None):
    """Decode one protobuf base-128 varint of ``buf`` at ``pos``; returns (value, next pos).

    Raises IndexError when it runs past ``end`` (default: the end of ``buf``) and ValueError
    on a varint longer than 64 bits. Used by the zero-copy Datum and caffemodel scanners.
    """
    if end is None:
        end = len(buf)
    result, shift = 0, 0
    while True:
        if pos >= end:
            raise IndexError("varint runs past byte %d" % end)
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def resolve_path(path, repo_root=None):
    """Resolve a path relative to the cwd, else relative to the repository root."""
    if os.path.isabs(path) or os.path.exists(path):
        return os.path.abspath(path)
    root = repo_root or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cand = os.path.join(root, path)
    return cand if os.path.exists(cand) else os.path.abspath(path)


def open_lmdb(path, who="LMDB"):
    """Open an LMDB read-only; raise LmdbError naming the path if missing or empty."""
    full = resolve_path(path)
    if not os.path.exists(full):
        raise LmdbError("%s: LMDB '%s' does not exist (looked in %s); build it with tools/make_lmdb.py "
                        "or the data_prep/ scripts" % (who, path, full))
    if not os.path.isfile(os.path.join(full, "data.mdb")):
        raise LmdbError("%s: '%s' is not an LMDB folder (no data.mdb inside)" % (who, full))
    env = lmdb.open(full, readonly=True, lock=False, readahead=False, meminit=False, max_readers=512)
    n = env.stat()["entries"]
    if n == 0:
        env.close()
        raise LmdbError("%s: LMDB '%s' is empty (0 entries)" % (who, full))
    return env


def read_keys(env):
    """All keys of an LMDB, in key order."""
    with env.begin() as txn:
        return [k for k, _ in txn.cursor()]


def iter_images(path, limit=None):
    """Yield (key, image, label) from an LMDB, in key order."""
    env = open_lmdb(path)
    try:
        with env.begin() as txn:
            for i, (k, v) in enumerate(txn.cursor()):
                if limit is not None and i >= limit:
                    break
                img, label = datum_to_image(v)
                yield k.decode("utf-8", "replace"), img, label
    finally:
        env.close()
