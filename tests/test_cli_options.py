"""Command-line options that no test turned on (issue 32, tests/option_coverage.py), each at a
non-default value, with what it should change checked: train_multigpu.py --batch-mode/--lr-scaling/
--snapshot, make_lmdb.py --jpeg-quality/--min-side, lmdb_info.py --pick, resume.py --new-ok/--caffe,
make_transfer_prototxt.py --check, port_weights.py --rescale-layers."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

import caffe
from caffe.proto import caffe_pb2
from google.protobuf import text_format

from conftest import load_script, write_test_lmdb
from ltc import REPO, lmdb_io


def run_tool(rel, args, **kw):
    return subprocess.run([sys.executable, os.path.join(REPO, rel)] + list(args), capture_output=True, text=True,
                          timeout=300, cwd=kw.get("cwd", REPO))


def read_text_proto(path, message):
    m = message()
    text_format.Merge(open(str(path)).read(), m)
    return m


# ----------------------------------------------------------------------------- train_multigpu.py
def test_train_multigpu_split_and_linear_lr_reach_the_rank_files(tmp_path, make_test_lmdb):
    """--batch-mode split --lr-scaling linear on 2 GPUs (dry run): each rank's net has half the batch,
    each rank's solver twice the base_lr, and the plan says so."""
    from test_multigpu import _demo_solver
    solver, sp = _demo_solver(tmp_path, make_test_lmdb, batch=4)
    r = run_tool("tools/train_multigpu.py", ["--solver", solver, "--gpus", "0,1", "--batch-mode", "split",
                                             "--lr-scaling", "linear", "--dry-run", "--workdir", str(tmp_path / "w")])
    assert r.returncode == 0, r.stderr
    plans = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert [p["batch_per_rank"] for p in plans] == [2, 2] and plans[0]["effective_batch"] == 4
    for p in plans:
        rank_solver = read_text_proto(p["solver"], caffe_pb2.SolverParameter)
        assert rank_solver.base_lr == pytest.approx(2 * sp.base_lr)
        net = read_text_proto(p["net"], caffe_pb2.NetParameter)
        train = [json.loads(l.python_param.param_str) for l in net.layer
                 if l.type == "Python" and l.python_param.module == "counting_data" and
                 (not l.include or l.include[0].phase == caffe_pb2.TRAIN)]
        assert [t["batch_size"] for t in train] == [2] and train[0]["shard"] == p["rank"]


def test_train_multigpu_snapshot_is_checked(tmp_path, make_test_lmdb):
    from test_multigpu import _demo_solver
    solver, _ = _demo_solver(tmp_path, make_test_lmdb)
    missing = str(tmp_path / "nope_iter_5.solverstate")
    r = run_tool("tools/train_multigpu.py", ["--solver", solver, "--snapshot", missing, "--dry-run"])
    assert r.returncode == 2 and missing in r.stderr
    state = tmp_path / "x_iter_5.solverstate"
    state.write_bytes(b"")
    r = run_tool("tools/train_multigpu.py", ["--solver", solver, "--snapshot", str(state), "--dry-run",
                                             "--workdir", str(tmp_path / "w")])
    assert r.returncode == 0, r.stderr


