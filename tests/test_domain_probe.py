"""tools/domain_probe.py and ltc/probe_sklearn.py: the interval arithmetic, balanced label subsets,
items placed as in the scenes and seen through D(x), the pooled features, the classifier, and a
tiny end-to-end run through pycaffe (a model probed against its own init gains exactly 0)."""
import gzip
import json
import math
import os
import struct
import sys

import numpy as np
import pytest

from ltc import REPO
from ltc import domain_probe as lib
from ltc import probe_sklearn as ps

from conftest import load_script

domain_probe = load_script("tools/domain_probe.py")


# Student's t quantile with 2 degrees of freedom has a closed form: (2p - 1) / sqrt(2 p (1 - p))
T975_DF2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)


def test_paired_interval_is_the_t_interval():
    mean, half = ps.paired_interval([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert half == pytest.approx(T975_DF2 * 1.0 / math.sqrt(3), rel=1e-9)   # t(0.975, 2) sd / sqrt(n)
    assert math.isnan(ps.paired_interval([1.0])[1])


def test_gains_pair_by_seed_and_average_the_random_inits():
    acc = {}
    for s in (1, 2, 3):
        for l in ps.LAYERS:
            acc[("random1", 10, s, l)] = 50.0 + s
            acc[("random2", 10, s, l)] = 52.0 + s
            acc[("counting", 10, s, l)] = 54.0 + s + (0.5 if l == "conv3" and s == 2 else 0.0)
    g = ps.gains(acc, "counting", ["random1", "random2"])
    assert g[(10, "conv1")]["mean"] == pytest.approx(3.0) and g[(10, "conv1")]["half"] == pytest.approx(0.0)
    assert g[(10, "conv1")]["vs_best"] == pytest.approx(2.0)
    c3 = g[(10, "conv3")]
    assert c3["mean"] == pytest.approx(3.0 + 0.5 / 3)
    sd = np.std([3.0, 3.5, 3.0], ddof=1)
    assert c3["half"] == pytest.approx(T975_DF2 * sd / math.sqrt(3), rel=1e-9)
    assert c3["lo"] < c3["mean"] < c3["hi"] and c3["seeds"] == 3 and c3["inits"] == 2


def test_balanced_indices():
    labels = np.repeat(np.arange(4), [5, 6, 7, 8])
    idx = ps.balanced_indices(labels, 3, np.random.RandomState(0))
    assert np.bincount(labels[idx]).tolist() == [3, 3, 3, 3] and len(set(idx)) == 12
    assert np.array_equal(idx, ps.balanced_indices(labels, 3, np.random.RandomState(0)))
    with pytest.raises(ps.DomainProbeError, match="class 0 has 5 items, fewer than 6"):
        ps.balanced_indices(labels, 6, np.random.RandomState(0))


def fake_items(n, seed=0):
    rng = np.random.RandomState(seed)
    labels = np.arange(n) % 10
    imgs = np.zeros((n, 28, 28), np.uint8)
    for i, c in enumerate(labels):     # a class-dependent bar, so classes differ
        imgs[i, 4:24, 2 + 2 * c:6 + 2 * c] = 200 + rng.randint(0, 55)
    return imgs, labels


def test_items_are_placed_as_scene_items_and_seen_through_d():
    imgs, labels = fake_items(40)
    views, y, boxes = ps.make_items(imgs, labels, 3, 7)
    assert views.shape == (30, 3, 114, 114) and views.dtype == np.uint8
    assert np.bincount(y).tolist() == [3] * 10
    assert ((boxes[:, 2] >= 24) & (boxes[:, 2] <= 48)).all()
    assert ((boxes[:, 0] >= 14) & (boxes[:, 0] + boxes[:, 2] <= 242)).all()
    assert all(v.max() > 0 for v in views)           # the item is inside the 228 centre crop
    again = ps.make_items(imgs, labels, 3, 7)
    assert np.array_equal(again[0], views) and np.array_equal(again[2], boxes)
    img = np.zeros((256, 256, 3), np.uint8)
    img[14:242, 14:242] = 255
    assert (ps.d_view(img) == 255).all()             # D(x) is the central 228 crop at 114 px


def test_pool_features_mean_then_max():
    blob = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    f = ps.pool_features(blob)
    assert f.shape == (2, 6)
    assert np.allclose(f[0], [1.5, 5.5, 9.5, 3, 7, 11])


def test_fit_score_separable_and_chance():
    rng = np.random.RandomState(0)
    y = np.repeat(np.arange(3), 20)
    X = rng.normal(0, 1, (60, 5))
    X[np.arange(60), y] += 10       # one feature per class: separable for one-vs-rest least squares
    acc, alpha = ps.fit_score(X, y, X, y)
    assert acc == 100.0 and alpha in ps.ALPHAS
    Xn = rng.normal(0, 1, (60, 5))
    acc_noise, _ = ps.fit_score(Xn[:30], y[::2], rng.normal(0, 1, (3000, 5)), rng.randint(0, 3, 3000))
    assert 25 < acc_noise < 42          # chance 33.3 %; 3000 items: sd 0.9 points


pytest.importorskip("caffe")


def test_xavier_init_matches_caffes_xavier_distribution():
    net = ps.open_net(None, 3)
    w = net.params["conv1"][0].data
    scale = math.sqrt(3.0 / (3 * 11 * 11))
    assert np.abs(w).max() <= scale and np.abs(w).max() > 0.99 * scale
    assert w.std() == pytest.approx(scale / math.sqrt(3), rel=0.02)       # 34,848 uniform draws
    assert (net.params["conv2"][1].data == 0).all()
    assert np.array_equal(ps.open_net(None, 3).params["conv5"][0].data, net.params["conv5"][0].data)
    assert not np.array_equal(ps.open_net(None, 4).params["conv5"][0].data, net.params["conv5"][0].data)


def test_unfilled_or_missing_weights_are_named(tmp_path):
    with pytest.raises(ps.DomainProbeError, match="no such file"):
        ps.open_net(str(tmp_path / "none.caffemodel"))
    from caffe.proto import caffe_pb2
    empty = caffe_pb2.NetParameter(name="empty")
    p = tmp_path / "empty.caffemodel"
    p.write_bytes(empty.SerializeToString())
    with pytest.raises(ps.DomainProbeError, match="does not fill conv1, conv2, conv3, conv4, conv5"):
        ps.open_net(str(p))


def _write_idx(path, arr):
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, 8, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes())


@pytest.fixture
def fashion_dir(tmp_path):
    d = tmp_path / "fashion"
    d.mkdir()
    for pre, n, seed in (("train", 60, 0), ("t10k", 40, 1)):
        imgs, labels = fake_items(n, seed)
        _write_idx(str(d / ("%s-images-idx3-ubyte.gz" % pre)), imgs)
        _write_idx(str(d / ("%s-labels-idx1-ubyte.gz" % pre)), labels.astype(np.uint8))
    return str(d)


def test_end_to_end_model_against_its_own_init_gains_zero(tmp_path, fashion_dir, capsys):
    same = tmp_path / "same.caffemodel"
    ps.open_net(None, 5).save(str(same))
    args = ["--fashion-dir", fashion_dir, "--pool-per-class", "5", "--val-items", "30", "--per-class", "2", "4",
            "--seeds", "2", "--random-inits", "1", "--random-seed", "5", "--out-dir", str(tmp_path / "out"),
            "--batch", "16"]
    assert domain_probe.main(["--model", "counting=%s" % same] + args) == 0
    res = json.load(open(tmp_path / "out" / "fashion" / "gains.json"))
    assert res["val_items"] == 30 and res["train_pool"] == 50
    for key, g in res["gains"].items():          # identical features, identical subsets: exactly 0
        assert g["mean"] == 0.0 and g["half"] == 0.0, key
    other = tmp_path / "other.caffemodel"
    ps.open_net(None, 6).save(str(other))
    assert domain_probe.main(["--model", "counting=%s" % other] + args) == 0
    res = json.load(open(tmp_path / "out" / "fashion" / "gains.json"))
    assert any(g["mean"] != 0.0 for g in res["gains"].values())
    rows = open(tmp_path / "out" / "fashion" / "accuracy.csv").read().splitlines()
    assert len(rows) == 1 + 2 * 2 * 2 * 6            # models x per-class x seeds x layers
    out = capsys.readouterr().out
    assert "features of 80 items" in out and "paired 95 % t interval" in out


def test_bad_arguments_and_missing_elpv(tmp_path, fashion_dir, capsys, monkeypatch):
    assert domain_probe.main(["--model", "counting=%s" % (tmp_path / "no.caffemodel")]) == 2
    assert "no.caffemodel: no such file" in capsys.readouterr().err
    m = tmp_path / "m.caffemodel"
    ps.open_net(None, 1).save(str(m))
    rc = domain_probe.main(["--model", "c=%s" % m, "--fashion-dir", fashion_dir, "--pool-per-class", "5",
                            "--val-items", "30", "--per-class", "6", "--out-dir", str(tmp_path / "o")])
    assert rc == 2 and "exceeds the training pool" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "elpv_dataset", None)      # import fails as if not installed
    rc = domain_probe.main(["--model", "c=%s" % m, "--dataset", "elpv", "--out-dir", str(tmp_path / "o")])
    assert rc == 0 and "elpv probe skipped" in capsys.readouterr().out


