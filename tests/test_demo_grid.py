"""tools/demo_seeds.py: arms x seeds of the demo (issue 26). The nets of a run are the demo's with the
arm's overrides; a grid on tiny scenes trains, scores, tabulates and resumes without retraining."""
import json
import os

import cv2
import lmdb
import numpy as np
import pytest

from conftest import load_script
from ltc import REPO
from ltc.lmdb_io import image_to_datum

ds = load_script("tools/demo_seeds.py")


def _read(path, msg):
    from google.protobuf import text_format
    text_format.Merge(open(os.path.join(REPO, path)).read(), msg)
    return msg


def test_a_run_is_the_demo_with_the_arms_overrides_and_its_seed(tmp_path):
    from caffe.proto import caffe_pb2
    folder = os.path.relpath(str(tmp_path / "small" / "s1702"), REPO)
    os.makedirs(os.path.join(REPO, folder))
    _, over = ds.parse_arm("small")
    solver_path = ds.write_nets(1702, 900, folder, over, val_lmdb=ds.SELECT)
    s = _read(solver_path, caffe_pb2.SolverParameter())
    ref = _read("prototxt/demo/solver.prototxt", caffe_pb2.SolverParameter())
    assert (s.random_seed, s.max_iter, s.snapshot) == (1702, 900, 900)
    assert s.net == os.path.join(folder, "train_val.prototxt") and s.snapshot_prefix == os.path.join(folder, "counting_demo")
    for field in ("base_lr", "momentum", "weight_decay", "lr_policy", "test_interval", "display"):
        assert getattr(s, field) == getattr(ref, field), field
    assert not s.HasField("type")            # the small arm is the control's SGD, whatever the demo uses
    tv = open(os.path.join(REPO, folder, "train_val.prototxt")).read()
    assert '\\"seed\\": 1702' in tv and '\\"seed\\": 1703' in tv          # train stream and test stream
    assert ds.SELECT in tv and "scenes_val_lmdb\\\"" in tv
    net = _read(os.path.join(folder, "train_val.prototxt"), caffe_pb2.NetParameter())
    fc = {l.name: l.inner_product_param for l in net.layer if l.type == "InnerProduct"}
    assert (fc["fc8"].weight_filler.type, fc["fc8"].weight_filler.std) == ("gaussian", pytest.approx(0.005))
    assert fc["fc6"].bias_filler.value == 0 and fc["fc8"].bias_filler.value == 0
    # the "demo" arm is the committed demo except seeds and paths
    folder_c = os.path.relpath(str(tmp_path / "demo" / "s1701"), REPO)
    os.makedirs(os.path.join(REPO, folder_c))
    ds.write_nets(1701, 600, folder_c, ds.parse_arm("demo")[1])
    body = lambda t: [l for l in t.splitlines() if not l.startswith("#")]  # noqa: E731
    assert body(open(os.path.join(REPO, folder_c, "train_val.prototxt")).read()) == \
        body(open(os.path.join(REPO, "prototxt/demo/train_val.prototxt")).read())
    # the control arm is the old start (fc biases 0.1, Xavier fc8, SGD) whatever the demo's recipe
    control = ds.write_nets(1701, 600, folder_c, ds.parse_arm("control")[1])
    net = _read(os.path.join(folder_c, "train_val.prototxt"), caffe_pb2.NetParameter())
    fc = {l.name: l.inner_product_param for l in net.layer if l.type == "InnerProduct"}
    assert fc["fc8"].weight_filler.type == "xavier" and fc["fc6"].bias_filler.value == pytest.approx(0.1)
    assert fc["fc8"].bias_filler.value == pytest.approx(0.1) and not _read(control, caffe_pb2.SolverParameter()).HasField("type")
    adam = ds.write_nets(1701, 600, folder_c, ds.parse_arm("adam")[1])
    assert _read(adam, caffe_pb2.SolverParameter()).type == "Adam"
    # the demo's recipe is the adam arm (issue 26): same net and solver but for seeds and paths
    assert body(open(os.path.join(REPO, folder_c, "train_val.prototxt")).read()) == \
        body(open(os.path.join(REPO, "prototxt/demo/train_val.prototxt")).read())
    assert _read("prototxt/demo/solver.prototxt", caffe_pb2.SolverParameter()).type == "Adam"


