#!/usr/bin/env python
"""What the disk-full guard costs: SafeLmdbWriter puts/s with and without page reservation.

make_lmdb reserves (posix_fallocate) the pages each writemap transaction can touch, so a
full disk is an error and not a SIGBUS. This writes --n raw 3 x S x S Datums (random
pixels, made once) through ``lmdb_build.SafeLmdbWriter`` into a fresh folder under
--dir, --repeats rounds of three modes in turn (so load changes hit all alike):
  writemap+reserve   the default now
  writemap           the same with the reservation switched off (the old behaviour)
  no-writemap        --no-writemap
and prints the median images/s and MB/s of each (writer only: no decoding). Run it on
the filesystem you build on; numbers from a shared machine are for ratios only.

Example:
  python bench/lmdb_reserve.py --n 1000 --repeats 3 --dir /tmp
"""
import argparse
import os
import shutil
import statistics
import tempfile
import time

import numpy as np

from bench import benchlib
from ltc import machine
from ltc import lmdb_build, lmdb_io

MODES = ("writemap+reserve", "writemap", "no-writemap")


def run_once(mode, values, folder, batch):
    out = os.path.join(folder, "db_%s" % mode.replace("+", "_"))
    real = lmdb_build.SafeLmdbWriter._reserve_txn
    if mode == "writemap":
        lmdb_build.SafeLmdbWriter._reserve_txn = lambda self, pending: None
    try:
        t0 = time.perf_counter()
        w = lmdb_build.SafeLmdbWriter(out, map_size=len(values) * len(values[0]) * 5 // 4, batch=batch,
                                      log=lambda m: None, writemap=(mode != "no-writemap"))
        for i, v in enumerate(values):
            w.put(b"%08d_x.jpg" % i, v)
        w.finish()
        secs = time.perf_counter() - t0
    finally:
        lmdb_build.SafeLmdbWriter._reserve_txn = real
    shutil.rmtree(out)
    return secs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="Datums per build")
    ap.add_argument("--size", type=int, default=256, help="side S of the 3 x S x S raw Datums")
    ap.add_argument("--batch", type=int, default=1000, help="puts per transaction (make_lmdb's default)")
    ap.add_argument("--repeats", type=int, default=3, help="rounds of the three modes")
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="folder to build in (its filesystem is measured)")
    args = ap.parse_args(argv)
    print("resolved args:", vars(args))
    print(machine.machine_line(), "| load average %.1f" % (benchlib.load_avg() or 0))
    rng = np.random.RandomState(0)
    s = args.size
    values = [lmdb_io.serialize_datum(3, s, s, rng.randint(0, 256, 3 * s * s, dtype=np.uint8).tobytes(), 0, False)
              for _ in range(min(args.n, 64))]
    values = [values[i % len(values)] for i in range(args.n)]
    folder = tempfile.mkdtemp(prefix="lmdb_reserve_", dir=args.dir)
    times = {m: [] for m in MODES}
    try:
        for _ in range(args.repeats):
            for m in MODES:
                times[m].append(run_once(m, values, folder, args.batch))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    mb = args.n * len(values[0]) / 1e6
    base = statistics.median(times["writemap"])
    rows = [dict(mode=m, secs=statistics.median(times[m]), ips=args.n / statistics.median(times[m]),
                 mbs=mb / statistics.median(times[m]), rel=base / statistics.median(times[m])) for m in MODES]
    benchlib.print_table(rows, [("mode", "mode", 0), ("secs", "median s", 2), ("ips", "images/s", 0),
                          ("mbs", "MB/s", 0), ("rel", "speed vs writemap", 2)],
                   title="SafeLmdbWriter, %d raw %dx%d Datums (%.0f MB), batch %d, %d rounds, in %s"
                   % (args.n, s, s, mb, args.batch, args.repeats, args.dir))
    return rows


if __name__ == "__main__":
    main()
