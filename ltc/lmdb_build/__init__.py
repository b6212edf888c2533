"""Building the project's image LMDBs: decode, resize, write safely, in parallel.

This is the engine behind ``tools/make_lmdb.py`` and the ``data_prep/`` scripts; the
format itself (Caffe ``Datum``, keys ``%08d_<path>``) is described in ``ltc.lmdb_io``.
Every name below is importable from the package (``from ltc import lmdb_build``):

  sources  ``collect_folder`` / ``read_list_file``: a folder or a list file -> list of ``Entry``
           (duplicate paths, bad labels and paths too long for a key become skip reasons)
  images   ``prepare_image``: file bytes -> resized HxWx3 uint8 BGR image or a skip reason
           (``resize_image``: ``warp`` as convert_imageset, or ``shorter-crop``);
           ``make_datum_bytes`` / ``datum_into``: the serialised Datum
  writer   ``SafeLmdbWriter``: builds in ``OUTPUT.partial-<pid>`` beside OUTPUT, batches
           writes in transactions, doubles the map when full, renames into place only when
           complete, removes the partial folder on failure; a full disk is ``DiskFull``, never
           a SIGBUS; ``check_space`` refuses a job that clearly will not fit
  ring     ``DecodePool``: worker processes that decode into a shared-memory ring of slots
           (fewer slots, pipes, or this process when /dev/shm is small); a dead worker is a
           ``WorkerDied`` naming it, its signal and its image
  build    ``build_lmdb``: the whole job (ordered writes, progress bar, skip report
           ``OUTPUT.skipped.tsv``, summary dict)
  cli      the data_prep scripts' shared options, output checks and error handling
  errors   ``BuildError`` (exit 2 for bad input, 1 for a failure), ``DiskFull``,
           ``WorkerDied``, ``Interrupted`` (SIGTERM/SIGINT, via ``signals_raise``)
"""
from ltc.lmdb_io import IMAGE_EXTENSIONS
from ltc.lmdb_build.errors import BuildError, DiskFull, Interrupted, WorkerDied, signals_raise
from ltc.lmdb_build.sources import Entry, collect_folder, is_image_name, read_list_file
from ltc.lmdb_build.images import (ENCODE_FORMATS, RESIZE_MODES, datum_into, encode_image, header_size,
                                   jpeg_truncated, make_datum_bytes, prepare_image, quiet_opencv, read_file_checked,
                                   resize_image)
from ltc.lmdb_build.writer import (MAX_KEY_BYTES, SafeLmdbWriter, check_replaceable, check_space,
                                   lmdb_bytes_per_entry, remove_stale_partials, write_datums, write_report)
from ltc.lmdb_build.ring import DecodePool, end_pool, process_entry
from ltc.lmdb_build.build import SMALL_JOB, build_lmdb, estimate_db_bytes, format_summary, plan_tasks
from ltc.lmdb_build.cli import add_build_args, build_split, check_outputs, run_cli

__all__ = [
    "IMAGE_EXTENSIONS", "BuildError", "DiskFull", "Interrupted", "WorkerDied", "signals_raise",
    "Entry", "collect_folder", "is_image_name", "read_list_file",
    "ENCODE_FORMATS", "RESIZE_MODES", "datum_into", "encode_image", "header_size", "jpeg_truncated",
    "make_datum_bytes", "prepare_image", "quiet_opencv", "read_file_checked", "resize_image",
    "MAX_KEY_BYTES", "SafeLmdbWriter", "check_replaceable", "check_space", "lmdb_bytes_per_entry",
    "remove_stale_partials", "write_datums", "write_report",
    "DecodePool", "end_pool", "process_entry",
    "SMALL_JOB", "build_lmdb", "estimate_db_bytes", "format_summary", "plan_tasks",
    "add_build_args", "build_split", "check_outputs", "run_cli",
]