@pytest.mark.parametrize("text", ["nosuch", "x:nokey=1", "x:fc8_std", ":fc8_std=1", "x:fc8_std=NaN", "../x:warmup=2"])
def test_bad_arms_are_refused(text):
    import argparse
    with pytest.raises(argparse.ArgumentTypeError):
        ds.parse_arm(text)


def test_custom_arm_values_are_typed():
    name, over = ds.parse_arm("mine:fc8_std=0.004,warmup=50,solver_type=Adam,fc8_bias=0")
    assert name == "mine" and over == dict(fc8_std=0.004, warmup=50, solver_type="Adam", fc8_bias=0)


def test_resumes_from_the_latest_snapshot_below_the_end(tmp_path):
    folder = os.path.relpath(str(tmp_path / "s1702"), REPO)
    assert ds.latest_state(folder, 1200) is None          # no folder yet
    os.makedirs(os.path.join(REPO, folder))
    for it in (300, 600, 1200):
        open(os.path.join(REPO, folder, "counting_demo_iter_%d.solverstate" % it), "w").close()
    open(os.path.join(REPO, folder, "counting_demo_iter_900.caffemodel"), "w").close()   # not a state
    assert ds.latest_state(folder, 1200) == os.path.join(folder, "counting_demo_iter_600.solverstate")
    assert ds.latest_state(folder, 300) is None


def _row(seed, sp, w1, live=5):
    return dict(seed=seed, spearman=sp, exact=0.4, within1=w1, norm0=0.1, norm16=9.0, live=live, sq_norm=3.0,
                amplitude=0.1, wall=60.0, log={}, counts=sp >= ds.MIN_SPEARMAN and w1 >= ds.MIN_WITHIN1)


def test_tables_count_successes_by_both_thresholds():
    rows = [_row(1, 0.97, 0.92, 9), _row(2, 0.99, 0.85, 20), _row(3, 0.90, 0.95, 30), _row(4, 0.96, 0.90, 40)]
    s = ds.arm_stats(rows)
    assert (s["success"], s["n"], s["worst"], s["live"]) == (2, 4, 0.90, 25)
    assert s["median"] == pytest.approx(0.965)
    text = ds.arm_table("small", ds.ARMS["small"], rows, "select", 600, 2)
    assert "counts in 2 of 4 seeds" in text and "| 2 | 0.990 | 40.0 % / 85.0 % | no |" in text
    grid = ds.grid_table([("small", ds.ARMS["small"], rows), ("control", ds.ARMS["control"], rows[2:3]),
                          ("demo", {}, rows[:1])], "val", 600, 2)
    assert "| small | fc8_bias=0.0, fc8_std=0.005, fc_bias=0.0 | 1 2 3 4 | 2 of 4 | 0.965 / 0.900 | 25 |" in grid
    assert "| control | control (the old start) | 3 | 0 of 1 |" in grid
    assert "| demo | the demo recipe (prototxt/demo) | 1 | 1 of 1 |" in grid


