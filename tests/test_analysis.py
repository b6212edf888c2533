"""Tests of ltc/analysis/ and tools/analyze.py (the paper's analyses).

Known answers: stub feature functions with known counting vectors (eq. 6, rankings,
neighbours, neurons), an exact recomputation of eq. 6 with OpenCV and the reference
normalisation, the crop sampler's area range, Spearman against scipy, a real Caffe log
written by ``caffe train`` in the test, and a tiny real deploy net end to end.
"""
import json
import os
import subprocess
import sys

import cv2
import lmdb
import numpy as np
import pytest

from ltc.analysis import caffelog, features, metrics
from ltc.analysis import table5 as t5
from ltc import transforms
from ltc.lmdb_io import image_to_datum
from conftest import load_script

analyze = load_script("tools/analyze.py")

CAFFE_BIN = os.path.join(os.path.dirname(sys.executable), "caffe")


# ----------------------------------------------------------------------------- helpers
class ListImages:
    """ImageSet-like list of in-memory images."""

    def __init__(self, images, labels=None):
        self.images = images
        self.labels = labels or [None] * len(images)
        self.names = ["img%d" % i for i in range(len(images))]

    def __len__(self):
        return len(self.images)

    def load(self, i):
        return self.images[i], self.labels[i]


class Stub:
    """A feature function with the CaffeFeatures interface: phi(x) = fn(x)."""

    def __init__(self, fn, input_size, dim):
        self.fn, self.input_size, self.dim = fn, input_size, dim
        self.calls = 0

    def __call__(self, x):
        self.calls += 1
        assert x.dtype == np.float32 and x.shape[1:] == (3, self.input_size, self.input_size)
        return np.asarray(self.fn(x), np.float64)


def linear_relu(seed, s, dim):
    w = np.random.default_rng(seed).normal(size=(dim, 3 * s * s)) / s
    return Stub(lambda x: np.maximum(x.reshape(len(x), -1).astype(np.float64) @ w.T, 0), s, dim), w


