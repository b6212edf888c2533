"""Every option of tools/make_prototxt.py --custom, turned on at a non-default value, lands where
its name says with its numerical meaning, in the files and in real Caffe (issue 32: no test used to
turn on most of them; see tests/option_coverage.py)."""
import json
import os

import numpy as np
import pytest

import caffe
from caffe.proto import caffe_pb2
from google.protobuf import text_format

from conftest import load_script, write_test_lmdb
from test_user_visible import caffe_lr_log

mp = load_script("tools/make_prototxt.py")

# every --custom option at a non-default value (written out, so that tests/option_coverage.py sees each)
OPTIONS = ["--dim", "7", "--crop", "224", "--interpolation", "cubic", "--gray-prob", "1.0", "--margin", "3.5",
           "--filler", "gaussian", "--layout", "stacked", "--batch", "3", "--test-batch", "2",
           "--partner", "same_source", "--workers", "0", "--seed", "42", "--base-lr", "0.003", "--max-iter", "9",
           "--stepsize", "4", "--snapshot", "5", "--test-iter", "2", "--test-interval", "3", "--display", "2",
           "--snapshot-prefix", "runs/opt/counting", "--fc-bias", "0.25", "--fc8-bias", "-0.5", "--fc8-std", "0.02",
           "--solver-type", "Adam"]


def test_the_list_holds_every_custom_option():
    """OPTIONS turns on every option of make_prototxt's --custom groups (a new one must be added here)."""
    import argparse
    seen = []
    original = argparse.ArgumentParser.parse_args

    def capture(self, *a, **k):
        seen.append(self)
        raise SystemExit(0)

    argparse.ArgumentParser.parse_args = capture
    try:
        with pytest.raises(SystemExit):
            mp.main([])
    finally:
        argparse.ArgumentParser.parse_args = original
    groups = [g for g in seen[0]._action_groups if g.title.startswith(("options for --custom", "the start"))]
    flags = {a.option_strings[0] for g in groups for a in g._group_actions}
    assert flags - {"--train-lmdb", "--val-lmdb", "--warmup"} == set(OPTIONS[::2])


def read(path, message):
    m = message()
    text_format.Merge(open(str(path)).read(), m)
    return m


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    d = tmp_path_factory.mktemp("gen")
    train_db, val_db = d / "train_lmdb", d / "val_lmdb"
    write_test_lmdb(str(train_db), 6, seed=1)
    write_test_lmdb(str(val_db), 4, seed=2)
    assert mp.main(["--out-root", str(d), "--custom", "opt", "--train-lmdb", str(train_db), "--val-lmdb", str(val_db)]
                   + OPTIONS) == 0
    root = d / "prototxt" / "opt"
    return dict(dir=d, root=root, net=read(root / "train_val.prototxt", caffe_pb2.NetParameter),
                solver=read(root / "solver.prototxt", caffe_pb2.SolverParameter), train_db=str(train_db),
                val_db=str(val_db))


def test_every_custom_option_is_in_the_generated_files(generated):
    net, s = generated["net"], generated["solver"]
    data = {l.include[0].phase: l for l in net.layer if l.type == "Python" and l.python_param.module == "counting_data"}
    train = json.loads(data[caffe_pb2.TRAIN].python_param.param_str)
    test = json.loads(data[caffe_pb2.TEST].python_param.param_str)
    assert train == dict(source=generated["train_db"], batch_size=3, crop_size=224, interpolation="cubic",
                         gray_prob=1.0, seed=42, workers=0, prefetch=4, stack=True, partner="same_source")
    # the partner is a training choice: the TEST phase keeps the paper's (any other image of the batch)
    assert test == dict({k: v for k, v in train.items() if k != "partner"}, source=generated["val_db"], batch_size=2,
                        seed=43, test_batches=2)
    assert list(data[caffe_pb2.TRAIN].top) == ["data"]                       # --layout stacked: one top
    layers = {l.name: l for l in net.layer}
    loss = layers["loss"]
    assert json.loads(loss.python_param.param_str) == {"M": 3.5}
    fc8 = layers["fc8"].inner_product_param
    assert fc8.num_output == 7
    assert (fc8.weight_filler.type, fc8.weight_filler.std) == ("gaussian", pytest.approx(0.02))
    assert fc8.bias_filler.value == pytest.approx(-0.5)
    for name in ("fc6", "fc7"):
        p = layers[name].inner_product_param
        assert (p.weight_filler.type, p.weight_filler.std, p.bias_filler.value) == \
            ("gaussian", pytest.approx(0.005), pytest.approx(0.25))
    assert (layers["conv1"].convolution_param.weight_filler.type, layers["conv1"].convolution_param.weight_filler.std) \
        == ("gaussian", pytest.approx(0.01))
    assert s.type == "Adam" and s.base_lr == pytest.approx(0.003) and s.lr_policy == "step" and s.stepsize == 4
    assert (s.max_iter, s.snapshot, list(s.test_iter), s.test_interval, s.display, s.random_seed) == (9, 5, [2], 3, 2, 42)
    assert s.snapshot_prefix == "runs/opt/counting" and s.average_loss == 2
    assert not os.path.exists(str(generated["root"] / "deploy.prototxt"))    # stacked: no separate deploy


