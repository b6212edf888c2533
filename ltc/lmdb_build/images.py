"""One image file -> one Datum: read it safely, check its header, decode, resize, serialise.

What counts as a bad input (each is a skip reason, never a crash): missing file, broken
symlink, not a regular file, unreadable, empty file, header that no decoder accepts
(non-image, corrupt), JPEG with no end-of-image marker after its last scan (truncated;
libjpeg would fill the rest with grey), image whose header declares more than
``max_pixels`` pixels (decompression-bomb guard, checked from the JPEG/PNG/GIF/BMP header
before decoding; other formats rely on OpenCV's own limit), image whose shorter side is
below ``min_side`` (tiny). Converted as OpenCV's ``IMREAD_COLOR`` does: grayscale -> 3 equal
channels, alpha dropped, palette expanded, 16-bit -> 8-bit (value >> 8), CMYK JPEG -> BGR,
EXIF orientation applied.

The two resize modes: ``warp`` (Caffe's ImageNet recipe: cv2.resize to SxS, INTER_LINEAR,
like ``convert_imageset``) and ``shorter-crop`` (shorter side to S, INTER_LINEAR, centre crop
SxS). Raw Datums are byte-identical to those of Caffe's ``convert_imageset`` for the same
decoded image (checked by the tests).
"""
import os
import stat
import struct

import cv2
import numpy as np

from ltc import lmdb_io

RESIZE_MODES = ("warp", "shorter-crop")
ENCODE_FORMATS = ("jpg", "png")