# ----------------------------------------------------------------------------- make_lmdb.py
def _folder(tmp_path, shapes):
    d = tmp_path / "imgs"
    d.mkdir()
    rng = np.random.default_rng(0)
    images = []
    for i, (h, w) in enumerate(shapes):
        img = cv2.resize(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
        img = cv2.add(img, rng.integers(0, 40, (h, w, 3), dtype=np.uint8))
        cv2.imwrite(str(d / ("img%d.png" % i)), img)
        images.append(img)
    return d, images


def _datums(path):
    env = lmdb_io.open_lmdb(str(path))
    try:
        with env.begin() as txn:
            out = []
            for _, v in txn.cursor():
                d = caffe_pb2.Datum()
                d.ParseFromString(bytes(v))
                out.append(d)
            return out
    finally:
        env.close()


@pytest.mark.parametrize("quality", [20, 90])
def test_make_lmdb_jpeg_quality_sets_the_stored_jpeg(tmp_path, quality):
    """--encoded --jpeg-quality Q: every stored file is OpenCV's JPEG of the resized image at quality Q."""
    src, images = _folder(tmp_path, [(40, 60), (50, 50)])
    out = tmp_path / "db"
    mk = load_script("tools/make_lmdb.py")
    assert mk.main([str(src), str(out), "--size", "32", "--encoded", "--jpeg-quality", str(quality), "--workers", "1",
                    "--no-progress"]) == 0
    datums = _datums(out)
    assert len(datums) == 2
    for d, img in zip(datums, images):
        resized = cv2.resize(img, (32, 32), interpolation=cv2.INTER_LINEAR)
        ok, want = cv2.imencode(".jpg", resized, [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert d.encoded and bytes(d.data) == want.tobytes()


def test_make_lmdb_min_side_skips_small_images(tmp_path):
    """--min-side 20 skips an 18-pixel-high image that the default (16) keeps."""
    src, _ = _folder(tmp_path, [(40, 60), (18, 50), (30, 30)])
    mk = load_script("tools/make_lmdb.py")
    counts = {}
    for name, extra in (("default", []), ("min20", ["--min-side", "20"])):
        out = tmp_path / name
        assert mk.main([str(src), str(out), "--size", "16", "--workers", "1", "--no-progress"] + extra) == 0
        counts[name] = len(_datums(out))
    assert counts == {"default": 3, "min20": 2}


# ----------------------------------------------------------------------------- lmdb_info.py
def test_lmdb_info_pick_first_takes_the_first_entries(tmp_path):
    """--pick first --n 3 draws entries 0, 1, 2: the sheet of a 9-entry LMDB equals the default (spread)
    sheet of an LMDB holding only those three; spread on the 9 entries draws 0, 4, 8, another sheet."""
    images = write_test_lmdb(str(tmp_path / "db9"), 9, size=32)
    env_imgs = images[:3]
    import lmdb
    from ltc.lmdb_io import image_datum_bytes
    env = lmdb.open(str(tmp_path / "db3"), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, img in enumerate(env_imgs):
            txn.put(b"%08d_img%d.png" % (i, i), image_datum_bytes(img, label=i))
    env.close()
    info = load_script("tools/lmdb_info.py")
    sheets = {}
    for name, db, extra in (("first", "db9", ["--pick", "first"]), ("spread9", "db9", []), ("spread3", "db3", [])):
        png = tmp_path / (name + ".png")
        assert info.main([str(tmp_path / db), "--sheet", str(png), "--n", "3", "--tile", "32"] + extra) == 0
        sheets[name] = cv2.imread(str(png))
    assert np.array_equal(sheets["first"], sheets["spread3"])
    assert not np.array_equal(sheets["first"], sheets["spread9"])


# ----------------------------------------------------------------------------- resume.py
def test_resume_new_ok_and_caffe_binary(tmp_path):
    """No snapshot under the prefix: exit 1 naming --new-ok; with --new-ok the command starts at iteration 0,
    with the binary given by --caffe."""
    solver = tmp_path / "solver.prototxt"
    solver.write_text('net: "net.prototxt"\nbase_lr: 0.01\nlr_policy: "fixed"\nmax_iter: 2\n'
                      'snapshot_prefix: "%s"\n' % (tmp_path / "snaps" / "run"))
    (tmp_path / "snaps").mkdir()
    r = run_tool("tools/resume.py", ["--solver", str(solver), "--dry-run"])
    assert r.returncode == 1 and "--new-ok" in r.stderr
    fake = str(tmp_path / "my_caffe")
    r = run_tool("tools/resume.py", ["--solver", str(solver), "--dry-run", "--new-ok", "--caffe", fake])
    assert r.returncode == 0, r.stderr
    assert "iteration 0" in r.stdout and fake in r.stdout and "-snapshot" not in r.stdout


# ----------------------------------------------------------------------------- make_transfer_prototxt.py
def test_make_transfer_prototxt_check_reports_a_stale_file(tmp_path, capsys):
    mt = load_script("tools/make_transfer_prototxt.py")
    assert mt.main(["--out-root", str(tmp_path)]) == 0
    assert mt.main(["--out-root", str(tmp_path), "--check"]) == 0
    files = sorted(p for p in (tmp_path / "prototxt").rglob("*.prototxt"))
    assert files
    files[0].write_text(files[0].read_text() + "# edited\n")
    capsys.readouterr()
    assert mt.main(["--out-root", str(tmp_path), "--check"]) == 1
    c = capsys.readouterr()
    assert files[0].name in c.out + c.err


# ----------------------------------------------------------------------------- port_weights.py
def test_port_weights_rescale_layers_touches_only_those_layers(tmp_path, make_test_lmdb):
    """--rescale with --rescale-layers fc6: fc6 is rescaled, fc7 and score_fr keep the net's random
    initialisation under the tool's seed (with the default list they would be rescaled too)."""
    from counting_models import build_counting_model
    from ltc import transfer_nets
    src = tmp_path / "deploy.caffemodel"
    build_counting_model(src, "deploy", seed=3)
    make_test_lmdb(str(tmp_path / "imgs"), 3)
    fcn = transfer_nets.fcn_alexnet(dict(size=64))
    for layer in fcn.layer:
        if layer.name in ("fc6", "fc7"):
            layer.convolution_param.num_output = 32
    net_path = tmp_path / "fcn.prototxt"
    net_path.write_text(str(fcn))
    pw = load_script("tools/port_weights.py")
    out = tmp_path / "fc6.caffemodel"
    assert pw.main([str(src), str(out), "--rescale", str(tmp_path / "imgs"), "--rescale-net", str(net_path),
                    "--rescale-images", "3", "--rescale-size", "64", "--rescale-layers", "fc6"]) == 0
    caffe.set_mode_cpu()
    caffe.set_random_seed(1701)      # the tool's --seed: the initialisation it starts from
    init = caffe.Net(str(net_path), caffe.TEST)
    done = caffe.Net(str(net_path), caffe.TEST)
    done.copy_from(str(out))
    assert not np.allclose(done.params["fc6"][0].data, init.params["fc6"][0].data)
    for layer in ("fc7", "score_fr"):
        for a, b in zip(done.params[layer], init.params[layer]):
            assert np.array_equal(a.data, b.data), layer


# ----------------------------------------------------------------------------- export.py
def test_export_cli_passes_its_options_on(tmp_path, monkeypatch):
    """tools/export.py --format onnx --eps 1e-3 --input-size 100 and every --fold-std-* option with --seed:
    the export gets the format, eps, size and the std numpy measures with those settings. (torch/onnx
    are optional: the export itself is replaced here; test_export_torch.py checks its numbers.)"""
    from test_user_visible import direct_input_std, textured_image, write_images_lmdb
    rng = np.random.default_rng(4)
    images = [textured_image(rng, h, w) for h, w in [(256, 256), (240, 300), (300, 240), (250, 260), (260, 250)]]
    db = write_images_lmdb(tmp_path / "db", images)
    from counting_models import build_counting_model
    model = str(tmp_path / "model.caffemodel")
    build_counting_model(model, "deploy", seed=2)
    ex_cli = load_script("tools/export.py")
    calls = []
    monkeypatch.setattr(ex_cli.ex, "require", lambda fmt: None)
    monkeypatch.setattr(ex_cli.ex, "export", lambda *a, **k: calls.append((a, k)))
    assert ex_cli.main([model, str(tmp_path / "out.bin"), "--format", "onnx", "--eps", "1e-3",
                        "--input-size", "100", "--input", "bgr-mean", "--fold-std", db, "--fold-std-images", "4",
                        "--fold-std-gray-prob", "0.5", "--fold-std-crop", "224", "--fold-std-interpolation", "lanczos",
                        "--seed", "9"]) == 0
    (args, kw), = calls
    assert args == (model, str(tmp_path / "out.bin"), "onnx")
    assert kw["eps"] == 1e-3 and kw["size"] == 100 and kw["normalization"] == "bgr-mean"
    assert kw["fold_std"] == pytest.approx(direct_input_std(images, 9, 4, 0.5, "lanczos", 224), rel=1e-9)


# ----------------------------------------------------------------------------- linear_probe.py
def test_linear_probe_num_classes_stepsize_and_seed(tmp_path, capsys):
    """--num-classes 5 --stepsize 2 --seed 7: the classifiers have 5 outputs (chance 20 %), the solver steps
    the lr every 2 iterations, Caffe is seeded with 7, and the CSV row records them."""
    import csv
    from test_transfer import _two_class_lmdb
    _two_class_lmdb(tmp_path / "train_lmdb", 8, 0)
    _two_class_lmdb(tmp_path / "val_lmdb", 6, 1)
    lp = load_script("tools/linear_probe.py")
    out, table = tmp_path / "probe", tmp_path / "rows.csv"
    assert lp.main(["--random-init", "--train-lmdb", str(tmp_path / "train_lmdb"), "--val-lmdb",
                    str(tmp_path / "val_lmdb"), "--iters", "3", "--batch", "4", "--test-batch", "3", "--crop", "67",
                    "--num-classes", "5", "--stepsize", "2", "--seed", "7", "--out-dir", str(out),
                    "--csv", str(table)]) == 0
    text = capsys.readouterr().out
    assert "(chance: 20.0%)" in text and "seed 7" in text
    s = read_text_proto(out / "random" / "solver.prototxt", caffe_pb2.SolverParameter)
    assert s.stepsize == 2 and s.lr_policy == "step" and s.max_iter == 3
    net = read_text_proto(out / "random" / "train_val.prototxt", caffe_pb2.NetParameter)
    heads = [l.inner_product_param.num_output for l in net.layer if l.type == "InnerProduct"]
    assert heads and set(heads) == {5}
    row, = list(csv.DictReader(open(str(table))))
    assert (row["num_classes"], row["seed"]) == ("5", "7")


# ----------------------------------------------------------------------------- check_caffe.py
def test_check_caffe_venv(tmp_path):
    """--venv: the project's environment passes (its caffe wrapper and pycaffe with the Python layer);
    a folder without them is refused with exit 1, naming the missing wrapper."""
    venv = os.path.dirname(os.path.dirname(sys.executable))
    r = run_tool("tools/check_caffe.py", ["--venv", venv])
    assert r.returncode == 0 and "environment OK" in r.stdout, r.stderr
    r = run_tool("tools/check_caffe.py", ["--venv", str(tmp_path)])
    assert r.returncode == 1 and os.path.join(str(tmp_path), "bin", "caffe") in r.stderr


# ----------------------------------------------------------------------------- library = CLI defaults
def _parser_of(script, monkeypatch):
    """The argparse parser a script's main() builds (captured as it parses, before any work)."""
    import argparse
    mod = load_script(script)
    seen = {}

    def capture(self, args=None, namespace=None):
        seen["parser"] = self
        raise SystemExit(0)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    with pytest.raises(SystemExit):
        mod.main([])
    monkeypatch.undo()
    return {a.dest: a.default for a in seen["parser"]._actions if a.dest != "help"}


@pytest.mark.parametrize("script, fn, renamed, cli_only", [
    ("tools/linear_probe.py", "ltc.probe:linear_probe", {"model": "models", "csv": "csv_path"}, ()),
    ("data_prep/fashion_scenes.py", "ltc.fashion:build_testbed", {}, ()),
    ("data_prep/embedded.py", "ltc.embedded_photos:build_photo_lmdbs", {}, ("workers",)),
])
def test_library_functions_take_the_cli_defaults(script, fn, renamed, cli_only, monkeypatch):
    """ltc.study calls these library functions and logs the script's command line with only the options
    it sets: every other option's default must be the same on both sides (embedded's --workers: None in
    the library means the CLI's default, computed from the machine)."""
    import importlib
    import inspect
    mod_name, name = fn.split(":")
    sig = inspect.signature(getattr(importlib.import_module(mod_name), name)).parameters
    lib = {k: p.default for k, p in sig.items()}
    cli = _parser_of(script, monkeypatch)
    assert sorted(renamed.get(k, k) for k in cli) == sorted(lib), script
    for dest, default in cli.items():
        if dest in cli_only:
            assert lib[dest] is None
            continue
        want = [] if dest == "model" else default     # --model NAME=PATH, repeatable: none by default
        assert lib[renamed.get(dest, dest)] in (want, tuple(want) if isinstance(want, list) else want), (script, dest)
