#!/usr/bin/env python
"""Describe an image LMDB: entries, Datum shapes, raw or encoded, labels, contact sheet.

Reads every entry's Datum header (shape, encoded flag, label) without copying the
pixel data, so it is quick even on large databases; ``--sheet`` writes a PNG grid
of ``--n`` entries (evenly spread over the database, or the first ones) with their
index and label, so you can look at what you built.

Examples:
  python tools/lmdb_info.py data/sample/train_lmdb --sheet /tmp/sheet.png
  python tools/lmdb_info.py data/fashion/scenes_val_lmdb --json
"""
import argparse
import collections
import json
import math
import os
import sys


import cv2
import numpy as np

from ltc import cli_checks, lmdb_io


def encoded_format(buf, off):
    head = bytes(buf[off:off + 8])
    if head[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if head == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    return "other"


def scan(path, limit=0):
    """Statistics of the LMDB at ``path`` (all entries, or the first ``limit``)."""
    env = lmdb_io.open_lmdb(path, who="lmdb_info")
    full = lmdb_io.resolve_path(path)
    shapes, labels, kinds = collections.Counter(), collections.Counter(), collections.Counter()
    bad, first_key, last_key, count = [], None, None, 0
    try:
        total = env.stat()["entries"]
        with env.begin(buffers=True) as txn:
            for k, v in txn.cursor():
                if limit and count >= limit:
                    break
                key = bytes(k).decode("utf-8", "replace")
                first_key = first_key or key
                last_key = key
                count += 1
                try:
                    h = lmdb_io.datum_header(v)
                except ValueError as e:
                    bad.append((key, str(e)))
                    continue
                labels[h["label"]] += 1
                if h["encoded"]:
                    kinds["encoded " + encoded_format(v, h["data_off"])] += 1
                    shapes["%dx%dx%d" % (h["channels"], h["height"], h["width"])
                           if h["height"] else "unknown (encoded)"] += 1
                elif h["float_count"]:
                    kinds["float_data"] += 1
                    shapes["%dx%dx%d float" % (h["channels"], h["height"], h["width"])] += 1
                else:
                    kinds["raw uint8"] += 1
                    ok = h["data_len"] == h["channels"] * h["height"] * h["width"]
                    shapes["%dx%dx%d%s" % (h["channels"], h["height"], h["width"], "" if ok else " (data size wrong)")] += 1
    finally:
        env.close()
    size = sum(os.path.getsize(os.path.join(full, f)) for f in os.listdir(full) if f.endswith(".mdb"))
    return collections.OrderedDict([
        ("path", full), ("entries", total), ("scanned", count), ("bytes", size),
        ("first_key", first_key), ("last_key", last_key),
        ("shapes", dict(shapes)), ("storage", dict(kinds)),
        ("labels", {int(k): v for k, v in sorted(labels.items())}), ("bad", bad),
    ])


def contact_sheet(path, out_png, n=16, tile=128, pick="spread", cols=0):
    """Write a PNG grid of n entries (index and label in each tile); returns its shape."""
    env = lmdb_io.open_lmdb(path, who="lmdb_info")
    try:
        total = env.stat()["entries"]
        n = max(1, min(n, total))
        idx = (sorted(set(np.linspace(0, total - 1, n).round().astype(int).tolist())) if pick == "spread"
               else list(range(n)))
        want, tiles = set(idx), []
        with env.begin() as txn:
            for i, (k, v) in enumerate(txn.cursor()):
                if i > idx[-1]:
                    break
                if i in want:
                    img, label = lmdb_io.datum_to_image(v)
                    t = cv2.resize(img, (tile, tile), interpolation=cv2.INTER_AREA)
                    text = "#%d  label %d" % (i, label)
                    cv2.rectangle(t, (0, 0), (tile - 1, 15), (0, 0, 0), -1)
                    cv2.putText(t, text, (3, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (255, 255, 255), 1, cv2.LINE_AA)
                    tiles.append(t)
    finally:
        env.close()
    cols = cols or int(math.ceil(math.sqrt(len(tiles))))
    rows = int(math.ceil(len(tiles) / float(cols)))
    sheet = np.full((rows * (tile + 2) + 2, cols * (tile + 2) + 2, 3), 40, np.uint8)
    for j, t in enumerate(tiles):
        r, c = divmod(j, cols)
        sheet[2 + r * (tile + 2):2 + r * (tile + 2) + tile, 2 + c * (tile + 2):2 + c * (tile + 2) + tile] = t
    d = os.path.dirname(os.path.abspath(out_png))
    os.makedirs(d, exist_ok=True)
    if not cv2.imwrite(out_png, sheet):
        raise IOError("could not write contact sheet %s" % out_png)
    return sheet.shape, len(tiles)


def format_info(s, max_labels=20):
    lines = ["LMDB %s" % s["path"],
             "  entries   %d%s" % (s["entries"], "" if s["scanned"] == s["entries"] else " (scanned %d)" % s["scanned"]),
             "  size      %.1f MB" % (s["bytes"] / 1e6),
             "  keys      %s ... %s" % (s["first_key"], s["last_key"]),
             "  datum     %s" % ", ".join("%s: %d" % kv for kv in sorted(s["shapes"].items())),
             "  storage   %s" % ", ".join("%s: %d" % kv for kv in sorted(s["storage"].items()))]
    labels = s["labels"]
    if labels:
        counts = list(labels.values())
        lines.append("  labels    %d distinct, %d..%d; per label %d..%d entries"
                     % (len(labels), min(labels), max(labels), min(counts), max(counts)))
        items = sorted(labels.items())
        shown = items if len(items) <= max_labels else items[:max_labels]
        lines.append("  histogram " + "  ".join("%d:%d" % kv for kv in shown) + (" ..." if len(items) > len(shown) else ""))
    if s["bad"]:
        lines.append("  NOT DATUMS %d, e.g. %s: %s" % (len(s["bad"]), s["bad"][0][0], s["bad"][0][1]))
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("lmdb", help="LMDB folder")
    p.add_argument("--sheet", default="", help="write a PNG contact sheet here")
    p.add_argument("--n", type=cli_checks.int_range(1, 10000), default=16, help="entries on the contact sheet")
    p.add_argument("--tile", type=cli_checks.int_range(16, 2048), default=128, help="tile side in the contact sheet (px)")
    p.add_argument("--pick", choices=("spread", "first"), default="spread",
                   help="sheet entries: evenly spread over the database, or the first n")
    p.add_argument("--limit", type=cli_checks.nonneg_int, default=0, help="scan only the first N entries (0: all)")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    args = p.parse_args(argv)
    if not args.json:
        print("lmdb_info: " + " ".join("%s=%s" % kv for kv in sorted(vars(args).items())))
    try:
        if args.sheet:
            if not args.sheet.lower().endswith(".png"):
                raise cli_checks.PathError("--sheet '%s' must name a .png file" % args.sheet)
            cli_checks.writable_file(args.sheet, "--sheet")
        s = scan(args.lmdb, args.limit)
        if args.sheet:
            shape, k = contact_sheet(args.lmdb, args.sheet, args.n, args.tile, args.pick)
    except (lmdb_io.LmdbError, cli_checks.PathError) as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    except OSError as e:
        print("error: %s" % e, file=sys.stderr)
        return 1
    if args.sheet:
        s["sheet"] = os.path.abspath(args.sheet)
        if not args.json:
            print("contact sheet: %d entries, %dx%d px -> %s" % (k, shape[1], shape[0], s["sheet"]))
    print(json.dumps(s, indent=1) if args.json else format_info(s))
    return 0 if not s["bad"] else 2


if __name__ == "__main__":
    sys.exit(main())
