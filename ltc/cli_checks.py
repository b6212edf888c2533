"""Checks at the door, shared by every command-line tool: number ranges and output paths.

Argument types (for ``argparse`` ``type=``), each refusing non-finite values and giving
the same message everywhere ("must be an integer >= 1, got '0'"):

    p.add_argument("--iters", type=positive_int)
    p.add_argument("--batch", type=int_range(1, 4096))
    p.add_argument("--eps", type=float_range(0, None, low_open=True))   # > 0
    p.add_argument("--gray-prob", type=float_range(0, 1))

Path checks (raise ``PathError``, a ValueError whose message names the path):

    same_file(a, b)              True if a and b are the same file (also via symlinks or hard links)
    refuse_same(inp, out, ...)   output == input
    refuse_nested(src, out)      output equals, contains or lies inside the source folder
    writable_file(out)           the folder of an output file exists, is a folder and is writable
    writable_dir(out)            an output folder (made if missing) can be written
    is_replaceable_lmdb(path)    a folder holding only what an LMDB writer leaves
"""
import argparse
import math
import os

INT32_MIN, INT32_MAX = -2 ** 31, 2 ** 31 - 1
MAX_WORKERS = max(64, 4 * (os.cpu_count() or 1))   # decoding processes; more only costs start-up time


class PathError(ValueError):
    """An input or output path cannot be used; the message names it and says why."""


# ----------------------------------------------------------------------------- numbers

def _bound_text(low, high, low_open=False, high_open=False):
    parts = []
    if low is not None:
        parts.append("%s %s" % (">" if low_open else ">=", _num(low)))
    if high is not None:
        parts.append("%s %s" % ("<" if high_open else "<=", _num(high)))
    return " and ".join(parts)


def _num(x):
    return "%d" % x if float(x).is_integer() and abs(x) < 1e15 else "%g" % x


def int_range(low=None, high=None):
    """argparse type: an integer in [low, high] (either end may be None)."""
    what = "an integer" + (" " + _bound_text(low, high) if (low, high) != (None, None) else "")

    def parse(text):
        try:
            v = int(str(text).strip(), 10)
        except ValueError:
            raise argparse.ArgumentTypeError("must be %s, got %r" % (what, text))
        if (low is not None and v < low) or (high is not None and v > high):
            raise argparse.ArgumentTypeError("must be %s, got %r" % (what, text))
        return v
    parse.__name__ = "integer"   # argparse says "invalid integer value" if the type itself fails
    return parse


def float_range(low=None, high=None, low_open=False, high_open=False):
    """argparse type: a finite number in [low, high] (open ends with low_open/high_open)."""
    what = "a finite number" + (" " + _bound_text(low, high, low_open, high_open)
                                if (low, high) != (None, None) else "")

    def parse(text):
        try:
            v = float(str(text).strip())
        except ValueError:
            raise argparse.ArgumentTypeError("must be %s, got %r" % (what, text))
        bad = (not math.isfinite(v)
               or (low is not None and (v <= low if low_open else v < low))
               or (high is not None and (v >= high if high_open else v > high)))
        if bad:
            raise argparse.ArgumentTypeError("must be %s, got %r" % (what, text))
        return v
    parse.__name__ = "number"
    return parse


positive_int = int_range(1)
nonneg_int = int_range(0)
int32 = int_range(INT32_MIN, INT32_MAX)
finite_float = float_range()
positive_float = float_range(0, None, low_open=True)
nonneg_float = float_range(0)
probability = float_range(0, 1)
workers_int = int_range(0, MAX_WORKERS)


def check_range(name, value, low=None, high=None, integer=False):
    """The same check outside argparse (a library call, a config value): ValueError with the
    message the argparse types give."""
    parse = int_range(low, high) if integer else float_range(low, high)
    try:
        return parse(value)
    except argparse.ArgumentTypeError as e:
        raise ValueError("%s %s" % (name, e))


# ----------------------------------------------------------------------------- paths

