"""Tests of the benchmark helpers and a small end-to-end run of each bench/ script."""
import csv
import os
import sys

import pytest

from conftest import load_script

from bench import benchlib
from ltc import machine

# CaffeNet at 114x114 (ltc/caffenet.py), multiply-adds per image, worked out by hand:
HAND_MACS = {
    "conv1": 96 * 26 * 26 * 3 * 11 * 11,
    "conv2": 256 * 13 * 13 * 48 * 5 * 5,
    "conv3": 384 * 6 * 6 * 256 * 3 * 3,
    "conv4": 384 * 6 * 6 * 192 * 3 * 3,
    "conv5": 256 * 6 * 6 * 192 * 3 * 3,
    "fc6": 2304 * 4096,
    "fc7": 4096 * 4096,
    "fc8": 4096 * 1000,
}


def test_openblas_variants_are_found_from_the_linker_cache(tmp_path, monkeypatch):
    """The OpenBLAS builds installed side by side (Debian's <libdir>/openblas-<flavour>/) are found
    beside the library the linker cache names, for this interpreter's architecture only; the
    openmp preset then puts that folder first on LD_LIBRARY_PATH."""
    lib = tmp_path / "usr" / "lib" / "x86_64-linux-gnu"
    other = tmp_path / "usr" / "lib" / "i386-linux-gnu"
    for d in (lib / "openblas-pthread", lib / "openblas-openmp", lib / "openblas-empty", other / "openblas-serial"):
        d.mkdir(parents=True)
    for d in (lib / "openblas-pthread", lib / "openblas-openmp", other / "openblas-serial"):
        (d / "libopenblas.so.0").write_bytes(b"")
    (lib / "libopenblas.so.0").symlink_to(lib / "openblas-pthread" / "libopenblas.so.0")
    (other / "libopenblas.so.0").symlink_to(other / "openblas-serial" / "libopenblas.so.0")
    cache = {"libopenblas.so.0": [str(other / "libopenblas.so.0"), str(lib / "libopenblas.so.0")]}
    monkeypatch.setattr(benchlib, "_ldconfig_paths", lambda soname: cache.get(soname, []))
    config = {"MULTIARCH": "x86_64-linux-gnu", "LIBDIR": str(tmp_path / "elsewhere")}
    monkeypatch.setattr(benchlib.sysconfig, "get_config_var", config.get)
    real = lambda p: os.path.realpath(str(p))  # noqa: E731
    assert benchlib.openblas_variants() == {"openmp": real(lib / "openblas-openmp"),
                                            "pthread": real(lib / "openblas-pthread")}
    env, skip = benchlib.blas_env("openmp")
    assert skip is None and env["LD_LIBRARY_PATH"].split(":")[0] == real(lib / "openblas-openmp")
    cache.clear()   # no linker cache: the interpreter's multiarch library folder is searched
    config["LIBDIR"] = str(lib)
    assert set(benchlib.openblas_variants()) == {"openmp", "pthread"}
    config["LIBDIR"] = str(tmp_path / "elsewhere")
    assert benchlib.openblas_variants() == {}
    assert benchlib.blas_env("openmp")[1]   # skipped, with the reason


def test_the_openblas_build_caffe_loads_is_among_the_variants():
    lib = os.path.realpath(machine.caffe_blas_library())
    folder = os.path.dirname(lib)
    if not os.path.basename(folder).startswith("openblas-"):
        pytest.skip("Caffe's BLAS %s is not a Debian-style openblas-<flavour> build" % lib)
    assert folder in benchlib.openblas_variants().values()


def _net(layout, batch, tmp_path):
    import caffe
    from ltc import nets
    cfg = dict(nets.DEFAULTS, batch=batch, layout=layout)
    path = tmp_path / ("%s.prototxt" % layout)
    path.write_text(str(nets.counting_net(cfg, inputs="input")))
    return caffe.Net(str(path), caffe.TRAIN)


