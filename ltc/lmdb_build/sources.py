"""Where the images come from: an image folder, or a ``convert_imageset`` list file, as a list
of ``Entry``."""
import collections
import os

from ltc.lmdb_io import IMAGE_EXTENSIONS
from ltc.lmdb_build.errors import BuildError

Entry = collections.namedtuple("Entry", "key_path abs_path label reason")
Entry.__doc__ = ("One source image: key_path goes into the key, abs_path is read, label is the "
                 "Datum label, reason is a skip reason known before reading (else None).")

INT32_MIN, INT32_MAX = -2 ** 31, 2 ** 31 - 1  # the Datum's label is an int32


def is_image_name(name):
    """True for a file name with one of lmdb_io.IMAGE_EXTENSIONS (any case)."""
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
            if is_image_name(name):
                rels.append(os.path.relpath(os.path.join(dirpath, name), folder).replace(os.sep, "/"))
    rels.sort()
    return [Entry(r, os.path.join(folder, r), int(label), None) for r in rels]


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
            elif not os.path.exists(os.path.join(root, line)) and is_image_name(head.rstrip()):
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
