"""Building the project's image LMDBs: decode, resize, write safely, in parallel.

This is the engine behind ``tools/make_lmdb.py`` and the ``data_prep/`` scripts; the
format itself (Caffe ``Datum``, keys ``%08d_<path>``) is described in ``lmdb_io``.

Pieces (plain functions, testable without Caffe nets):
  ``collect_folder`` / ``read_list_file``  sources -> list of ``Entry``
  ``prepare_image``   file bytes -> (resized HxWx3 uint8 BGR image | skip reason)
  ``resize_image``    the two resize modes: ``warp`` (Caffe's ImageNet recipe:
                      cv2.resize to SxS, INTER_LINEAR, like ``convert_imageset``) and
                      ``shorter-crop`` (shorter side to S, INTER_LINEAR, centre crop SxS)
  ``SafeLmdbWriter``  builds in ``OUTPUT.partial-<pid>`` beside OUTPUT, batches
                      writes in transactions, doubles the map when full, renames into
                      place only when complete, removes the partial folder on failure
  ``build_lmdb``      the whole job: worker pool, ordered writes, progress bar,
                      skip report ``OUTPUT.skipped.tsv``, summary dict.

Parallelism: worker processes (spawned, so safe whatever threads this process runs)
read and decode the files themselves; each writes its serialised Datum into a slot
of a shared-memory buffer and sends back only the length, so the pipe carries
paths and small tuples, not pixels. The main process writes in key order, in
transactions of ``batch`` puts. A worker that dies (OOM kill, decoder crash, SIGBUS)
ends the build with an error naming it, its signal and the image it was on, instead
of a hang. The ring is sized to what /dev/shm can hold (fewer slots, else pipes, else
decoding in this process, each said). Resource faults: a free-space estimate refuses
a job that clearly will not fit, and a disk that fills anyway is a ``DiskFull`` error,
never a SIGBUS (see ``SafeLmdbWriter``). Raw Datums are byte-identical to those of
Caffe's ``convert_imageset`` for the same decoded image (checked by the tests).

What counts as a bad input (each is skipped with a reason, never a crash):
  missing file, broken symlink, not a regular file, unreadable, empty file,
  header that no decoder accepts (non-image, corrupt), JPEG with no end-of-image
  marker after its last scan (truncated; libjpeg would fill the rest with grey),
  image whose header declares more than ``max_pixels`` pixels (decompression-bomb
  guard, checked from the JPEG/PNG/GIF/BMP header before decoding; other formats rely
  on OpenCV's own limit), image whose shorter side is below ``min_side`` (tiny),
  duplicate path, list line with a bad label, path too long for an LMDB key.
Converted as OpenCV's ``IMREAD_COLOR`` does: grayscale -> 3 equal channels, alpha
dropped, palette expanded, 16-bit -> 8-bit (value >> 8), CMYK JPEG -> BGR, EXIF
orientation applied.
"""
import collections
import glob
import multiprocessing
import os
import shutil
import signal
import stat
import struct
import threading
import time

import cv2
import lmdb
import numpy as np

from ltc import cli_checks, lmdb_io, workers
from ltc.lmdb_io import IMAGE_EXTENSIONS
from ltc.workers import death_message, is_no_space, signal_name


RESIZE_MODES = ("warp", "shorter-crop")
ENCODE_FORMATS = ("jpg", "png")
MAX_KEY_BYTES = 511  # LMDB's default maximum key size
SMALL_JOB = 48  # fewer images than this are decoded in-process: starting workers costs ~1 s

Entry = collections.namedtuple("Entry", "key_path abs_path label reason")
Entry.__doc__ = ("One source image: key_path goes into the key, abs_path is read, label is the "
                 "Datum label, reason is a skip reason known before reading (else None).")


class BuildError(RuntimeError):
    """The build cannot go on. exit_code: 2 for bad input (arguments, an existing output, an
    unreadable list file; the default), 1 for a failure while building (a worker died)."""

    def __init__(self, message, exit_code=2):
        super().__init__(message)
        self.exit_code = exit_code


class DiskFull(BuildError):
    """The filesystem of OUTPUT is out of space, or will clearly be (the up-front estimate): a failure."""

    def __init__(self, message, exit_code=1):
        super().__init__(message, exit_code)


class WorkerDied(BuildError):
    """A decoding worker process ended without answering (a signal, the OOM killer, a crash): a failure."""

    def __init__(self, message, exit_code=1):
        super().__init__(message, exit_code)


class Interrupted(BaseException):
    """SIGTERM/SIGINT arrived; the build is abandoned and its partial folder removed."""

    def __init__(self, signum):
        BaseException.__init__(self, "interrupted by signal %d (%s)" % (signum, signal_name(signum)))
        self.signum = signum


# ----------------------------------------------------------------------------- sources

def run_cli(who, work, input_errors=(), failures=()):
    """Run a data_prep script's ``work()`` with the scripts' shared error handling; returns the
    exit status: 0 done, BuildError.exit_code (2 bad input, 1 failure), 2 for ``input_errors``,
    1 for ``failures``, 128 + the signal when interrupted (the partial LMDB is removed)."""
    import sys
    t0 = time.time()
    try:
        work()
    except BuildError as e:
        print("error: %s%s" % (e, "; " + e.cleanup if getattr(e, "cleanup", "") else ""), file=sys.stderr)
        return e.exit_code
    except tuple(input_errors) + tuple(failures) as e:
        print("error: %s" % e, file=sys.stderr)
        return 2 if isinstance(e, tuple(input_errors)) else 1
    except Interrupted as e:
        print("%s: %s; %s" % (who, e, getattr(e, "cleanup", "") or "no LMDB was being written"), file=sys.stderr)
        return 128 + e.signum
    print("done in %.1f s" % (time.time() - t0))
    return 0


