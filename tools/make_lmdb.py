#!/usr/bin/env python
"""Build an image LMDB (Caffe Datum, 3 x S x S uint8 BGR) from a folder or a list file.

SOURCE is either a folder (searched recursively for images; label 0) or a list file
in convert_imageset's format, one ``path [label]`` per line (relative paths are
joined to --root, default: the list file's folder). Keys are ``%08d_<path>`` as
convert_imageset writes them, so the order is reproducible (``--shuffle --seed``).

Resize modes: ``warp`` (default; Caffe's ImageNet recipe: cv2.resize to S x S,
INTER_LINEAR, the same pixels as ``convert_imageset --resize_height S
--resize_width S``) and ``shorter-crop`` (shorter side to S, then the centre S x S).
``--encoded`` stores JPEG (or PNG) bytes of the resized image instead of raw pixels.

Bad files (missing, broken symlinks, empty, truncated, corrupt, non-images, tiny,
huge, duplicates, bad list lines) are skipped and listed with their reason in
``OUTPUT.skipped.tsv``. The database is built in ``OUTPUT.partial-<pid>`` and renamed
into place only when complete; on any failure or interruption the partial folder is
removed and the message says so.

Resource faults: the free space beside OUTPUT is checked against an estimate of the
database before anything is written (``--force`` skips the check); a disk that fills
up anyway ends the build with an error naming OUTPUT, how much was written, and the
space needed against the space free (pages are reserved with posix_fallocate, so a
full disk is never a SIGBUS). The workers' shared-memory ring is sized to what
/dev/shm can hold (fewer slots, or pipes, said on stdout); a worker that dies is
reported with its signal and the image it was on.

Exit status: 0 done; 1 a failure while building (not enough space or disk full, a
worker died, a write error); 2 bad arguments or input (a missing source, an existing
OUTPUT, every image skipped); 130/143 interrupted by SIGINT/SIGTERM.

Examples:
  python tools/make_lmdb.py data/sample/images/train data/sample/my_lmdb
  python tools/make_lmdb.py train.txt data/imagenet/train_lmdb --root /data/ILSVRC2012/train --shuffle
"""
import argparse
import json
import os
import sys


from ltc import cli_checks, lmdb_build


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("source", help="image folder (recursive) or list file 'path [label]' per line")
    p.add_argument("output", help="LMDB folder to create")
    p.add_argument("--root", default="", help="folder that relative list-file paths are joined to "
                   "(default: the list file's folder)")
    p.add_argument("--label", type=cli_checks.int32, default=0, help="label for every image of a folder source")
    p.add_argument("--size", type=cli_checks.int_range(1, 8192), default=256, help="output side S (images are S x S)")
    p.add_argument("--resize", choices=lmdb_build.RESIZE_MODES, default="warp",
                   help="warp: resize to S x S (convert_imageset); shorter-crop: shorter side to S, centre crop")
    p.add_argument("--encoded", action="store_true", help="store encoded bytes of the resized image")
    p.add_argument("--encode-format", choices=lmdb_build.ENCODE_FORMATS, default="jpg",
                   help="format for --encoded")
    p.add_argument("--jpeg-quality", type=cli_checks.int_range(0, 100), default=95, help="JPEG quality for --encoded jpg")
    p.add_argument("--shuffle", action="store_true", help="shuffle the order (keys follow the new order)")
    p.add_argument("--seed", type=cli_checks.int_range(0, 2 ** 32 - 1), default=0, help="seed for --shuffle")
    p.add_argument("--workers", type=cli_checks.workers_int, default=min(os.cpu_count() or 1, cli_checks.MAX_WORKERS),
                   help="decoding processes; 0 decodes in the main process (at most %d)" % cli_checks.MAX_WORKERS)
    p.add_argument("--min-side", type=cli_checks.int_range(1, 65535), default=16, help="skip images whose shorter side is smaller (tiny)")
    p.add_argument("--max-pixels", type=cli_checks.float_range(1, 1e12), default=100e6,
                   help="skip images with more pixels than this (decompression-bomb guard, checked from the header)")
    p.add_argument("--batch", type=cli_checks.int_range(1, 1000000), default=1000, help="puts per LMDB transaction")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    p.add_argument("--initial-map-mb", type=cli_checks.float_range(0, 1 << 30), default=0,
                   help="initial LMDB map size in MB (0: estimate; the map doubles whenever it is full)")
    p.add_argument("--no-writemap", action="store_true",
                   help="plain LMDB writes (slower) for filesystems without sparse files: with writemap the "
                   "file is as large as the map (sparse) until it is trimmed at the end")
    p.add_argument("--force", action="store_true",
                   help="build even when the free-space estimate says the database will not fit")
    p.add_argument("--summary-json", default="", help="also write the summary as JSON to this file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--delay", type=cli_checks.float_range(0, 3600), default=0.0, help=argparse.SUPPRESS)  # seconds per image, for tests
    return p


