"""Disjoint LMDB shards and per-shard seed streams for data-parallel training.

Rank r of R reads the keys at positions r, r + R, r + 2R, ... of the LMDB (key order), so
the shards are disjoint, cover the LMDB and differ in size by at most one image. Each rank
also draws from its own seed stream: shard_seed(seed, r, R) is seed itself for R = 1 (the
single-process behaviour is unchanged) and seed * R + r otherwise, which is distinct for
every rank of one run.
"""


def check_shard(shard, num_shards):
    """Raise ValueError unless 0 <= shard < num_shards."""
    if not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError("num_shards must be an integer >= 1, got %r" % (num_shards,))
    if not isinstance(shard, int) or not 0 <= shard < num_shards:
        raise ValueError("shard must be an integer in [0, num_shards=%d), got %r" % (num_shards, shard))


def shard_keys(keys, shard, num_shards):
    """The keys of one shard: every num_shards-th key, starting at position shard."""
    check_shard(shard, num_shards)
    return keys[shard::num_shards]


def shard_seed(seed, shard, num_shards):
    """The seed of one shard's random stream (seed itself when there is one shard)."""
    check_shard(shard, num_shards)
    return seed if num_shards == 1 else seed * num_shards + shard