def build_split(split, entries, out, args, shuffle, progress=None):
    """build_lmdb of one split with a data_prep script's shared options (add_build_args); prints
    the summary and returns it."""
    print("%s: %d images -> %s" % (split, len(entries), out))
    s = build_lmdb(entries, out, size=args.size, resize=args.resize, encoded=args.encoded, workers=args.workers,
                   shuffle=shuffle, seed=args.seed, overwrite=args.overwrite, force=args.force,
                   progress=not args.no_progress if progress is None else progress)
    print(format_summary(s))
    return s


def add_build_args(parser, seed_help="train shuffle seed"):
    """The LMDB-building options shared by the data_prep/ dataset scripts."""
    import os
    parser.add_argument("--size", type=cli_checks.int_range(1, 8192), default=256)
    parser.add_argument("--resize", choices=RESIZE_MODES, default="warp")
    parser.add_argument("--encoded", action="store_true", help="store JPEG bytes of the resized images")
    parser.add_argument("--seed", type=cli_checks.int_range(0, 2 ** 32 - 1), default=0, help=seed_help)
    parser.add_argument("--workers", type=cli_checks.workers_int, default=min(os.cpu_count() or 1,
                                                                              cli_checks.MAX_WORKERS),
                        help="decoding processes (0: in this process; at most %d)" % cli_checks.MAX_WORKERS)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--force", action="store_true",
                        help="build even when the free-space estimate says the database will not fit")
    parser.add_argument("--no-progress", action="store_true")


def _is_image_name(name):
    return name.lower().endswith(IMAGE_EXTENSIONS)


def collect_folder(folder, label=0):
    """All image files under ``folder`` (recursive, sorted by relative path).

    Broken symlinks with an image extension are kept (the build reports them).
    Key paths are relative to ``folder`` with '/' separators.
    """
    folder = os.path.abspath(folder)
    if not os.path.isdir(folder):
        raise BuildError("source folder '%s' does not exist or is not a folder" % folder)
    rels = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames.sort()
        for name in filenames:
            if _is_image_name(name):
                rels.append(os.path.relpath(os.path.join(dirpath, name), folder).replace(os.sep, "/"))
    rels.sort()
    return [Entry(r, os.path.join(folder, r), int(label), None) for r in rels]


INT32_MIN, INT32_MAX = -2 ** 31, 2 ** 31 - 1  # the Datum's label is an int32


