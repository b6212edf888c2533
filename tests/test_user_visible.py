"""Tests whose data can show the bugs users would see (issue 32).

Each test below feeds data on which a plausible one-line bug changes the numbers, and checks the
numbers against an independent numpy computation (or real Caffe), not just shapes or counts:

* non-square images through the data path (a crop offset that treats height and width alike);
* a textured LMDB and non-default seeds for the fold-std measurement (a seed that never reaches it);
* a solver generated with ``--warmup``, its learning rate read from a real ``caffe train`` log;
* per-dimension statistics of ``analyze.py mean-vector`` compared with numpy's, on N != dim;
* ``analyze.py count-check --fit-source`` with distinct fit and evaluation sets;
* the loss layers at ``loss_weight`` 0.5 and 1 in a real caffe.Net (the gradients must halve).

tests/mutations.py plants each of these bugs and checks that a test here fails on it.
"""
import csv
import json
import math
import os
import re
import subprocess
import sys

import cv2
import lmdb
import numpy as np
import pytest

from conftest import load_script
from ltc import REPO
from ltc import transforms
from ltc.lmdb_io import image_datum_bytes

try:
    import caffe
except ImportError:
    caffe = None
needs_caffe = pytest.mark.skipif(caffe is None, reason="pycaffe is not importable")
CAFFE_BIN = os.path.join(os.path.dirname(sys.executable), "caffe")

CROP = 228
S = CROP // 2
FLAGS = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC, "area": cv2.INTER_AREA, "lanczos": cv2.INTER_LANCZOS4}