def random_images(n, size, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        small = rng.integers(0, 256, (size // 4, size // 4, 3), dtype=np.uint8)
        out.append(cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC))
    return out


# ----------------------------------------------------------------------------- Table 5 (eq. 6)
def test_table5_constant_features_give_nine():
    """phi = c for every input: sum_p phi(T_p x) - phi(D x) = 3c, so e_ij = 9|c|^2 / |c|^2 = 9 everywhere."""
    c = np.array([1.0, 0.0, 2.5])
    phi = Stub(lambda x: np.tile(c, (len(x), 1)), 8, 3)
    res = t5.table5([(m, phi) for m in features.TRAIN_METHODS], ListImages(random_images(5, 20)), crop=16, progress=False)
    assert res["matrix"].shape == (5, 5)
    np.testing.assert_allclose(res["matrix"], 9.0, rtol=1e-12)
    np.testing.assert_allclose(res["std"], 0.0, atol=1e-12)


def test_table5_equals_independent_recomputation():
    """e_ij recomputed from scratch: OpenCV resize of the HWC crop, reference gray/normalise, numpy phi."""
    s, crop, dim, n, seed, gray_prob = 8, 16, 6, 7, 5, 0.6
    imgs = random_images(n, 21, seed=3)
    phi_a, wa = linear_relu(1, s, dim)
    phi_b, wb = linear_relu(2, s, dim)
    res = t5.table5([("cubic", phi_a), ("mixed", phi_b)], ListImages(imgs), crop=crop, seed=seed,
                    gray_prob=gray_prob, chunk=3, progress=False)
    # the draws: deterministic, in range, and both colour modes / several methods occur
    again = t5.table5([("cubic", phi_a)], ListImages(imgs), crop=crop, seed=seed, gray_prob=gray_prob, progress=False)
    assert np.array_equal(again["offsets"], res["offsets"]) and np.array_equal(again["mixed"], res["mixed"])
    assert res["offsets"].min() >= 0 and res["offsets"].max() <= 21 - crop
    assert 0 < res["gray"].sum() < n and len(set(res["mixed"].tolist())) > 1

    def feats(w, v):
        return np.maximum(w @ v.astype(np.float64).ravel(), 0)

    def prep(v_hwc, gray):
        chw = v_hwc.transpose(2, 0, 1)
        return transforms.normalize(transforms.to_gray(chw) if gray else chw)

    expect = np.zeros((2, 5))
    dens = np.zeros(2)
    for i, img in enumerate(imgs):
        y0, x0 = res["offsets"][i]
        x = img[y0:y0 + crop, x0:x0 + crop]
        g = bool(res["gray"][i])
        tiles = [x[:s, :s], x[:s, s:], x[s:, :s], x[s:, s:]]
        downs = [cv2.resize(x, (s, s), interpolation=transforms.INTERP_FLAGS[m]) for m in features.METHODS]
        for r, w in enumerate((wa, wb)):
            t = sum(feats(w, prep(v, g)) for v in tiles)
            d = [feats(w, prep(v, g)) for v in downs]
            errs = [np.sum((t - dj) ** 2) for dj in d]
            expect[r, :4] += errs
            expect[r, 4] += errs[res["mixed"][i]]
            dens[r] += np.sum(d[features.METHODS.index("cubic")] ** 2) if r == 0 else np.mean([np.sum(dj ** 2) for dj in d])
    expect /= dens[:, None]
    np.testing.assert_allclose(res["matrix"], expect, rtol=1e-4)
    np.testing.assert_allclose(res["std"], expect[:, :4].std(1, ddof=1), rtol=1e-4)
    assert not np.allclose(expect[0, :4], expect[0, 0])  # the methods do differ for this stub


def test_linear_and_area_coincide_at_factor_two():
    """A fact behind Table 5: shrinking by exactly 2, OpenCV's bilinear equals its area average,
    so the Linear and Area columns of eq. 6 coincide (the paper's pair (linear, area))."""
    phi, _ = linear_relu(3, 8, 4)
    res = t5.table5([("linear", phi), ("area", phi)], ListImages(random_images(4, 20)), crop=16, progress=False)
    np.testing.assert_array_equal(res["err"][..., 0], res["err"][..., 2])
    assert res["matrix"][0, 0] == res["matrix"][1, 0]                      # same D_i x in the denominator
    x = random_images(1, 228)[0]
    lin, area = (cv2.resize(x, (114, 114), interpolation=f) for f in (cv2.INTER_LINEAR, cv2.INTER_AREA))
    assert np.array_equal(lin, area)
    assert not np.array_equal(cv2.resize(x, (100, 100), interpolation=cv2.INTER_LINEAR),
                              cv2.resize(x, (100, 100), interpolation=cv2.INTER_AREA))


def test_table5_rejects_bad_inputs():
    phi = Stub(lambda x: np.ones((len(x), 2)), 8, 2)
    with pytest.raises(features.AnalysisError, match="training method"):
        t5.table5([("bilinear", phi)], ListImages(random_images(2, 20)), crop=16, progress=False)
    with pytest.raises(features.AnalysisError, match="crop 228"):
        t5.table5([("area", phi)], ListImages(random_images(2, 20)), crop=228, progress=False)
    with pytest.raises(features.AnalysisError, match="smaller than the 16 crop"):
        t5.table5([("area", phi)], ListImages(random_images(2, 12)), crop=16, progress=False)


def test_paper_table5_std_column_is_sample_std_of_single_methods():
    """Our reading of the paper's table (rows = training method) reproduces its std column."""
    for m, row in t5.PAPER_TABLE5.items():
        assert round(float(np.std(row[:4], ddof=1)), 2) == pytest.approx(row[5], abs=1e-9), m
    assert min(t5.PAPER_TABLE5, key=lambda m: t5.PAPER_TABLE5[m][5]) == "mixed"


def test_format_table5_layout():
    text = t5.format_table5(["linear", "mixed"], np.array([[0.1, 0.2, 0.3, 0.4, 0.5], [1, 1, 1, 1, 1.0]]),
                            np.array([0.129, 0.0]))
    lines = text.splitlines()
    assert lines[0].split() == ["train\\test", "Linear", "Cubic", "Area", "Lanczos", "Mixed", "std"]
    assert lines[1].split() == ["Linear", "0.100", "0.200", "0.300", "0.400", "0.500", "0.129"]


# ----------------------------------------------------------------------------- rankings, neighbours, neurons
def test_rank_by_norm_top_and_bottom():
    norms = np.array([3.0, 1.0, 5.0, 2.0, 5.0, 0.0, 4.0])
    F = np.column_stack([norms * 0.6, norms * 0.8])      # |row| = norms exactly
    top, low, got = metrics.rank_by_norm(F, 3)
    np.testing.assert_allclose(got, norms)
    assert top.tolist() == [2, 4, 6]                       # tie 5.0 broken by index
    assert low.tolist() == [5, 1, 3]


def test_nearest_neighbours_known_answer():
    D = np.array([[0.0, 0], [1, 0], [3, 0], [0, 2], [10, 10]])
    idx, dist = metrics.nearest_neighbours(D[[0, 2]], D, 3, exclude=[0, 2])
    assert idx.tolist() == [[1, 3, 2], [1, 0, 3]]
    np.testing.assert_allclose(dist, [[1, 2, 3], [2, 3, np.sqrt(13)]])
    idx, dist = metrics.nearest_neighbours(np.array([[2.0, 0]]), D, 2)       # tie 1 vs 2: lower index first
    assert idx.tolist() == [[1, 2]] and dist.tolist() == [[1.0, 1.0]]


def test_top_neurons_and_top_images():
    F = np.array([[0, 5, 1, 0], [0, 1, 2, 0], [0, 3, 9, 0.5], [0, 0, 0, 0]], float)
    neurons, mean = metrics.top_neurons(F, 2)
    assert neurons.tolist() == [2, 1]
    np.testing.assert_allclose(mean, F.mean(0))
    assert metrics.top_images(F, 1, 3).tolist() == [0, 2, 1]
    assert metrics.top_images(F, 2, 2).tolist() == [2, 1]


def test_mean_vector_stats_counts():
    F = np.zeros((4, 6))
    F[:, 0] = 1.0
    F[0, 1] = 0.02            # mean 0.005: non-zero but below 0.01
    F[:, 2] = 0.5
    F[1, 5] = 0.2             # mean 0.05
    st = metrics.mean_vector_stats(F, threshold=0.01, rel=0.1)
    assert st["n_nonzero"] == 4 and st["n_above_threshold"] == 3 and st["n_above_rel"] == 2
    np.testing.assert_allclose(st["frac_active"], [1, 0.25, 1, 0, 0, 0.25])


# ----------------------------------------------------------------------------- crops, bins, Spearman
@pytest.mark.parametrize("shape", [(256, 256), (200, 310), (37, 23)])
def test_crop_box_covers_the_promised_area_range(shape):
    h, w = shape
    rng = np.random.default_rng(0)
    areas = []
    for _ in range(3000):
        y0, x0, ch, cw = features.crop_box(rng, h, w, 0.5, 0.95)
        assert 0 <= y0 and y0 + ch <= h and 0 <= x0 and x0 + cw <= w
        areas.append(ch * cw / float(h * w))
    areas = np.array(areas)
    assert areas.min() >= 0.5 and areas.max() <= 0.95
    if h * w > 10000:   # fine pixel grid: the whole range is reached, roughly uniformly
        assert areas.min() < 0.51 and areas.max() > 0.94
        hist = np.histogram(areas, bins=5, range=(0.5, 0.95))[0]
        assert hist.min() > 0.15 * len(areas)


def test_crop_box_positions_vary_and_bad_range():
    rng = np.random.default_rng(1)
    boxes = {features.crop_box(rng, 100, 100)[:2] for _ in range(50)}
    assert len(boxes) > 10
    with pytest.raises(features.AnalysisError):
        features.crop_box(rng, 10, 10, 0.9, 0.5)


def test_bin_stats():
    rows = metrics.bin_stats([0.5, 0.55, 0.7, 0.95], [1.0, 3.0, 10.0, 4.0], [0.5, 0.6, 0.8, 0.95])
    assert [r["count"] for r in rows] == [2, 1, 1]
    assert rows[0]["mean"] == 2.0 and rows[0]["std"] == 1.0 and rows[2]["mean"] == 4.0


def test_spearman_equals_scipy():
    from scipy import stats
    rng = np.random.default_rng(0)
    k = rng.integers(0, 8, 300).astype(float)              # many ties, like object counts
    norm = k * 0.3 + rng.normal(size=300)
    for x, y in ((norm, k), (k, k ** 2), (rng.normal(size=50), rng.normal(size=50)), (k, -k)):
        assert metrics.spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert metrics.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(metrics.spearman([1, 1, 1], [1, 2, 3]))


# ----------------------------------------------------------------------------- Caffe log
TINY_NET = """name: "tiny"
layer { name: "data" type: "DummyData" top: "x" top: "y"
  dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 }
    data_filler { type: "constant" value: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip"
  inner_product_param { num_output: 2 weight_filler { type: "constant" value: 0.5 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "y" top: "loss" }
"""
TINY_SOLVER = """net: "net.prototxt"
test_iter: 2
test_interval: 5
base_lr: 0.01
lr_policy: "step"
gamma: 0.5
stepsize: 6
display: 2
max_iter: 12
snapshot_prefix: "tiny"
solver_mode: CPU
random_seed: 3
"""


@pytest.fixture(scope="module")
def caffe_log(tmp_path_factory):
    d = tmp_path_factory.mktemp("caffe_log")
    (d / "net.prototxt").write_text(TINY_NET)
    (d / "solver.prototxt").write_text(TINY_SOLVER)
    env = dict(os.environ, GLOG_minloglevel="0", GLOG_logtostderr="1")   # INFO lines are the log
    proc = subprocess.run([CAFFE_BIN, "train", "-solver", "solver.prototxt"], cwd=str(d), capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (d / "train.log").write_text(proc.stderr)
    return d / "train.log"


def test_parse_real_caffe_log(caffe_log):
    text = caffe_log.read_text()
    res = caffelog.parse_caffe_log(text)
    assert [r["iteration"] for r in res["train"]] == [0, 2, 4, 6, 8, 10, 12]
    assert [r["iteration"] for r in res["test"]] == [0, 5, 10]
    # x = 1, W = 0.5 -> ip = 1.5, y = 1: EuclideanLoss = sum(0.5^2) / (2 * 4) = 0.25 before any update
    assert res["test"][0]["test_loss"] == pytest.approx(0.25, rel=1e-5)
    assert res["train"][0]["loss"] == pytest.approx(0.25, rel=1e-5)
    # lr follows the step policy the solver was given; the final "Iteration 12, loss" line has none
    for r in res["train"][:-1]:
        assert r["lr"] == pytest.approx(0.01 * 0.5 ** (r["iteration"] // 6))
    assert res["train"][-1]["lr"] is None
    # every loss equals what the log prints (independent split-based reading)
    printed = [float(line.rsplit("loss = ", 1)[1].split()[0]) for line in text.splitlines()
               if "Iteration" in line and ", loss = " in line]
    assert [r["loss"] for r in res["train"]] == printed
    assert all(r["train_loss"] == r["loss"] for r in res["train"][:-1])   # average_loss 1: displayed = raw
    secs = [r["seconds"] for r in res["train"]]
    assert all(s is not None and s >= 0 for s in secs) and secs == sorted(secs)


def test_parse_old_glog_format_and_plain_lines():
    text = ("I1231 23:59:59.500000  7 solver.cpp:218] Iteration 100 (2 iter/s, 5s/10 iters), loss = 1.5\n"
            "I1231 23:59:59.600000  7 solver.cpp:237]     Train net output #0: loss = 1.25 (* 1 = 1.25 loss)\n"
            "I0101 00:00:01.500000  7 sgd_solver.cpp:105] Iteration 100, lr = 0.001\n"
            "I0101 00:00:02.500000  7 solver.cpp:330] Iteration 200, Testing net (#1)\n"
            "I0101 00:00:02.600000  7 solver.cpp:397]     Test net output #1: acc = 0.75\n"
            "Iteration 300, loss = 0.5\n")
    res = caffelog.parse_caffe_log(text)
    assert res["train"][0] == dict(iteration=100, seconds=0.0, loss=1.5, lr=0.001, train_loss=1.25)
    assert res["test"][0]["net"] == 1 and res["test"][0]["test_acc"] == 0.75
    assert res["test"][0]["seconds"] == pytest.approx(3.0)      # across the new-year boundary
    assert res["train"][1] == dict(iteration=300, seconds=None, loss=0.5, lr=None)


def test_log_command(caffe_log, tmp_path):
    out = tmp_path / "log"
    assert analyze.main(["log", "--log", str(caffe_log), "--out", str(out)]) == 0
    rows = (out / "train.csv").read_text().splitlines()
    assert rows[0].startswith("iteration") and len(rows) == 1 + 7
    assert (out / "curves.png").stat().st_size > 1000
    assert analyze.main(["log", "--log", str(tmp_path / "missing.log")]) == 2
    (tmp_path / "junk.log").write_text("hello\n")
    assert analyze.main(["log", "--log", str(tmp_path / "junk.log"), "--out", str(out)]) == 2


# ----------------------------------------------------------------------------- a real (tiny) deploy net
TINY_DEPLOY = """name: "tiny_deploy"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "fc8" type: "InnerProduct" bottom: "data" top: "fc8" inner_product_param { num_output: 5 } }
layer { name: "relu8" type: "ReLU" bottom: "fc8" top: "fc8" }
"""
# what a training net looks like to copy_from: fc8 plus a second branch sharing its params
TINY_TRAIN = """name: "tiny_train"
layer { name: "t1" type: "Input" top: "t1" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "t2" type: "Input" top: "t2" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "%s" type: "InnerProduct" bottom: "t1" top: "f1" param { name: "fc8_w" } param { name: "fc8_b" }
  inner_product_param { num_output: 5 } }
layer { name: "%s_t2" type: "InnerProduct" bottom: "t2" top: "f2" param { name: "fc8_w" } param { name: "fc8_b" }
  inner_product_param { num_output: 5 } }
"""


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import caffe
    d = tmp_path_factory.mktemp("tiny_model")
    (d / "deploy.prototxt").write_text(TINY_DEPLOY)
    rng = np.random.default_rng(7)
    w = rng.normal(size=(5, 192)).astype(np.float32) * 0.2
    b = np.array([0.5, -0.2, 0.1, 0.0, 1.0], np.float32)
    for layer, name in (("fc8", "model.caffemodel"), ("other", "wrong.caffemodel")):
        (d / "train.prototxt").write_text(TINY_TRAIN % (layer, layer))
        net = caffe.Net(str(d / "train.prototxt"), caffe.TEST)
        net.params[layer][0].data[...] = w
        net.params[layer][1].data[...] = b
        net.save(str(d / name))
    return d, w, b


def write_lmdb(path, images, labels):
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, (img, lab) in enumerate(zip(images, labels)):
            txn.put(b"%08d_img%d.png" % (i, i), image_to_datum(img, label=lab).SerializeToString())
    env.close()


def test_caffe_features_match_numpy(tiny_model):
    d, w, b = tiny_model
    phi = features.CaffeFeatures(str(d / "deploy.prototxt"), str(d / "model.caffemodel"), batch=3, log=None)
    assert phi.input_size == 8 and phi.dim == 5
    x = np.random.default_rng(0).normal(size=(7, 3, 8, 8)).astype(np.float32)
    expect = np.maximum(x.reshape(7, -1).astype(np.float64) @ w.T + b, 0)
    np.testing.assert_allclose(phi(x), expect, rtol=1e-4, atol=1e-5)
    # extract_features = full view resized with the chosen interpolation, normalised per image
    imgs = random_images(5, 24, seed=2)
    F, labels = features.extract_features(phi, ListImages(imgs, list(range(5))), view="full", interp="area",
                                    chunk=2, progress=False)
    assert labels == list(range(5))
    for i, img in enumerate(imgs):
        v = transforms.normalize(cv2.resize(img, (8, 8), interpolation=cv2.INTER_AREA).transpose(2, 0, 1))
        np.testing.assert_allclose(F[i], np.maximum(w.astype(np.float64) @ v.ravel() + b, 0), rtol=1e-4, atol=1e-5)
    with pytest.raises(features.AnalysisError, match="8 x 8"):
        phi(np.zeros((2, 3, 9, 9), np.float32))


def test_caffe_features_errors(tiny_model, tmp_path):
    d, _, _ = tiny_model
    with pytest.raises(features.AnalysisError, match="do not fill layer.*fc8"):
        features.CaffeFeatures(str(d / "deploy.prototxt"), str(d / "wrong.caffemodel"), log=None)
    with pytest.raises(features.AnalysisError, match="does not exist|do not exist"):
        features.CaffeFeatures(str(d / "deploy.prototxt"), str(tmp_path / "nope.caffemodel"), log=None)


def test_image_set_lmdb_and_folder(tmp_path):
    imgs = random_images(4, 24)
    write_lmdb(tmp_path / "db", imgs, [3, 1, 4, 1])
    s = features.ImageSet(str(tmp_path / "db"), max_images=3)
    assert len(s) == 3 and s.names[2] == "00000002_img2.png"
    img, lab = s.load(2)
    assert lab == 4 and np.array_equal(img, imgs[2])
    (tmp_path / "f" / "sub").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "f" / "sub" / "b.png"), imgs[0])
    cv2.imwrite(str(tmp_path / "f" / "a.png"), imgs[1])
    (tmp_path / "f" / "notes.txt").write_text("x")
    s = features.ImageSet(str(tmp_path / "f"))
    assert s.names == ["a.png", os.path.join("sub", "b.png")]
    assert np.array_equal(s.load(1)[0], imgs[0]) and s.load(1)[1] is None
    with pytest.raises(features.AnalysisError, match="neither an LMDB"):
        features.ImageSet(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(features.AnalysisError, match="no image files"):
        features.ImageSet(str(tmp_path / "empty"))


def test_commands_end_to_end(tiny_model, tmp_path):
    """Every image subcommand on a tiny deploy net and LMDB: files written, numbers consistent."""
    d, _, _ = tiny_model
    rng = np.random.default_rng(4)
    imgs = random_images(12, 24, seed=5)
    counts = [int(c) for c in rng.integers(0, 5, 12)]
    write_lmdb(tmp_path / "db", imgs, counts)
    common = ["--deploy", str(d / "deploy.prototxt"), "--weights", str(d / "model.caffemodel"),
              "--source", str(tmp_path / "db"), "--batch", "5"]
    out = tmp_path / "out"
    assert analyze.main(["mean-vector"] + common + ["--out", str(out / "mv")]) == 0
    mv = json.loads((out / "mv" / "mean_vector.json").read_text())
    assert mv["n_images"] == 12 and mv["n_dims"] == 5 and (out / "mv" / "mean_vector.png").exists()
    assert analyze.main(["norm-ranking"] + common + ["--k", "40", "--out", str(out / "nr")]) == 0
    nr = json.loads((out / "nr" / "norm_ranking.json").read_text())
    norms = [h["norm"] for h in nr["highest"]]
    assert len(norms) == 6 and not {h["index"] for h in nr["highest"]} & {h["index"] for h in nr["lowest"]}
    assert norms == sorted(norms, reverse=True) and nr["highest"][0]["norm"] == nr["norm_max"]
    assert (out / "nr" / "norm_highest.png").exists() and (out / "nr" / "norm_lowest.png").exists()
    assert analyze.main(["crop-scale"] + common + ["--set-size", "3", "--crops", "4", "--out", str(out / "cs")]) == 0
    cs = json.loads((out / "cs" / "crop_scale.json").read_text())
    assert cs["sets"]["highest"]["n_crops"] == 12 and sum(b["count"] for b in cs["sets"]["lowest"]["bins"]) == 12
    assert analyze.main(["neighbours"] + common + ["--database", "", "--queries", "3", "--k", "4",
                                                  "--out", str(out / "nn")]) == 0
    nn = json.loads((out / "nn" / "neighbours.json").read_text())
    assert all(q not in row for q, row in zip(nn["queries"], nn["neighbours"]))      # the query itself is skipped
    write_lmdb(tmp_path / "db2", imgs[:5], counts[:5])                               # queries from another set
    assert analyze.main(["neighbours"] + common + ["--database", str(tmp_path / "db2"), "--queries", "2", "--k", "5",
                                                  "--out", str(out / "nn2")]) == 0
    nn2 = json.loads((out / "nn2" / "neighbours.json").read_text())
    assert [row[0] for row in nn2["distances"]] == [0.0 if q < 5 else row[0] for q, row in
                                                    zip(nn2["queries"], nn2["distances"])]
    assert sorted(nn2["neighbours"][0]) == [0, 1, 2, 3, 4]
    assert analyze.main(["neurons"] + common + ["--neurons", "2", "--k", "3", "--out", str(out / "ne")]) == 0
    assert (out / "ne" / "neurons.png").exists()
    assert analyze.main(["count-check"] + common + ["--out", str(out / "cc")]) == 0
    cc = json.loads((out / "cc" / "count_check.json").read_text())
    assert cc["spearman"] == pytest.approx(cc["spearman_scipy"], abs=1e-9)
    assert sum(r["count"] for r in cc["per_count"]) == 12
    assert analyze.main(["table5", "--deploy", str(d / "deploy.prototxt"), "--weights", str(d / "model.caffemodel"),
                         "--train-methods", "area", "--source", str(tmp_path / "db"), "--crop", "16",
                         "--out", str(out / "t5")]) == 0
    t5_json = json.loads((out / "t5" / "table5.json").read_text())
    assert len(t5_json["matrix"]) == 1 and len(t5_json["matrix"][0]) == 5 and (out / "t5" / "table5.png").exists()
    # clear errors, exit status 2
    assert analyze.main(["table5", "--weights", str(d / "model.caffemodel"), "--train-methods", "area", "cubic",
                         "--deploy", str(d / "deploy.prototxt"), "--source", str(tmp_path / "db")]) == 2
    assert analyze.main(["mean-vector"] + common[:4] + ["--source", str(tmp_path / "nope")]) == 2


def test_library_defaults_are_the_cli_defaults():
    """ltc.analysis.subcommands' keyword defaults are analyze.py's option defaults (ltc.study calls the
    library and records the equivalent command line, which leaves out the options it does not set)."""
    import argparse
    from ltc.analysis import subcommands
    parser = analyze.build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert sorted(subs) == sorted(subcommands.COMPUTE) == sorted(subcommands.WRITE)
    for name in subs:
        cli = {a.dest: a.default for a in subs[name]._actions if a.dest not in ("help", "out")}
        lib = subcommands.defaults(name)
        assert sorted(cli) == sorted(lib), name
        for dest, default in cli.items():
            assert lib[dest] == default or list(lib[dest]) == list(default), (name, dest, lib[dest], default)


def test_curves_figure_panels_and_legends():
    """The curves figure: a learning-rate panel only when the rate changes (a constant one is a note
    in the loss panel's title), and the diagnostics legend below its panel, clear of the curves."""
    from ltc.analysis import plots
    rows = [dict(iteration=i, loss=10.0 - i / 10.0, seconds=float(i), lr=1e-4, train_count_term=1.0 + i / 100.0,
                 train_contrast_term=2.0, train_hinge_active=0.3, train_norm_dx=1.5) for i in range(0, 100, 10)]
    res = dict(train=rows, test=[dict(iteration=50, net=0, test_loss=6.0)], lr=[(r["iteration"], 1e-4) for r in rows])
    assert not plots.lr_changes(res["lr"])
    fig = plots.curves_fig(res, 10.0, title="train.log")
    titles = [ax.get_title() for ax in fig.axes]
    assert len([t for t in titles if t]) == 2 and "learning rate and wall time" not in titles
    assert "lr 0.0001 (constant)" in titles[0] and "90 s to iteration 90" in titles[0]
    fig.canvas.draw()
    diag = next(ax for ax in fig.axes if ax.get_title().startswith("loss diagnostics"))
    legend = diag.get_legend()
    renderer = fig.canvas.get_renderer()
    assert legend.get_window_extent(renderer).y1 <= diag.get_window_extent(renderer).y0   # below the panel
    assert len(legend.get_texts()) == 4
    stepped = dict(res, lr=[(r["iteration"], 1e-4 if r["iteration"] < 50 else 1e-5) for r in rows])
    fig = plots.curves_fig(stepped, 10.0)
    assert "learning rate and wall time" in [ax.get_title() for ax in fig.axes]
    import matplotlib.pyplot as plt
    plt.close("all")
