#!/usr/bin/env python
"""Benchmark tools/make_lmdb.py against Caffe's own convert_imageset on the same JPEGs.

Writes --n JPEGs (about 500x375, random crops / scales / flips of photos bundled with
scikit-image, scikit-learn and matplotlib) into a cache folder once, then builds an LMDB of S x S images from them with
    convert_imageset --resize_height S --resize_width S   (from the project's Caffe build)
    tools/make_lmdb.py --workers W --size S                (W from --workers; default warp)
in turn, --repeats times (the runs alternate, so load changes on a shared machine hit all
alike). images/s = n / wall time of the whole command (process start-up included, as a
user sees it); make_lmdb's own build time (its --summary-json) is reported as well.
The database size is the LMDB's used pages (env.info) and data.mdb's size on disk. Last, the
first make_lmdb database is compared with convert_imageset's entry by entry (keys and Datum bytes:
equal where both JPEG decoders agree).

Example:
  python bench/lmdb_write.py                       # 2,000 JPEGs, workers 1 2, twice
  python bench/lmdb_write.py --n 500 --workers 0 1 2 --repeats 3
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from bench import benchlib
from ltc import machine


def convert_imageset_path():
    cand = os.path.join(os.path.dirname(benchlib.VENV_PY), "convert_imageset")
    if os.path.isfile(cand):
        return cand
    return shutil.which("convert_imageset")


def db_size(path):
    """(MiB of pages in use, MiB that data.mdb takes on disk, entries)."""
    import lmdb
    env = lmdb.open(path, readonly=True, lock=False)
    try:
        info, stat = env.info(), env.stat()
        used = (info["last_pgno"] + 1) * stat["psize"]
        entries = stat["entries"]
    finally:
        env.close()
    st = os.stat(os.path.join(path, "data.mdb"))
    return used / 2 ** 20, st.st_blocks * 512 / 2 ** 20, entries


def compare_dbs(a, b):
    """(same keys in the same order, entries whose values differ, entries of a) of two LMDBs."""
    import lmdb
    ea, eb = lmdb.open(a, readonly=True, lock=False), lmdb.open(b, readonly=True, lock=False)
    try:
        with ea.begin() as ta, eb.begin() as tb:
            ka, kb = [k for k, _ in ta.cursor()], [k for k, _ in tb.cursor()]
            return ka == kb, sum(1 for k in ka if ta.get(k) != tb.get(k)), len(ka)
    finally:
        ea.close()
        eb.close()


def run_one(name, cmd, db, n, summary=None):
    shutil.rmtree(db, ignore_errors=True)
    t = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit("%s failed (exit %d): %s\n%s" % (name, p.returncode, " ".join(cmd), p.stderr[-3000:]))
    used, disk, entries = db_size(db)
    if entries != n:
        raise SystemExit("%s wrote %d entries into %s, expected %d" % (name, entries, db, n))
    r = dict(wall_s=wall, images_s=n / wall, db_used_mib=used, db_disk_mib=disk, entries=entries)
    if summary:
        s = json.load(open(summary))
        r["tool_s"] = s.get("seconds")
        r["tool_images_s"] = s.get("images_per_s")
    return r


def add_ratios(rows):
    """vs_convert: images/s over convert_imageset's; scaling: images/s over (workers x the 1-worker row's)."""
    ref = [r for r in rows if r["name"] == "convert_imageset"]
    one = [r for r in rows if r["workers"] == 1]
    for r in rows:
        if ref:
            r["vs_convert"] = r["images_s"] / ref[0]["images_s"]
        if one and r["workers"]:
            r["scaling"] = r["images_s"] / (r["workers"] * one[0]["images_s"])
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="number of JPEGs")
    ap.add_argument("--images", default=None, help="folder for the JPEGs (default bench/.cache/jpegs_<n>)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="make_lmdb.py --workers values")
    ap.add_argument("--size", type=int, default=256, help="output side S (both tools warp to S x S)")
    ap.add_argument("--repeats", type=int, default=2, help="rounds of all commands")
    ap.add_argument("--seed", type=int, default=0, help="seed of the generated JPEGs")
    ap.add_argument("--csv", default=None, help="CSV path (default bench/results/make_lmdb.csv)")
    a = ap.parse_args(argv)
    if a.n < 1 or a.repeats < 1 or any(w < 0 for w in a.workers):
        ap.error("--n and --repeats must be >= 1, --workers >= 0")
    print("make_lmdb bench:", json.dumps(vars(a), sort_keys=True))
    print(machine.machine_line())
    folder = a.images or os.path.join(benchlib.CACHE, "jpegs_%d" % a.n)
    t = time.perf_counter()
    listfile = benchlib.make_jpegs(folder, a.n, a.seed)
    print("JPEGs: %s (%d files, %.1f MiB; ready in %.1f s)"
          % (folder, a.n, sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)
                              if f.endswith(".jpg")) / 2 ** 20, time.perf_counter() - t))
    tool = convert_imageset_path()
    commands = []
    scratch = tempfile.mkdtemp(prefix="bench_lmdb_write_")
    if tool:
        commands.append(("convert_imageset", [tool, "--resize_height=%d" % a.size, "--resize_width=%d" % a.size,
                                              folder + "/", listfile, os.path.join(scratch, "ci")],
                         os.path.join(scratch, "ci"), None, None))
    else:
        print("skip convert_imageset: not found next to %s nor on PATH (run ./setup.sh)" % benchlib.VENV_PY)
    for w in a.workers:
        db = os.path.join(scratch, "ml_w%d" % w)
        js = os.path.join(scratch, "ml_w%d.json" % w)
        commands.append(("make_lmdb.py --workers %d" % w,
                         [sys.executable, os.path.join(benchlib.REPO, "tools", "make_lmdb.py"), listfile, db,
                          "--workers", str(w), "--size", str(a.size), "--overwrite", "--no-progress",
                          "--summary-json", js], db, js, w))
    runs = {name: [] for name, *_ in commands}
    try:
        for rep in range(a.repeats):
            for name, cmd, db, js, _ in commands:
                print("run  %-26s (repeat %d) ..." % (name, rep + 1), end=" ", flush=True)
                r = run_one(name, cmd, db, a.n, js)
                runs[name].append(r)
                print("%.1f s, %.0f images/s" % (r["wall_s"], r["images_s"]), flush=True)
        if tool and a.workers:
            same_keys, differ, n = compare_dbs(os.path.join(scratch, "ci"), commands[1][2])
            print("%s vs convert_imageset: keys equal: %s; entries whose Datum bytes differ: %d of %d"
                  % (commands[1][0], same_keys, differ, n))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    rows = []
    for name, cmd, db, js, w in commands:
        rs = runs[name]
        ips = [r["images_s"] for r in rs]
        row = dict(name=name, workers=w, n=a.n, runs=len(rs), images_s=statistics.median(ips), best_images_s=max(ips),
                   spread_pct=100.0 * (max(ips) - min(ips)) / statistics.median(ips),
                   runs_images_s=" ".join("%.0f" % x for x in ips),
                   db_used_mib=rs[-1]["db_used_mib"], db_disk_mib=rs[-1]["db_disk_mib"])
        tool_ips = [r["tool_images_s"] for r in rs if r.get("tool_images_s")]
        if tool_ips:
            row["tool_images_s"] = statistics.median(tool_ips)
        rows.append(row)
    add_ratios(rows)
    print()
    benchlib.print_table(rows, [("name", "builder", 0), ("images_s", "images/s", 0), ("runs_images_s", "each run", 0),
                          ("spread_pct", "spread %", 0), ("tool_images_s", "own timer img/s", 0),
                          ("vs_convert", "x convert_imageset", 2), ("scaling", "scaling vs 1w", 2),
                          ("db_used_mib", "DB MiB used", 1), ("db_disk_mib", "data.mdb MiB on disk", 1)],
                   title="LMDB build from %d JPEGs to %dx%d (images/s = n / wall time of the command, median of %d; "
                   "goal: make_lmdb 1 worker >= convert_imageset, near-linear scaling)"
                   % (a.n, a.size, a.size, a.repeats))
    benchlib.write_csv(rows, a.csv or os.path.join(benchlib.RESULTS, "make_lmdb.csv"),
                 ["name", "workers", "n", "runs", "images_s", "best_images_s", "runs_images_s", "spread_pct",
                  "tool_images_s", "vs_convert", "scaling", "db_used_mib", "db_disk_mib"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
