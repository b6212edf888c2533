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
from ltc import nets

CAFFE = os.path.join(REPO, ".venv", "bin", "caffe")
TRAIN_VALS = sorted(rel for rel in nets.all_files() if rel.endswith("train_val.prototxt"))


def shrink(rel, train_lmdb, val_lmdb, batch=2, workers=0, fc=64):
    """The committed net with its LMDBs and batch replaced and fc6/fc7 narrowed to ``fc`` outputs
    (everything else as committed: the data layer's settings, the trunk, fc8, the loss)."""
    net = caffe_pb2.NetParameter()
    text_format.Merge(open(os.path.join(REPO, rel)).read(), net)
    for layer in net.layer:
        if fc and layer.type == "InnerProduct" and layer.name.split("_")[0] in ("fc6", "fc7"):
            layer.inner_product_param.num_output = fc
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
    images = write_test_lmdb(str(root / "train"), 6, seed=1)
    write_test_lmdb(str(root / "val"), 3, seed=2, encoded=True)
    return Lmdbs(root / "train", root / "val", images)


class Lmdbs(tuple):
    """(train, val) LMDB paths; .images: the train LMDB's images in key order."""
    def __new__(cls, train, val, images):
        self = super().__new__(cls, (train, val))
        self.images = images
        return self


def test_all_committed_train_val_nets_are_listed():
    assert len(TRAIN_VALS) == 13  # default, 7 variants, stacked, demo, study/main, study/linear, study/photos


def data_params(rel, phase=caffe_pb2.TRAIN):
    net = caffe_pb2.NetParameter()
    text_format.Merge(open(os.path.join(REPO, rel)).read(), net)
    (layer,) = [l for l in net.layer if l.type == "Python" and l.python_param.module == "counting_data"
                and l.include[0].phase == phase]
    return json.loads(layer.python_param.param_str)


def name_claims(rel):
    """What a net's folder name says about its data layer (the Table 4 ablations)."""
    name = rel.split("/")[-2]
    if name == "gray":
        return dict(gray_prob=1.0)
    if name == "color":
        return dict(gray_prob=0.0)
    if name.startswith("interp_"):
        return dict(interpolation=name[len("interp_"):])
    return {}


def test_variant_names_match_their_data_layers():
    claims = {rel: name_claims(rel) for rel in TRAIN_VALS}
    assert sum(bool(c) for c in claims.values()) == 6   # gray, color and four fixed methods
    for rel, claim in claims.items():
        for phase in (caffe_pb2.TRAIN, caffe_pb2.TEST):
            p = data_params(rel, phase)
            for key, value in claim.items():
                assert p[key] == value, (rel, key)