def read_list_file(list_path, root=""):
    """Entries of a ``convert_imageset`` list file: ``path [label]`` per line.

    As in convert_imageset the label is after the last space (so paths may hold
    spaces; a tab is part of the path, as there); a line without an integer there is read
    as a path with label 0.
    Relative paths are joined to ``root`` (default: the list file's folder). Blank
    lines and lines starting with '#' are ignored. Duplicate paths (same normalised
    absolute path) and lines whose label is not an integer are kept as entries with a
    skip reason, so they are reported.
    """
    if not os.path.isfile(list_path):
        raise BuildError("list file '%s' does not exist" % list_path)
    root = os.path.abspath(root) if root else os.path.dirname(os.path.abspath(list_path))
    entries, first_line = [], {}
    try:
        with open(list_path, "r", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as e:
        raise BuildError("list file '%s' is not UTF-8 text (%s)" % (list_path, e))
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        path, label, reason = line, 0, None
        if " " in line:
            head, tail = line.rsplit(" ", 1)
            if _looks_like_int(tail):
                path, label = head.rstrip(), int(tail)
                if not INT32_MIN <= label <= INT32_MAX:
                    reason = "bad label: list line %d, %s does not fit the Datum's int32 label" % (lineno, tail)
            elif not os.path.exists(os.path.join(root, line)) and _is_image_name(head.rstrip()):
                path = head.rstrip()
                reason = "bad label: list line %d, '%s' is not an integer" % (lineno, tail)
        full = os.path.normpath(os.path.join(root, path))
        if reason is None and "\t" in path and not os.path.lexists(full):
            reason = ("bad list line %d: a tab in %r, which is no such file (the label follows the "
                      "path after a space)" % (lineno, path))
        if reason is None and full in first_line:
            reason = "duplicate: same path as list line %d" % first_line[full]
        first_line.setdefault(full, lineno)
        entries.append(Entry(path, full, label, reason))
    return entries


def _looks_like_int(s):
    try:
        int(s)
        return True
    except ValueError:
        return False


# ----------------------------------------------------------------------------- decoding

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


# ----------------------------------------------------------------------------- workers

_CFG = {}


def quiet_opencv():
    """Silence OpenCV's own warnings (we report every skipped file ourselves)."""
    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:  # pragma: no cover - old OpenCV
        pass


def _worker_init(cfg, parent_pid):
    if not workers.start_worker(parent_pid, signal.SIGKILL):  # the parent handles Ctrl-C; gone already?
        os._exit(1)
    cv2.setNumThreads(1)
    quiet_opencv()
    _CFG.clear()
    _CFG.update(cfg)
    _CFG["parent_pid"] = parent_pid


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


_SHM = []
_STATUS = []


def _status_table():
    """This worker's view of the pool's status table (rows: pid, task number, 1 busy / 2 done), or None."""
    name = _CFG.get("status_name")
    if not name:
        return None
    if not _STATUS:
        from multiprocessing import shared_memory
        shm = shared_memory.SharedMemory(name=name)
        _STATUS.append((shm, np.ndarray((_CFG["nslots"], 3), np.int64, buffer=shm.buf)))
    return _STATUS[0][1]


def process_chunk(tasks):
    """process_entry over a list of tasks (one pool message per chunk).

    Each task's row of the status table says which process works on it and whether it
    is done, so that a worker killed mid-image is reported with that image.
    """
    table = _status_table()
    out = []
    pid = os.getpid()
    for t in tasks:
        if table is not None:
            row = table[t[0] % _CFG["nslots"]]
            row[2] = 0
            row[1] = t[0]
            row[0] = pid
            row[2] = 1
        out.append(process_entry(t))
        if table is not None:
            row[2] = 2
    return out


def process_entry(task, cfg=None):
    """(slot, index, abs_path, label) -> (index, value, skip reason or None, bytes read).

    value: None (skipped), the Datum bytes, or -- when the pool shares a slot buffer
    (cfg["shm_name"]) -- the Datum's length in slot ``slot % nslots`` of that buffer,
    so the pixels do not travel through a pipe.
    """
    cfg = cfg or _CFG
    if "parent_pid" in cfg and not workers.parent_alive(cfg["parent_pid"]):
        os._exit(1)
    slot, idx, path, label = task
    if cfg.get("delay"):
        time.sleep(cfg["delay"])
    data, reason = read_file_checked(path)
    if data is None:
        return idx, None, reason, 0
    img, reason = prepare_image(data, cfg["size"], cfg["resize"], cfg["min_side"], cfg["max_pixels"])
    if img is None:
        return idx, None, reason, len(data)
    if cfg.get("shm_name"):
        if not _SHM:
            from multiprocessing import shared_memory
            _SHM.append(shared_memory.SharedMemory(name=cfg["shm_name"]))
        size = cfg["slot_size"]
        value = datum_into(_SHM[0].buf, (slot % cfg["nslots"]) * size, size, img, label, cfg["encoded"],
                           cfg["encode_format"], cfg["jpeg_quality"])
        return idx, value, None, len(data)
    return idx, make_datum_bytes(img, label, cfg["encoded"], cfg["encode_format"], cfg["jpeg_quality"]), None, len(data)


# ----------------------------------------------------------------------------- writing

def remove_stale_partials(output, log=print):
    """Remove ``OUTPUT.partial-<pid>`` folders whose process is gone (a killed build)."""
    for p in glob.glob(glob.escape(output) + ".partial-*"):
        tail = p.rsplit(".partial-", 1)[1]
        if tail.isdigit() and int(tail) != os.getpid() and not workers.pid_alive(int(tail)):
            log("removing stale partial build %s (its process %s is gone)" % (p, tail))
            shutil.rmtree(p, ignore_errors=True)


def free_bytes(path):
    """Bytes an unprivileged process may still write on the filesystem of ``path`` (statvfs)."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _mb(n):
    return "%.1f MiB" % (n / float(1 << 20))


PAGE_BYTES = 4096      # LMDB's page size (the OS page size) for the estimate; the writer asks env.stat()
LOCK_BYTES = 8192      # lock.mdb for LMDB's default 126 readers


def lmdb_bytes_per_entry(value_bytes, key_bytes, psize=PAGE_BYTES):
    """Bytes one entry takes in an append-built LMDB: overflow pages for a large value
    (a page header of 16 bytes, whole pages), else the value in the leaf; plus its leaf node."""
    node = 8 + key_bytes + 2  # node header, key, index slot in the leaf page
    if value_bytes + node > (psize - 16) // 2:
        return -(-(value_bytes + 16) // psize) * psize + node + 8
    return node + value_bytes


def _make_space_message(output, written, total, db_bytes, need, free_start, free_now, why):
    return ("disk full: the filesystem of OUTPUT '%s' ran out of space (%s) after %d of %d images were written "
            "(%s in the partial database); the database needs about %s, %s were free when the build started "
            "and %s are free now" % (output, why, written, total, _mb(db_bytes), _mb(need), _mb(free_start),
                                     _mb(free_now)))


def check_replaceable(output, overwrite):
    """BuildError unless ``output`` is free, or is an LMDB (a folder of data.mdb and lock.mdb only)
    and ``overwrite`` is set: --overwrite never replaces a file or a folder a user put there."""
    if not os.path.lexists(output):
        return
    if cli_checks.is_replaceable_lmdb(output):
        if not overwrite:
            raise BuildError("output '%s' already exists (an LMDB); pass --overwrite to replace it" % output)
        return
    raise BuildError("output '%s' already exists and is %s, not an LMDB (a folder holding only data.mdb "
                     "and lock.mdb); --overwrite replaces only an LMDB, so choose another output"
                     % (output, cli_checks.describe_existing(output)))


def check_outputs(outputs, overwrite, sources=()):
    """The data_prep scripts' door check, before any work: every output LMDB is free or (with
    ``overwrite``) an LMDB, none equals, contains or lies inside a source folder, and each one's
    folder can be written. Raises BuildError (exit 2) naming the path."""
    for out in outputs:
        out = os.path.abspath(out.rstrip("/") or out)
        try:
            for src in sources:
                if src and os.path.exists(src):
                    cli_checks.refuse_nested(src, out, what_in="source", what_out="output")
            cli_checks.writable_dir(os.path.dirname(out), "the folder of output '%s'" % out)
        except cli_checks.PathError as e:
            raise BuildError(str(e))
        check_replaceable(out, overwrite)


class SafeLmdbWriter(object):
    """Write an LMDB at ``output`` all-or-nothing.

    The database is built in ``output + '.partial-<pid>'`` (same folder, so the final
    rename is atomic on one filesystem); ``finish()`` renames it into place, ``abort()``
    (also called when a ``with`` block raises) removes it. A folder left behind by a
    SIGKILL keeps its ``.partial-<pid>`` name, so it is never taken for the output; the
    next build for the same OUTPUT removes it.
    Writes are buffered and committed every ``batch`` puts; when LMDB reports the map
    full the transaction is retried after ``set_mapsize`` doubles the map.

    Disk full: with writemap LMDB writes into memory-mapped pages of a sparse file, and a
    page the filesystem cannot back kills the process with SIGBUS. So before each
    transaction the pages it can touch are reserved with posix_fallocate (lock.mdb before
    LMDB opens it); a filesystem that cannot reserve them gets writemap=False. A full disk
    therefore shows up as ENOSPC from posix_fallocate (writemap) or as an LMDB write
    error (no writemap), and both raise ``DiskFull`` naming the output, how much was
    written, and the space needed against the space free; ``total`` (entries) and
    ``need_bytes`` describe the whole job for that message.
    """

    def __init__(self, output, overwrite=False, map_size=1 << 30, batch=1000, log=print, writemap=True,
                 total=None, need_bytes=None):
        self.output = os.path.abspath(output.rstrip("/") or output)
        self.overwrite = overwrite
        self.batch = max(1, int(batch))
        self.log = log
        self.env = None
        self.done = True          # nothing to clean up until the partial folder exists
        self.cleanup = ""
        self.pending = []
        self.count = 0
        self.grows = 0
        self.last_key = b""
        self.reserved = 0         # bytes of data.mdb known to be backed by the filesystem
        self.writemap = bool(writemap)
        self.total, self.need = total, need_bytes  # the whole job, for the disk-full message
        parent = os.path.dirname(self.output)
        if not os.path.isdir(parent):
            os.makedirs(parent, exist_ok=True)
        check_replaceable(self.output, overwrite)
        remove_stale_partials(self.output, log)
        self.free_start = free_bytes(parent)
        self.partial = "%s.partial-%d" % (self.output, os.getpid())
        if os.path.lexists(self.partial):
            shutil.rmtree(self.partial)
        self.map_size = int(max(1 << 20, map_size))
        self.done = False
        try:
            os.makedirs(self.partial)
            # lock.mdb is memory-mapped too: back its pages before LMDB touches them (this
            # also finds out whether the filesystem can reserve pages at all)
            can_reserve = self._can_reserve(os.path.join(self.partial, "lock.mdb"))
            if writemap and can_reserve is not True:
                self.log("the filesystem of %s cannot reserve pages (posix_fallocate: %s); writing without "
                         "writemap, so that a full disk is an error and not a SIGBUS" % (self.partial, can_reserve))
            writemap = bool(writemap) and can_reserve is True
            # writemap: pages are written straight into the map (about 2x faster puts of large
            # values); the file is then a sparse file as large as the map while building, and
            # finish() trims it to the used pages. writemap=False for filesystems without sparse files.
            self.writemap = writemap
            self.env = lmdb.open(self.partial, map_size=self.map_size, subdir=True, meminit=False,
                                 writemap=writemap, map_async=True, sync=False, metasync=False)
            self.psize = self.env.stat()["psize"]
            self.data_file = os.path.join(self.partial, "data.mdb")
        except BaseException as e:
            note = self.abort()
            if isinstance(e, (OSError, lmdb.Error)):
                err = self._space_error(e, doing="creating the partial database") or BuildError(
                    "cannot create the partial database %s: %s" % (self.partial, e), exit_code=1)
                err.cleanup = note
                raise err
            e.cleanup = note
            raise

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if not self.done:
            self.abort()
        return False

    def put(self, key, value):
        if isinstance(key, str):
            key = key.encode("utf-8")
        if len(key) > MAX_KEY_BYTES:
            raise BuildError("key longer than %d bytes: %r" % (MAX_KEY_BYTES, key[:60]))
        self.pending.append((key, value))
        if len(self.pending) >= self.batch:
            self.flush()

    def flush(self):
        while self.pending:
            try:
                if self.writemap:
                    try:
                        self._reserve_txn(self.pending)
                    except OSError as e:
                        raise self._space_error(e, self.pending, "reserving pages for the next transaction") or \
                            BuildError("reserving pages in the partial database %s failed: %s" % (self.partial, e),
                                       exit_code=1)
                with self.env.begin(write=True) as txn:
                    for k, v in self.pending:
                        ok = txn.put(k, v, append=k > self.last_key, overwrite=False)
                        if not ok:
                            raise BuildError("duplicate key %r" % k)
                        if k > self.last_key:
                            self.last_key = k
            except lmdb.MapFullError:
                self.last_key = self._max_key()
                self.map_size *= 2
                self.grows += 1
                self.env.set_mapsize(self.map_size)
                continue
            except (OSError, lmdb.Error) as e:
                raise self._space_error(e, pending=self.pending) or BuildError(
                    "writing the partial database %s failed: %s" % (self.partial, e), exit_code=1)
            self.count += len(self.pending)
            self.pending = []

    def _max_key(self):
        with self.env.begin() as txn:
            cur = txn.cursor()
            return cur.key() if cur.last() else b""

    # -- disk space
    @staticmethod
    def _reserve_file(path, nbytes):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.posix_fallocate(fd, 0, nbytes)
        finally:
            os.close(fd)

    def _can_reserve(self, path):
        """Reserve LOCK_BYTES of ``path``: True, or the reason (a string) why this filesystem cannot."""
        try:
            self._reserve_file(path, LOCK_BYTES)
            return True
        except OSError as e:
            if is_no_space(e):
                raise
            return e.strerror or str(e)

    def _used_bytes(self):
        return (self.env.info()["last_pgno"] + 1) * self.psize

    def _reserve_txn(self, pending):
        """posix_fallocate the pages a transaction of ``pending`` can add to data.mdb.

        Upper bound on new pages: each large value's overflow pages, twice the leaf pages
        the small entries fill, the copied root-to-leaf path, free-list pages (64), and one
        page per 8 puts for splits. Capped at the map size (LMDB touches nothing past it).
        """
        ps = self.psize
        over, small = 0, 0
        for k, v in pending:
            node = 8 + len(k) + 2
            if len(v) + node > (ps - 16) // 2:
                over += -(-(len(v) + 16) // ps)
                small += node + 8
            else:
                small += node + len(v)
        pages = over + 2 * -(-small // ps) + 64 + len(pending) // 8
        end = min(self.map_size, self._used_bytes() + pages * ps)
        if end > self.reserved:
            fd = os.open(self.data_file, os.O_RDWR)
            try:
                os.posix_fallocate(fd, self.reserved, end - self.reserved)
            finally:
                os.close(fd)
            self.reserved = end

    def _db_bytes(self):
        try:
            return self._used_bytes() if self.env is not None else 0
        except lmdb.Error:
            return 0

    def _space_error(self, exc, pending=(), doing=""):
        """DiskFull for ``exc`` if it means the filesystem is full, else None."""
        parent = os.path.dirname(self.output)
        try:
            free_now = free_bytes(parent)
        except OSError:
            free_now = 0
        pending_bytes = sum(len(v) for _, v in pending)
        # without writemap a full disk surfaces as a short write, which LMDB reports as EIO
        if not (is_no_space(exc) or "No space left" in str(exc) or
                (isinstance(exc, lmdb.Error) and free_now < pending_bytes + (1 << 20))):
            return None
        written = self.count
        db = self._db_bytes()
        total = self.total if self.total is not None else written + len(pending)
        need = self.need or 0
        if written:
            need = max(need, int(db / written * total))
        why = getattr(exc, "strerror", None) or str(exc)
        if isinstance(exc, lmdb.Error) and "No space left" not in why:
            why += ", a write cut short by the full disk"
        if doing:
            why = "%s: %s" % (doing, why)
        return DiskFull(_make_space_message(self.output, written, total, db, need, self.free_start, free_now,
                                            why))

    def finish(self):
        """Commit, sync, close and rename into place; returns the final path."""
        self.flush()
        try:
            self.env.sync(True)
            used = self._used_bytes()
            self.env.close()
            data_file = os.path.join(self.partial, "data.mdb")
            if os.path.getsize(data_file) > used:
                # pages past last_pgno are unused: the file is then what a writer without
                # writemap leaves (smaller than the map size recorded in the meta page)
                os.truncate(data_file, used)
        except (OSError, lmdb.Error) as e:
            raise self._space_error(e, doing="finishing") or BuildError(
                "finishing the partial database %s failed: %s" % (self.partial, e), exit_code=1)
        old = None
        if os.path.lexists(self.output):
            if not self.overwrite or not cli_checks.is_replaceable_lmdb(self.output):
                self.abort()
                raise BuildError("output '%s' appeared while building (%s); not replacing it"
                                 % (self.output, cli_checks.describe_existing(self.output)))
            old = "%s.old-%d" % (self.output, os.getpid())
            os.rename(self.output, old)
        os.rename(self.partial, self.output)
        self.done = True
        if old:
            if os.path.isdir(old) and not os.path.islink(old):
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.remove(old)
        return self.output

    def abort(self):
        """Close and remove the partial folder; returns (and keeps in ``cleanup``) what was done."""
        try:
            if self.env is not None:
                self.env.close()
        except Exception:  # noqa: BLE001 - closing twice is harmless, we are cleaning up
            pass
        shutil.rmtree(self.partial, ignore_errors=True)
        self.done = True
        if os.path.lexists(self.partial):
            self.cleanup = "could NOT remove the partial database %s; remove it by hand" % self.partial
        else:
            self.cleanup = "removed the partial database %s" % self.partial
        return self.cleanup


class signals_raise(object):
    """Context manager: SIGTERM (and SIGINT) raise ``Interrupted`` in the main thread.

    With it, ``finally``/``with`` cleanup runs when the build is killed politely.
    """

    def __enter__(self):
        self.old = {}
        for s in (signal.SIGTERM, signal.SIGINT):
            try:
                self.old[s] = signal.signal(s, self._handler)
            except ValueError:  # not the main thread
                pass
        return self

    @staticmethod
    def _handler(signum, frame):
        raise Interrupted(signum)

    def hold(self):
        """Ignore further SIGTERM/SIGINT until ``__exit__``: cleanup must not be cut short."""
        for s in self.old:
            signal.signal(s, signal.SIG_IGN)

    def __exit__(self, *exc):
        for s, h in self.old.items():
            signal.signal(s, h)
        return False


def write_report(path, rows, header=("index", "path", "reason")):
    """Write a TSV report atomically (tmp file + rename)."""
    tmp = "%s.tmp-%d" % (path, os.getpid())
    try:
        with open(tmp, "w", encoding="utf-8", errors="surrogateescape") as f:  # non-UTF-8 names as on disk
            f.write("\t".join(header) + "\n")
            for row in rows:
                f.write("\t".join(str(c).replace("\t", " ").replace("\n", " ") for c in row) + "\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.remove(tmp)
        raise


def folder_bytes(path):
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(dirpath, f))
    return total


# ----------------------------------------------------------------------------- the build

def _shm_create(nbytes):
    """A shared-memory block of ``nbytes`` whose pages are all backed now (posix_fallocate).

    A sparse block on a small /dev/shm kills the first worker that writes past the free
    space with SIGBUS; reserving it here turns that into an OSError (ENOSPC) up front.
    """
    from multiprocessing import shared_memory
    shm = shared_memory.SharedMemory(create=True, size=nbytes)
    try:
        fd = getattr(shm, "_fd", -1)
        if fd >= 0:
            os.posix_fallocate(fd, 0, nbytes)
    except BaseException:
        shm.close()
        shm.unlink()
        raise
    return shm


def _shm_free():
    try:
        return free_bytes("/dev/shm")
    except OSError:
        return None


def _open_ring(workers, chunksize, slot_size, log):
    """(shared memory or None, nslots, chunksize): the worker ring sized to what /dev/shm holds.

    The ring wants max(64, 4 x workers x chunksize) slots; it takes at most half of the
    free /dev/shm (the rest is for semaphores and everyone else), with fewer slots and
    smaller chunks when it must, and no ring at all (Datums come back through the pool's
    pipes) below 2 slots per worker. Every fallback is logged.
    """
    want = max(64, 4 * workers * chunksize)
    free = _shm_free()
    n = want if free is None else min(want, (free // 2) // slot_size)
    least = 2 * workers
    shm, why = None, ""
    while n >= least:
        try:
            shm = _shm_create(n * slot_size)
            break
        except OSError as e:
            why = e.strerror or str(e)
            if not is_no_space(e):
                break
            n //= 2
    free_txt = "%s free" % _mb(free) if free is not None else "unknown free space"
    if shm is None:
        log("shared memory: /dev/shm has %s, too little for a ring of %d image slots (%s; the ring takes at most "
            "half the free space)%s; sending the images through the pool's pipes instead"
            % (free_txt, least, _mb(least * slot_size), ": %s" % why if why else ""))
        return None, want, chunksize
    if n < want:
        chunksize = max(1, min(chunksize, n // (4 * workers)))
        log("shared memory: /dev/shm has %s, too little for a ring of %d image slots (%s; the ring takes at most "
            "half the free space); using %d slots (%s), %d image(s) per chunk"
            % (free_txt, want, _mb(want * slot_size), n, _mb(n * slot_size), chunksize))
    return shm, n, chunksize


def _pool_pids(pool):
    return [p.pid for p in list(pool._pool)]


def _end_pool(pool, graceful, wait_s=10.0):
    """Stop a pool without ever hanging.

    Pool.join()/terminate() wait for the locks of the task queues; a worker killed while
    holding one never releases it, so they run in a daemon thread, and workers still
    alive after ``wait_s`` are killed (the pool is abandoned; nothing of it is needed).
    """
    procs = list(pool._pool)

    def stop():
        if graceful:
            pool.close()
            pool.join()
        else:
            pool.terminate()
            pool.join()
    t = threading.Thread(target=stop, daemon=True, name="lmdb_build-pool-stop")
    t.start()
    t.join(wait_s)
    if t.is_alive():
        for p in procs + list(pool._pool):
            try:
                p.kill()
            except (OSError, ValueError, AttributeError):
                pass
        t.join(wait_s)
    return not t.is_alive()


def _watch_workers(pool, it, n, describe, poll=1.0):
    """Yield the n results of the imap iterator ``it``; raise WorkerDied if a worker dies meanwhile.

    multiprocessing.Pool silently replaces a dead worker and loses its tasks, so a
    plain loop over imap would wait forever after a crash or an OOM kill. Every
    ``poll`` seconds without a result the original workers are checked; the error
    names the worker, how it died and (``describe(pid)``) the image it was on.
    """
    procs = list(pool._pool)
    pids = set(p.pid for p in procs)
    for _ in range(n):
        while True:
            try:
                value = it.next(timeout=poll)
                break
            except multiprocessing.TimeoutError:
                for w, p in enumerate(procs):
                    code = p.exitcode
                    if code is not None:
                        raise WorkerDied(death_message(
                            "a worker process died", "decoding worker %d of %d (pid %d)" % (w + 1, len(procs), p.pid),
                            code, describe(p.pid)))
                if set(_pool_pids(pool)) != pids:
                    raise WorkerDied("a worker process died and was replaced by the pool; its images are lost")
        yield value


def estimate_db_bytes(tasks, keys, cfg):
    """(bytes, how) that the database of ``tasks`` will take, or (None, why not).

    Raw Datums have a known size; for ``encoded`` up to 8 evenly spaced images are
    decoded and encoded here and their average is used. Skipped images are not foreseen,
    so this is an upper bound for raw Datums.
    """
    if not tasks:
        return 0, "no images"
    key_bytes = sum(len(keys[t[1]]) for t in tasks) / float(len(tasks))
    if not cfg["encoded"]:
        s = cfg["size"]
        value = len(lmdb_io.serialize_datum(3, s, s, b"", 2 ** 31 - 1, False)) + 3 * s * s
        what = "raw 3x%dx%d Datums" % (s, s)
    else:
        quiet_opencv()
        sample = tasks[::max(1, len(tasks) // 8)][:8]
        c = dict(cfg, delay=0.0)
        sizes = [len(r[1]) for r in (process_entry(t, c) for t in sample) if r[1] is not None]
        if not sizes:
            return None, "none of the %d sampled images could be read" % len(sample)
        value = sum(sizes) / float(len(sizes))
        what = "the average encoded Datum of %d sampled images" % len(sizes)
    per = lmdb_bytes_per_entry(int(value), int(round(key_bytes)))
    total = int(len(tasks) * per * 1.01) + 4 * PAGE_BYTES + LOCK_BYTES   # 1%: branch pages
    return total, "%d images x %.1f KiB, %s" % (len(tasks), per / 1024.0, what)


def check_space(output, need, how, sampled, log=print):
    """Refuse (DiskFull) when the database clearly will not fit beside OUTPUT.

    Clearly: the estimate is above the free space, or for a sampled (encoded) estimate
    more than 25% above it. Returns the free bytes.
    """
    parent = os.path.dirname(output)
    probe = parent
    while not os.path.isdir(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    free = free_bytes(probe)
    if need is not None and (need * (0.8 if sampled else 1.0)) > free:
        raise DiskFull("not enough space for OUTPUT '%s': the database needs about %s (%s) and its filesystem has "
                       "%s free; nothing was written. Free some space, choose another OUTPUT, or pass --force to "
                       "try anyway" % (output, _mb(need), how, _mb(free)))
    return free


def build_lmdb(entries, output, size=256, resize="warp", encoded=False, encode_format="jpg",
               jpeg_quality=95, workers=None, shuffle=False, seed=0, overwrite=False, min_side=16,
               max_pixels=100_000_000, batch=1000, initial_map_bytes=None, delay=0.0, progress=True,
               log=print, chunksize=8, start_method="spawn", small_job=SMALL_JOB, writemap=True, force=False):
    """Build ``output`` from ``entries``; returns a summary dict.

    Keys are ``%08d_<key_path>`` with the index in the (optionally shuffled, with
    ``seed``) entry order; skipped entries keep their index, as in convert_imageset.
    ``workers``: None = all cores, 0 = decode in this process, n = n worker processes
    (started with ``start_method``; spawn is safe after OpenCV used threads here).
    Jobs of fewer than ``small_job`` images are decoded in this process. As with any
    spawned pool, a script that calls this must guard its entry point with
    ``if __name__ == "__main__":`` (the workers import the main module).
    Skipped entries are written to ``output + '.skipped.tsv'``. Raises BuildError if
    nothing could be written (no database is created then), DiskFull when the
    database will not fit (up front, from ``estimate_db_bytes``, unless ``force``) or
    did not fit, WorkerDied when a worker process dies. Every exception leaving here has
    a ``cleanup`` attribute saying what was removed.
    """
    from tqdm import tqdm

    if resize not in RESIZE_MODES:
        raise BuildError("--resize must be one of %s" % ", ".join(RESIZE_MODES))
    if encode_format not in ENCODE_FORMATS:
        raise BuildError("--encode-format must be one of %s" % ", ".join(ENCODE_FORMATS))
    if size < 1 or min_side < 1 or max_pixels < 1:
        raise BuildError("size, min-side and max-pixels must be positive")
    output = os.path.abspath(output.rstrip("/") or output)
    check_replaceable(output, overwrite)  # before any work: never replace what is not an LMDB
    entries = list(entries)
    if shuffle:
        order = np.random.RandomState(seed).permutation(len(entries))
        entries = [entries[i] for i in order]
    report_path = output + ".skipped.tsv"
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    cfg = dict(size=int(size), resize=resize, encoded=bool(encoded), encode_format=encode_format,
               jpeg_quality=int(jpeg_quality), min_side=int(min_side), max_pixels=int(max_pixels),
               delay=float(delay))

    keys, skipped, tasks = {}, [], []
    for i, e in enumerate(entries):
        key = b"%08d_" % i + os.fsencode(e.key_path)  # bytes as named on disk, UTF-8 or not
        if e.reason:
            skipped.append((i, e.key_path, e.reason))
        elif len(key) > MAX_KEY_BYTES:
            skipped.append((i, e.key_path, "key too long: %d bytes > %d for an LMDB key" % (len(key), MAX_KEY_BYTES)))
        else:
            keys[i] = key
            tasks.append((len(tasks), i, e.abs_path, e.label))

    need, how = estimate_db_bytes(tasks, keys, cfg)
    if not force and not (os.path.lexists(output) and not overwrite):  # an existing OUTPUT is reported below
        remove_stale_partials(output, log)  # a killed build's leftovers are not in the way
        check_space(output, need, how, sampled=bool(encoded), log=log)
    per_item = size * size * 3 + 256 if not encoded else size * size + 4096
    map_bytes = initial_map_bytes or int(max(64 << 20, len(tasks) * per_item * 1.25))
    t0 = time.time()
    bytes_read = 0
    pool = shm = status = None
    nslots = 1
    stop = threading.Event()
    with signals_raise() as sig:
        writer = SafeLmdbWriter(output, overwrite=overwrite, map_size=map_bytes, batch=batch, log=log,
                                writemap=writemap, total=len(tasks), need_bytes=need)
        try:
            if workers > 0 and len(tasks) < small_job:
                workers = 0
            if workers > 0:
                # Workers write each Datum into a slot of a shared buffer and send back only
                # its length; the feeder below hands out task j only once the result of task
                # j - nslots (the slot's previous user) has been written.
                chunksize = max(1, int(chunksize))
                slot_size = 3 * size * size + 64
                shm, nslots, chunksize = _open_ring(workers, chunksize, slot_size, log)
                free = threading.Semaphore(nslots)
                if shm is not None:
                    cfg.update(shm_name=shm.name, slot_size=slot_size)
                cfg.update(nslots=nslots)
                try:  # one row per slot: which worker works on which task (for a dead worker's message)
                    status = _shm_create(nslots * 3 * 8)
                    np.ndarray((nslots, 3), np.int64, buffer=status.buf)[...] = 0
                    cfg.update(status_name=status.name)
                except OSError:
                    status = None

                def feed():  # chunks of tasks, each task waiting for a free slot
                    for c in range(0, len(tasks), chunksize):
                        chunk = tasks[c:c + chunksize]
                        for _ in chunk:
                            while not free.acquire(timeout=0.2):
                                if stop.is_set():
                                    return
                        yield chunk

                def describe(pid):  # the image a worker was on, from the status table
                    if status is None:
                        return ""
                    table = np.ndarray((nslots, 3), np.int64, buffer=status.buf)
                    busy = [int(r[1]) for r in table if r[0] == pid and r[2] == 1]
                    if not busy:
                        return "between images"
                    t = tasks[min(busy)]
                    return "decoding image %d '%s'" % (t[1], entries[t[1]].key_path)

                # spawn, not fork: a forked child inherits OpenCV's thread-pool locks in whatever
                # state the parent's threads left them and can deadlock in cv2.resize/imdecode
                ctx = multiprocessing.get_context(start_method)
                try:
                    pool = ctx.Pool(workers, initializer=_worker_init, initargs=(cfg, os.getpid()))
                except OSError as e:  # e.g. no room in /dev/shm for the pool's semaphores
                    log("cannot start worker processes (%s); decoding in this process instead" % (e.strerror or e))
                    pool, workers = None, 0
            if workers > 0:
                # imap over chunks with chunksize 1: its iterator then has next(timeout) (with
                # chunksize > 1 imap returns a plain generator), which _watch_workers needs
                chunks = _watch_workers(pool, pool.imap(process_chunk, feed(), chunksize=1),
                                        (len(tasks) + chunksize - 1) // chunksize, describe)
                results = (r for chunk in chunks for r in chunk)
            else:  # in-process
                quiet_opencv()
                cfg.pop("shm_name", None)
                cfg.pop("status_name", None)
                results = (process_entry(t, cfg) for t in tasks)
            bar = tqdm(total=len(tasks), unit="img", disable=not progress, dynamic_ncols=True,
                       smoothing=0.1, mininterval=0.5)
            with bar:
                for j, (idx, value, reason, nbytes) in enumerate(results):
                    bytes_read += nbytes
                    if value is None:
                        skipped.append((idx, entries[idx].key_path, reason))
                    elif isinstance(value, int):
                        off = (j % nslots) * slot_size
                        writer.put(keys[idx], bytes(shm.buf[off:off + value]))
                    else:
                        writer.put(keys[idx], value)
                    if pool is not None:
                        free.release()
                    bar.update(1)
                    if j % 256 == 255:
                        bar.set_postfix(skipped=len(skipped), refresh=False)
            if pool is not None:
                _end_pool(pool, graceful=True)
                pool = None
            writer.flush()
            written = writer.count
            skipped.sort()
            if written == 0:
                writer.abort()
                write_report(report_path, skipped)
                raise BuildError("nothing was written: all %d entries were skipped (see %s)"
                                 % (len(entries), report_path))
            writer.finish()
        except BaseException as exc:
            sig.hold()  # a second Ctrl-C must not cut the cleanup short
            stop.set()
            note = writer.abort() if not writer.done else (writer.cleanup or "")
            if pool is not None:
                _end_pool(pool, graceful=False)
            _free_shm(shm, status)
            shm = status = None
            exc.cleanup = note
            raise
        finally:
            _free_shm(shm, status)
    try:
        write_report(report_path, skipped)
    except OSError as e:
        raise (DiskFull if is_no_space(e) else BuildError)(
            "the database is complete at %s, but the skip report %s could not be written: %s"
            % (output, report_path, e.strerror or e), exit_code=1)
    secs = time.time() - t0
    db_bytes = folder_bytes(output)
    summary = collections.OrderedDict([
        ("output", output), ("entries", len(entries)), ("written", written), ("skipped", len(skipped)),
        ("skip_reasons", dict(collections.Counter(r.split(":")[0] for _, _, r in skipped))),
        ("skipped_report", report_path), ("bytes_read", bytes_read), ("db_bytes", db_bytes),
        ("map_grows", writer.grows), ("seconds", round(secs, 3)),
        ("images_per_s", round(len(tasks) / secs, 1) if secs > 0 else None), ("workers", workers),
    ])
    return summary


def _free_shm(*blocks):
    for b in blocks:
        if b is not None:
            try:
                b.close()
            finally:
                b.unlink()


def format_summary(s):
    lines = ["wrote %d of %d entries to %s" % (s["written"], s["entries"], s["output"]),
             "skipped %d (%s); list: %s" % (s["skipped"], ", ".join("%s: %d" % kv for kv in sorted(s["skip_reasons"].items())) or "none",
                                         s["skipped_report"]),
             "read %.1f MB, database %.1f MB, map grown %d times" % (s["bytes_read"] / 1e6, s["db_bytes"] / 1e6, s["map_grows"]),
             "time %.2f s, %.1f images/s %s" % (s["seconds"], s["images_per_s"] or 0,
                                                 "with %d worker process(es)" % s["workers"] if s["workers"]
                                                 else "decoding in the main process")]
    return "\n".join(lines)


def write_datums(output, items, total=None, overwrite=False, batch=1000, map_bytes=None, progress=True,
                 log=print, desc=None):
    """Write (key, serialised Datum) pairs produced in this process, all-or-nothing.

    For generated data (the Fashion scenes); same safety as ``build_lmdb``. Returns
    the number written.
    """
    from tqdm import tqdm

    map_bytes = map_bytes or int(max(64 << 20, (total or 1000) * (256 * 256 * 3 + 256) * 1.25))
    with signals_raise() as sig:
        w = SafeLmdbWriter(output, overwrite=overwrite, map_size=map_bytes, batch=batch, log=log, total=total)
        try:
            for key, value in tqdm(items, total=total, unit="img", disable=not progress, desc=desc,
                                   dynamic_ncols=True, mininterval=0.5):
                w.put(key, value)
            w.flush()
            if w.count == 0:
                raise BuildError("nothing to write to %s" % output)
            n = w.count
            w.finish()
        except BaseException as exc:
            sig.hold()  # a second Ctrl-C must not cut the cleanup short
            exc.cleanup = w.abort() if not w.done else w.cleanup
            raise
    return n
