"""The project's LMDB format: one Caffe ``Datum`` per image, read and written here.

Format (what ``tools/make_lmdb.py`` writes and the counting data layer reads):
  key    ``%08d_<relative path>`` (ASCII/UTF-8), like Caffe's ``convert_imageset``;
  value  a serialised ``caffe_pb2.Datum``:
         raw:     channels=3, height=H, width=W, ``data`` = uint8 bytes in C x H x W order, BGR;
         encoded: ``encoded=True``, ``data`` = the JPEG/PNG file bytes (decoded with OpenCV, BGR);
         ``label`` = class index, or the object count for the Fashion scenes (0 if none).

The Datum codec below is plain Python (no pycaffe), so this module also runs in worker
processes.
"""
import os
import struct

import cv2
import lmdb
import numpy as np

# Image files the folder readers accept (tools/make_lmdb.py, the analyses).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp",
                    ".gif", ".ppm", ".pgm", ".pbm", ".pnm")


class LmdbError(ValueError):
    """The LMDB is missing, empty or holds something that is not an image Datum."""


# ----------------------------------------------------------------------------- the Datum wire codec
# Datum fields: 1 channels, 2 height, 3 width, 4 data, 5 label, 6 float_data, 7 encoded.
# Written and scanned by hand (protobuf wire format, fields in number order as protobuf itself
# writes them), so LMDB workers need not import Caffe and raw pixels are read without a copy;
# the bytes equal ``Datum.SerializeToString()`` and convert_imageset's values.