@pytest.mark.parametrize("rel", TRAIN_VALS)
def test_committed_net_runs_forward_backward_in_caffe(rel, lmdbs, tmp_path):
    from test_count_transforms import reference_sample
    from ltc import transforms
    from ltc import params as lp
    batch = 4
    path = tmp_path / "net.prototxt"
    path.write_text(str(shrink(rel, *lmdbs, batch=batch)))
    net = caffe.Net(str(path), caffe.TRAIN)
    try:
        loss = float(np.asarray(net.forward()["loss"]).ravel()[0])
        assert np.isfinite(loss) and loss > 0
        net.backward()
        assert np.abs(net.params["conv1"][0].diff).sum() > 0
        dim = 20 if "dim20" in rel else 1000
        stacked = '\\"stack\\": true' in open(os.path.join(REPO, rel)).read()
        assert stacked == (rel.startswith(("prototxt/stacked/", "prototxt/study/", "prototxt/demo/")))
        assert net.blobs["fc8"].data.shape == ((6 * batch if stacked else batch), dim)
        # the inputs are what the folder name says: the batch the data layer was planned to make
        # with the named setting (gray only / colour only / that OpenCV method), built here from
        # the LMDB's images with cv2 directly
        p = dict(dict(seed=lp.SEED, interpolation=lp.INTERPOLATION, gray_prob=lp.GRAY_PROB, crop_size=lp.CROP_SIZE),
                 **data_params(rel))
        p.update(name_claims(rel))
        # two batches: a per_batch draw can hit the named method on one batch (seed 1701: cubic
        # on batch 0, area on batch 1), not on both
        images = lmdbs.images
        groups = None   # partner "same_source" (the study's nets): y drawn within each key's source
        if p.get("partner") == "same_source":
            import lmdb
            with lmdb.open(str(lmdbs[0]), readonly=True, lock=False) as env, env.begin() as txn:
                groups = transforms.source_groups([k for k, _ in txn.cursor()])
        for b in (0, 1):
            if b:
                net.forward()
            plan = transforms.plan_batch(p["seed"], "train", b, len(images), batch, p["interpolation"], p["gray_prob"],
                                 groups=groups)
            if stacked:
                got = net.blobs["data"].data.reshape((6, batch) + net.blobs["data"].data.shape[1:])
            else:
                got = np.stack([net.blobs[t].data for t in transforms.INPUT_NAMES])
            for i in range(batch):
                for k, ref in enumerate(reference_sample(images, plan, i, p["crop_size"])):
                    np.testing.assert_allclose(got[k, i], ref, atol=1e-5,
                                               err_msg="%s batch %d sample %d input %d" % (rel, b, i, k))
            channels_equal = [all(np.array_equal(got[k, i, 0], got[k, i, c]) for k in range(6) for c in (1, 2))
                              for i in range(batch)]
            if p["gray_prob"] == 1.0:
                assert all(channels_equal)
            elif p["gray_prob"] == 0.0:
                assert not any(channels_equal)
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
    assert re.search(r"Test net output #\d+: loss = ", first.stderr)
    assert re.search(r"Train net output #\d+: hinge_active = ", first.stderr)   # the loss diagnostics
    state = tmp_path / "snap_iter_2.solverstate"
    assert state.exists() and (tmp_path / "snap_iter_2.caffemodel").exists()
    # fc6/fc7 narrowed (shrink): about 10 MB of weights and 60 MB of solver state (a history per
    # branch), not the full net's 0.23 GB and 1.4 GB
    assert state.stat().st_size + (tmp_path / "snap_iter_2.caffemodel").stat().st_size < 100 << 20
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


def test_committed_solvers_test_iter_equals_the_test_data_layers_test_batches():
    solvers = sorted(rel for rel in nets.all_files() if rel.endswith("solver.prototxt"))
    assert len(solvers) == len(TRAIN_VALS)
    for rel in solvers:
        s = caffe_pb2.SolverParameter()
        text_format.Merge(open(os.path.join(REPO, rel)).read(), s)
        tv = os.path.relpath(os.path.join(REPO, s.net), REPO) if not os.path.isabs(s.net) else s.net
        assert tv in TRAIN_VALS, (rel, s.net)
        assert list(s.test_iter) == [data_params(tv, caffe_pb2.TEST)["test_batches"]], rel


def test_test_passes_under_caffe_train_are_identical(tmp_path, lmdbs):
    """`caffe train` with base_lr 0: every TEST pass (test_iter = the layer's test_batches, which
    is smaller than one walk over the validation LMDB) sees the same batches, so the same loss."""
    net = shrink("prototxt/demo/train_val.prototxt", *lmdbs, workers=1)
    for layer in net.layer:
        if layer.type == "Python" and layer.python_param.module == "counting_data" and \
                layer.include[0].phase == caffe_pb2.TEST:
            p = json.loads(layer.python_param.param_str)
            p.update(test_batches=2, batch_size=2)   # val LMDB of 3 images: a walk takes 2 batches, pass 2 differs
            layer.python_param.param_str = json.dumps(p)
    (tmp_path / "tv.prototxt").write_text(str(net))
    s = caffe_pb2.SolverParameter()
    text_format.Merge(open(os.path.join(REPO, "prototxt/demo/solver.prototxt")).read(), s)
    s.net = str(tmp_path / "tv.prototxt")
    s.base_lr, s.max_iter, s.test_interval, s.display, s.snapshot = 0.0, 3, 1, 1, 0
    s.ClearField("test_iter")
    s.test_iter.append(2)
    s.test_initialization = True
    s.snapshot_prefix = str(tmp_path / "snap")
    (tmp_path / "solver.prototxt").write_text(str(s))
    res = _run(["train", "-solver", str(tmp_path / "solver.prototxt")], REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    losses = re.findall(r"Test net output #\d+: loss = ([0-9.e+-]+)", res.stderr)
    assert len(losses) >= 3 and len(set(losses)) == 1, losses
