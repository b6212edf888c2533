"""tools/analyze.py's options that no test turned on (issue 32, tests/option_coverage.py), each at a
non-default value, checked against numbers computed here with numpy and OpenCV from the model's
own weights: the image options shared by the subcommands (--view center, --crop, --interp,
--color-mode gray, --max-images), mean-vector --threshold, crop-scale --min-area/--max-area/--bins/
--seed, neighbours --seed, table5 --gray-prob/--seed/--deploys/--max-images, log --margin."""
import csv
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

import caffe

from conftest import load_script
from test_user_visible import small_images, tiny_model, write_images_lmdb  # noqa: F401 (tiny_model: fixture)
from ltc.analysis import features
from ltc.analysis import table5 as t5

analyze = load_script("tools/analyze.py")
CAFFE_BIN = os.path.join(os.path.dirname(sys.executable), "caffe")
FLAGS = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC, "area": cv2.INTER_AREA, "lanczos": cv2.INTER_LANCZOS4}


def read_csv(path):
    with open(str(path)) as f:
        return list(csv.DictReader(f))


def weights(tiny):
    net = caffe.Net(str(tiny / "deploy.prototxt"), str(tiny / "model.caffemodel"), caffe.TEST)
    return net.params["fc8"][0].data.astype(np.float64), net.params["fc8"][1].data.astype(np.float64)


def phi_numpy(tiny, views_hwc, gray):
    """relu(W v + b) of each 8 x 8 x 3 uint8 view after the colour mode and per-image normalisation."""
    W, b = weights(tiny)
    out = []
    for v in views_hwc:
        v = v.astype(np.float64)
        if gray:
            v = np.repeat(v.mean(axis=2, keepdims=True), 3, axis=2)
        v = (v - v.mean()) / (v.std() + 1e-5)
        out.append(np.maximum(W @ v.transpose(2, 0, 1).ravel() + b, 0))
    return np.array(out)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    d = tmp_path_factory.mktemp("scenes")
    images = small_images(10, seed=41)
    counts = np.array([0, 1, 2, 3, 1, 2, 0, 3, 2, 1])
    return write_images_lmdb(d / "db", images, counts), images, counts


SHARED = ["--view", "center", "--crop", "16", "--interp", "cubic", "--color-mode", "gray", "--max-images", "7",
          "--batch", "3"]


def reference_F(tiny, images):
    """The features under SHARED: the central 16 x 16 of each 24 x 24 image, cubic to 8 x 8, gray."""
    views = [cv2.resize(img[4:20, 4:20], (8, 8), interpolation=cv2.INTER_CUBIC) for img in images[:7]]
    return phi_numpy(tiny, views, gray=True)


def run(tiny, cmd, source, out, *extra):
    argv = [cmd, "--deploy", str(tiny / "deploy.prototxt"), "--weights", str(tiny / "model.caffemodel"),
            "--source", source, "--out", str(out)] + list(extra)
    assert analyze.main(argv) == 0, argv
    return out


