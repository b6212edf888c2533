"""Concatenate counting LMDBs into one training LMDB (the study's Fashion scenes + real photos).

The datums are copied byte for byte; a source may be repeated (``repeat``) so that a small
set of photos is not drowned by thousands of scenes. Keys are renumbered
``%08d_<source tag>_<original key>`` so the order is the sources' order; the counting data
layer draws a fresh seeded permutation per epoch, so the order does not matter for training.
The database is written beside ``out`` and renamed into place only when complete.
"""
import os
import shutil

import lmdb


class MixError(Exception):
    """A source that is missing or empty, or an output that exists."""


def _entries(path):
    if not os.path.isfile(os.path.join(path, "data.mdb")):
        raise MixError("'%s' is not an LMDB (no data.mdb); build it first (make data)" % path)
    env = lmdb.open(path, readonly=True, lock=False, subdir=True)
    try:
        with env.begin() as txn:
            items = list(txn.cursor())
    finally:
        env.close()
    if not items:
        raise MixError("LMDB '%s' is empty" % path)
    return items


def mix_lmdbs(sources, out, overwrite=False):
    """sources: [(tag, lmdb path, repeat)]; writes ``out``; returns {tag: entries written}."""
    if os.path.exists(out) and not overwrite:
        raise MixError("'%s' already exists; pass overwrite=True to rebuild it" % out)
    loaded = [(tag, _entries(path), int(repeat)) for tag, path, repeat in sources]
    total = sum(len(items) * rep for _, items, rep in loaded)
    size = sum(len(v) for _, items, rep in loaded for _, v in items for _ in range(rep))
    tmp = out.rstrip("/") + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.dirname(os.path.abspath(tmp)), exist_ok=True)
    env = lmdb.open(tmp, map_size=max(int(size * 1.5) + (64 << 20), 1 << 26), subdir=True)
    counts, i = {}, 0
    with env.begin(write=True) as txn:
        for tag, items, rep in loaded:
            for r in range(rep):
                for key, value in items:
                    txn.put(("%08d_%s_%s" % (i, tag, key.decode("ascii", "replace"))).encode(), value)
                    i += 1
            counts[tag] = len(items) * rep
    env.close()
    assert i == total
    if os.path.exists(out):
        shutil.rmtree(out)
    os.rename(tmp, out)
    return counts


def subset_per_class(src, out, per_class, seed=1701, overwrite=False):
    """A shuffled LMDB of the first ``per_class`` datums of each label of ``src`` (in a seeded
    random order): the few-labels training set of the study's linear probe. Returns
    {label: count}."""
    import numpy as np
    from caffe.proto import caffe_pb2
    if os.path.exists(out) and not overwrite:
        raise MixError("'%s' already exists; pass overwrite=True to rebuild it" % out)
    items = _entries(src)
    order = np.random.RandomState(seed).permutation(len(items))
    d = caffe_pb2.Datum()
    picked, counts = [], {}
    for i in order:
        d.ParseFromString(items[i][1])
        if counts.get(d.label, 0) < per_class:
            counts[d.label] = counts.get(d.label, 0) + 1
            picked.append(items[i])
    tmp = out.rstrip("/") + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.dirname(os.path.abspath(tmp)), exist_ok=True)
    env = lmdb.open(tmp, map_size=sum(len(v) for _, v in picked) * 2 + (64 << 20), subdir=True)
    with env.begin(write=True) as txn:
        for j, (key, value) in enumerate(picked):   # key order = the seeded shuffle
            txn.put(("%08d_%s" % (j, key.decode("ascii", "replace"))).encode(), value)
    env.close()
    if os.path.exists(out):
        shutil.rmtree(out)
    os.rename(tmp, out)
    return dict(sorted(counts.items()))