def same_file(a, b):
    """True when paths a and b name the same existing file or folder (symlinks, hard links,
    '..' and relative paths all resolved by the filesystem: os.path.samefile)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def refuse_same(inp, out, what_in="input", what_out="output"):
    """PathError if ``out`` is the same file as ``inp``: writing it would destroy the input."""
    if out and inp and same_file(inp, out):
        raise PathError("%s '%s' is the same file as the %s '%s'; writing it would destroy the %s -- "
                        "choose another %s" % (what_out, out, what_in, inp, what_in, what_out))


def _inside(child, parent):
    """True when real path ``child`` equals or lies inside real path ``parent``."""
    try:
        return os.path.commonpath([child, parent]) == parent
    except ValueError:
        return False


def refuse_nested(source, output, what_in="SOURCE", what_out="OUTPUT"):
    """PathError if ``output`` equals ``source``, lies inside it, or contains it (so replacing
    OUTPUT would delete SOURCE, or the build would read its own output)."""
    src, out = os.path.realpath(source), os.path.realpath(output)
    if src == out or same_file(src, out):
        raise PathError("%s '%s' is the %s itself; choose a new folder for the %s"
                        % (what_out, output, what_in, what_out))
    if _inside(src, out):
        raise PathError("%s '%s' contains the %s '%s'; replacing it would delete the %s -- choose a "
                        "folder outside it" % (what_out, output, what_in, source, what_in))
    if os.path.isdir(src) and _inside(out, src):
        raise PathError("%s '%s' lies inside the %s folder '%s'; choose a folder outside it"
                        % (what_out, output, what_in, source))


LMDB_FILES = ("data.mdb", "lock.mdb")


def is_replaceable_lmdb(path, extra_names=()):
    """True when ``path`` is a folder (not a symlink) holding data.mdb and otherwise only
    lock.mdb (or ``extra_names``): what an LMDB writer leaves, nothing a user put there."""
    if os.path.islink(path) or not os.path.isdir(path):
        return False
    try:
        names = set(os.listdir(path))
    except OSError:
        return False
    if "data.mdb" not in names:
        return False
    if not names <= set(LMDB_FILES) | set(extra_names):
        return False
    return all(os.path.isfile(os.path.join(path, n)) and not os.path.islink(os.path.join(path, n))
               for n in names)


def describe_existing(path):
    """'a regular file' / 'a folder with 3 entries that is not an LMDB' ... for messages."""
    if os.path.islink(path):
        return "a symbolic link"
    if os.path.isdir(path):
        try:
            n = len(os.listdir(path))
        except OSError:
            n = -1
        return "a folder%s" % (" with %d entries" % n if n >= 0 else "")
    if os.path.isfile(path):
        return "a regular file"
    return "something that is not a file or folder"


def writable_file(path, what="output"):
    """PathError unless ``path`` can be created or replaced as a file: its folder exists, is a
    folder and is writable, and ``path`` itself is not a folder."""
    full = os.path.abspath(path)
    if os.path.isdir(full):
        raise PathError("%s '%s' is a folder; give a file name" % (what, path))
    parent = os.path.dirname(full)
    probe = parent
    while probe and not os.path.lexists(probe):
        probe = os.path.dirname(probe)
    if probe and not os.path.isdir(probe):
        raise PathError("%s '%s': '%s' is a file, not a folder" % (what, path, probe))
    if os.path.isdir(parent) and not os.access(parent, os.W_OK | os.X_OK):
        raise PathError("%s '%s': the folder '%s' is not writable" % (what, path, parent))
    if not os.path.isdir(parent) and probe and not os.access(probe, os.W_OK | os.X_OK):
        raise PathError("%s '%s': cannot create its folder, '%s' is not writable" % (what, path, probe))
    if os.path.exists(full) and not os.access(full, os.W_OK) and not os.access(parent, os.W_OK):
        raise PathError("%s '%s' is read-only" % (what, path))
    return full


def writable_dir(path, what="output folder"):
    """PathError unless ``path`` is (or can be made as) a writable folder. Makes nothing."""
    full = os.path.abspath(path)
    if os.path.lexists(full) and not os.path.isdir(full):
        raise PathError("%s '%s' is %s, not a folder" % (what, path, describe_existing(full)))
    probe = full
    while probe and not os.path.lexists(probe):
        probe = os.path.dirname(probe)
    if probe and not os.path.isdir(probe):
        raise PathError("%s '%s': '%s' is a file, not a folder" % (what, path, probe))
    if probe and not os.access(probe, os.W_OK | os.X_OK):
        raise PathError("%s '%s': '%s' is not writable" % (what, path, probe))
    return full


def model_file(path, what="model"):
    """PathError unless ``path`` is an existing, non-empty regular file (says 'is a folder' for one)."""
    if os.path.isdir(path):
        raise PathError("%s '%s' is a directory, not a file" % (what, path))
    if not os.path.exists(path):
        raise PathError("%s '%s': no such file" % (what, path))
    if not os.path.isfile(path):
        raise PathError("%s '%s' is not a regular file" % (what, path))
    if os.path.getsize(path) == 0:
        raise PathError("%s '%s' is empty (0 bytes)" % (what, path))
    return path
