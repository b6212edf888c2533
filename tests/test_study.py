"""The reproduction study's pieces on tiny data: the least-squares count map, the trivial-solution
warning and the diagnostic curves of `analyze.py log` (on a real caffe log of the counting loss
with its diagnostic tops), the LMDB mixing and few-label subsets, the held-out check, resumable
training, the probe summary and the report."""
import csv
import json
import os
import re
import subprocess
import sys

import lmdb
import numpy as np
import pytest

from conftest import load_script
from ltc import mixdata, nets, study
from ltc.analysis import caffelog, countmap, trainlog

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAFFE_BIN = os.path.join(os.path.dirname(sys.executable), "caffe")


# ----------------------------------------------------------------------------- count map
def test_count_map_recovers_an_additive_code():
    rng = np.random.default_rng(0)
    k = rng.integers(0, 17, 300).astype(float)
    w_true = rng.normal(size=12)
    F = rng.normal(size=(300, 12))
    F[:, 0] = (k - 1.5 - F[:, 1:] @ w_true[1:]) / w_true[0]   # k = w . F + 1.5 exactly
    w, c = countmap.fit_count_map(F, k, alpha=0)
    np.testing.assert_allclose(countmap.predict_count(F, w, c), k, atol=1e-8)
    s = countmap.count_scores(countmap.predict_count(F, w, c), k)
    assert s == dict(exact=1.0, within1=1.0, mae=pytest.approx(0, abs=1e-8), n=300)


def test_count_map_equals_normal_equations_and_scores_rounding():
    rng = np.random.default_rng(1)
    F = rng.normal(size=(50, 4))
    k = rng.integers(0, 5, 50).astype(float)
    w, c = countmap.fit_count_map(F, k, alpha=0.5)
    X = np.column_stack([F, np.ones(50)])
    P = np.diag([0.5] * 4 + [0.0])                      # ridge on w only
    ref = np.linalg.solve(X.T @ X + P, X.T @ k)
    np.testing.assert_allclose(np.append(w, c), ref, rtol=1e-8, atol=1e-10)
    s = countmap.count_scores([0.4, 1.6, 3.2, 7.0], [0, 1, 1, 5])   # rounds to 0, 2, 3, 7
    assert s["exact"] == 0.25 and s["within1"] == 0.5 and s["mae"] == pytest.approx((0.4 + 0.6 + 2.2 + 2) / 4)
    with pytest.raises(ValueError, match="3 feature rows for 2 counts"):
        countmap.fit_count_map(np.zeros((3, 2)), [1, 2])


# ----------------------------------------------------------------------------- trivial solution
def rows(norm, loss, n=4):
    return [dict(iteration=10 * i, loss=loss, train_norm_dx=norm) for i in range(n)]


def test_trivial_solution_warning():
    assert "trivial solution" in trainlog.trivial_solution(rows(0.0, 10.0))
    assert "trivial solution" in trainlog.trivial_solution(rows(0.01, 9.8))
    assert trainlog.trivial_solution(rows(0.5, 10.0)) is None          # the norm is alive
    assert trainlog.trivial_solution(rows(0.0, 6.0)) is None           # the loss left M
    assert trainlog.trivial_solution(rows(0.0, 20.0, n=1) + rows(0.0, 10.0, n=3)) is not None  # only the tail counts
    assert trainlog.trivial_solution([dict(iteration=0, loss=10.0)]) is None   # no diagnostics: no verdict
    test_rows = [dict(iteration=i, test_loss=3.0, test_norm_dx=0.0) for i in range(3)]
    assert trainlog.trivial_solution(test_rows, "test", margin=3.0) is not None
    assert trainlog.trivial_solution(test_rows, "test", margin=10.0) is None


COUNTING_NET = """name: "tiny_counting"
layer { name: "data" type: "DummyData" top: "data"
  dummy_data_param { shape { dim: 24 dim: 6 } data_filler { type: "gaussian" std: 1 } } }
layer { name: "fc8" type: "InnerProduct" bottom: "data" top: "fc8" param { lr_mult: 1 } param { lr_mult: 1 }
  inner_product_param { num_output: 5 weight_filler { %s } bias_filler { type: "constant" value: 0 } } }
layer { name: "relu8" type: "ReLU" bottom: "fc8" top: "fc8" }
layer { name: "loss" type: "Python" bottom: "fc8" top: "loss" top: "count_term" top: "contrast_term"
  top: "hinge_active" top: "norm_dx" loss_weight: 1 loss_weight: 0 loss_weight: 0 loss_weight: 0 loss_weight: 0
  python_param { module: "counting_loss" layer: "CountingLossLayer" param_str: '{"M": 10}' } }
"""
COUNTING_SOLVER = """net: "net.prototxt"
base_lr: 0.001
lr_policy: "fixed"
display: 2
max_iter: 8
snapshot: 4
snapshot_prefix: "%s"
solver_mode: CPU
random_seed: 5
"""