@pytest.mark.parametrize("layout", ["six", "stacked"])
def test_net_macs_match_hand_count(layout, tmp_path):
    batch = 2
    macs = benchlib.net_macs(_net(layout, batch, tmp_path))
    per_layer = {}
    for name, (_, m) in macs.items():
        per_layer[name.split("_")[0]] = per_layer.get(name.split("_")[0], 0) + m
    assert per_layer == {k: v * 6 * batch for k, v in HAND_MACS.items()}
    flops = benchlib.train_flops(macs)
    total = sum(HAND_MACS.values()) * 6 * batch
    # forward + weight grad + input grad, except conv1 (no input gradient)
    assert flops == 2 * (3 * total - HAND_MACS["conv1"] * 6 * batch)


@pytest.mark.parametrize("layout", ["six", "stacked"])
def test_profile_wgrad_net_keeps_every_conv_weight_gradient(layout, tmp_path):
    """The profile's weight-gradient copy of the net: no conv input gradients, but the weight
    gradient of every convolution (propagate_down: false alone would let Caffe prune the backward
    pass below the top conv, and the column would time conv5 only)."""
    import numpy as np
    import caffe
    from caffe.proto import caffe_pb2
    from ltc import nets
    train_step = load_script("bench/train_step.py")
    net_param = nets.counting_net(dict(nets.DEFAULTS, batch=1, layout=layout), inputs="input")
    wg = train_step.no_conv_input_grad_net(net_param)
    convs = [l for l in wg.layer if l.type == "Convolution"]
    assert len(convs) == (30 if layout == "six" else 5)
    assert all(list(l.propagate_down) == [False] * len(l.bottom) for l in convs)
    path = tmp_path / "wgrad.prototxt"
    path.write_text(str(wg))
    net = caffe.Net(str(path), caffe.TRAIN)
    rng = np.random.default_rng(0)
    for name in net.inputs:
        net.blobs[name].data[...] = rng.standard_normal(net.blobs[name].data.shape)
    net.forward()
    for layer in net.layers:
        for blob in layer.blobs:
            blob.diff[...] = 0
    net.backward()
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5"):
        assert np.abs(net.params[name][0].diff).sum() > 0, name
    # the net inputs get no gradient: conv1 does not propagate down
    assert all(not np.any(net.blobs[name].diff) for name in net.inputs)
    # a copy: the net it was made from is unchanged
    assert isinstance(wg, caffe_pb2.NetParameter) and not any(l.propagate_down for l in net_param.layer)
    assert not any(l.type == "Reduction" for l in net_param.layer)


def test_blas_env_sets_and_removes_variables(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "7")
    env, skip = benchlib.blas_env("auto")
    assert skip is None and "OPENBLAS_CORETYPE" not in env and "OPENBLAS_NUM_THREADS" not in env
    env, _ = benchlib.blas_env("auto1")
    assert env["OPENBLAS_NUM_THREADS"] == "1" and "OPENBLAS_CORETYPE" not in env
    env, _ = benchlib.blas_env("env")
    assert env["OPENBLAS_CORETYPE"] == "Haswell" and env["OPENBLAS_NUM_THREADS"] == "7"
    env, _ = benchlib.blas_env("haswell")
    assert env["OPENBLAS_CORETYPE"] == "Haswell" and "OPENBLAS_NUM_THREADS" not in env
    with pytest.raises(KeyError):
        benchlib.blas_env("no-such-blas")


def test_caffe_builds_take_a_prefix_and_per_build_variables(tmp_path):
    prefix = tmp_path / "inst"
    (prefix / "python" / "caffe").mkdir(parents=True)
    (prefix / "lib").mkdir()
    errors = []
    builds = benchlib.parse_builds(["patched=venv", "perimage=venv,CAFFE_CONV_BATCH=1",
                              "stock=%s,CAFFE_CPU_THREADS=2,X=" % prefix], errors.append)
    assert errors == []
    assert builds["patched"] == "venv"
    env = {"PATH": "/bin", "LD_LIBRARY_PATH": "/usr/lib"}
    assert benchlib.build_env(env, builds["patched"]) is env
    assert benchlib.build_env(env, builds["perimage"]) == dict(env, CAFFE_CONV_BATCH="1")
    stock = benchlib.build_env(env, builds["stock"])
    assert stock["PYTHONPATH"] == str(prefix / "python")
    assert stock["LD_LIBRARY_PATH"] == "%s:/usr/lib" % (prefix / "lib")
    assert (stock["CAFFE_CPU_THREADS"], stock["X"]) == ("2", "")
    benchlib.parse_builds(["bad=venv,NOEQUALS"], errors.append)
    benchlib.parse_builds(["missing=%s" % (tmp_path / "nothing")], errors.append)
    assert len(errors) == 2 and "NOEQUALS" in errors[0] and "not a Caffe install" in errors[1]