def entries_from_source(source, root="", label=0):
    """Folder -> sorted recursive image list; file -> convert_imageset list."""
    if os.path.isdir(source):
        return lmdb_build.collect_folder(source, label=label)
    if os.path.isfile(source):
        return lmdb_build.read_list_file(source, root=root)
    raise lmdb_build.BuildError("source '%s' is neither a folder nor a list file" % source)


def _aftermath(exc, output):
    """'; removed ...; nothing at OUTPUT' -- what the failed build left, as checked now."""
    note = getattr(exc, "cleanup", "")
    if not note:
        return ""
    output = os.path.abspath(output.rstrip("/") or output)
    there = ("the existing %s is unchanged" % output if os.path.lexists(output) else "nothing at %s" % output)
    return "; %s; %s" % (note, there)


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:  # before any work: OUTPUT must not be SOURCE, inside it or around it
        if os.path.exists(args.source):
            cli_checks.refuse_nested(args.source, args.output)
        if args.root and os.path.isdir(args.root):
            cli_checks.refuse_nested(args.root, args.output, what_in="--root")
        lmdb_build.check_replaceable(os.path.abspath(args.output.rstrip("/") or args.output), args.overwrite)
        cli_checks.writable_dir(os.path.dirname(os.path.abspath(args.output.rstrip("/") or args.output)),
                                "the folder of OUTPUT")
        if args.summary_json:
            cli_checks.writable_file(args.summary_json, "--summary-json")
    except (cli_checks.PathError, lmdb_build.BuildError) as e:
        print("make_lmdb: error: %s" % e, file=sys.stderr)
        return 2
    print("make_lmdb: " + " ".join("%s=%s" % kv for kv in sorted(vars(args).items()) if kv[0] != "delay"))
    sys.stdout.flush()
    try:
        entries = entries_from_source(args.source, args.root, args.label)
        print("make_lmdb: %d entries from %s" % (len(entries), os.path.abspath(args.source)))
        if not entries:
            raise lmdb_build.BuildError("no images found in '%s' (extensions: %s)"
                                        % (args.source, " ".join(lmdb_build.IMAGE_EXTENSIONS)))
        summary = lmdb_build.build_lmdb(
            entries, args.output, size=args.size, resize=args.resize, encoded=args.encoded,
            encode_format=args.encode_format, jpeg_quality=args.jpeg_quality, workers=args.workers,
            shuffle=args.shuffle, seed=args.seed, overwrite=args.overwrite, min_side=args.min_side,
            max_pixels=int(args.max_pixels), batch=args.batch,
            initial_map_bytes=int(args.initial_map_mb * (1 << 20)) or None, delay=args.delay,
            progress=not args.no_progress, writemap=not args.no_writemap, force=args.force)
    except lmdb_build.BuildError as e:
        print("make_lmdb: error: %s%s" % (e, _aftermath(e, args.output)), file=sys.stderr)
        return e.exit_code
    except OSError as e:
        print("make_lmdb: error: %s%s" % (e, _aftermath(e, args.output)), file=sys.stderr)
        return 1
    except lmdb_build.Interrupted as e:
        print("make_lmdb: %s%s" % (e, _aftermath(e, args.output)), file=sys.stderr)
        return 128 + e.signum
    print(lmdb_build.format_summary(summary))
    if args.summary_json:
        with open(args.summary_json, "w") as f:
            json.dump(summary, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