def read_varint(buf, pos, end=None):
    """Decode one protobuf base-128 varint of ``buf`` at ``pos``; returns (value, next pos).

    Raises IndexError when it runs past ``end`` (default: the end of ``buf``) and ValueError
    on a varint longer than 64 bits.
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


def encode_varint(v):
    """The protobuf varint bytes of integer ``v`` (int32 negatives as 10-byte two's complement)."""
    if v < 0:
        v += 1 << 64
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def scan_fields(buf, start=0, end=None):
    """Yield (field number, wire type, value) of one protobuf message in ``buf[start:end]``, no copies.

    value: the integer of a varint field, (first, end) byte offsets of a length-delimited one,
    None for fixed 32/64-bit fields. Raises IndexError when a field runs past ``end`` (a
    truncated message) and ValueError on an impossible field (not a protobuf message).
    """
    if end is None:
        end = len(buf)
    pos = start
    while pos < end:
        field_start = pos
        key, pos = read_varint(buf, pos, end)
        field, wt = key >> 3, key & 7
        if field == 0:
            raise ValueError("field number 0 at byte %d" % field_start)
        if wt == 0:
            value, pos = read_varint(buf, pos, end)
            yield field, wt, value
        elif wt == 2:
            n, pos = read_varint(buf, pos, end)
            if pos + n > end:
                raise IndexError("field %d at byte %d claims %d bytes, only %d remain"
                                 % (field, field_start, n, end - pos))
            yield field, wt, (pos, pos + n)
            pos += n
        elif wt in (1, 5):
            pos += 8 if wt == 1 else 4
            if pos > end:
                raise IndexError("field %d at byte %d runs past the end" % (field, field_start))
            yield field, wt, None
        else:
            raise ValueError("wire type %d at byte %d" % (wt, field_start))


def datum_head(channels, height, width, n_data):
    """The Datum bytes before its ``data`` payload of ``n_data`` bytes."""
    return b"".join((b"\x08", encode_varint(channels), b"\x10", encode_varint(height),
                     b"\x18", encode_varint(width), b"\x22", encode_varint(n_data)))


def datum_tail(label, encoded):
    """The Datum bytes after its ``data`` payload."""
    return b"".join((b"\x28", encode_varint(int(label)), b"\x38", b"\x01" if encoded else b"\x00"))


def serialize_datum(channels, height, width, data, label, encoded):
    """The bytes of a Datum with channels, height, width, data, label and encoded set."""
    return b"".join((datum_head(channels, height, width, len(data)), data, datum_tail(label, encoded)))


def planar_into(img, out):
    """Copy an HxWx3 uint8 image into ``out`` (3xHxW uint8, C-contiguous planes), the layout of a
    raw Datum. cv2.split deinterleaves with SIMD, 4-5x faster than numpy's strided transpose copy
    (the per-image cost that matters in make_lmdb's workers)."""
    if img.flags.c_contiguous:
        cv2.split(img, [out[0], out[1], out[2]])
    else:
        out[...] = img.transpose(2, 0, 1)
    return out


def image_datum_bytes(img, label=0, encoded_bytes=None):
    """HxWx3 uint8 BGR image -> serialised Datum: raw CHW pixels, or ``encoded_bytes`` (a
    JPEG/PNG file of that image) with encoded=True."""
    if img is not None and (img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3):
        raise ValueError("a Datum image must be HxWx3 uint8, got %s %s" % (img.dtype, img.shape))
    if encoded_bytes is not None:
        h, w = img.shape[:2] if img is not None else (0, 0)
        return serialize_datum(3 if img is not None else 0, h, w, bytes(encoded_bytes), label, True)
    h, w = img.shape[:2]
    return serialize_datum(3, h, w, planar_into(img, np.empty((3, h, w), np.uint8)).tobytes(), label, False)


def image_to_datum(img, label=0, encoded_bytes=None):
    """image_datum_bytes as a caffe_pb2.Datum message (imports pycaffe; nothing else here does)."""
    from caffe.proto import caffe_pb2
    d = caffe_pb2.Datum()
    d.ParseFromString(image_datum_bytes(img, label, encoded_bytes))
    return d


def datum_fields(buf):
    """{field number: int, or (first, end) byte offsets} of a serialised Datum (no copies)."""
    return {field: value for field, _, value in scan_fields(buf)}


def datum_header(buf):
    """What a serialised Datum holds, without copying its ``data``: dict(channels, height, width,
    label, encoded, data_len, data_off, float_count) (data_off -1 without data; float_count from
    packed and unpacked float_data). Raises ValueError naming the fault on bytes that are not a
    protobuf message (a truncated one included)."""
    out = dict(channels=0, height=0, width=0, label=0, encoded=False, data_len=0, data_off=-1, float_count=0)
    names = {1: "channels", 2: "height", 3: "width", 5: "label", 7: "encoded"}
    try:
        for field, wt, value in scan_fields(buf):
            if wt == 0 and field in names:
                if field == 5 and value >= 1 << 63:
                    value -= 1 << 64
                out[names[field]] = bool(value) if field == 7 else value
            elif wt == 2 and field == 4:
                out["data_len"], out["data_off"] = value[1] - value[0], value[0]
            elif field == 6 and wt in (2, 5):   # packed, or one unpacked float
                out["float_count"] += (value[1] - value[0]) // 4 if wt == 2 else 1
    except (IndexError, ValueError) as e:
        raise ValueError("not a Datum (%s)" % e)
    return out


def decode_datum(value):
    """Serialised Datum bytes/buffer -> (3 x H x W uint8 BGR image, label).

    A raw Datum comes back as a zero-copy view of ``value`` (so with an LMDB buffer it is
    valid only inside the read transaction); an encoded one is decoded by OpenCV straight
    from the buffer. Raises LmdbError saying what is wrong.
    """
    try:
        f = datum_fields(value)
    except (IndexError, ValueError) as e:
        raise LmdbError("cannot parse the value as a Caffe Datum (%s)" % e)
    c, h, w, label = f.get(1, 0), f.get(2, 0), f.get(3, 0), f.get(5, 0)
    data = f.get(4, (0, 0))
    if not isinstance(data, tuple) or any(isinstance(f.get(k), tuple) for k in (1, 2, 3, 5, 7)):
        raise LmdbError("cannot parse the value as a Caffe Datum (a field has the wrong wire type)")
    if label >= 1 << 63:
        label -= 1 << 64
    first, end = data
    if f.get(7, 0):
        img = cv2.imdecode(np.frombuffer(value, np.uint8, count=end - first, offset=first), cv2.IMREAD_COLOR)
        if img is None:
            raise LmdbError("encoded Datum could not be decoded")
        return np.ascontiguousarray(img.transpose(2, 0, 1)), label
    if c != 3 or end - first != c * h * w or h == 0:
        if 6 in f:
            raise LmdbError("Datum holds float_data; this project expects uint8 images")
        raise LmdbError("Datum is %dx%dx%d with %d data bytes; expected 3 channels of uint8"
                        % (c, h, w, end - first))
    return np.frombuffer(value, np.uint8, count=end - first, offset=first).reshape(c, h, w), label


def datum_to_image(value):
    """Serialised Datum bytes (or a caffe_pb2.Datum) -> (HxWx3 uint8 BGR image, label)."""
    if not isinstance(value, (bytes, bytearray, memoryview)):
        value = value.SerializeToString()
    chw, label = decode_datum(value)
    return chw.transpose(1, 2, 0), label


def resolve_path(path, repo_root=None):
    """Resolve a path relative to the cwd, else relative to the repository root."""
    if os.path.isabs(path) or os.path.exists(path):
        return os.path.abspath(path)
    root = repo_root or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cand = os.path.join(root, path)
    return cand if os.path.exists(cand) else os.path.abspath(path)


# LMDB's meta pages (lmdb.h / mdb.c, 64-bit build): pages 0 and 1 each hold a 16-byte page header
# and then MDB_meta: mm_magic u32, mm_version u32, mm_address ptr, mm_mapsize size_t, mm_dbs[2]
# (48 bytes each; mm_dbs[0].md_pad holds the page size), mm_last_pg pgno_t, mm_txnid u64. The
# valid meta is the one with the larger txnid; the file must reach its last page.
LMDB_MAGIC = 0xBEEFC0DE
_META = struct.Struct("<IIQQI")           # magic, version, address, mapsize, dbs[0].md_pad (page size)
_META_OFF, _LAST_PG_OFF = 16, 16 + 120    # offsets inside a meta page


def check_data_file(data_file, who="LMDB"):
    """Check an LMDB's data.mdb before it is memory-mapped: a file shorter than the last page its
    meta page records (a cut copy, a full disk) would kill the reader with SIGBUS when a page past
    the end is touched. Raises LmdbError naming the file; returns (page size, pages used)."""
    try:
        size = os.path.getsize(data_file)
        with open(data_file, "rb") as f:
            head = f.read(2 * 65536)
    except OSError as e:
        raise LmdbError("%s: cannot read '%s': %s" % (who, data_file, e.strerror or e))
    if size == 0:
        raise LmdbError("%s: '%s' is empty (0 bytes): not an LMDB database" % (who, data_file))
    if len(head) < _META_OFF + _META.size:
        raise LmdbError("%s: '%s' is %d bytes, too short for an LMDB meta page: truncated or not an LMDB"
                        % (who, data_file, size))
    magic, version, _, _, psize = _META.unpack_from(head, _META_OFF)
    if magic != LMDB_MAGIC:
        raise LmdbError("%s: '%s' is not an LMDB database (no LMDB magic number in its first page)"
                        % (who, data_file))
    if psize < 512 or psize & (psize - 1) or psize > 65536:
        raise LmdbError("%s: '%s': its meta page records a page size of %d bytes: corrupt" % (who, data_file, psize))
    metas = []
    for page in (0, 1):
        off = page * psize
        if len(head) < off + _LAST_PG_OFF + 16:
            continue
        m = struct.unpack_from("<I", head, off + _META_OFF)[0]
        last_pg, txnid = struct.unpack_from("<QQ", head, off + _LAST_PG_OFF)
        if m == LMDB_MAGIC:
            metas.append((txnid, last_pg))
    if not metas:
        raise LmdbError("%s: '%s' is %d bytes, shorter than its two meta pages (%d bytes): truncated"
                        % (who, data_file, size, 2 * psize))
    txnid, last_pg = max(metas)
    need = (last_pg + 1) * psize
    if size < need:
        raise LmdbError("%s: '%s' is truncated: %d bytes, but its meta page records %d pages of %d bytes "
                        "(%d bytes); re-copy or rebuild it (tools/make_lmdb.py)"
                        % (who, data_file, size, last_pg + 1, psize, need))
    return psize, last_pg + 1


def open_lmdb(path, who="LMDB"):
    """Open an LMDB read-only; raise LmdbError naming the path if missing or empty."""
    full = resolve_path(path)
    if not os.path.exists(full):
        raise LmdbError("%s: LMDB '%s' does not exist (looked in %s); build it with tools/make_lmdb.py "
                        "or the data_prep/ scripts" % (who, path, full))
    if not os.path.isdir(full):
        raise LmdbError("%s: '%s' is a file, not an LMDB folder (a folder holding data.mdb)" % (who, full))
    if not os.path.isfile(os.path.join(full, "data.mdb")):
        raise LmdbError("%s: '%s' is not an LMDB folder (no data.mdb inside)" % (who, full))
    check_data_file(os.path.join(full, "data.mdb"), who)
    try:
        env = lmdb.open(full, readonly=True, lock=False, readahead=False, meminit=False, max_readers=512)
        n = env.stat()["entries"]
    except lmdb.Error as e:
        raise LmdbError("%s: '%s' cannot be opened as an LMDB: %s" % (who, full, e))
    if n == 0:
        env.close()
        raise LmdbError("%s: LMDB '%s' is empty (0 entries)" % (who, full))
    return env


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
