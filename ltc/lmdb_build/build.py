"""The build: entries -> keys and tasks, a free-space check, the decoders, ordered writes, the
skip report ``OUTPUT.skipped.tsv`` and a summary (``build_lmdb``)."""
import collections
import os
import time

import numpy as np

from ltc import lmdb_io
from ltc.lmdb_build.errors import BuildError, DiskFull, signals_raise
from ltc.lmdb_build.images import ENCODE_FORMATS, RESIZE_MODES, quiet_opencv
from ltc.lmdb_build.ring import DecodePool, process_entry
from ltc.lmdb_build.writer import (LOCK_BYTES, MAX_KEY_BYTES, PAGE_BYTES, SafeLmdbWriter, check_replaceable,
                                   check_space, folder_bytes, lmdb_bytes_per_entry, remove_stale_partials,
                                   write_report)
from ltc.workers import is_no_space

SMALL_JOB = 48  # fewer images than this are decoded in-process: starting workers costs ~1 s


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
    _check_arguments(resize, encode_format, size, min_side, max_pixels)
    output = os.path.abspath(output.rstrip("/") or output)
    check_replaceable(output, overwrite)  # before any work: never replace what is not an LMDB
    entries = _ordered(entries, shuffle, seed)
    report_path = output + ".skipped.tsv"
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    cfg = dict(size=int(size), resize=resize, encoded=bool(encoded), encode_format=encode_format,
               jpeg_quality=int(jpeg_quality), min_side=int(min_side), max_pixels=int(max_pixels),
               delay=float(delay))
    keys, skipped, tasks = plan_tasks(entries)

    need, how = estimate_db_bytes(tasks, keys, cfg)
    if not force and not (os.path.lexists(output) and not overwrite):  # an existing OUTPUT is reported below
        remove_stale_partials(output, log)  # a killed build's leftovers are not in the way
        check_space(output, need, how, sampled=bool(encoded), log=log)
    per_item = size * size * 3 + 256 if not encoded else size * size + 4096
    map_bytes = initial_map_bytes or int(max(64 << 20, len(tasks) * per_item * 1.25))
    t0 = time.time()
    if workers > 0 and len(tasks) < small_job:
        workers = 0
    decoders = DecodePool(tasks, entries, cfg, workers, log)
    with signals_raise() as sig:
        writer = SafeLmdbWriter(output, overwrite=overwrite, map_size=map_bytes, batch=batch, log=log,
                                writemap=writemap, total=len(tasks), need_bytes=need)
        try:
            results = decoders.start(chunksize, start_method)
            bytes_read = _write_results(writer, decoders, results, keys, entries, skipped, len(tasks), progress)
            decoders.finish()
            written = _commit(writer, skipped, report_path, len(entries))
        except BaseException as exc:
            sig.hold()  # a second Ctrl-C must not cut the cleanup short
            decoders.stop_feeding()
            note = writer.abort() if not writer.done else (writer.cleanup or "")
            decoders.terminate()
            decoders.close()
            exc.cleanup = note
            raise
        finally:
            decoders.close()
    _write_final_report(output, report_path, skipped)
    secs = time.time() - t0
    return collections.OrderedDict([
        ("output", output), ("entries", len(entries)), ("written", written), ("skipped", len(skipped)),
        ("skip_reasons", dict(collections.Counter(r.split(":")[0] for _, _, r in skipped))),
        ("skipped_report", report_path), ("bytes_read", bytes_read), ("db_bytes", folder_bytes(output)),
        ("map_grows", writer.grows), ("seconds", round(secs, 3)),
        ("images_per_s", round(len(tasks) / secs, 1) if secs > 0 else None), ("workers", decoders.workers),
    ])


def _check_arguments(resize, encode_format, size, min_side, max_pixels):
    if resize not in RESIZE_MODES:
        raise BuildError("--resize must be one of %s" % ", ".join(RESIZE_MODES))
    if encode_format not in ENCODE_FORMATS:
        raise BuildError("--encode-format must be one of %s" % ", ".join(ENCODE_FORMATS))
    if size < 1 or min_side < 1 or max_pixels < 1:
        raise BuildError("size, min-side and max-pixels must be positive")


def _ordered(entries, shuffle, seed):
    """The entries as a list, in a seeded random order with ``shuffle``."""
    entries = list(entries)
    if shuffle:
        order = np.random.RandomState(seed).permutation(len(entries))
        entries = [entries[i] for i in order]
    return entries


def plan_tasks(entries):
    """(keys, skipped, tasks) of the ordered entries: {index: key} with key ``%08d_<key_path>``,
    [(index, key path, reason)] of the entries skipped before reading (a reason known from the
    source, a key too long for LMDB), and [(task number, index, abs_path, label)] to decode."""
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
    return keys, skipped, tasks


def _write_results(writer, decoders, results, keys, entries, skipped, total, progress):
    """Put each decoded Datum under its key, in task order, and list each skipped image, with a
    progress bar; returns the bytes read."""
    from tqdm import tqdm

    bytes_read = 0
    bar = tqdm(total=total, unit="img", disable=not progress, dynamic_ncols=True, smoothing=0.1, mininterval=0.5)
    with bar:
        for j, (idx, value, reason, nbytes) in enumerate(results):
            bytes_read += nbytes
            if value is None:
                skipped.append((idx, entries[idx].key_path, reason))
            else:
                writer.put(keys[idx], decoders.datum(j, value))
            decoders.done()
            bar.update(1)
            if j % 256 == 255:
                bar.set_postfix(skipped=len(skipped), refresh=False)
    return bytes_read


def _commit(writer, skipped, report_path, n_entries):
    """Flush and rename the database into place; returns the entries written. Nothing written:
    the partial database is removed, the skip report written, and BuildError raised."""
    writer.flush()
    written = writer.count
    skipped.sort()
    if written == 0:
        writer.abort()
        write_report(report_path, skipped)
        raise BuildError("nothing was written: all %d entries were skipped (see %s)" % (n_entries, report_path))
    writer.finish()
    return written


def _write_final_report(output, report_path, skipped):
    try:
        write_report(report_path, skipped)
    except OSError as e:
        raise (DiskFull if is_no_space(e) else BuildError)(
            "the database is complete at %s, but the skip report %s could not be written: %s"
            % (output, report_path, e.strerror or e), exit_code=1)


def format_summary(s):
    lines = ["wrote %d of %d entries to %s" % (s["written"], s["entries"], s["output"]),
             "skipped %d (%s); list: %s" % (s["skipped"], ", ".join("%s: %d" % kv for kv in sorted(s["skip_reasons"].items())) or "none",
                                         s["skipped_report"]),
             "read %.1f MB, database %.1f MB, map grown %d times" % (s["bytes_read"] / 1e6, s["db_bytes"] / 1e6, s["map_grows"]),
             "time %.2f s, %.1f images/s %s" % (s["seconds"], s["images_per_s"] or 0,
                                                 "with %d worker process(es)" % s["workers"] if s["workers"]
                                                 else "decoding in the main process")]
    return "\n".join(lines)