def test_elpv_blocks_restart_at_type_changes():
    types = ["mono"] * 5 + ["poly"] * 4 + ["mono"] * 2
    assert lib.elpv_blocks(types, 3).tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 3, 4, 4]


def test_elpv_options_with_a_stand_in_package(tmp_path, monkeypatch, capsys):
    """The elpv path on a stand-in for the optional package (40 cells, 2 types): --elpv-block and
    --elpv-val-fraction shape the held-out blocks, --items-seed draws them."""
    import types
    rng = np.random.RandomState(0)
    images = rng.randint(0, 255, (40, 300, 300)).astype(np.uint8)
    probs = np.tile([0.0, 1.0, 0.0, 0.33], 10)
    kinds = np.array(["mono"] * 18 + ["poly"] * 22)
    utils = types.ModuleType("elpv_dataset.utils")
    utils.load_dataset = lambda: (images, probs, kinds)
    pkg = types.ModuleType("elpv_dataset")
    pkg.utils = utils
    monkeypatch.setitem(sys.modules, "elpv_dataset", pkg)
    monkeypatch.setitem(sys.modules, "elpv_dataset.utils", utils)
    m = tmp_path / "m.caffemodel"
    ps.open_net(None, 1).save(str(m))
    for seed in ("1", "2"):
        rc = domain_probe.main(["--model", "c=%s" % m, "--dataset", "elpv", "--per-class", "2", "--seeds", "2",
                                "--random-inits", "1", "--elpv-block", "5", "--elpv-val-fraction", "0.5",
                                "--items-seed", seed, "--out-dir", str(tmp_path / "o")])
        out = capsys.readouterr().out
        assert rc == 0, out
        line = [l for l in out.splitlines() if l.startswith("elpv:")][0]
        assert line.startswith("elpv: 40 cells (10 defective), 9 blocks")   # 18 mono: 4 blocks; 22 poly: 5
        res = json.load(open(tmp_path / "o" / "elpv" / "gains.json"))
        assert res["classes"] == 2 and res["train_pool"] + res["val_items"] == 40
    blocks = lib.elpv_blocks(kinds, 5)
    masks = {tuple(lib.elpv_val_mask(blocks, seed, 0.5)) for seed in range(1, 9)}
    assert len(masks) > 1                    # 9 blocks at 0.5: 8 seeds all alike has chance 2**-63
    for mask in masks:                       # whole blocks only
        assert all(len(set(np.array(mask)[blocks == b])) == 1 for b in range(9))
    assert not lib.elpv_val_mask(blocks, 1, 0.0).any() and lib.elpv_val_mask(blocks, 1, 1.0).all()
