"""The committed nets instantiate in real Caffe with the real data layer, and `caffe train`
trains, snapshots and resumes (-snapshot); pycaffe's get_solver works on the same files."""
import json
import os
import re
import subprocess

import numpy as np
import pytest

import caffe
from caffe.proto import caffe_pb2
from google.protobuf import text_format

from ltc import REPO
from ltc import nets as mp

CAFFE = os.path.join(REPO, ".venv", "bin", "caffe")
TRAIN_VALS = sorted(rel for rel in mp.all_files() if rel.endswith("train_val.prototxt"))


def shrink(rel, train_lmdb, val_lmdb, batch=2, workers=0):
    """The committed net with its LMDBs and batch replaced (everything else as committed)."""
    net = caffe_pb2.NetParameter()
    text_format.Merge(open(os.path.join(REPO, rel)).read(), net)
    for layer in net.layer:
        if layer.type == "Python" and layer.python_param.module == "counting_data":
            p = json.loads(layer.python_param.param_str)
            test = layer.include[0].phase == caffe_pb2.TEST
            p.update(source=str(val_lmdb if test else train_lmdb), batch_size=batch, workers=workers)
            layer.python_param.param_str = json.dumps(p)
    return net


@pytest.fixture(scope="module")
def lmdbs(tmp_path_factory):
    from conftest import write_test_lmdb
    root = tmp_path_factory.mktemp("lmdb")
    write_test_lmdb(str(root / "train"), 6, seed=1)
    write_test_lmdb(str(root / "val"), 3, seed=2, encoded=True)
    return root / "train", root / "val"


def test_all_committed_train_val_nets_are_listed():
    assert len(TRAIN_VALS) == 10  # default, 7 variants, stacked, demo


@pytest.mark.parametrize("rel", TRAIN_VALS)
def test_committed_net_runs_forward_backward_in_caffe(rel, lmdbs, tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(str(shrink(rel, *lmdbs)))
    net = caffe.Net(str(path), caffe.TRAIN)
    try:
        loss = float(np.asarray(net.forward()["loss"]).ravel()[0])
        assert np.isfinite(loss) and loss > 0
        net.backward()
        assert np.abs(net.params["conv1"][0].diff).sum() > 0
        dim = 20 if "dim20" in rel else 1000
        assert net.blobs["fc8"].data.shape == ((12 if "stacked" in rel else 2), dim)
    finally:
        for layer in net.layers:
            if hasattr(layer, "close"):
                layer.close()


def _solver_file(tmp_path, lmdbs, max_iter, snapshot):
    net = tmp_path / "train_val.prototxt"
    net.write_text(str(shrink("prototxt/demo/train_val.prototxt", *lmdbs, workers=1)))
    s = caffe_pb2.SolverParameter()
    text_format.Merge(open(os.path.join(REPO, "prototxt/demo/solver.prototxt")).read(), s)
    s.net = str(net)
    s.max_iter, s.snapshot, s.display, s.test_interval = max_iter, snapshot, 1, 2
    s.snapshot_prefix = str(tmp_path / "snap")
    path = tmp_path / ("solver_%d.prototxt" % max_iter)
    path.write_text(str(s))
    return path


def _run(args, cwd):
    env = dict(os.environ, GLOG_minloglevel="0", GLOG_logtostderr="1")
    return subprocess.run([CAFFE] + args, cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def test_caffe_train_snapshots_and_resumes(tmp_path, lmdbs):
    first = _run(["train", "-solver", str(_solver_file(tmp_path, lmdbs, 2, 2))], REPO)
    assert first.returncode == 0, first.stderr[-3000:]
    losses = re.findall(r"Iteration \d+ .*loss = ([0-9.e+-]+)", first.stderr)
    assert losses and all(np.isfinite(float(x)) for x in losses)
    assert "Test net output #0: loss" in first.stderr
    state = tmp_path / "snap_iter_2.solverstate"
    assert state.exists() and (tmp_path / "snap_iter_2.caffemodel").exists()
    resumed = _run(["train", "-solver", str(_solver_file(tmp_path, lmdbs, 4, 2)), "-snapshot", str(state)], REPO)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from" in resumed.stderr
    assert re.search(r"Iteration 3 .*loss = ", resumed.stderr)
    assert not re.search(r"Iteration 1 .*loss = ", resumed.stderr)
    assert (tmp_path / "snap_iter_4.caffemodel").exists()


def test_pycaffe_get_solver_steps(tmp_path, lmdbs):
    solver = caffe.get_solver(str(_solver_file(tmp_path, lmdbs, 2, 100)))
    try:
        before = solver.net.params["conv1"][0].data.copy()
        solver.step(1)
        assert solver.iter == 1
        assert not np.array_equal(before, solver.net.params["conv1"][0].data)
    finally:
        for net in [solver.net] + list(solver.test_nets):
            for layer in net.layers:
                if hasattr(layer, "close"):
                    layer.close()
