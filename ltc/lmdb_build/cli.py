"""What the data_prep/ scripts share around a build: their options (``add_build_args``), the
door check of their outputs (``check_outputs``), one split's build (``build_split``) and the
error handling of their ``main`` (``run_cli``)."""
import os
import sys
import time

from ltc import cli_checks
from ltc.lmdb_build.build import build_lmdb, format_summary
from ltc.lmdb_build.errors import BuildError, Interrupted
from ltc.lmdb_build.images import RESIZE_MODES
from ltc.lmdb_build.writer import check_replaceable


def run_cli(who, work, input_errors=(), failures=()):
    """Run a data_prep script's ``work()`` with the scripts' shared error handling; returns the
    exit status: 0 done, BuildError.exit_code (2 bad input, 1 failure), 2 for ``input_errors``,
    1 for ``failures``, 128 + the signal when interrupted (the partial LMDB is removed)."""
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
