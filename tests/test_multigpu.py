"""Data-parallel training pieces that run without a GPU: LMDB sharding, per-rank seed
streams, per-rank solver/net files (instantiated in real Caffe, CPU mode), and the
tools/train_multigpu.py command line."""
import json
import os
import subprocess
import sys

import pytest

from ltc import multigpu, sharding

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO, "tools", "train_multigpu.py")


@pytest.mark.parametrize("n,ranks", [(10, 2), (11, 3), (5, 5), (7, 1)])
def test_shards_are_disjoint_and_cover_the_lmdb(n, ranks):
    keys = ["k%02d" % i for i in range(n)]
    parts = [sharding.shard_keys(keys, r, ranks) for r in range(ranks)]
    seen = [k for p in parts for k in p]
    assert sorted(seen) == keys                      # cover, no key twice
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_seed_streams_differ_per_rank_and_keep_the_single_rank_seed():
    assert sharding.shard_seed(1701, 0, 1) == 1701
    seeds = [sharding.shard_seed(1701, r, 4) for r in range(4)]
    assert len(set(seeds)) == 4


@pytest.mark.parametrize("shard,num", [(2, 2), (-1, 2), (0, 0)])
def test_bad_shard_is_refused(shard, num):
    with pytest.raises(ValueError, match="shard"):
        sharding.shard_keys(["a", "b"], shard, num)


def test_pipelines_of_two_ranks_read_disjoint_halves(tmp_path, make_test_lmdb):
    from ltc.pipeline import BatchPipeline
    src = str(tmp_path / "db")
    make_test_lmdb(src, 8)
    pipes = [BatchPipeline(src, 2, workers=0, shard=r, num_shards=2) for r in range(2)]
    try:
        keys = [set(bytes(k) for k in p._maker.keys) for p in pipes]
        assert not keys[0] & keys[1]
        assert len(keys[0] | keys[1]) == 8
        assert pipes[0].n_db == pipes[1].n_db == 4
        assert pipes[0].cfg["seed"] != pipes[1].cfg["seed"]
        b0, b1 = pipes[0].next_batch().copy(), pipes[1].next_batch().copy()
        assert b0.shape == b1.shape and not (b0 == b1).all()
    finally:
        for p in pipes:
            p.close()
    with pytest.raises(ValueError, match="shard"):
        BatchPipeline(src, 2, workers=0, shard=2, num_shards=2)


def _demo_solver(tmp_path, make_test_lmdb, batch=4):
    """The demo solver and net, reading a small test LMDB in this process (workers 0)."""
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format
    src = str(tmp_path / "db")
    make_test_lmdb(src, 8)
    sp = caffe_pb2.SolverParameter()
    text_format.Merge(open(os.path.join(REPO, "prototxt", "demo", "solver.prototxt")).read(), sp)
    net = caffe_pb2.NetParameter()
    text_format.Merge(open(os.path.join(REPO, sp.net)).read(), net)
    for layer in net.layer:
        if layer.type == "Python" and layer.python_param.module == "counting_data":
            p = json.loads(layer.python_param.param_str)
            p.update(source=src, workers=0, batch_size=batch)
            layer.python_param.param_str = json.dumps(p)
    (tmp_path / "net.prototxt").write_text(str(net))
    sp.net = str(tmp_path / "net.prototxt")
    (tmp_path / "solver.prototxt").write_text(str(sp))
    return str(tmp_path / "solver.prototxt"), sp


@pytest.mark.parametrize("mode,lr,per_rank,effective,lr_factor",
                         [("per-gpu", "none", 4, 8, 1), ("split", "none", 2, 4, 1), ("per-gpu", "linear", 4, 8, 2)])
def test_rank_files_shard_the_train_layer_only(tmp_path, make_test_lmdb, mode, lr, per_rank, effective, lr_factor):
    import caffe
    solver, sp = _demo_solver(tmp_path, make_test_lmdb)
    for rank in range(2):
        path, plan = multigpu.rank_files(solver, rank, 2, str(tmp_path / "ranks"), mode, lr)
        assert plan["batch_per_rank"] == per_rank and plan["effective_batch"] == effective
        assert plan["base_lr"] == pytest.approx(sp.base_lr * lr_factor)
        text = open(plan["net"]).read()
        assert text.count('\\"shard\\": %d' % rank) == 1      # TRAIN data layer only
        assert text.count("num_shards") == 1
        # real Caffe builds the rank's net; its data layer reads half the LMDB
        caffe.set_mode_cpu()
        net = caffe.Net(plan["net"], caffe.TRAIN)
        data = net.layers[list(net._layer_names).index("data")]
        try:
            assert data.pipeline.n_db == 4
            assert data.pipeline.batch_size == per_rank
        finally:
            data.close()


def test_split_refuses_an_uneven_batch(tmp_path, make_test_lmdb):
    solver, _ = _demo_solver(tmp_path, make_test_lmdb, batch=6)
    with pytest.raises(ValueError, match="cannot be split"):
        multigpu.rank_files(solver, 0, 4, str(tmp_path / "r"), "split")


def _run(args):
    return subprocess.run([sys.executable, TOOL] + args, capture_output=True, text=True, timeout=300, cwd=REPO)


def test_cli_dry_run_prints_the_plan(tmp_path, make_test_lmdb):
    solver, _ = _demo_solver(tmp_path, make_test_lmdb)
    r = _run(["--solver", solver, "--gpus", "0,1", "--dry-run", "--workdir", str(tmp_path / "w")])
    assert r.returncode == 0, r.stderr
    assert "effective batch 8" in r.stdout
    plans = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert [p["gpu"] for p in plans] == [0, 1]


def test_cli_usage_errors(tmp_path):
    assert _run(["--solver", str(tmp_path / "missing.prototxt")]).returncode == 2
    r = _run(["--solver", os.path.join(REPO, "prototxt", "demo", "solver.prototxt"), "--gpus", "0,0"])
    assert r.returncode == 2 and "distinct" in r.stderr


def test_cli_without_nccl_says_so(tmp_path, make_test_lmdb):
    import caffe
    if hasattr(caffe, "NCCL") and hasattr(caffe.NCCL, "new_uid"):
        pytest.skip("this pycaffe has NCCL (a CUDA build): training would need a GPU")
    solver, _ = _demo_solver(tmp_path, make_test_lmdb)
    r = _run(["--solver", solver, "--gpus", "0"])
    assert r.returncode == 1 and "no NCCL" in r.stderr