def test_sgemm_of_caffes_blas():
    lib = machine.caffe_blas_library()
    assert os.path.exists(lib)
    path, core, threads = machine.blas_info(lib)
    assert os.path.exists(path)
    assert benchlib.sgemm_gflops(lib, 256, 256, 256, reps=2) > 0.1


def test_run_child_reads_last_json_line_and_reports_failures():
    res, rss, wall, _ = benchlib.run_child([sys.executable, "-c", "print('noise'); print('{\"a\": 1, \"peak_rss_mib\": 5}')"])
    assert res == {"a": 1, "peak_rss_mib": 5} and rss == 5 and wall > 0
    res, rss, _, err = benchlib.run_child([sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"])
    assert res is None and rss is None and "exit 3" in err and "boom" in err


def test_table_and_csv(tmp_path, capsys):
    rows = [dict(name="a", x=1.2345, y=None), dict(name="bb", x=10.0, y=3)]
    benchlib.print_table(rows, [("name", "row", 0), ("x", "x", 2), ("y", "y", 0)], title="T")
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "T" and "1.23" in out[3] and out[3].rstrip().endswith("-")
    benchlib.write_csv(rows, str(tmp_path / "r.csv"), ["name", "x", "y"])
    got = list(csv.DictReader(open(tmp_path / "r.csv")))
    assert [r["name"] for r in got] == ["a", "bb"] and got[1]["y"] == "3"


def test_train_step_rejects_batch_of_one(tmp_path):
    train_step = load_script("bench/train_step.py")
    with pytest.raises(SystemExit):
        train_step.main(["--batches", "1", "--no-torch", "--csv", str(tmp_path / "x.csv")])


def test_ensure_lmdb_uses_given_or_builds_synthetic(tmp_path, make_test_lmdb):
    from ltc import lmdb_io
    make_test_lmdb(str(tmp_path / "db"), 3)
    assert benchlib.ensure_lmdb(str(tmp_path / "db"), cache=str(tmp_path / "c")) == str(tmp_path / "db")
    path = benchlib.ensure_lmdb(str(tmp_path / "missing"), n=5, cache=str(tmp_path / "c"))
    assert path == str(tmp_path / "c" / "photos_lmdb_5")
    images = [img for _, img, _ in lmdb_io.iter_images(path)]
    assert len(images) == 5 and all(img.shape == (256, 256, 3) for img in images)


def test_ratio_columns_are_computed_from_their_rows():
    """The bench scripts' derived columns, on rows with known values (each ratio differs from 1)."""
    lw = load_script("bench/lmdb_write.py")
    rows = lw.add_ratios([dict(name="convert_imageset", workers=None, images_s=200.0),
                          dict(name="make_lmdb.py --workers 1", workers=1, images_s=300.0),
                          dict(name="make_lmdb.py --workers 2", workers=2, images_s=450.0)])
    assert [r["vs_convert"] for r in rows] == pytest.approx([1.0, 1.5, 2.25])
    assert "scaling" not in rows[0] and [r["scaling"] for r in rows[1:]] == pytest.approx([1.0, 0.75])
    dl = load_script("bench/data_layer.py")
    rows = dl.add_scaling([dict(name="workers 0", workers=0, samples_s=100.0, per_worker=100.0),
                           dict(name="workers 1", workers=1, samples_s=120.0, per_worker=120.0),
                           dict(name="workers 2", workers=2, samples_s=180.0, per_worker=90.0)])
    assert "scaling" not in rows[0] and [r["scaling"] for r in rows[1:]] == pytest.approx([1.0, 0.75])
    rows = dl.add_slowdown([dict(inputs="input", layout="six", batch=4, step_s=2.0, min_s=1.6),
                            dict(inputs="data_layer", layout="six", batch=4, step_s=2.5, min_s=2.0, data_wait_pct=1.0),
                            dict(inputs="data_layer", layout="six", batch=8, step_s=9.0, min_s=9.0)])
    assert rows[1]["slowdown_pct"] == pytest.approx(25.0) and rows[1]["best_slowdown_pct"] == pytest.approx(25.0)
    assert rows[1]["goal_wait_2pct"] == "yes" and "slowdown_pct" not in rows[2]
    ts = load_script("bench/train_step.py")
    rows = [dict(kind="caffe", layout="plain", batch=4, blas="env", step_s=1.0, min_s=0.8, images_s=24.0),
            dict(kind="caffe", layout="six", batch=4, blas="env", step_s=1.3, min_s=1.2, images_s=18.0),
            dict(kind="caffe", layout="six", batch=8, blas="env", step_s=5.0, min_s=5.0, images_s=9.0)]
    ts.add_ratios(rows)
    assert rows[1]["vs_plain_pct"] == pytest.approx(30.0) and rows[1]["vs_plain_best_pct"] == pytest.approx(50.0)
    assert "vs_plain_pct" not in rows[0] and "vs_plain_pct" not in rows[2]
    # against PyTorch: 'x torch' over its stacked row, 'x torch same layout' over the same layout
    rows = [dict(kind="caffe", layout="six", batch=4, blas="auto", blas_threads=2, images_s=30.0, best_images_s=33.0),
            dict(kind="caffe", layout="stacked", batch=4, blas="auto", blas_threads=2, images_s=45.0,
                 best_images_s=45.0),
            dict(kind="torch", layout="six", batch=4, blas="2", blas_threads=2, images_s=25.0, best_images_s=25.0),
            dict(kind="torch", layout="stacked", batch=4, blas="2", blas_threads=2, images_s=50.0,
                 best_images_s=55.0)]
    ts.add_ratios(rows)
    assert (rows[0]["vs_torch"], rows[0]["vs_torch_best"], rows[0]["vs_torch_same"]) == pytest.approx((0.6, 0.6, 1.2))
    assert (rows[1]["vs_torch"], rows[1]["vs_torch_same"]) == pytest.approx((0.9, 0.9))
    assert "vs_torch" not in rows[2] and "vs_torch_same" not in rows[3]


def test_lmdb_write_bench_end_to_end(tmp_path):
    lmdb_write = load_script("bench/lmdb_write.py")
    out = tmp_path / "ml.csv"
    rc = lmdb_write.main(["--n", "12", "--workers", "0", "1", "--repeats", "1",
                               "--images", str(tmp_path / "jpegs"), "--csv", str(out)])
    assert rc == 0
    rows = {r["name"]: r for r in csv.DictReader(open(out))}
    assert set(rows) == {"convert_imageset", "make_lmdb.py --workers 0", "make_lmdb.py --workers 1"}
    for r in rows.values():
        # 12 raw 3x256x256 Datums need at least 12 x 196,608 bytes of pages
        assert float(r["db_used_mib"]) >= 12 * 3 * 256 * 256 / 2 ** 20
    ci = float(rows["convert_imageset"]["images_s"])
    for r in rows.values():   # the ratio column is this row's images/s over convert_imageset's
        assert float(r["vs_convert"]) == pytest.approx(float(r["images_s"]) / ci, rel=1e-3)


# The end-to-end runs of bench/train_step.py and bench/data_layer.py time full CaffeNet steps in
# child processes (minutes on a loaded machine); their derived columns are checked above on known
# rows. Run them with LTC_BENCH_E2E=1.
bench_e2e = pytest.mark.skipif(os.environ.get("LTC_BENCH_E2E") != "1",
                               reason="full-CaffeNet bench runs: set LTC_BENCH_E2E=1")


@bench_e2e
def test_train_step_end_to_end(tmp_path, make_test_lmdb):
    train_step = load_script("bench/train_step.py")
    make_test_lmdb(str(tmp_path / "db"), 8)
    out = tmp_path / "ts.csv"
    rc = train_step.main(["--batches", "2", "--layouts", "six", "plain", "--blas", "env", "--no-torch",
                          "--lmdb", str(tmp_path / "db"), "--iters", "1", "--warmup", "0", "--csv", str(out)])
    assert rc == 0
    rows = {r["name"]: r for r in csv.DictReader(open(out))}
    assert set(rows) == {"sgemm 2048^3 (limit)", "caffe six", "caffe plain", "caffe six+data(w1)"}
    for name in ("caffe six", "caffe plain", "caffe six+data(w1)"):
        r = rows[name]
        assert not r["error"], r["error"]
        assert float(r["images_s"]) == pytest.approx(6 * float(r["samples_s"]))
        assert float(r["gflops"]) > 0 and float(r["gemm_gflops"]) > 0 and float(r["peak_rss_mib"]) > 50
    assert 0 <= float(rows["caffe six+data(w1)"]["data_wait_pct"]) < 100
    assert float(rows["caffe six"]["loss_pct"]) > 0
    assert rows["caffe six"]["vs_plain_pct"] != ""


@bench_e2e
def test_data_layer_end_to_end(tmp_path, make_test_lmdb):
    data_layer = load_script("bench/data_layer.py")
    make_test_lmdb(str(tmp_path / "db"), 8)
    out = tmp_path / "dl.csv"
    rc = data_layer.main(["--lmdb", str(tmp_path / "db"), "--workers", "0", "1", "--batch", "4", "--batches", "3",
                          "--profile-batches", "1", "--top", "5", "--train-batches", "2", "--layouts", "six",
                          "--iters", "1", "--csv", str(out)])
    assert rc == 0
    rows = list(csv.DictReader(open(out)))
    assert [r["name"] for r in rows] == ["workers 0", "workers 1"]
    assert all(float(r["samples_s"]) > 0 and not r["error"] for r in rows)
    assert float(rows[1]["scaling"]) == pytest.approx(1.0)   # the 1-worker row is the reference
    prof = list(csv.DictReader(open(tmp_path / "dl_profile.csv")))
    assert len(prof) == 5 and sum(float(r["own_pct"]) for r in prof) <= 100.0 + 1e-6
    train = {r["name"]: r for r in csv.DictReader(open(tmp_path / "dl_training.csv"))}
    assert set(train) == {"caffe six", "caffe six+data(w1)"}
    assert 0 <= float(train["caffe six+data(w1)"]["data_wait_pct"]) < 100
    assert train["caffe six+data(w1)"]["slowdown_pct"] != ""


@bench_e2e
def test_train_step_memory_rows(tmp_path, make_test_lmdb):
    train_step = load_script("bench/train_step.py")
    make_test_lmdb(str(tmp_path / "db"), 6)
    out = tmp_path / "mem.csv"
    assert train_step.main(["--memory", "--memory-batches", "2", "--blas", "env", "--lmdb", str(tmp_path / "db"),
                            "--csv", str(out)]) == 0
    rows = {r["name"]: r for r in csv.DictReader(open(out))}
    assert set(rows) == {"caffe six+data(w1)", "caffe stacked+data(w1)", "caffe six"}
    assert all(float(r["peak_rss_mib"]) > 50 for r in rows.values())
    # the data-layer worker is reaped before the child reports, so its own peak shows
    assert float(rows["caffe six+data(w1)"]["children_peak_rss_mib"]) > 10
    assert rows["caffe six"]["children_peak_rss_mib"] == ""


def test_lmdb_reserve_bench_end_to_end(tmp_path, capsys):
    lmdb_reserve = load_script("bench/lmdb_reserve.py")
    rows = lmdb_reserve.main(["--n", "8", "--size", "32", "--repeats", "1", "--dir", str(tmp_path)])
    assert [r["mode"] for r in rows] == list(lmdb_reserve.MODES)
    assert all(r["ips"] > 0 and r["secs"] > 0 for r in rows)
    assert "speed vs writemap" in capsys.readouterr().out
    assert os.listdir(str(tmp_path)) == []  # its build folders are removed


DEMO_LOG = """I1204 12:47:22.3 9633 solver.cpp:330] Iteration 0, Testing net (#0)
I1204 12:47:22.3 9633 solver.cpp:397]     Test net output #0: contrast_term = 9.2
I1204 12:47:22.3 9633 solver.cpp:397]     Test net output #3: loss = 9.97415 (* 1 = 9.97415 loss)
I1204 12:47:22.3 9633 solver.cpp:239] Iteration 0 (-nan iter/s, 1.2s/10 iters), loss = 10.1
I1204 12:47:22.3 9633 solver.cpp:258]     Train net output #3: loss = 10.1 (* 1 = 10.1 loss)
I1204 12:47:22.3 9633 solver.cpp:239] Iteration 10 (0.26 iter/s, 37.1s/10 iters), loss = 9.66505
"""


def test_demo_vs_stock_reads_logs_and_compares(tmp_path):
    dvs = load_script("bench/demo_vs_stock.py")
    (tmp_path / "a.log").write_text(DEMO_LOG)
    (tmp_path / "b.log").write_text(DEMO_LOG.replace("= 9.66505", "= 9.66506"))
    a, b = dvs.parse_log(str(tmp_path / "a.log")), dvs.parse_log(str(tmp_path / "b.log"))
    assert a == [("test 0 contrast_term", 9.2), ("test 0 loss", 9.97415), ("train 0", 10.1), ("train 10", 9.66505)]
    assert dvs.compare(a, a) == (4, 4, 0.0, None)
    n, same, worst, first = dvs.compare(a, b)
    assert (n, same, first) == (4, 3, "train 10") and worst == pytest.approx(1e-5 / 9.66506)
    folder = tmp_path / "run"
    folder.mkdir()
    text = open(dvs.solver_copy(str(folder), 20)).read()
    assert "max_iter: 20\n" in text and "snapshot: 20\n" in text
    assert 'snapshot_prefix: "%s"' % (folder / "demo") in text and "prototxt/demo/train_val.prototxt" in text
    argv, env = dvs.caffe_command(("/x/lib/python3/dist-packages", "/x/lib", {"V": "1"}), "s.prototxt")
    assert argv == ["/x/bin/caffe", "train", "-solver", "s.prototxt"]
    assert env["PYTHONPATH"].split(os.pathsep)[0] == "/x/lib/python3/dist-packages"
    assert env["LD_LIBRARY_PATH"] == "/x/lib" and env["V"] == "1"
    assert not any("learning-to-count/caffe-" in p for p in env["PYTHONPATH"].split(os.pathsep))


def test_demo_vs_stock_reuses_only_a_finished_matching_run(tmp_path):
    dvs = load_script("bench/demo_vs_stock.py")
    folder = tmp_path / "stock"
    folder.mkdir()

    def error(msg):
        raise ValueError(msg)

    with pytest.raises(ValueError, match="missing"):
        dvs.reused_run("stock", str(folder), 20, 1, error)
    dvs.solver_copy(str(folder), 20)
    (folder / "demo_iter_20.caffemodel").write_bytes(b"x")
    (folder / "train.log").write_text(DEMO_LOG)
    with pytest.raises(ValueError, match="did not finish"):
        dvs.reused_run("stock", str(folder), 20, 1, error)
    (folder / "train.log").write_text(DEMO_LOG + "I1204 solver.cpp:464] Optimization Done.\n")
    run = dvs.reused_run("stock", str(folder), 20, 1, error)
    assert run["label"] == "stock" and run["folder"] == str(folder) and run["wall"] != run["wall"]
    (folder / "wall_s.txt").write_text("812.5\n")
    (folder / "threads.txt").write_text("1\n")
    assert dvs.reused_run("stock", str(folder), 20, 1, error)["wall"] == 812.5
    with pytest.raises(ValueError, match="thread"):
        dvs.reused_run("stock", str(folder), 20, 2, error)
    # another iteration count means another solver: refused, not compared against a wrong run
    (folder / "demo_iter_30.caffemodel").write_bytes(b"x")
    with pytest.raises(ValueError, match="not the current demo solver"):
        dvs.reused_run("stock", str(folder), 30, 1, error)
