"""Per-rank solver and net files for data-parallel training (tools/train_multigpu.py).

Every rank r of R gets a copy of the training net whose counting data layers (TRAIN phase)
read shard r of R of the LMDB with their own seed stream (``shard``/``num_shards`` of
CountingDataLayer, ltc/sharding.py), and a copy of the solver that points at it.

Effective batch and learning rate (named options):
  batch_mode "per-gpu" (default): every rank keeps the net's batch_size N, so one
      synchronous step averages R x N samples (Caffe's multi-GPU semantics);
  batch_mode "split": every rank gets N / R samples, so the effective batch stays N, the
      paper's batch, and one step is the single-GPU step;
  lr_scaling "none" (default): base_lr as in the solver; "linear": base_lr x R (the linear
      scaling rule for the R-times larger batch of "per-gpu").
"""
import json
import os

from ltc import knobs


def rank_files(solver_path, rank, num_ranks, out_dir, batch_mode="per-gpu", lr_scaling="none"):
    """Write rank's net and solver into out_dir; returns (solver path, dict of the plan).

    Raises ValueError for a bad argument or a net without a counting data layer, and
    names the file.
    """
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format
    from ltc import nets
    if batch_mode not in ("per-gpu", "split"):
        raise ValueError("batch_mode must be 'per-gpu' or 'split', got %r" % (batch_mode,))
    if lr_scaling not in ("none", "linear"):
        raise ValueError("lr_scaling must be 'none' or 'linear', got %r" % (lr_scaling,))
    if not 0 <= rank < num_ranks:
        raise ValueError("rank must be in [0, %d), got %r" % (num_ranks, rank))
    sp = caffe_pb2.SolverParameter()
    with open(solver_path) as f:
        text_format.Merge(f.read(), sp)
    net_path = sp.net or sp.train_net
    if not net_path:
        raise ValueError("%s: the solver names no net (net: or train_net:)" % solver_path)
    net = caffe_pb2.NetParameter()
    with open(net_path) as f:
        text_format.Merge(f.read(), net)
    batches = []
    for layer in nets.train_data_layers(net):
        p = json.loads(layer.python_param.param_str or "{}")
        n = int(p.get("batch_size", knobs.DATA["batch_size"].default))
        if batch_mode == "split":
            if n % num_ranks or n // num_ranks < 2:
                raise ValueError("%s, layer %s: batch_size %d cannot be split into %d ranks of >= 2 equal parts"
                                 % (net_path, layer.name, n, num_ranks))
            n //= num_ranks
        p.update(batch_size=n, shard=rank, num_shards=num_ranks)
        layer.python_param.param_str = json.dumps(p, sort_keys=True)
        batches.append(n)
    if not batches:
        raise ValueError("%s: no TRAIN-phase %s data layer to shard" % (net_path, nets.DATA_MODULE))
    os.makedirs(out_dir, exist_ok=True)
    rank_net = os.path.join(out_dir, "rank%d_train.prototxt" % rank)
    with open(rank_net, "w") as f:
        f.write(str(net))
    sp.ClearField("train_net")
    sp.net = rank_net
    base_lr = sp.base_lr * (num_ranks if lr_scaling == "linear" else 1)
    sp.base_lr = base_lr
    if sp.HasField("random_seed"):
        sp.random_seed = sp.random_seed * num_ranks + rank if num_ranks > 1 else sp.random_seed
    rank_solver = os.path.join(out_dir, "rank%d_solver.prototxt" % rank)
    with open(rank_solver, "w") as f:
        f.write(str(sp))
    plan = dict(rank=rank, num_ranks=num_ranks, batch_per_rank=batches[0],
                effective_batch=batches[0] * num_ranks, base_lr=base_lr, net=rank_net, solver=rank_solver)
    return rank_solver, plan
