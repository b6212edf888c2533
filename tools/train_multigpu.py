#!/usr/bin/env python3
"""Data-parallel training of the counting net on several GPUs with pycaffe and NCCL.

Caffe's `caffe train -gpu 0,1` refuses Python layers with more than one GPU. This runs one
solver process per GPU, as pycaffe's NCCL example does: rank r trains on GPU gpus[r], reads
the disjoint shard r of the LMDB with its own seed stream, and NCCL sums the gradients
after every backward pass (layer-wise when the solver has layer_wise_reduce). Rank 0 tests,
displays and snapshots.

Effective batch: --batch-mode per-gpu (default) keeps each rank's batch_size N, so one step
averages len(gpus) x N samples; --batch-mode split gives each rank N / len(gpus) (the
paper's batch overall). --lr-scaling none (default) keeps base_lr; linear multiplies it by
the number of GPUs. See ltc/multigpu.py.

    python tools/train_multigpu.py --solver prototxt/solver.prototxt --gpus 0,1
    python tools/train_multigpu.py --solver prototxt/solver.prototxt --gpus 0     # one GPU
    python tools/train_multigpu.py --solver prototxt/solver.prototxt --gpus 0,1 --dry-run

Needs a CUDA build with NCCL (./setup.sh --cuda). Exit codes: 0 done, 1 a rank failed or
the build cannot do it, 2 bad arguments.
"""
import argparse
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile

from google.protobuf import text_format

from ltc import multigpu


def _solve(solver_path, snapshot, gpus, uid, rank):
    import caffe
    caffe.set_device(gpus[rank])
    caffe.set_mode_gpu()
    caffe.set_solver_count(len(gpus))
    caffe.set_solver_rank(rank)
    caffe.set_multiprocess(True)
    solver = caffe.SGDSolver(solver_path)
    if snapshot:
        solver.restore(snapshot)
    nccl = caffe.NCCL(solver, uid)
    nccl.bcast()
    if solver.param.layer_wise_reduce:
        solver.net.after_backward(nccl)
    else:
        solver.add_callback(nccl)
    solver.step(solver.param.max_iter - solver.iter)


def parse_gpus(text):
    if text == "all":
        import caffe
        n = caffe.get_device_count() if hasattr(caffe, "get_device_count") else 0
        if n < 1:
            raise ValueError("--gpus all: no CUDA device found")
        return list(range(n))
    try:
        gpus = [int(g) for g in text.split(",") if g != ""]
    except ValueError:
        raise ValueError("--gpus %r: expected device ids such as 0,1 or 'all'" % text)
    if not gpus or len(set(gpus)) != len(gpus) or min(gpus) < 0:
        raise ValueError("--gpus %r: expected distinct device ids >= 0" % text)
    return gpus


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--solver", required=True, help="solver prototxt (its net has a counting_data layer)")
    ap.add_argument("--gpus", default="0", help="device ids, comma-separated, or 'all'")
    ap.add_argument("--batch-mode", choices=("per-gpu", "split"), default="per-gpu",
                    help="per-gpu: each rank keeps the batch (effective = GPUs x batch); split: batch / GPUs")
    ap.add_argument("--lr-scaling", choices=("none", "linear"), default="none",
                    help="linear: base_lr x number of GPUs")
    ap.add_argument("--snapshot", default=None, help=".solverstate to resume from (every rank)")
    ap.add_argument("--workdir", default=None, help="where the per-rank prototxts go (default: a temp dir)")
    ap.add_argument("--dry-run", action="store_true", help="write and print the per-rank plan, train nothing")
    a = ap.parse_args(argv)
    try:
        gpus = parse_gpus(a.gpus)
    except ValueError as e:
        ap.error(str(e))
    if not os.path.isfile(a.solver):
        ap.error("--solver %s: no such file" % a.solver)
    if a.snapshot and not os.path.isfile(a.snapshot):
        ap.error("--snapshot %s: no such file" % a.snapshot)
    made = a.workdir is None or not os.path.lexists(a.workdir)   # removed again if the plan fails
    workdir = a.workdir or tempfile.mkdtemp(prefix="train_multigpu_")
    plans = []
    try:
        for rank in range(len(gpus)):
            _, plan = multigpu.rank_files(a.solver, rank, len(gpus), workdir, a.batch_mode, a.lr_scaling)
            plans.append(dict(plan, gpu=gpus[rank]))
    except (ValueError, OSError, text_format.ParseError) as e:
        if made:
            shutil.rmtree(workdir, ignore_errors=True)
        print("train_multigpu: %s: %s" % (a.solver, e), file=sys.stderr)
        return 2
    p0 = plans[0]
    print("train_multigpu: %d rank(s) on GPU(s) %s; batch %d per rank, effective batch %d; base_lr %g (%s); "
          "per-rank files in %s" % (len(gpus), ",".join(map(str, gpus)), p0["batch_per_rank"],
                                    p0["effective_batch"], p0["base_lr"], a.lr_scaling, workdir), flush=True)
    if a.dry_run:
        for p in plans:
            print(json.dumps(p, sort_keys=True))
        return 0
    import caffe
    if not hasattr(caffe, "NCCL") or not hasattr(caffe.NCCL, "new_uid"):
        print("train_multigpu: this pycaffe has no NCCL (a CPU-only build, or built without USE_NCCL): "
              "build with ./setup.sh --cuda", file=sys.stderr)
        return 1
    uid = caffe.NCCL.new_uid()
    ctx = mp.get_context("fork")  # before any CUDA call in this process, as pycaffe's example does
    procs = [ctx.Process(target=_solve, args=(p["solver"], a.snapshot, gpus, uid, p["rank"]))
             for p in plans]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    bad = [i for i, p in enumerate(procs) if p.exitcode != 0]
    if bad:
        print("train_multigpu: rank(s) %s failed (exit codes %s)"
              % (",".join(map(str, bad)), ",".join(str(procs[i].exitcode) for i in bad)), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