def header_size(data):
    """(width, height) from a JPEG/PNG/GIF/BMP header without decoding, else None."""
    b = bytes(data[:32]) if not isinstance(data, bytes) else data
    if b[:8] == b"\x89PNG\r\n\x1a\n" and len(b) >= 24 and b[12:16] == b"IHDR":
        return struct.unpack(">II", b[16:24])
    if b[:6] in (b"GIF87a", b"GIF89a") and len(b) >= 10:
        return struct.unpack("<HH", b[6:10])
    if b[:2] == b"BM" and len(b) >= 26:
        w, h = struct.unpack("<ii", b[18:26])
        return abs(w), abs(h)
    if b[:3] == b"\xff\xd8\xff":
        i, n = 2, len(data)
        while i + 9 < n:
            if data[i] != 0xFF:
                return None
            marker = data[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                i += 2
                continue
            seglen = (data[i + 2] << 8) | data[i + 3]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                h, w = struct.unpack(">HH", bytes(data[i + 5:i + 9]))
                return w, h
            if marker == 0xDA:
                return None
            i += 2 + seglen
    return None


def jpeg_truncated(data):
    """True if ``data`` is a JPEG with no end-of-image marker after its last scan."""
    if data[:3] != b"\xff\xd8\xff":
        return False
    sos = data.rfind(b"\xff\xda")
    if sos < 0:
        return True
    return data.find(b"\xff\xd9", sos) < 0


def resize_image(img, size=256, mode="warp"):
    """Resize an HxWx3 image to size x size.

    warp:          cv2.resize(img, (size, size), INTER_LINEAR), as convert_imageset does;
    shorter-crop:  scale so the shorter side is ``size`` (the longer side rounded to the
                   nearest pixel, INTER_LINEAR), then crop the centre size x size
                   (offset (long - size) // 2).
    """
    if mode == "warp":
        return cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
    if mode == "shorter-crop":
        h, w = img.shape[:2]
        if h <= w:
            nh, nw = size, max(size, int(round(w * size / float(h))))
        else:
            nh, nw = max(size, int(round(h * size / float(w)))), size
        if (nh, nw) != (h, w):
            img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
        y0, x0 = (nh - size) // 2, (nw - size) // 2
        return np.ascontiguousarray(img[y0:y0 + size, x0:x0 + size])
    raise ValueError("resize mode must be one of %s, got %r" % (", ".join(RESIZE_MODES), mode))


def read_file_checked(path):
    """(bytes, None) or (None, reason) for a path, without ever blocking on a FIFO."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return None, "broken symlink: points to '%s'" % os.readlink(path)
        return None, "missing file"
    except OSError as e:
        return None, "cannot stat: %s" % (e.strerror or e)
    if not stat.S_ISREG(st.st_mode):
        return None, "not a regular file"
    if st.st_size == 0:
        return None, "empty file"
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return None, "unreadable: %s" % (e.strerror or e)
    if not data:
        return None, "empty file"
    return data, None


def prepare_image(data, size=256, mode="warp", min_side=16, max_pixels=100_000_000):
    """File bytes -> (resized uint8 BGR image, None) or (None, skip reason)."""
    hw = header_size(data)
    if hw is not None:
        w, h = hw
        if w * h > max_pixels:
            return None, "huge: header says %dx%d = %.1f MPixel > --max-pixels %.1f MPixel" % (
                w, h, w * h / 1e6, max_pixels / 1e6)
    if jpeg_truncated(data):
        return None, "truncated: JPEG has no end-of-image marker after its last scan"
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as e:
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else "cv2.error"
        return None, "decode error: %s" % msg
    if img is None:
        return None, "undecodable: corrupt or not an image"
    h, w = img.shape[:2]
    if h * w > max_pixels:
        return None, "huge: %dx%d = %.1f MPixel > --max-pixels %.1f MPixel" % (w, h, w * h / 1e6, max_pixels / 1e6)
    if min(h, w) < min_side:
        return None, "tiny: %dx%d, shorter side < --min-side %d" % (w, h, min_side)
    return resize_image(img, size, mode), None


def encode_image(img, fmt="jpg", jpeg_quality=95):
    """HxWx3 uint8 BGR -> JPEG/PNG bytes (OpenCV)."""
    if fmt == "jpg":
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    elif fmt == "png":
        ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    else:
        raise ValueError("encode format must be one of %s, got %r" % (", ".join(ENCODE_FORMATS), fmt))
    if not ok:
        raise RuntimeError("cv2.imencode failed for format %s" % fmt)
    return buf.tobytes()


def make_datum_bytes(img, label, encoded=False, fmt="jpg", jpeg_quality=95):
    """Resized HxWx3 uint8 BGR image -> serialised Datum (raw CHW, or encoded JPEG/PNG bytes)."""
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError("make_datum_bytes wants HxWx3 uint8, got %s %s" % (img.dtype, img.shape))
    h, w = img.shape[:2]
    if encoded:
        return lmdb_io.image_datum_bytes(img, label, encode_image(img, fmt, jpeg_quality))
    return lmdb_io.image_datum_bytes(img, label)


def datum_into(buf, off, limit, img, label, encoded=False, fmt="jpg", jpeg_quality=95):
    """Serialise the Datum of ``img`` straight into ``buf[off:off + limit]``.

    Returns its length, or the Datum bytes themselves when they do not fit. Same bytes
    as ``make_datum_bytes``, without the two intermediate copies of the pixels.
    """
    h, w = img.shape[:2]
    payload = encode_image(img, fmt, jpeg_quality) if encoded else None
    n = len(payload) if encoded else 3 * h * w
    head, tail = lmdb_io.datum_head(3, h, w, n), lmdb_io.datum_tail(label, encoded)
    total = len(head) + n + len(tail)
    if total > limit:
        return make_datum_bytes(img, label, encoded, fmt, jpeg_quality)
    buf[off:off + len(head)] = head
    o = off + len(head)
    if encoded:
        buf[o:o + n] = payload
    else:
        lmdb_io.planar_into(img, np.ndarray((3, h, w), np.uint8, buffer=buf, offset=o))
    buf[o + n:o + n + len(tail)] = tail
    return total


def quiet_opencv():
    """Silence OpenCV's own warnings (we report every skipped file ourselves)."""
    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:  # pragma: no cover - old OpenCV
        pass