def caffe_train(d, filler, prefix="tiny", extra=()):
    (d / "net.prototxt").write_text(COUNTING_NET % filler)
    (d / "solver.prototxt").write_text(COUNTING_SOLVER % prefix)
    env = dict(os.environ, GLOG_minloglevel="0", GLOG_logtostderr="1", OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run([CAFFE_BIN, "train", "-solver", "solver.prototxt"] + list(extra), cwd=str(d),
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (d / "train.log").write_text(proc.stderr)
    return d / "train.log"


@pytest.fixture(scope="module")
def counting_logs(tmp_path_factory):
    dead = caffe_train(tmp_path_factory.mktemp("dead"), 'type: "constant" value: 0')      # phi = 0: loss = M
    alive = caffe_train(tmp_path_factory.mktemp("alive"), 'type: "gaussian" std: 1')
    return dead, alive


def test_log_parses_and_plots_the_diagnostic_tops(counting_logs, tmp_path, capsys):
    analyze = load_script("tools/analyze.py")
    dead, alive = counting_logs
    res = caffelog.parse_caffe_log(alive.read_text())
    assert len(res["train"]) == 5                     # iterations 0, 2, 4, 6 and the final line
    for r in res["train"][:-1]:
        assert set("train_" + n for n in trainlog.DIAGNOSTICS) <= set(r)
        assert r["train_count_term"] + r["train_contrast_term"] == pytest.approx(r["train_loss"], rel=1e-4)
        assert 0 <= r["train_hinge_active"] <= 1 and r["train_norm_dx"] > 0
    assert [p[0] for p in trainlog.series(res["train"], "train", "norm_dx")] == [0, 2, 4, 6]

    out = tmp_path / "alive"
    assert analyze.main(["log", "--log", str(alive), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "last train diagnostics" in text and "trivial solution" not in text
    assert (out / "curves.png").stat().st_size > 1000
    assert json.loads((out / "log.json").read_text())["warnings"] == []

    out = tmp_path / "dead"
    assert analyze.main(["log", "--log", str(dead), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "WARNING" in text and "trivial solution" in text
    rows = caffelog.parse_caffe_log(dead.read_text())["train"]
    assert all(r["train_norm_dx"] == 0 and r["train_contrast_term"] == 10 for r in rows[:-1])
    assert len(json.loads((out / "log.json").read_text())["warnings"]) == 1


# ----------------------------------------------------------------------------- LMDBs
def put(path, items):
    env = lmdb.open(str(path), map_size=1 << 22)
    with env.begin(write=True) as txn:
        for k, v in items:
            txn.put(k, v)
    env.close()


def read(path):
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        items = list(txn.cursor())
    env.close()
    return items


def test_mix_lmdbs_repeats_and_keeps_bytes(tmp_path):
    put(tmp_path / "a", [(b"00000000_x", b"A0"), (b"00000001_y", b"A1")])
    put(tmp_path / "b", [(b"00000000_p", b"B0")])
    counts = mixdata.mix_lmdbs([("scenes", str(tmp_path / "a"), 1), ("photos", str(tmp_path / "b"), 3)],
                               str(tmp_path / "mix"))
    assert counts == {"scenes": 2, "photos": 3}
    items = read(tmp_path / "mix")
    assert [v for _, v in items] == [b"A0", b"A1", b"B0", b"B0", b"B0"]
    assert items[2][0] == b"00000002_photos_00000000_p"
    assert not os.path.exists(str(tmp_path / "mix") + ".partial")
    with pytest.raises(mixdata.MixError, match="already exists"):
        mixdata.mix_lmdbs([("a", str(tmp_path / "a"), 1)], str(tmp_path / "mix"))
    with pytest.raises(mixdata.MixError, match="not an LMDB"):
        mixdata.mix_lmdbs([("a", str(tmp_path / "nope"), 1)], str(tmp_path / "mix2"))


def test_subset_per_class_and_held_out_check(tmp_path):
    from caffe.proto import caffe_pb2

    def datum(label, i):
        d = caffe_pb2.Datum(channels=1, height=1, width=1, data=bytes([i]), label=label)
        return d.SerializeToString()
    put(tmp_path / "items", [(b"%08d" % i, datum(i % 3, i)) for i in range(30)])   # 10 per class
    counts = mixdata.subset_per_class(str(tmp_path / "items"), str(tmp_path / "few"), 4, seed=3)
    assert counts == {0: 4, 1: 4, 2: 4}
    items = read(tmp_path / "few")
    labels = []
    for _, v in items:
        d = caffe_pb2.Datum()
        d.ParseFromString(v)
        labels.append(d.label)
    assert sorted(labels) == [0] * 4 + [1] * 4 + [2] * 4 and labels != sorted(labels)   # shuffled
    put(tmp_path / "other", [(b"0", b"zz")])
    study.check_disjoint(str(tmp_path / "other"), str(tmp_path / "few"))          # disjoint: fine
    with pytest.raises(study.StudyError, match="12 held-out test photos"):
        study.check_disjoint(str(tmp_path / "few"), str(tmp_path / "items"))


# ----------------------------------------------------------------------------- training, resume, progress
def test_train_runs_resumes_from_the_newest_snapshot(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / "net.prototxt").write_text(COUNTING_NET % 'type: "gaussian" std: 1')
    solver = (COUNTING_SOLVER % str(d / "snap" / "tiny")).replace('net: "net.prototxt"',
                                                                  'net: "%s"' % (d / "net.prototxt"))
    (d / "solver.prototxt").write_text(solver)
    runner = study.Runner(str(tmp_path / "out"), caffe=CAFFE_BIN)
    runs = (("tiny", str(d / "solver.prototxt")),)
    study.train_runs(runner, runs=runs, poll=0.2)
    snaps = study.models(str(d / "snap" / "tiny"))
    assert sorted(snaps) == [4, 8]
    assert study.latest_state(str(d / "snap" / "tiny"))[0] == 8
    log = (d / "snap" / "train.log").read_text()
    # stop after 4: remove the last snapshot, rerun: it resumes from iteration 4, not from 0
    for ext in ("caffemodel", "solverstate"):
        os.remove(str(d / "snap" / ("tiny_iter_8." + ext)))
    study.train_runs(runner, runs=runs, poll=0.2)
    assert sorted(study.models(str(d / "snap" / "tiny"))) == [4, 8]
    resumed = (d / "snap" / "train.log").read_text()[len(log):]
    assert "Resuming from" in resumed and "Iteration 0," not in resumed
    cmds = (tmp_path / "out" / "commands.txt").read_text().splitlines()
    assert cmds[-1].endswith("2>> %s" % os.path.relpath(str(d / "snap" / "train.log"), REPO)) and "-snapshot" in cmds[-1]
    study.train_runs(runner, runs=runs, poll=0.2)     # complete: nothing to do
    line = study.progress_line("tiny", str(d / "snap" / "train.log"), 8, 0)
    assert line.startswith("tiny: iteration 6/8") and "hinge_active" in line


def test_train_runs_refuses_a_run_that_stopped_early(tmp_path):
    """caffe exits 0 after Ctrl-C (snapshot, then stop): the study must not take that run as finished."""
    d = tmp_path / "run"
    d.mkdir()
    (d / "net.prototxt").write_text(COUNTING_NET % 'type: "gaussian" std: 1')
    (d / "solver.prototxt").write_text((COUNTING_SOLVER % str(d / "snap" / "tiny")).replace(
        'net: "net.prototxt"', 'net: "%s"' % (d / "net.prototxt")))
    fake = tmp_path / "caffe"
    fake.write_text("#!/bin/sh\nexit 0\n")     # stops at once, writes no snapshot, exit status 0
    fake.chmod(0o755)
    runner = study.Runner(str(tmp_path / "out"), caffe=str(fake))
    with pytest.raises(study.StudyError, match="stopped before iteration 8"):
        study.train_runs(runner, runs=(("tiny", str(d / "solver.prototxt")),), poll=0.1)


def test_committed_study_solvers_parse():
    for name, path in study.RUNS:
        s = study.solver(path)
        assert s.max_iter % s.snapshot == 0, name
        assert s.snapshot_prefix.startswith("runs/study/")
        assert study.train_partner(path) == nets.STUDY_PARTNER, name   # the report names it
    assert study.train_partner("prototxt/demo/solver.prototxt") == "batch"
    tv = open(os.path.join(REPO, "prototxt/study/main/train_val.prototxt")).read()
    assert study.STUDY_TRAIN in tv and study.PHOTOS_TEST in tv


# ----------------------------------------------------------------------------- probe summary and report
def fake_results(tmp_path):
    p = tmp_path / "probe.csv"
    with open(p, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "weights"] + list(study.PROBE_LAYERS) + ["seed"])
        for seed, off in ((1, 0.0), (2, 2.0)):
            w.writerow(["counting", "x"] + [60 + off + i for i in range(6)] + [seed])
            w.writerow(["random", "random-init"] + [58 + i for i in range(6)] + [seed])
    pr = study.probe_summary(str(p))
    pr.update(train_lmdb="t", val_lmdb="v", iters=10, seeds=[1, 2])
    return dict(main=dict(weights="m.caffemodel", iteration=600, solver="s"),
                count_check=dict(spearman=0.98, pearson=0.97, n=500, per_count=[dict(k=0, count=3, mean=0.1, std=0.0)],
                                 count_map=dict(exact=0.85, within1=0.97, mae=0.3, n=500, n_fit=2000, ridge=1e-3,
                                                train=dict(exact=0.9, within1=0.99))),
                trajectory=[dict(iteration=100, spearman=0.5, mean_norm=1.0, norm_k0=0.1, norm_kmax=2.0)],
                train_end=dict(loss=2.0, count_term=0.5, contrast_term=1.5, hinge_active=0.3, norm_dx=3.0),
                test_photos=dict(iteration=600, loss=4.0, count_term=1.0, contrast_term=3.0, hinge_active=0.4,
                                 norm_dx=2.0),
                mean_vector=dict(n_images=8, n_dims=1000, n_nonzero=40, n_above_threshold=30, threshold=0.01,
                                 n_above_rel=20, rel_threshold=0.01, max_mean=1.0, mean_norm=2.0),
                probe=pr, log_warnings=[])


def test_probe_summary_and_goals_and_report(tmp_path):
    res = fake_results(tmp_path)
    pr = res["probe"]
    assert pr["counting"]["conv1"] == dict(mean=61.0, spread=2.0, values=[60.0, 62.0])
    assert pr["gain"]["conv3"] == pytest.approx(3.0)
    met = {g: ok for g, _, ok in study.goals(res)}
    assert all(met.values()), met
    res["count_check"]["spearman"] = 0.9
    res["train_end"]["hinge_active"] = 0.8
    missed = [g for g, _, ok in study.goals(res) if not ok]
    assert len(missed) == 2 and any("Spearman" in g for g in missed) and any("hinge" in g for g in missed)
    path = study.write_report(res, str(tmp_path / "rep"), wall="1 s", commands="python tools/x.py\n")
    text = open(path).read()
    assert "| Spearman(|phi|, k) >= 0.97 on scenes_val | 0.900 | **no** |" in text
    assert "| counting - random | +3.0 | +3.0 | +3.0 | +3.0 | +3.0 | +3.0 |" in text
    assert "| counting | 61.0 +- 1.0 |" in text
    assert "python tools/x.py" in text and "count_check/count_check.png" in text


def test_demo_summary_says_what_was_learned(tmp_path):
    cc = dict(n_images=500, spearman=0.96, per_count=[dict(k=0, mean=0.5), dict(k=16, mean=9.0)],
              count_map=dict(exact=0.5, within1=0.9))
    lg = dict(train=[dict(iteration=300)], test=[dict(iteration=0, test_loss=750.0), dict(iteration=300, test_loss=4.5)])
    (tmp_path / "cc.json").write_text(json.dumps(cc))
    (tmp_path / "log.json").write_text(json.dumps(lg))
    text = study.demo_summary(str(tmp_path / "cc.json"), str(tmp_path / "log.json"), [("norm-vs-k figure", "a.png")])
    assert "Spearman(|phi|, k) = 0.960" in text and "750 at iteration 0 -> 4.5 at iteration 300" in text
    assert "The network learned to count" in text and text.rstrip().splitlines()[-2].strip().endswith("a.png")
    assert "exact count for 50 %" in text
    cc["spearman"] = 0.3
    (tmp_path / "cc.json").write_text(json.dumps(cc))
    assert "learned something about counting" in study.demo_summary(str(tmp_path / "cc.json"),
                                                                    str(tmp_path / "log.json"), [])
    cc["count_map"]["within1"] = 0.2
    (tmp_path / "cc.json").write_text(json.dumps(cc))
    assert "the counting signal is weak" in study.demo_summary(str(tmp_path / "cc.json"), str(tmp_path / "log.json"), [])


def test_a_branch_run_starts_from_its_parents_snapshot(tmp_path):
    """Table 5's single-method run waits for the main run's snapshot and resumes from it."""
    runs = []
    for name in ("parent", "child"):
        d = tmp_path / name
        d.mkdir()
        (d / "net.prototxt").write_text(COUNTING_NET % 'type: "gaussian" std: 1')
        (d / "solver.prototxt").write_text((COUNTING_SOLVER % str(d / "snap" / "tiny")).replace(
            'net: "net.prototxt"', 'net: "%s"' % (d / "net.prototxt")))
        runs.append((name, str(d / "solver.prototxt")))
    runner = study.Runner(str(tmp_path / "out"), caffe=CAFFE_BIN)
    study.train_runs(runner, runs=runs, poll=0.2, branches={"child": ("parent", 4)})
    assert sorted(study.models(str(tmp_path / "child" / "snap" / "tiny"))) == [8]   # no 4: it began there
    log = (tmp_path / "child" / "snap" / "train.log").read_text()
    assert re.search(r"Resuming from \S*parent/snap/tiny_iter_4\.solverstate", log)
    assert "Iteration 0," not in log and "Iteration 6" in log


def test_all_embedded_photos_and_the_held_out_split():
    embedded = load_script("data_prep/embedded.py")
    sample = embedded.collect_photos(install=False)
    every = embedded.collect_photos(install=False, photo_set="all")
    assert len(sample) == 30 and len(every) == 42 and set(sample) < set(every)
    assert len({name for name, _ in every}) == 42 and all(os.path.isfile(p) for _, p in every)
    train, held_out = embedded.split_photos(every)
    assert (len(train), len(held_out)) == (34, 8) and not set(train) & set(held_out)
    assert "skimage_coins.png" in {name for name, _ in every}


# tools/demo_seeds.py's tests are in tests/test_demo_grid.py.


# ----------------------------------------------------------------------------- the photo run (issue 27)
def _data_params(tv_path):
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format
    net = caffe_pb2.NetParameter()
    text_format.Merge(open(tv_path).read(), net)
    return [json.loads(l.python_param.param_str) for l in net.layer
            if l.type == "Python" and l.python_param.module == "counting_data"], net


def test_photo_run_net_is_the_demo_start_on_views_and_instantiates(tmp_path):
    """The committed study/photos net: the demo's start (Adam, zero fc biases), the mixed LMDB with the
    same-source partner in TRAIN, every held-out view once per TEST pass (the paper's partner), and it
    runs in real Caffe on a stand-in of the mix (mixdata keys, two sources)."""
    import caffe
    s = study.solver(study.PHOTO_SOLVER)
    assert s.type == "Adam" and s.base_lr == pytest.approx(1e-4) and s.max_iter == nets.PHOTO_ITERS
    assert s.test_interval == nets.PHOTO_TEST_INTERVAL and s.snapshot == nets.PHOTO_TEST_INTERVAL
    (train, test), net = _data_params(os.path.join(REPO, s.net))
    assert train["source"] == study.PHOTOS_STUDY_TRAIN and train["partner"] == "same_source"
    assert test["source"] == study.VIEWS_TEST and "partner" not in test
    assert s.test_iter[0] * test["batch_size"] == 1000 == test["test_batches"] * test["batch_size"]
    fc = {l.name: l.inner_product_param.bias_filler.value for l in net.layer if l.name in ("fc6", "fc7", "fc8")}
    assert fc == {"fc6": 0.0, "fc7": 0.0, "fc8": 0.0}
    demo = study.solver("prototxt/demo/solver.prototxt")
    assert (demo.type, demo.base_lr) == (s.type, s.base_lr)

    from conftest import write_test_lmdb
    write_test_lmdb(str(tmp_path / "scenes"), 3, seed=1)
    write_test_lmdb(str(tmp_path / "views"), 5, seed=2)
    mix = str(tmp_path / "mix")
    mixdata.mix_lmdbs([("scenes", str(tmp_path / "scenes"), 1), ("photos", str(tmp_path / "views"), 1)], mix)
    text = open(os.path.join(REPO, s.net)).read().replace(study.PHOTOS_STUDY_TRAIN, mix)
    text = text.replace('\\"batch_size\\": 32', '\\"batch_size\\": 4').replace('\\"workers\\": 1', '\\"workers\\": 0')
    tv = tmp_path / "tv.prototxt"
    tv.write_text(text)
    n = caffe.Net(str(tv), caffe.TRAIN)
    try:
        out = n.forward()
        assert np.isfinite(float(np.ravel(out["loss"])[0]))
        assert n.blobs["data"].data.shape == (24, 3, 114, 114)
    finally:
        for layer in n.layers:
            if hasattr(layer, "close"):
                layer.close()


def test_prepare_photo_data_mixes_views_and_refuses_leaks(tmp_path, monkeypatch):
    from conftest import write_test_lmdb
    from ltc.study import train as st
    views, held, scenes, out = (str(tmp_path / n) for n in ("views", "held", "scenes", "mix"))
    for name, path in (("VIEWS_TRAIN", views), ("VIEWS_TEST", held), ("SCENES_TRAIN", scenes),
                       ("PHOTOS_STUDY_TRAIN", out)):
        monkeypatch.setattr(st, name, path)
    runner = study.Runner(str(tmp_path / "o"))
    with pytest.raises(study.StudyError, match="make photos-all"):
        st.prepare_photo_data(runner)
    write_test_lmdb(views, 4, seed=1)
    write_test_lmdb(held, 2, seed=2)
    write_test_lmdb(scenes, 3, seed=3)
    assert st.prepare_photo_data(runner, scene_repeat=2) == out
    keys = [k for k, _ in read(out)]
    assert len(keys) == 3 * 2 + 4 and sum(b"_photos_" in k for k in keys) == 4
    assert "mix_lmdbs" in (tmp_path / "o" / "commands.txt").read_text()
    import shutil
    shutil.rmtree(out)
    shutil.rmtree(held)
    write_test_lmdb(held, 2, seed=1)          # the first two training views, "held out": refused
    with pytest.raises(study.StudyError, match="2 held-out test photos"):
        st.prepare_photo_data(runner)


def photo_results(count_term=2.0, exact=0.85, gain=3.5, lo=0.5):
    g = {"%d/%s" % (n, l): dict(mean=gain, lo=lo, hi=gain + 1, counting=50.0, random=50.0 - gain)
         for n in (10, 1000) for l in study.PROBE_LAYERS}
    return dict(weights="p.caffemodel", iteration=3000, solver=study.PHOTO_SOLVER, partner="same_source",
                train_lmdb=study.PHOTOS_STUDY_TRAIN, test_lmdb=study.VIEWS_TEST,
                test_views=[dict(iteration=500, loss=9.0, count_term=9.0, contrast_term=0.0, hinge_active=1.0,
                                 norm_dx=0.5),
                            dict(iteration=3000, loss=count_term + 1, count_term=count_term, contrast_term=1.0,
                                 hinge_active=0.3, norm_dx=4.0)],
                train_end=dict(loss=3.0, count_term=1.0, contrast_term=2.0, hinge_active=0.4, norm_dx=3.0),
                mean_vector=dict(n_images=1000, n_dims=1000, n_nonzero=40, n_above_threshold=30, threshold=0.01,
                                 max_mean=1.0, mean_norm=4.0),
                count_check=dict(spearman=0.98, n=500, count_map=dict(exact=0.4, within1=0.9)),
                count_check_fixed=dict(spearman=0.99, n=500, count_map=dict(exact=exact, within1=0.95), item=36),
                domain_probe=dict(per_class=[10, 1000], gains=g, models={"counting": "p", "random1": None},
                                  seeds=5, val_items=5000, train_pool=12000),
                elpv_probe=None,
                gap=dict(train_views=[dict(iteration=3000, count_term=1.5, contrast_term=1.0, hinge_active=0.25,
                                           norm_dx=3.0, loss=2.5)],
                         heldout_views=[dict(iteration=3000, count_term=count_term, contrast_term=1.0,
                                             hinge_active=0.3, norm_dx=4.0, loss=count_term + 1)],
                         val_scenes=[]))


def test_photo_goals_and_report_without_the_main_run(tmp_path):
    res = dict(photos=photo_results())
    met = {g: ok for g, _, ok in study.goals(res)}
    assert len(met) == 7 and all(met.values()), met
    res = dict(photos=photo_results(count_term=2.6, exact=0.79, gain=3.5, lo=-0.1))
    missed = [g for g, _, ok in study.goals(res) if not ok]
    assert len(missed) == 5 and any("counting term" in g for g in missed) and any("fixed-size" in g for g in missed)
    path = study.write_report(res, str(tmp_path / "rep"))
    text = open(path).read()
    assert "| 3000 | 3.60 | 2.60 | 1.00 | 30 % | 4.00 |" in text
    assert "| 3000 | 1.50 / 25 % / 3.00 | 2.60 / 30 % / 4.00 | - |" in text
    assert "| fixed size 36 px, gray | 0.990 | 79.0 % | 95.0 % |" in text
    assert "| 1000 | +3.50 [-0.10, +4.50]" in text and "skipped (its optional package is not installed)" in text
    assert "The main run" not in text
    both = dict(fake_results(tmp_path), photos=photo_results())
    assert len(study.goals(both)) == len(study.goals(fake_results(tmp_path))) + 7


def test_update_results_keeps_the_other_runs(tmp_path):
    out = str(tmp_path / "r")
    study.update_results(out, main=dict(a=1), count_check=dict(spearman=0.9))
    res = study.update_results(out, photos=dict(b=2))
    assert res == dict(main=dict(a=1), count_check=dict(spearman=0.9), photos=dict(b=2))
    assert json.load(open(os.path.join(out, "results.json"))) == res


def test_reproduce_evaluates_the_photo_snapshot_it_is_told(tmp_path, capsys):
    """--photo-iteration picks the photo run's snapshot; one that does not exist is refused by name."""
    reproduce = load_script("tools/reproduce.py")
    out = os.path.relpath(str(tmp_path / "res"), REPO)
    rc = reproduce.main(["--stage", "evaluate", "--runs", "photos", "--photo-iteration", "7", "--no-domain-probe",
                         "--out", out])
    assert rc == 1
    err = capsys.readouterr().err
    assert "no snapshot at iteration 7 for prototxt/study/photos/solver.prototxt" in err


def test_runner_logs_each_step_with_its_wall_time(tmp_path):
    runner = study.Runner(str(tmp_path / "o"))
    assert runner.call("tools/analyze.py", ["log", "--log", "x.log"], lambda: 42) == 42
    lines = (tmp_path / "o" / "commands.txt").read_text().splitlines()
    assert lines[0].endswith("tools/analyze.py log --log x.log") and re.fullmatch(r"#   \d+ s", lines[1])
    with pytest.raises(study.StudyError, match="analyze.py bad: ValueError: nope"):
        runner.call("tools/analyze.py", ["bad"], lambda: (_ for _ in ()).throw(ValueError("nope")))
    assert len((tmp_path / "o" / "commands.txt").read_text().splitlines()) == 3   # no time for a failed step


def test_source_test_runs_caffe_test_on_the_source_it_is_given(tmp_path):
    """source_test swaps only the TEST data layer's source, runs the real ``caffe test`` and reads its
    means; they equal a pycaffe TEST forward of the written net (same seed, same views), differ between
    two sources, and a second call reuses the log."""
    import caffe
    from conftest import write_test_lmdb
    ev = study
    a, b, c = str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "c")
    write_test_lmdb(a, 4, seed=1)
    write_test_lmdb(b, 4, seed=2)
    write_test_lmdb(c, 4, seed=3)
    s = study.solver(study.PHOTO_SOLVER)
    text = open(os.path.join(REPO, s.net)).read()
    # the net as written reads a third LMDB (c) at TEST: no data of the repository is needed, and
    # source_test must swap it for a and for b
    for old, new in (('\\"batch_size\\": 50', '\\"batch_size\\": 2'), ('\\"test_batches\\": 20', '\\"test_batches\\": 2'),
                     ('\\"workers\\": 1', '\\"workers\\": 0'),
                     ('\\"source\\": \\"%s\\"' % study.VIEWS_TEST, '\\"source\\": \\"%s\\"' % c)):
        assert old in text
        text = text.replace(old, new)
    tv = tmp_path / "tv.prototxt"
    tv.write_text(text)
    caffe.set_random_seed(3)
    n = caffe.Net(str(tv), caffe.TEST)
    try:
        n.save(str(tmp_path / "w.caffemodel"))
    finally:
        for layer in n.layers:
            if hasattr(layer, "close"):
                layer.close()
    runner = study.Runner(str(tmp_path / "o"), caffe=CAFFE_BIN)
    got = {src: ev.source_test(runner, str(tv), str(tmp_path / "w.caffemodel"), src,
                               str(tmp_path / "gap" / ("%s.prototxt" % os.path.basename(src))), 2) for src in (a, b)}
    assert set(got[a]) == set(ev.TEST_OUTPUTS) and got[a]["count_term"] != got[b]["count_term"]
    tests = [p for p in _data_params(str(tmp_path / "gap" / "b.prototxt"))[0] if "test_batches" in p]
    assert len(tests) == 1
    params = tests[0]
    assert params["source"] == b and params["seed"] == 1702 and "partner" not in params
    assert [p["source"] for p in _data_params(str(tmp_path / "gap" / "a.prototxt"))[0] if "test_batches" in p] == [a]
    net = caffe.Net(str(tmp_path / "gap" / "b.prototxt"), str(tmp_path / "w.caffemodel"), caffe.TEST)
    try:
        outs = [{k: float(np.ravel(v)[0]) for k, v in net.forward().items()} for _ in range(2)]  # copies
    finally:
        for layer in net.layers:
            if hasattr(layer, "close"):
                layer.close()
    for k in ev.TEST_OUTPUTS:       # caffe test prints each mean with 6 significant digits
        mean = np.mean([o[k] for o in outs])
        assert got[b][k] == pytest.approx(mean, rel=1e-5, abs=1e-6), k
    assert ev.source_test(runner, str(tv), str(tmp_path / "w.caffemodel"), b,
                          str(tmp_path / "gap" / "b.prototxt"), 2) == got[b]
    assert "# reused" in (tmp_path / "o" / "commands.txt").read_text().splitlines()[-1]


def test_parse_caffe_test_reads_the_final_means():
    ev = study
    text = ("I1205 13:16:31.2 27828 caffe.cpp:310] Loss: 246.365\n"
            "I1205 13:16:31.2 27828 caffe.cpp:321] count_term = 244.933\n"
            "I1205 13:16:31.2 27828 caffe.cpp:321] loss = 246.365 (* 1 = 246.365 loss)\n"
            "I1205 13:16:31.2 27828 caffe.cpp:321] norm_dx = 5.28644\n"
            "I1205 13:16:30.0 27828 caffe.cpp:280] Batch 19, count_term = 1\n")
    assert ev.parse_caffe_test(text) == dict(count_term=244.933, loss=246.365, norm_dx=5.28644)


def test_domain_probe_step_reruns_for_another_model(tmp_path, monkeypatch):
    """The probe folder keeps the random inits' features for every model, so its gains.json may belong
    to another snapshot: the study reuses it only for the model that wrote it (a later snapshot, or an
    earlier one evaluated after a later one, runs the probe again)."""
    from ltc import domain_probe as dp
    calls = []

    def fake_run(args, command=""):
        model = [m.partition("=")[2] for m in args.model][0]
        calls.append(model)
        out = dict(models={"counting": model}, gains={}, per_class=list(args.per_class), table="t")
        d = os.path.join(args.out_dir, args.dataset)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "gains.json"), "w") as f:
            json.dump(out, f)
        return dict(out)

    monkeypatch.setattr(dp, "run", fake_run)
    w = {}
    for name in ("it1000", "it2000", "it500"):      # written in this order: it500 is the oldest file last
        w[name] = str(tmp_path / ("%s.caffemodel" % name))
        with open(w[name], "w") as f:
            f.write(name)
    os.utime(w["it500"], (1, 1))
    runner = study.Runner(str(tmp_path / "o"))
    out = str(tmp_path / "probe")
    for name in ("it1000", "it1000", "it2000", "it500", "it500"):
        res = study.domain_probe(runner, w[name], out)
        assert res["models"]["counting"] == w[name] and "table" not in res
    assert calls == [w["it1000"], w["it2000"], w["it500"]]
    assert sum("# reused" in l for l in (tmp_path / "o" / "commands.txt").read_text().splitlines()) == 2