# ----------------------------------------------------------------------------- helpers
def textured_image(rng, h, w):
    """An H x W x 3 uint8 image with texture at every scale: every crop position has its own std."""
    coarse = cv2.resize(rng.integers(0, 256, (max(2, h // 16), max(2, w // 16), 3), dtype=np.uint8), (w, h),
                        interpolation=cv2.INTER_CUBIC)
    fine = rng.integers(0, 96, (h, w, 3), dtype=np.uint8)
    # a left-to-right and top-to-bottom gain: the std depends on where the crop sits on each axis
    gain = (0.3 + 0.7 * np.linspace(0, 1, w)[None, :, None]) * (0.5 + 0.5 * np.linspace(0, 1, h)[:, None, None])
    return np.clip((coarse.astype(np.float64) * 0.6 + fine) * gain, 0, 255).astype(np.uint8)


def write_images_lmdb(path, images, labels=None):
    """Raw BGR Datums under the project's key format; returns ``path`` as a string."""
    env = lmdb.open(str(path), map_size=1 << 28)
    with env.begin(write=True) as txn:
        for i, img in enumerate(images):
            txn.put(b"%08d_img%d.png" % (i, i), image_datum_bytes(img, label=0 if labels is None else int(labels[i])))
    env.close()
    return str(path)


# Non-square, in both orientations, with different slack on each axis (H - 228 + 1 != W - 228 + 1).
SHAPES = [(240, 330), (310, 236), (256, 300), (290, 250), (236, 236), (260, 400)]


@pytest.fixture(scope="module")
def nonsquare(tmp_path_factory):
    rng = np.random.default_rng(32)
    images = [textured_image(rng, h, w) for h, w in SHAPES]
    return write_images_lmdb(tmp_path_factory.mktemp("nonsquare") / "db", images), images


def numpy_crop(img_hwc, u, crop=CROP):
    """The data layer's crop by its documented rule: y0 from the height's slack, x0 from the width's."""
    h, w = img_hwc.shape[:2]
    y0, x0 = int(u[0] * (h - crop + 1)), int(u[1] * (w - crop + 1))
    return img_hwc[y0:y0 + crop, x0:x0 + crop]


def numpy_views(images, plan, i, crop=CROP):
    """The six uint8 HWC inputs of member i, by numpy slicing and cv2.resize of the HWC crop."""
    s = crop // 2
    method = FLAGS[transforms.INTERP_NAMES[plan.interp[i]]]
    x = numpy_crop(images[plan.index[i]], plan.off_x[i], crop)
    y = numpy_crop(images[plan.index[plan.partner[i]]], plan.off_y[i], crop)
    return [x[:s, :s], x[:s, s:], x[s:, :s], x[s:, s:],
            cv2.resize(x, (s, s), interpolation=method), cv2.resize(y, (s, s), interpolation=method)]


def numpy_normalised(v_hwc, gray, eps=1e-5):
    v = v_hwc.astype(np.float64)
    if gray:
        v = np.repeat(v.mean(axis=2, keepdims=True), 3, axis=2)
    return ((v - v.mean()) / (v.std() + eps)).transpose(2, 0, 1)


def check_batch_against_numpy(batch, plan, images):
    """Every input of every member equals the numpy reference. The tolerance: the layer writes
    float32 values of magnitude <= ~5 (normalised), computed from float64 statistics; float32
    rounding is 2^-24 relative, so 1e-5 absolute is a hundred roundings of headroom."""
    n = len(plan.index)
    assert batch.shape == transforms.batch_shape(n, CROP)
    for i in range(n):
        for k, v in enumerate(numpy_views(images, plan, i)):
            np.testing.assert_allclose(batch[k, i], numpy_normalised(v, bool(plan.gray[i])), atol=1e-5,
                                       err_msg="member %d (image %dx%d), input %s"
                                       % (i, images[plan.index[i]].shape[0], images[plan.index[i]].shape[1],
                                          transforms.INPUT_NAMES[k]))


def next_batch_or_fail(pipe):
    """A copy of the pipeline's next batch; an error becomes a plain test failure. (An exception
    raised while a batch is made has the LMDB's pages in its frames' arguments, and the LMDB is
    closed by then: a traceback that prints those arguments, as pytest's does, would read unmapped
    memory and crash the test run.)"""
    error = None
    try:
        return pipe.next_batch().copy()
    except Exception as e:             # noqa: BLE001 - reported below, outside the except block
        error = "%s: %s" % (type(e).__name__, e)
    pytest.fail("the data pipeline raised %s" % error, pytrace=False)


# ----------------------------------------------------------------------------- 1. non-square crops
def test_crop_offsets_use_each_axis_slack_on_non_square_images():
    """crop_offset maps u = (uy, ux) to (uy (H - c + 1), ux (W - c + 1)): checked on both orientations."""
    for h, w in SHAPES:
        for u in [(0.0, 0.999), (0.999, 0.0), (0.5, 0.5), (0.31, 0.77), (0.999, 0.999)]:
            assert transforms.crop_offset(u, h, w, CROP) == (int(u[0] * (h - CROP + 1)), int(u[1] * (w - CROP + 1)))
    # the largest draw reaches the far corner of each axis, never beyond
    assert transforms.crop_offset((0.9999, 0.9999), 240, 330, CROP) == (12, 102)
    assert transforms.crop_offset((0.9999, 0.9999), 330, 240, CROP) == (102, 12)


def test_data_pipeline_crops_non_square_images_as_numpy_does(nonsquare):
    """BatchPipeline (the data layer's engine) on non-square images of both orientations: every input
    of every member equals numpy slicing + cv2.resize of the crop the plan names."""
    from ltc.pipeline import BatchPipeline
    db, images = nonsquare
    with BatchPipeline(db, batch_size=8, workers=0, seed=905, interpolation="per_sample", gray_prob=0.3,
                       phase="train") as pipe:
        for b in range(2):
            plan = pipe.plan(b)
            check_batch_against_numpy(next_batch_or_fail(pipe), plan, images)
    # the data can tell the axes apart: for some member, x0 from the height's slack (or y0 from the
    # width's) would be another crop
    swapped = [(int(u[0] * (images[j].shape[1] - CROP + 1)), int(u[1] * (images[j].shape[0] - CROP + 1)))
               != (int(u[0] * (images[j].shape[0] - CROP + 1)), int(u[1] * (images[j].shape[1] - CROP + 1)))
               for j, u in zip(plan.index, plan.off_x)]
    assert sum(swapped) >= len(swapped) // 2


def test_counting_data_layer_in_caffe_crops_non_square_images(nonsquare, tmp_path):
    """The same through the Caffe Python layer of a real net (six tops)."""
    if caffe is None:
        pytest.skip("pycaffe is not importable")
    from ltc.pipeline import BatchPipeline
    db, images = nonsquare
    param = json.dumps(dict(source=db, batch_size=6, workers=0, seed=77, gray_prob=0.0, interpolation="cubic"))
    proto = tmp_path / "data.prototxt"
    proto.write_text('name: "d"\nlayer { name: "data" type: "Python" top: "t1" top: "t2" top: "t3" top: "t4" '
                     'top: "dx" top: "dy" python_param { module: "counting_data" layer: "CountingDataLayer" '
                     'param_str: \'%s\' } }\n' % param)
    net = caffe.Net(str(proto), caffe.TRAIN)
    error = None
    try:
        net.forward()
        batch = np.stack([net.blobs[nm].data.copy() for nm in transforms.INPUT_NAMES])
    except Exception as e:             # noqa: BLE001 - see next_batch_or_fail
        error = "%s: %s" % (type(e).__name__, e)
    finally:
        net.layers[0].close()
    if error:
        pytest.fail("the data layer raised %s" % error, pytrace=False)
    with BatchPipeline(db, batch_size=6, workers=0, seed=77, gray_prob=0.0, interpolation="cubic") as pipe:
        plan = pipe.plan(0)
    check_batch_against_numpy(batch, plan, images)


def test_table5_and_center_views_crop_non_square_images():
    """The analyses' crops on non-square images: Table 5's random crop x (its tiles and D_m(x) as numpy
    slices and cv2.resize) and the centre view of analyze.py --view center."""
    from ltc.analysis import features
    from ltc.analysis import table5 as t5
    rng = np.random.default_rng(3)
    for idx, (h, w) in enumerate([(240, 330), (330, 240)]):
        img = textured_image(rng, h, w)
        got = features.image_view(img, S, view="center", crop=CROP, interp="area")
        y0, x0 = (h - CROP) // 2, (w - CROP) // 2
        ref = cv2.resize(img[y0:y0 + CROP, x0:x0 + CROP], (S, S), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(got, ref.transpose(2, 0, 1))
        x, info = t5.table5_inputs(img, idx, CROP, seed=12, gray_prob=0.0)
        u = np.random.default_rng([12, idx]).random(2)            # table5_inputs' documented draw
        crop = numpy_crop(img, u)
        assert (info["y0"], info["x0"]) == (int(u[0] * (h - CROP + 1)), int(u[1] * (w - CROP + 1)))
        refs = [crop[:S, :S], crop[:S, S:], crop[S:, :S], crop[S:, S:]] + \
            [cv2.resize(crop, (S, S), interpolation=FLAGS[m]) for m in transforms.INTERP_NAMES]
        for k, r in enumerate(refs):
            np.testing.assert_allclose(x[k], numpy_normalised(r, False), atol=1e-5, err_msg="input %d" % k)


# ----------------------------------------------------------------------------- 2. fold-std and its seed
@pytest.fixture(scope="module")
def textured_db(tmp_path_factory):
    rng = np.random.default_rng(1701)
    shapes = [(256, 256), (240, 300), (300, 240), (256, 256), (250, 280), (270, 256)]
    images = [textured_image(rng, h, w) for h, w in shapes]
    return write_images_lmdb(tmp_path_factory.mktemp("textured") / "db", images), images


def direct_input_std(images, seed, n, gray_prob=0.0, interpolation="per_batch", crop=CROP):
    """The mean std of the six inputs of a batch of the first n images, by numpy: crops by the plan's
    draws (seeded with ``seed``), tiles and cv2.resize of the HWC crop, np.std over all pixels (of the
    channel mean for a gray member)."""
    plan = transforms.plan_batch(seed, "test", 0, n, n, interpolation, gray_prob)
    stds = []
    for i in range(n):
        for v in numpy_views(images[:n], plan, i, crop):
            v = v.astype(np.float64)
            stds.append((v.mean(axis=2) if plan.gray[i] else v).std())
    return float(np.mean(stds))


@needs_caffe
@pytest.mark.parametrize("seed", [5, 6])
def test_port_weights_fold_std_follows_the_seed_option(textured_db, tmp_path, capsys, seed):
    """tools/port_weights.py --fold-std on a textured LMDB with a non-default --seed: the printed std and
    the conv1 divisor equal the numpy measurement for that seed, which differs between seeds."""
    from counting_models import build_counting_model
    from ltc import surgery
    db, images = textured_db
    src = tmp_path / "deploy.caffemodel"
    net = build_counting_model(src, "deploy", seed=1)
    conv1 = net.params["conv1"][0].data.copy()
    expect = direct_input_std(images, seed, 6)
    others = [direct_input_std(images, s, 6) for s in (5, 6, 1701) if s != seed]
    assert min(abs(expect - o) for o in others) > 1e-3 * expect   # the data can tell the seeds apart
    out = tmp_path / "ported.caffemodel"
    pw = load_script("tools/port_weights.py")
    assert pw.main([str(src), str(out), "--fold-std", db, "--fold-std-images", "6", "--seed", str(seed)]) == 0
    printed = float(re.search(r"measured input std ([0-9.]+)", capsys.readouterr().out).group(1))
    assert printed == pytest.approx(expect, abs=5e-5)          # printed with 4 decimals
    from caffe.proto import caffe_pb2
    ported = caffe_pb2.NetParameter()
    ported.ParseFromString(out.read_bytes())
    assert ported.layer[0].name == "conv1"
    got = surgery.blob_array(ported.layer[0].blobs[0])
    # conv1 / s in float32: the measured s equals the numpy one to ~1e-12 relative (cv2.meanStdDev
    # vs np.std summation order), so the quotients agree to float32 rounding
    np.testing.assert_allclose(got, conv1 / np.float32(expect), rtol=2e-7, atol=0)


def test_fold_std_options_all_reach_the_measurement(textured_db):
    """Every --fold-std-* option and --seed (shared by port_weights.py and export.py) changes the
    measured std as numpy says: images, gray probability, crop, interpolation, seed."""
    import argparse
    try:
        from ltc import surgery
    except ImportError:
        pytest.skip("ltc.surgery needs pycaffe")
    db, images = textured_db
    ap = argparse.ArgumentParser()
    surgery.add_fold_std_arguments(ap, "fold")
    cases = [([], dict()),
             (["--seed", "23"], dict(seed=23)),
             (["--fold-std-images", "4"], dict(n=4)),
             (["--fold-std-gray-prob", "1.0"], dict(gray_prob=1.0)),
             (["--fold-std-crop", "224"], dict(crop=224)),
             (["--fold-std-interpolation", "lanczos"], dict(interpolation="lanczos")),
             (["--fold-std-images", "5", "--seed", "9", "--fold-std-interpolation", "area",
               "--fold-std-gray-prob", "0.5"], dict(n=5, seed=9, interpolation="area", gray_prob=0.5))]
    drawn = transforms.INTERP_NAMES[transforms.plan_batch(1701, "test", 0, 6, 6).interp[0]]   # the default's per-batch draw
    other = [m for m in transforms.INTERP_NAMES if m != drawn][0]
    cases[5] = (["--fold-std-interpolation", other], dict(interpolation=other))
    seen = []
    for argv, kw in cases:
        args = ap.parse_args(["--fold-std", db, "--fold-std-images", "6"] + argv)
        got = surgery.fold_std_from_arguments(args)
        want = direct_input_std(images, kw.get("seed", 1701), kw.get("n", 6), kw.get("gray_prob", 0.0),
                                kw.get("interpolation", "per_batch"), kw.get("crop", CROP))
        assert got == pytest.approx(want, rel=1e-9), argv
        seen.append(got)
    assert len({round(v, 6) for v in seen}) == len(seen)   # every option moved the result


# ----------------------------------------------------------------------------- 3. warm-up
def caffe_lr_log(tmp_path, solver_text, iters):
    """Run ``caffe train`` with the generated solver's learning-rate settings on a tiny net and
    return {iteration: lr} from its log ("Iteration N, lr = X")."""
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format
    s = caffe_pb2.SolverParameter()
    text_format.Merge(solver_text, s)
    net = tmp_path / "tiny.prototxt"
    net.write_text('name: "tiny"\n'
                   'layer { name: "x" type: "DummyData" top: "x" top: "y" dummy_data_param { '
                   'shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 } data_filler { type: "gaussian" std: 1 } '
                   'data_filler { type: "gaussian" std: 1 } } }\n'
                   'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "p" inner_product_param { num_output: 2 '
                   'weight_filler { type: "gaussian" std: 0.1 } } }\n'
                   'layer { name: "loss" type: "EuclideanLoss" bottom: "p" bottom: "y" top: "loss" }\n')
    s.net = str(net)
    del s.test_iter[:]
    s.ClearField("test_interval")
    s.ClearField("test_initialization")
    s.display = 1
    s.average_loss = 1
    s.max_iter = iters
    s.snapshot = 0
    s.ClearField("snapshot_prefix")
    s.snapshot_after_train = False
    path = tmp_path / "solver_tiny.prototxt"
    path.write_text(str(s))
    env = dict(os.environ, GLOG_logtostderr="1", GLOG_minloglevel="0")
    res = subprocess.run([CAFFE_BIN, "train", "-solver", str(path)], cwd=str(tmp_path), env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return {int(m.group(1)): float(m.group(2)) for m in re.finditer(r"Iteration (\d+), lr = (\S+)", res.stderr)}


def warmup_lr(it, base_lr, warmup):
    """The warm-up the generator promises (ltc/nets.py): a sigmoid ramp from 0.7 % of base_lr at
    iteration 0 to 99.3 % at ``warmup``, half-way at warmup / 2, flat at base_lr after."""
    return base_lr / (1.0 + math.exp(-10.0 / warmup * (it - warmup // 2)))


@needs_caffe
def test_warmup_solver_learning_rate_in_real_caffe(tmp_path):
    """make_prototxt.py --custom ... --warmup 40 --base-lr 0.002: the lr caffe train logs at iterations
    0..60 follows the promised ramp (0.7 % -> 50 % -> 99.3 % of base_lr)."""
    mp = load_script("tools/make_prototxt.py")
    warmup, base_lr = 40, 0.002
    assert mp.main(["--out-root", str(tmp_path), "--custom", "wu", "--warmup", str(warmup),
                    "--base-lr", str(base_lr), "--train-lmdb", "x", "--val-lmdb", "y"]) == 0
    solver_text = (tmp_path / "prototxt" / "wu" / "solver.prototxt").read_text()
    lrs = caffe_lr_log(tmp_path, solver_text, 61)
    assert sorted(lrs) == list(range(61))
    for it, lr in lrs.items():
        # Caffe prints 6 significant digits of a float computation: 1e-5 relative
        assert lr == pytest.approx(warmup_lr(it, base_lr, warmup), rel=1e-5), it
    assert lrs[0] < 0.01 * base_lr and lrs[warmup // 2] == pytest.approx(0.5 * base_lr, rel=1e-5)
    assert lrs[warmup] > 0.99 * base_lr and lrs[60] == pytest.approx(base_lr, rel=1e-3)


@needs_caffe
def test_no_warmup_solver_is_the_papers_step_policy_in_real_caffe(tmp_path):
    """Without --warmup: lr = base_lr * gamma^floor(it / stepsize), checked across two steps."""
    mp = load_script("tools/make_prototxt.py")
    assert mp.main(["--out-root", str(tmp_path), "--custom", "st", "--stepsize", "7", "--base-lr", "0.01",
                    "--train-lmdb", "x", "--val-lmdb", "y"]) == 0
    lrs = caffe_lr_log(tmp_path, (tmp_path / "prototxt" / "st" / "solver.prototxt").read_text(), 20)
    for it, lr in lrs.items():
        assert lr == pytest.approx(0.01 * 0.9 ** (it // 7), rel=1e-5), it


# ----------------------------------------------------------------------------- 4/5. analysis statistics
TINY_DEPLOY = """name: "tiny_deploy"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "fc8" type: "InnerProduct" bottom: "data" top: "fc8" inner_product_param { num_output: 5 } }
layer { name: "relu8" type: "ReLU" bottom: "fc8" top: "fc8" }
"""


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    if caffe is None:
        pytest.skip("pycaffe is not importable")
    d = tmp_path_factory.mktemp("tiny")
    (d / "deploy.prototxt").write_text(TINY_DEPLOY)
    net = caffe.Net(str(d / "deploy.prototxt"), caffe.TEST)
    rng = np.random.default_rng(11)
    net.params["fc8"][0].data[...] = rng.normal(size=(5, 192)).astype(np.float32) * 0.3
    net.params["fc8"][1].data[...] = np.array([0.4, -0.3, 0.2, 0.05, 0.9], np.float32)
    net.save(str(d / "model.caffemodel"))
    return d


def small_images(n, seed):
    rng = np.random.default_rng(seed)
    return [cv2.resize(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8), (24, 24), interpolation=cv2.INTER_CUBIC)
            for _ in range(n)]


def features_of(tiny_model, images):
    """The tiny net's features of ``images`` in batches of 4 (the tests run analyze.py with --batch 4, so
    both sides make the same float32 computations)."""
    from ltc.analysis import features
    phi = features.CaffeFeatures(str(tiny_model / "deploy.prototxt"), str(tiny_model / "model.caffemodel"),
                                 batch=4, log=None)

    class Images:
        names = ["img%d" % i for i in range(len(images))]

        def __len__(self):
            return len(images)

        def load(self, i):
            return images[i], 0

    return features.extract_features(phi, Images(), view="full", interp="area", chunk=4, progress=False)[0]


def read_csv(path):
    with open(str(path)) as f:
        return list(csv.DictReader(f))


def test_mean_vector_stats_are_per_dimension_values():
    """mean, std and fraction active per dimension (columns) of an N x dim matrix with N != dim."""
    from ltc.analysis import metrics
    rng = np.random.default_rng(0)
    F = np.maximum(rng.normal(size=(9, 4)) + np.array([1.0, -0.5, 0.0, 2.0]), 0)
    st = metrics.mean_vector_stats(F, threshold=0.3, rel=0.2)
    np.testing.assert_allclose(st["mean"], F.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(st["std"], F.std(axis=0), rtol=1e-12)
    np.testing.assert_allclose(st["frac_active"], (F > 0).mean(axis=0), rtol=1e-12)
    assert st["n_above_threshold"] == int((F.mean(0) > 0.3).sum())
    assert st["mean_norm"] == pytest.approx(np.linalg.norm(F, axis=1).mean(), rel=1e-12)
    assert (st["n_images"], st["n_dims"]) == (9, 4)


@needs_caffe
def test_mean_vector_command_writes_numpy_statistics(tiny_model, tmp_path):
    """analyze.py mean-vector: every row of mean_vector.csv is numpy's per-dimension mean, std and
    fraction > 0 of the features (12 images, 5 dimensions)."""
    analyze = load_script("tools/analyze.py")
    images = small_images(12, seed=4)
    db = write_images_lmdb(tmp_path / "db", images)
    F = features_of(tiny_model, images)
    assert F.shape == (12, 5) and F.std(0).min() > 0
    out = tmp_path / "mv"
    assert analyze.main(["mean-vector", "--deploy", str(tiny_model / "deploy.prototxt"), "--weights",
                         str(tiny_model / "model.caffemodel"), "--source", db, "--batch", "4", "--out", str(out)]) == 0
    rows = read_csv(out / "mean_vector.csv")
    assert [int(r["dim"]) for r in rows] == list(range(5))
    # features are float32 net outputs, statistics in float64: relative 1e-5 covers the net's rounding
    for name, want in (("mean", F.mean(0)), ("std", F.std(0)), ("frac_active", (F > 0).mean(0))):
        np.testing.assert_allclose([float(r[name]) for r in rows], want, rtol=1e-5, atol=1e-7, err_msg=name)
    summary = json.loads((out / "mean_vector.json").read_text())
    assert summary["n_images"] == 12 and summary["mean_norm"] == pytest.approx(np.linalg.norm(F, axis=1).mean(), rel=1e-5)


@needs_caffe
def test_count_check_fits_the_read_out_on_the_fit_set_only(tiny_model, tmp_path):
    """analyze.py count-check --source EVAL --fit-source FIT: the read-out's coefficients are the
    least-squares fit on FIT (numpy), its predictions on EVAL are F_eval w + c, the "train" scores are
    on FIT, and per-count statistics on EVAL equal numpy's."""
    from ltc.analysis import countmap
    analyze = load_script("tools/analyze.py")
    fit_imgs, eval_imgs = small_images(14, seed=21), small_images(9, seed=22)
    rng = np.random.default_rng(5)
    k_fit, k_eval = rng.integers(0, 4, 14), rng.integers(0, 4, 9)
    fit_db = write_images_lmdb(tmp_path / "fit", fit_imgs, k_fit)
    eval_db = write_images_lmdb(tmp_path / "eval", eval_imgs, k_eval)
    F_fit, F_eval = features_of(tiny_model, fit_imgs), features_of(tiny_model, eval_imgs)
    ridge = 0.01
    # the reference fit, written out here (not countmap's): centred ridge least squares on FIT
    mu, km = F_fit.mean(0), k_fit.mean()
    w = np.linalg.solve((F_fit - mu).T @ (F_fit - mu) + ridge * np.eye(5), (F_fit - mu).T @ (k_fit - km))
    c = km - mu @ w
    w_eval, c_eval = countmap.fit_count_map(F_eval, k_eval, alpha=ridge)
    assert np.abs(F_eval @ w_eval + c_eval - (F_eval @ w + c)).max() > 0.05   # the two sets give other maps
    out = tmp_path / "cc"
    assert analyze.main(["count-check", "--deploy", str(tiny_model / "deploy.prototxt"), "--weights",
                         str(tiny_model / "model.caffemodel"), "--source", eval_db, "--fit-source", fit_db,
                         "--ridge", str(ridge), "--batch", "4", "--out", str(out)]) == 0
    res = json.loads((out / "count_check.json").read_text())
    cm = res["count_map"]
    assert cm["n_fit"] == 14 and cm["n"] == 9 and cm["fit_source"].endswith("fit") and cm["ridge"] == ridge
    pred = np.array([float(r["predicted_count"]) for r in read_csv(out / "count_check.csv")])
    # float32 features: predictions agree to ~1e-5 of their size
    np.testing.assert_allclose(pred, F_eval @ w + c, rtol=1e-4, atol=1e-4)
    want = np.abs(np.rint(F_eval @ w + c) - k_eval)
    assert cm["exact"] == pytest.approx((want == 0).mean()) and cm["within1"] == pytest.approx((want <= 1).mean())
    assert cm["mae"] == pytest.approx(np.abs(F_eval @ w + c - k_eval).mean(), rel=1e-4)
    tr = np.abs(np.rint(F_fit @ w + c) - k_fit)
    assert cm["train"]["n"] == 14 and cm["train"]["exact"] == pytest.approx((tr == 0).mean())
    norms = np.linalg.norm(F_eval, axis=1)
    for r in res["per_count"]:
        sel = k_eval == r["k"]
        assert r["count"] == int(sel.sum())
        assert r["mean"] == pytest.approx(norms[sel].mean(), rel=1e-5)
        assert r["std"] == pytest.approx(norms[sel].std(), rel=1e-4, abs=1e-6)


@needs_caffe
def test_count_check_fit_max_images_limits_the_fit_set(tiny_model, tmp_path):
    """--fit-max-images N fits on the first N scenes of --fit-source (key order)."""
    analyze = load_script("tools/analyze.py")
    fit_imgs, eval_imgs = small_images(14, seed=31), small_images(6, seed=32)
    k_fit = np.arange(14) % 4
    fit_db = write_images_lmdb(tmp_path / "fit", fit_imgs, k_fit)
    eval_db = write_images_lmdb(tmp_path / "eval", eval_imgs, np.arange(6) % 3)
    F_fit, F_eval = features_of(tiny_model, fit_imgs[:8]), features_of(tiny_model, eval_imgs)
    from ltc.analysis import countmap
    w, c = countmap.fit_count_map(F_fit, k_fit[:8], alpha=1e-3)
    out = tmp_path / "cc"
    assert analyze.main(["count-check", "--deploy", str(tiny_model / "deploy.prototxt"), "--weights",
                         str(tiny_model / "model.caffemodel"), "--source", eval_db, "--fit-source", fit_db,
                         "--fit-max-images", "8", "--batch", "4", "--out", str(out)]) == 0
    assert json.loads((out / "count_check.json").read_text())["count_map"]["n_fit"] == 8
    pred = np.array([float(r["predicted_count"]) for r in read_csv(out / "count_check.csv")])
    np.testing.assert_allclose(pred, F_eval @ w + c, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- 6. loss_weight
def _loss_net(tmp_path, tag, layer_text, inputs, loss_weight):
    text = "name: \"lw\"\n" + "".join('input: "%s" input_shape { %s }\n'
                                       % (nm, " ".join("dim: %d" % d for d in shape)) for nm, shape in inputs)
    text += "force_backward: true\n" + layer_text % dict(lw=repr(loss_weight))
    path = tmp_path / ("%s_%s.prototxt" % (tag, str(loss_weight).replace(".", "_")))
    path.write_text(text)
    return caffe.Net(str(path), caffe.TEST)


def _grads(net, values, names):
    for nm, v in values.items():
        net.blobs[nm].data[...] = v
    net.forward()
    net.backward()
    return {nm: net.blobs[nm].diff.copy() for nm in names}


LOSS_LAYERS = {
    "counting_six": ('layer { name: "loss" type: "Python" bottom: "t1" bottom: "t2" bottom: "t3" bottom: "t4" '
                     'bottom: "dx" bottom: "dy" top: "loss" loss_weight: %(lw)s python_param { module: "counting_loss" '
                     'layer: "CountingLossLayer" param_str: \'{"M": 10}\' } }\n',
                     [(nm, (3, 4)) for nm in transforms.INPUT_NAMES], list(transforms.INPUT_NAMES)),
    "counting_stacked": ('layer { name: "loss" type: "Python" bottom: "f" top: "loss" top: "count_term" '
                         'loss_weight: %(lw)s loss_weight: 0 python_param { module: "counting_loss" '
                         'layer: "CountingLossLayer" param_str: \'{"M": 10}\' } }\n',
                         [("f", (18, 4))], ["f"]),
    "smooth_l1": ('layer { name: "loss" type: "Python" bottom: "p" bottom: "t" bottom: "w" top: "loss" '
                  'loss_weight: %(lw)s python_param { module: "smooth_l1_loss_layer" layer: "SmoothL1LossLayer" } }\n',
                  [("p", (5, 8)), ("t", (5, 8)), ("w", (5, 8))], ["p"]),
}


@needs_caffe
@pytest.mark.parametrize("name", sorted(LOSS_LAYERS))
def test_loss_layers_scale_their_gradients_by_loss_weight(tmp_path, name):
    """A loss layer at loss_weight 0.5 gives exactly half the gradients of loss_weight 1 (and 2 twice),
    and the weight-1 gradients equal the float64 numpy gradients (ltc.loss / ltc.detection)."""
    layer, inputs, grad_names = LOSS_LAYERS[name]
    rng = np.random.default_rng(8)
    values = {nm: (rng.random(shape) * (0.6 if nm != "t" else 3.0)).astype(np.float32) for nm, shape in inputs}
    if name == "smooth_l1":
        values["t"] = (values["p"] + rng.normal(size=values["p"].shape) * 1.5).astype(np.float32)  # both branches of f
        values["w"] = (rng.random(values["p"].shape) > 0.3).astype(np.float32)
    g = {lw: _grads(_loss_net(tmp_path, name, layer, inputs, lw), values, grad_names) for lw in (1.0, 0.5, 2.0)}
    for nm in grad_names:
        assert np.abs(g[1.0][nm]).max() > 0, nm
        # multiplying a float32 by 0.5 or 2 is exact
        np.testing.assert_array_equal(g[0.5][nm], 0.5 * g[1.0][nm], err_msg=nm)
        np.testing.assert_array_equal(g[2.0][nm], 2.0 * g[1.0][nm], err_msg=nm)
    # weight 1: the numpy float64 gradient, to float32 rounding of values of order 1
    if name.startswith("counting"):
        from ltc import loss as lc
        f = [values[nm].astype(np.float64) for nm in transforms.INPUT_NAMES] if name == "counting_six" else \
            list(values["f"].astype(np.float64).reshape(6, 3, 4))
        _, _, cache = lc.counting_loss_forward(f[:4], f[4], f[5], 10.0)
        gt, gdx, gdy = lc.counting_loss_backward(cache, 1.0)
        want = [gt] * 4 + [gdx, gdy]
        got = [g[1.0][nm] for nm in transforms.INPUT_NAMES] if name == "counting_six" else list(g[1.0]["f"].reshape(6, 3, 4))
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    else:
        from ltc import detection
        _, grad = detection.smooth_l1_forward(values["p"].astype(np.float64), values["t"].astype(np.float64),
                                              values["w"].astype(np.float64))
        np.testing.assert_allclose(g[1.0]["p"], grad, rtol=1e-5, atol=1e-7)
