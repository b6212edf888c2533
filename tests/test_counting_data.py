"""Tests of the counting data layer: BatchPipeline (workers, shared memory) and CountingDataLayer in caffe."""
import json
import os
import re
import subprocess
import sys
import time

import lmdb
import numpy as np
import pytest

import caffe
from ltc import pipeline, transforms
from conftest import write_test_lmdb
from ltc.pipeline import BatchPipeline
from ltc.lmdb_io import LmdbError, image_to_datum
from ltc.params import ParamError
from test_count_transforms import reference_sample

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAFFE_BIN = os.path.join(REPO, ".venv", "bin", "caffe")


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """A 24-image raw LMDB (smaller than a 32 batch, like data/sample) and its images."""
    path = str(tmp_path_factory.mktemp("lmdb") / "raw_lmdb")
    return path, write_test_lmdb(path, 24, seed=1)


def batches(path, n, **kw):
    with BatchPipeline(path, **kw) as pipe:
        return [pipe.next_batch().copy() for _ in range(n)], [pipe.plan(b) for b in range(n)]


def check_against_reference(batch, plan, images, crop=228):
    for i in range(len(plan.index)):
        assert plan.index[plan.partner[i]] != plan.index[i]
        for k, ref in enumerate(reference_sample(images, plan, i, crop)):
            np.testing.assert_allclose(batch[k, i], ref, atol=1e-5,
                                       err_msg="sample %d input %s" % (i, transforms.INPUT_NAMES[k]))


def test_pipeline_batches_are_the_planned_inputs_with_batch_larger_than_db(db):
    path, images = db
    got, plans = batches(path, 2, batch_size=32, workers=1, seed=4, interpolation="per_sample")
    for batch, plan in zip(got, plans):
        assert batch.shape == (6, 32, 3, 114, 114) and batch.dtype == np.float32
        assert len(set(plan.index)) < 32  # some images occur twice in a batch
        check_against_reference(batch, plan, images)
        m = batch.mean(axis=(2, 3, 4))
        sd = batch.std(axis=(2, 3, 4))
        assert np.abs(m).max() < 1e-4 and np.abs(sd - 1).max() < 1e-4


def test_encoded_lmdb_and_crop_224(tmp_path):
    images = write_test_lmdb(str(tmp_path / "enc"), 5, encoded=True, seed=2)
    got, plans = batches(str(tmp_path / "enc"), 1, batch_size=4, crop_size=224, workers=0, seed=1)
    assert got[0].shape == (6, 4, 3, 112, 112)
    check_against_reference(got[0], plans[0], images, crop=224)


def test_worker_count_does_not_change_the_batches(db):
    path, _ = db
    ref, _ = batches(path, 5, batch_size=8, workers=0, seed=9, prefetch=1)
    for workers, prefetch in [(1, 2), (2, 3), (3, 5)]:
        got, _ = batches(path, 5, batch_size=8, workers=workers, seed=9, prefetch=prefetch)
        assert all(np.array_equal(a, b) for a, b in zip(ref, got)), (workers, prefetch)


def test_same_seed_same_batches_different_seed_different(db):
    path, _ = db
    a, _ = batches(path, 2, batch_size=8, workers=1, seed=5)
    b, _ = batches(path, 2, batch_size=8, workers=1, seed=5)
    c, _ = batches(path, 2, batch_size=8, workers=1, seed=6)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], a[1])
    assert not np.array_equal(a[0], c[0])


def test_test_phase_is_deterministic_and_repeats_each_pass(db):
    path, _ = db
    kw = dict(batch_size=10, workers=2, seed=5, phase="test", prefetch=3)
    a, plans = batches(path, 6, **kw)   # 24 images / 10 -> 3 batches per pass
    b, _ = batches(path, 6, **kw)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert all(np.array_equal(a[i], a[i + 3]) for i in range(3))
    assert not np.array_equal(a[0], a[1])
    assert list(plans[0].index) == list(range(10)) and list(plans[2].index) == list(range(20, 24)) + list(range(6))