def test_generated_net_in_caffe_has_the_options_meaning(generated):
    """In real Caffe: 224 crop -> 6N x 3 x 112 x 112 stacked inputs, all gray (gray_prob 1), a 7-d
    counting vector, the fc biases and fc8 std as asked; with phi = 0 the loss is exactly M = 3.5."""
    net = caffe.Net(str(generated["root"] / "train_val.prototxt"), caffe.TRAIN)
    try:
        net.forward()
        data = net.blobs["data"].data
        assert data.shape == (18, 3, 112, 112)
        assert np.array_equal(data[:, 0], data[:, 1]) and np.array_equal(data[:, 0], data[:, 2])   # gray
        assert net.blobs["fc8"].data.shape == (18, 7)
        assert np.all(net.params["fc6"][1].data == np.float32(0.25)) and np.all(net.params["fc8"][1].data == np.float32(-0.5))
        w = net.params["fc8"][0].data
        # 7 x 4096 Gaussian draws: the sample std is within 3 % of 0.02 (its relative s.e. is 0.4 %)
        assert w.shape == (7, 4096) and abs(w.std() / 0.02 - 1) < 0.03
        assert abs(net.params["fc6"][0].data.std() / 0.005 - 1) < 0.03
        net.params["fc8"][0].data[...] = 0          # phi = relu(0 * x - 0.5) = 0: the loss is the margin
        net.forward()
        assert float(np.asarray(net.blobs["loss"].data).ravel()[0]) == 3.5
        assert not np.any(net.blobs["fc8"].data)
    finally:
        net.layers[0].close()


def test_generated_solver_lr_in_real_caffe(generated, tmp_path):
    """--solver-type Adam --base-lr 0.003 --stepsize 4: caffe train logs lr = 0.003 * 0.9^floor(it / 4)
    (the learning-rate settings on a tiny net), and pycaffe builds an AdamSolver from the file."""
    lrs = caffe_lr_log(tmp_path, open(str(generated["root"] / "solver.prototxt")).read(), 10)
    assert sorted(lrs) == list(range(10))
    for it, lr in lrs.items():
        assert lr == pytest.approx(0.003 * 0.9 ** (it // 4), rel=1e-5), it


def test_check_reports_a_stale_file(tmp_path, capsys):
    """--check: 0 when the files on disk are the generator's, 1 (naming the file) when one differs."""
    assert mp.main(["--out-root", str(tmp_path)]) == 0
    assert mp.main(["--out-root", str(tmp_path), "--check"]) == 0
    path = tmp_path / "prototxt" / "solver.prototxt"
    text = path.read_text()
    assert "base_lr: 0.0001\n" in text
    path.write_text(text.replace("base_lr: 0.0001\n", "base_lr: 0.001\n"))
    capsys.readouterr()
    assert mp.main(["--out-root", str(tmp_path), "--check"]) == 1
    captured = capsys.readouterr()
    assert "solver.prototxt" in captured.out + captured.err


@pytest.mark.parametrize("workers", ["auto", "3"])
def test_workers_option_reaches_both_data_layers(tmp_path, workers):
    assert mp.main(["--out-root", str(tmp_path), "--custom", "w", "--workers", workers]) == 0
    net = read(tmp_path / "prototxt" / "w" / "train_val.prototxt", caffe_pb2.NetParameter)
    got = [json.loads(l.python_param.param_str)["workers"] for l in net.layer if l.type == "Python"
           and l.python_param.module == "counting_data"]
    assert got == [workers if workers == "auto" else int(workers)] * 2