def test_shared_image_options_reach_every_image_subcommand(tiny_model, scenes, tmp_path):
    db, images, counts = scenes
    F = reference_F(tiny_model, images)
    norms = np.linalg.norm(F, axis=1)
    # rtol: float32 net outputs against float64 numpy
    out = run(tiny_model, "mean-vector", db, tmp_path / "mv", *(SHARED + ["--threshold", "1.5"]))
    rows = read_csv(out / "mean_vector.csv")
    np.testing.assert_allclose([float(r["mean"]) for r in rows], F.mean(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose([float(r["std"]) for r in rows], F.std(0), rtol=1e-4, atol=1e-7)
    mv = json.loads((out / "mean_vector.json").read_text())
    assert mv["n_images"] == 7 and mv["threshold"] == 1.5
    assert mv["n_above_threshold"] == int((F.mean(0) > 1.5).sum())
    assert 0 < mv["n_above_threshold"] < mv["n_nonzero"]         # 1.5 separates the dimensions
    out = run(tiny_model, "norm-ranking", db, tmp_path / "nr", *(SHARED + ["--k", "3"]))
    got = sorted(float(r["norm"]) for r in read_csv(out / "norms.csv"))
    np.testing.assert_allclose(got, np.sort(norms), rtol=1e-5)
    out = run(tiny_model, "neurons", db, tmp_path / "ne", *(SHARED + ["--neurons", "2", "--k", "2"]))
    ne = json.loads((out / "neurons.json").read_text())
    want = np.lexsort((np.arange(5), -F.mean(0)))[:2]
    assert ne["neurons"] == want.tolist()
    np.testing.assert_allclose(ne["neuron_means"], F.mean(0)[want], rtol=1e-5)
    out = run(tiny_model, "count-check", db, tmp_path / "cc", *SHARED)
    for r in json.loads((out / "count_check.json").read_text())["per_count"]:
        sel = counts[:7] == r["k"]
        assert r["count"] == int(sel.sum()) and r["mean"] == pytest.approx(norms[sel].mean(), rel=1e-5)
    out = run(tiny_model, "neighbours", db, tmp_path / "nn", *(SHARED + ["--database", "", "--queries", "3",
                                                                          "--k", "2", "--seed", "13"]))
    nn = json.loads((out / "neighbours.json").read_text())
    q = np.sort(np.random.default_rng(13).choice(7, 3, replace=False))
    assert nn["queries"] == q.tolist()
    for qi, row in zip(q, nn["distances"]):
        d = np.linalg.norm(F - F[qi], axis=1)
        d[qi] = np.inf
        np.testing.assert_allclose(row, np.sort(d)[:2], rtol=1e-4, atol=1e-6)


def test_neighbours_seed_picks_other_queries(tiny_model, scenes, tmp_path):
    db, _, _ = scenes
    picked = []
    for seed in ("1", "2"):
        out = run(tiny_model, "neighbours", db, tmp_path / seed, "--database", "", "--queries", "3", "--k", "1",
                  "--seed", seed)
        picked.append(json.loads((out / "neighbours.json").read_text())["queries"])
    assert picked[0] != picked[1]
    assert picked == [np.sort(np.random.default_rng(s).choice(10, 3, replace=False)).tolist() for s in (1, 2)]


def test_crop_scale_area_range_bins_and_seed(tiny_model, scenes, tmp_path):
    """crop-scale --min-area 0.6 --max-area 0.8 --bins 2 --crops 4 --seed 5 --interp linear: every crop's
    area in [0.6, 0.8], the boxes those of crop_box with rng (5, image), each crop's norm numpy's, the
    two bins' edges 0.6 / 0.7 / 0.8 and their means numpy's."""
    db, images, _ = scenes
    out = run(tiny_model, "crop-scale", db, tmp_path / "cs", "--min-area", "0.6", "--max-area", "0.8", "--bins", "2",
              "--crops", "4", "--seed", "5", "--set-size", "2", "--interp", "linear")
    rows = read_csv(out / "crops.csv")
    assert len(rows) == 2 * 2 * 4
    for i in {int(r["index"]) for r in rows}:
        rng = np.random.default_rng([5, i])
        mine = [r for r in rows if int(r["index"]) == i]
        for r in mine:
            assert tuple(int(r[k]) for k in ("y0", "x0", "h", "w")) == features.crop_box(rng, 24, 24, 0.6, 0.8)
            assert 0.6 <= float(r["area"]) <= 0.8
        y = [images[i][int(r["y0"]):int(r["y0"]) + int(r["h"]), int(r["x0"]):int(r["x0"]) + int(r["w"])] for r in mine]
        F = phi_numpy(tiny_model, [cv2.resize(c, (8, 8), interpolation=cv2.INTER_LINEAR) for c in y], gray=False)
        np.testing.assert_allclose([float(r["norm"]) for r in mine], np.linalg.norm(F, axis=1), rtol=1e-4)
    cs = json.loads((out / "crop_scale.json").read_text())
    for name, s in cs["sets"].items():
        assert [(b["lo"], b["hi"]) for b in s["bins"]] == [(0.6, pytest.approx(0.7)), (pytest.approx(0.7), 0.8)]
        a = np.array([float(r["area"]) for r in rows if r["set"] == name])
        v = np.array([float(r["norm"]) for r in rows if r["set"] == name])
        for k, b in enumerate(s["bins"]):
            sel = (a >= b["lo"]) & ((a < b["hi"]) if k == 0 else (a <= b["hi"]))
            assert b["count"] == int(sel.sum())
            if sel.any():
                assert b["mean"] == pytest.approx(v[sel].mean(), rel=1e-6)


@pytest.fixture(scope="module")
def big_images_db(tmp_path_factory):
    rng = np.random.default_rng(9)
    imgs = [cv2.resize(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8), (20, 20), interpolation=cv2.INTER_CUBIC)
            for _ in range(5)]
    return write_images_lmdb(tmp_path_factory.mktemp("t5") / "db", imgs)


def test_table5_gray_prob_seed_deploys_and_max_images(tiny_model, big_images_db, tmp_path):
    """table5 --gray-prob 1 --seed 4 --max-images 3 with --deploys (one per model): the matrix is the library's
    for those settings (every image gray), and another seed or gray probability gives another matrix."""
    deploy, model = str(tiny_model / "deploy.prototxt"), str(tiny_model / "model.caffemodel")

    def cli(name, *extra):
        out = tmp_path / name
        assert analyze.main(["table5", "--deploys", deploy, deploy, "--weights", model, model, "--train-methods",
                             "area", "cubic", "--source", big_images_db, "--crop", "16", "--out", str(out)]
                            + list(extra)) == 0
        return json.loads((out / "table5.json").read_text())

    res = cli("a", "--gray-prob", "1.0", "--seed", "4", "--max-images", "3")
    assert res["n_images"] == 3 and res["n_gray"] == 3 and res["seed"] == 4 and len(res["matrix"]) == 2
    phi = features.CaffeFeatures(deploy, model, batch=8, log=None)
    ref = t5.table5([("area", phi), ("cubic", phi)], features.ImageSet(big_images_db, 3), crop=16, seed=4,
                    gray_prob=1.0, progress=False)
    np.testing.assert_allclose(res["matrix"], ref["matrix"], rtol=1e-9)
    other_seed, colour = cli("b", "--gray-prob", "1.0", "--seed", "5", "--max-images", "3"), \
        cli("c", "--gray-prob", "0.0", "--seed", "4", "--max-images", "3")
    assert colour["n_gray"] == 0
    assert not np.allclose(other_seed["matrix"], res["matrix"]) and not np.allclose(colour["matrix"], res["matrix"])


COLLAPSED_NET = """name: "collapsed"
layer { name: "x" type: "DummyData" top: "x" dummy_data_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "f" inner_product_param { num_output: 4
  weight_filler { type: "constant" value: 0 } } }
layer { name: "split" type: "Split" bottom: "f" top: "t1" top: "t2" top: "t3" top: "t4" top: "dx" top: "dy" }
layer { name: "loss" type: "Python" bottom: "t1" bottom: "t2" bottom: "t3" bottom: "t4" bottom: "dx" bottom: "dy"
  top: "loss" top: "count_term" top: "contrast_term" top: "hinge_active" top: "norm_dx"
  loss_weight: 1 loss_weight: 0 loss_weight: 0 loss_weight: 0 loss_weight: 0
  python_param { module: "counting_loss" layer: "CountingLossLayer" param_str: '{"M": 3.5}' } }
"""


def test_log_margin_sets_the_trivial_solution_warning(tmp_path):
    """A real caffe train log of a net stuck at phi = 0 with M = 3.5: analyze.py log --margin 3.5 warns
    of the trivial solution; the default --margin 10 does not (a loss of 3.5 is not near 10)."""
    (tmp_path / "net.prototxt").write_text(COLLAPSED_NET)
    (tmp_path / "solver.prototxt").write_text('net: "net.prototxt"\nbase_lr: 0.01\nlr_policy: "fixed"\n'
                                              'max_iter: 6\ndisplay: 1\nsnapshot_after_train: false\n')
    env = dict(os.environ, GLOG_minloglevel="0", GLOG_logtostderr="1")
    proc = subprocess.run([CAFFE_BIN, "train", "-solver", "solver.prototxt"], cwd=str(tmp_path), capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (tmp_path / "train.log").write_text(proc.stderr)
    warned = {}
    for margin in ("3.5", None):
        out = tmp_path / ("out%s" % margin)
        argv = ["log", "--log", str(tmp_path / "train.log"), "--out", str(out)] + (["--margin", margin] if margin else [])
        assert analyze.main(argv) == 0
        warned[margin] = json.loads((out / "log.json").read_text())["warnings"]
    assert len(warned["3.5"]) == 1 and "M = 3.5" in warned["3.5"][0] and warned[None] == []