def test_two_pipelines_on_one_lmdb_in_one_process(db):
    """py-lmdb refuses a second open of one LMDB per process (and forked children inherit that):
    an in-process pipeline must not keep the LMDB open while another forks its workers."""
    path, _ = db
    with BatchPipeline(path, batch_size=4, workers=0, seed=1) as a:
        first = a.next_batch().copy()
        with BatchPipeline(path, batch_size=4, workers=1, prefetch=2, seed=1) as b:
            assert np.array_equal(b.next_batch(), first)
            assert np.array_equal(b.next_batch(), a.next_batch())


def test_close_stops_the_workers(db):
    path, _ = db
    pipe = BatchPipeline(path, batch_size=4, workers=2, prefetch=3)
    pids = pipe.worker_pids
    assert len(pids) == 2 and all(os.path.exists("/proc/%d" % p) for p in pids)
    pipe.next_batch()
    pipe.close()
    assert not any(os.path.exists("/proc/%d" % p) for p in pids)  # exited and reaped
    with pytest.raises(RuntimeError, match="after close"):
        pipe.next_batch()


def test_a_bad_image_inside_the_lmdb_is_reported_with_its_key(tmp_path):
    path = str(tmp_path / "bad")
    write_test_lmdb(path, 4)
    env = lmdb.open(path, map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(b"00000009_small.png", image_to_datum(np.zeros((100, 100, 3), np.uint8)).SerializeToString())
    env.close()
    with BatchPipeline(path, batch_size=5, workers=1, phase="test") as pipe:
        with pytest.raises(RuntimeError, match="00000009_small.png.*smaller than crop_size 228"):
            pipe.next_batch()


def test_workers_exit_when_their_parent_dies_without_closing(db):
    path, _ = db
    code = ("import os\n"
            "from ltc.pipeline import BatchPipeline\n"
            "p = BatchPipeline(%r, batch_size=4, workers=2, prefetch=3); p.next_batch()\n"
            "print(*p.worker_pids, flush=True); os._exit(0)\n") % path
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    pids = [int(p) for p in res.stdout.split()]
    assert len(pids) == 2
    assert_processes_gone(pids)


def test_workers_survive_an_opencv_thread_pool_in_the_parent(db):
    """OpenCV started its thread pool in the parent (pytest, a notebook): forked workers must not
    touch that pool's state (cv2.setNumThreads in the child blocked for ever in pthread_cond_destroy)."""
    path, _ = db
    code = ("import cv2, numpy as np\n"
            "cv2.resize(np.zeros((2000, 2000, 3), np.uint8), (500, 500), interpolation=cv2.INTER_AREA)\n"
            "n0 = cv2.getNumThreads()\n"
            "from ltc.pipeline import BatchPipeline\n"
            "for _ in range(3):\n"
            "    with BatchPipeline(%r, batch_size=8, workers=2, prefetch=3) as p:\n"
            "        p.next_batch(); p.next_batch()\n"
            "print('ok', n0, cv2.getNumThreads())\n") % path
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.startswith("ok"), res.stderr
    assert res.stdout.split()[1] == res.stdout.split()[2]  # the parent's OpenCV setting is restored


def assert_processes_gone(pids, within=60.0):
    """Each pid has exited (absent, or a zombie waiting for init to reap it); waits up to ``within``
    seconds (generous: returns as soon as they are gone; a loaded machine must not fail it)."""
    deadline = time.monotonic() + within
    alive = [p for p in pids if _running(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if _running(p)]
    assert not alive, "worker processes still running: %s" % alive


def _running(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# ----------------------------------------------------------------------------- the layer in caffe

TOPS6 = ("t1", "t2", "t3", "t4", "dx", "dy")


def net_prototxt(tmp_path, params, tops=TOPS6, raw_param_str=None):
    param_str = raw_param_str if raw_param_str is not None else json.dumps(params)
    text = ('name: "data_only"\nlayer { name: "data" type: "Python" %s\n'
            '  python_param { module: "counting_data" layer: "CountingDataLayer" param_str: %s } }\n'
            % (" ".join('top: "%s"' % t for t in tops), json.dumps(param_str)))
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    return str(path)


def test_layer_produces_six_tops_equal_to_the_pipeline(db, tmp_path):
    path, _ = db
    params = dict(source=path, batch_size=6, workers=1, prefetch=2, seed=3)
    net = caffe.Net(net_prototxt(tmp_path, params), caffe.TRAIN)
    net.forward()
    first = {t: net.blobs[t].data.copy() for t in TOPS6}
    net.forward()
    ref, _ = batches(path, 2, batch_size=6, workers=0, seed=3)
    for k, t in enumerate(TOPS6):
        assert net.blobs[t].data.shape == (6, 3, 114, 114)
        assert np.array_equal(first[t], ref[0][k]) and np.array_equal(net.blobs[t].data, ref[1][k])
    layer = net.layers[list(net._layer_names).index("data")]
    pids = layer.pipeline.worker_pids
    assert len(pids) == 1 and _running(pids[0])
    layer.close()
    assert_processes_gone(pids, within=0.0)


def test_layer_stacked_single_top_and_crop_224(db, tmp_path):
    path, _ = db
    params = dict(source=path, batch_size=4, workers=0, seed=3, stack=True, crop_size=224)
    net = caffe.Net(net_prototxt(tmp_path, params, tops=("data",)), caffe.TRAIN)
    net.forward()
    ref, _ = batches(path, 1, batch_size=4, workers=0, seed=3, crop_size=224)
    assert net.blobs["data"].data.shape == (24, 3, 112, 112)
    for k in range(6):
        assert np.array_equal(net.blobs["data"].data[k * 4:(k + 1) * 4], ref[0][k])


def test_layer_test_phase_uses_the_test_stream(db, tmp_path):
    path, _ = db
    params = dict(source=path, batch_size=4, workers=0, seed=3)
    net = caffe.Net(net_prototxt(tmp_path, params), caffe.TEST)
    net.forward()
    ref, plans = batches(path, 1, batch_size=4, workers=0, seed=3, phase="test")
    assert list(plans[0].index) == [0, 1, 2, 3]
    assert np.array_equal(net.blobs["dy"].data, ref[0][5])


@pytest.mark.parametrize("params,error,match", [
    (dict(batch_size=4, bogus=1), ParamError, "unknown param_str key.*'bogus'"),
    (dict(batch_size="4"), ParamError, "'batch_size' must be an integer"),
    (dict(batch_size=4, interpolation="nearest"), ParamError, "'interpolation' must be one of"),
    (dict(batch_size=4, crop_size=227), ParamError, "'crop_size' must be one of"),
    (dict(batch_size=1), ParamError, "'batch_size' must be >= 2"),
    (dict(batch_size=4, gray_prob=1.5), ParamError, r"'gray_prob' must be in \[0, 1\]"),
    (dict(batch_size=4, stack="yes"), ParamError, "'stack' must be true/false"),
])
def test_bad_param_str_raises_param_error_from_caffe_net(db, tmp_path, params, error, match):
    params = dict(params, source=db[0], workers=0)
    with pytest.raises(error, match=match):
        caffe.Net(net_prototxt(tmp_path, params), caffe.TRAIN)


def test_missing_source_key_and_wrong_top_count(db, tmp_path):
    with pytest.raises(ParamError, match="missing required key.*'source'"):
        caffe.Net(net_prototxt(tmp_path, None, raw_param_str='{"batch_size": 4}'), caffe.TRAIN)
    with pytest.raises(ParamError, match="needs 1 top"):
        caffe.Net(net_prototxt(tmp_path, dict(source=db[0], stack=True, workers=0)), caffe.TRAIN)
    with pytest.raises(ParamError, match="not valid JSON"):
        caffe.Net(net_prototxt(tmp_path, None, raw_param_str="{source: x}"), caffe.TRAIN)


def test_missing_lmdb_raises_lmdb_error_naming_the_path(tmp_path):
    missing = str(tmp_path / "no_such_lmdb")
    with pytest.raises(LmdbError, match="no_such_lmdb.*does not exist"):
        caffe.Net(net_prototxt(tmp_path, dict(source=missing, batch_size=4)), caffe.TRAIN)


def test_empty_lmdb_raises_lmdb_error_naming_the_path(tmp_path):
    empty = tmp_path / "empty_lmdb"
    lmdb.open(str(empty), map_size=1 << 20).close()
    with pytest.raises(LmdbError, match="empty_lmdb.*is empty"):
        caffe.Net(net_prototxt(tmp_path, dict(source=str(empty), batch_size=4)), caffe.TRAIN)


def test_single_image_lmdb_is_refused(tmp_path):
    write_test_lmdb(str(tmp_path / "one"), 1)
    with pytest.raises(LmdbError, match="at least 2"):
        caffe.Net(net_prototxt(tmp_path, dict(source=str(tmp_path / "one"), batch_size=4)), caffe.TRAIN)


def test_caffe_train_exits_promptly_and_leaves_no_workers(db, tmp_path):
    path, _ = db

    def data_layer(phase, params):
        return ('layer { name: "data" type: "Python" %s include { phase: %s }\n'
                '  python_param { module: "counting_data" layer: "CountingDataLayer" param_str: %s } }\n'
                % (" ".join('top: "%s"' % t for t in TOPS6), phase, json.dumps(json.dumps(params))))

    net = (data_layer("TRAIN", dict(source=path, batch_size=4, workers=2, prefetch=3))
           + data_layer("TEST", dict(source=path, batch_size=4, workers=1, prefetch=2, seed=2))
           + 'layer { name: "conv" type: "Convolution" bottom: "t1" top: "c"\n'
           '  convolution_param { num_output: 3 kernel_size: 1 weight_filler { type: "constant" value: 0.001 } } }\n'
           'layer { name: "loss" type: "EuclideanLoss" bottom: "c" bottom: "dx" top: "loss" }\n'
           'layer { name: "rest" type: "Silence" bottom: "t2" bottom: "t3" bottom: "t4" bottom: "dy" }\n')
    (tmp_path / "net.prototxt").write_text(net)
    (tmp_path / "solver.prototxt").write_text(
        'net: "%s"\nbase_lr: 0.0001\nlr_policy: "fixed"\nmax_iter: 4\ndisplay: 1\ntest_iter: 1\n'
        'test_interval: 2\nsolver_mode: CPU\nsnapshot_after_train: false\n' % (tmp_path / "net.prototxt"))
    assert os.path.exists(CAFFE_BIN), "the caffe binary is missing: run ./setup.sh"
    env = dict(os.environ, GLOG_minloglevel="0", GLOG_logtostderr="1")  # other tests may quieten glog
    # a hang at exit (workers keeping caffe alive) runs into the generous timeout
    res = subprocess.run([CAFFE_BIN, "train", "-solver", str(tmp_path / "solver.prototxt")],
                         capture_output=True, text=True, timeout=300, cwd=str(tmp_path), env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Optimization Done" in res.stderr
    assert "Aborted" not in res.stderr
    pids = [int(p) for line in re.findall(r"CountingDataLayer\[\w+\].*\(pids ([\d ]+)\)", res.stderr)
            for p in line.split()]
    assert len(pids) == 3, res.stderr[-3000:]
    assert_processes_gone(pids)


# ----------------------------------------------------------------------------- workers "auto"
@pytest.mark.parametrize("cpus,want", [(1, 1), (2, 1), (4, 3), (16, 15), (64, 16)])
def test_auto_worker_count_is_one_per_spare_cpu(cpus, want):
    assert pipeline.auto_workers(cpus) == want


def test_auto_workers_follow_the_affinity_mask_and_keep_the_batches(db, monkeypatch):
    path, _ = db
    monkeypatch.setattr(pipeline, "available_cpus", lambda: 4)
    ref, _ = batches(path, 4, batch_size=8, workers=0, seed=9)
    with BatchPipeline(path, batch_size=8, workers="auto", seed=9, prefetch=2) as pipe:
        assert (pipe.workers, pipe.prefetch, pipe.auto) == (3, 5, True)
        assert len(pipe.worker_pids) == 3
        got = [pipe.next_batch().copy() for _ in range(4)]
    assert all(np.array_equal(a, b) for a, b in zip(ref, got))


def test_starved_consumer_gets_one_line_per_window_and_a_fed_one_none(db, monkeypatch, capsys):
    path, _ = db
    monkeypatch.setattr(pipeline, "STARVE_WINDOW", 3)
    # a consumer that asks for batches back to back waits for every one of them
    with BatchPipeline(path, batch_size=16, workers=1, prefetch=1, seed=2, who="starved") as pipe:
        for _ in range(1 + 2 * 3):
            pipe.next_batch()
        frac, windows = pipe.wait_stats()
    err = capsys.readouterr().err
    assert windows == 2 and frac > pipeline.STARVE_FRACTION
    assert err.count("starved: the consumer waited for data") == 2
    assert "1 worker, " in err and "raise workers" in err
    # a slow consumer (a long step) finds every batch ready
    with BatchPipeline(path, batch_size=4, workers=1, prefetch=3, seed=2, who="fed") as pipe:
        for _ in range(1 + 3):
            time.sleep(0.3)
            pipe.next_batch()
        frac, windows = pipe.wait_stats()
    assert windows == 0 and frac < pipeline.STARVE_FRACTION
    assert "fed:" not in capsys.readouterr().err


def test_layer_accepts_workers_auto_and_refuses_other_words(db, tmp_path, monkeypatch, capfd):
    path, _ = db
    net = caffe.Net(net_prototxt(tmp_path, dict(source=path, batch_size=4, workers="auto", seed=3)), caffe.TRAIN)
    layer = net.layers[list(net._layer_names).index("data")]
    assert layer.pipeline.auto and layer.pipeline.workers == pipeline.auto_workers()
    assert "(auto, prefetch" in capfd.readouterr().err
    layer.close()
    with pytest.raises(ParamError, match="'workers' must be an integer or 'auto', got 'many'"):
        caffe.Net(net_prototxt(tmp_path, dict(source=path, batch_size=4, workers="many")), caffe.TRAIN)


def test_auto_workers_keep_the_batch_ring_within_its_memory_cap():
    slot = int(np.prod(transforms.batch_shape(256, 228))) * 4          # the paper's batch: 228 MiB a slot
    n = pipeline.auto_workers(cpus=16, slot_bytes=slot)
    assert n == 6 and (n + 2) * slot <= pipeline.AUTO_MAX_RING_BYTES < (n + 3) * slot
    assert pipeline.auto_workers(cpus=16, slot_bytes=int(np.prod(transforms.batch_shape(32, 228))) * 4) == 15
    assert pipeline.auto_workers(cpus=16, slot_bytes=pipeline.AUTO_MAX_RING_BYTES) == 1   # never below one


# ----------------------------------------------------------------------------- partner "same_source"
def _mixed_lmdb(path, n_a=12, n_b=6):
    """An LMDB with ltc/mixdata.py's keys: n_a images of source 'scenes', then n_b of 'photos'."""
    import shutil
    tmp = str(path) + "_src"
    write_test_lmdb(tmp, n_a + n_b, seed=5, size=256)
    src = lmdb.open(tmp, readonly=True, lock=False)
    dst = lmdb.open(str(path), map_size=1 << 28)
    with src.begin() as r, dst.begin(write=True) as w:
        for i, (_, v) in enumerate(r.cursor()):
            w.put(b"%08d_%s_%08d" % (i, b"scenes" if i < n_a else b"photos", i), v)
    src.close()
    dst.close()
    shutil.rmtree(tmp)
    return n_a


def test_same_source_partners_in_the_pipeline_and_the_layer(tmp_path):
    path = tmp_path / "mixed_lmdb"
    n_a = _mixed_lmdb(path)
    with BatchPipeline(str(path), batch_size=16, workers=0, seed=3, partner="same_source") as pipe:
        assert list(pipe.groups) == [1] * n_a + [0] * 6
        for b in range(6):
            plan = pipe.plan(b)
            src = plan.index >= n_a
            for side in (src, ~src):
                if len(np.unique(plan.index[side])) >= 2:
                    assert (src[plan.partner[side]] == src[side]).all(), (b, plan.index, plan.partner)
            pipe.next_batch()
    with BatchPipeline(str(path), batch_size=16, workers=0, seed=3) as pipe:   # the paper's: any partner
        crossed = sum(int(((pipe.plan(b).index >= n_a)[pipe.plan(b).partner] != (pipe.plan(b).index >= n_a)).sum())
                      for b in range(6))
    assert crossed > 0
    params = dict(source=str(path), batch_size=8, workers=0, seed=3, partner="same_source")
    net = caffe.Net(net_prototxt(tmp_path, params), caffe.TRAIN)
    net.forward()
    ref, _ = batches(str(path), 1, batch_size=8, workers=0, seed=3, partner="same_source")
    assert np.array_equal(net.blobs["dy"].data, ref[0][5])
    with pytest.raises(ParamError, match="'partner' must be one of"):
        caffe.Net(net_prototxt(tmp_path, dict(params, partner="photos")), caffe.TRAIN)