def _scenes_lmdb(path, n, seed):
    """Black 256 x 256 scenes with k = i % 4 white squares, label k."""
    rng = np.random.RandomState(seed)
    env = lmdb.open(str(path), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for i in range(n):
            k = i % 4
            img = np.zeros((256, 256, 3), np.uint8)
            for j in range(k):
                y, x = 20 + 110 * (j // 2) + rng.randint(0, 20), 20 + 110 * (j % 2) + rng.randint(0, 20)
                img[y:y + 40, x:x + 40] = rng.randint(100, 256)
            txn.put(b"%08d_scene_k%02d" % (i, k), image_to_datum(img, label=k).SerializeToString())
    env.close()


def test_a_tiny_grid_trains_scores_tabulates_and_resumes(tmp_path, capsys):
    data = []
    for name, n, seed in (("train", 16, 0), ("select", 8, 1), ("val", 8, 2)):
        _scenes_lmdb(tmp_path / name, n, seed)
        data.append(os.path.relpath(str(tmp_path / name), REPO))
    out = os.path.relpath(str(tmp_path / "grid"), REPO)
    argv = ["--arms", "tiny:batch=2,test_batch=2,test_iter=1,workers=0", "tiny0:batch=2,test_batch=2,test_iter=1,"
            "workers=0,fc_bias=0,fc8_bias=0,fc8_std=0.001", "--seeds", "3", "--max-iter", "2",
            "--eval", "select", "val", "--out", out, "--data"] + data + ["--max-images", "8", "--fit-max-images", "16"]
    assert ds.main(argv) == 0
    printed = capsys.readouterr().out
    for arm in ("tiny", "tiny0"):
        for seed in (3,):
            folder = os.path.join(REPO, out, arm, "s%d" % seed)
            assert os.path.isfile(os.path.join(folder, "counting_demo_iter_2.caffemodel"))
            for ev in ("select", "val"):
                cc = json.load(open(os.path.join(folder, "count_check_" + ev, "count_check.json")))
                assert cc["n_images"] == 8 and 0 <= cc["units"]["live"] <= 1000
                assert cc["source"].endswith(ev)
            assert "select" in open(os.path.join(folder, "train_val.prototxt")).read()   # TEST net: selection set
        text = open(os.path.join(REPO, out, arm, "summary.md")).read()
        assert "on select" in text and "on val" in text and "| 3 |" in text
    grid = open(os.path.join(REPO, out, "summary.md")).read()
    assert "| tiny | batch=2" in grid and "| tiny0 |" in grid and "| 3 |" in grid
    assert "tiny seed 3 on select: Spearman" in printed
    # rerun: nothing is trained or scored again
    stamps = {p: os.path.getmtime(p) for p in (os.path.join(REPO, out, "tiny", "s3", "train.log"),
                                             os.path.join(REPO, out, "tiny0", "s3", "count_check_val", "count_check.json"))}
    assert ds.main(argv) == 0
    assert all(os.path.getmtime(p) == t for p, t in stamps.items())
    # a missing evaluation is redone without retraining
    os.remove(os.path.join(REPO, out, "tiny", "s3", "count_check_val", "count_check.json"))
    assert ds.main(argv) == 0
    assert os.path.getmtime(os.path.join(REPO, out, "tiny", "s3", "train.log")) == \
        stamps[os.path.join(REPO, out, "tiny", "s3", "train.log")]
    assert os.path.isfile(os.path.join(REPO, out, "tiny", "s3", "count_check_val", "count_check.json"))


def test_missing_data_is_an_argument_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        ds.main(["--seeds", "1", "--data", str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "c"),
                 "--out", str(tmp_path / "o")])
    assert e.value.code == 2 and "is missing" in capsys.readouterr().err


def test_demo_summary_verdict_uses_the_grid_rule(tmp_path):
    summary = load_script("tools/demo_summary.py")
    path = tmp_path / "cc.json"
    cases = [(0.97, 0.92, "this run COUNTS"), (0.97, 0.85, "DOES NOT COUNT"), (0.90, 0.95, "DOES NOT COUNT")]
    for sp, w1, word in cases:
        path.write_text(json.dumps(dict(spearman=sp, count_map=dict(within1=w1),
                                        units=dict(live=52, dim=1000, n_inputs=500))))
        text = summary.verdict(str(path))
        assert word in text and "52 of 1000 fc8 units were live" in text
    path.write_text(json.dumps(dict(spearman=0.99)))          # no read-out fitted: cannot count
    assert "DOES NOT COUNT" in summary.verdict(str(path))


@pytest.mark.parametrize("opts,flag", [(["--seeds", "-1"], "--seeds"), (["--seeds", "1", "--max-iter", "0"], "--max-iter"),
                                       (["--seeds", "1", "--threads", "0"], "--threads"),
                                       (["--seeds", "x"], "--seeds"), (["--seeds", "1", "--arms", "nosuch"], "--arms")])
def test_bad_options_exit_2_before_any_run(tmp_path, capsys, opts, flag):
    with pytest.raises(SystemExit) as e:
        ds.main(opts + ["--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "argument %s" % flag in err and not (tmp_path / "o").exists()
