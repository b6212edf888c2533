"""A hostile-input sweep of every command (issue 31): bad files, bad paths and bad numbers.

Every case runs a command under tools/, data_prep/ or bench/ as a subprocess against one of a
shared set of bad fixtures (empty, random and truncated models, prototxts and LMDBs; a
1-channel LMDB; a non-UTF-8 file name; outputs that are a file where a folder belongs or that
are the input; zero, negative, huge and non-finite numbers) and checks what a user sees:

  * exit status 1 or 2 (never 0, never 134/135/139 = a Caffe CHECK, SIGBUS, SIGSEGV);
  * stderr names the file or the option (``expect``: one of the given strings);
  * no Python traceback;
  * nothing left behind and nothing lost: the case's folder holds exactly what it held before
    (file names, sizes and bytes), so a source folder, a parent's unrelated files and a model
    given as both input and output are byte-identical afterwards.

The cases fail at the door, before any work, so they are quick; they run in parallel, a few at
a time. ``test_every_entry_point_has_a_case`` makes a new script under tools/ or data_prep/
join the sweep.

Run against another checkout (to record its behaviour; prints one line per case):

    python tests/test_hostile_inputs.py --tree /tmp/before
"""
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PY = sys.executable
CAFFE = os.path.join(REPO, ".venv", "bin", "caffe")
BAD_EXITS = {134: "SIGABRT (a Caffe CHECK)", 135: "SIGBUS", 139: "SIGSEGV", -6: "SIGABRT", -7: "SIGBUS",
             -11: "SIGSEGV"}

# --------------------------------------------------------------------------- the cases
# (id, script, argv, expect, prep)
#   argv: {F} is the shared fixture folder (read-only to every case), {W} the case's own folder
#   expect: stderr must contain one of these strings (the file or the option it is about)
#   prep: {name in {W}: fixture to copy there} before the run -- the case's folder must be
#         unchanged afterwards, byte for byte (so a source or input it holds must survive)
PAR = {"par": "par"}          # par/imgs/*.png (the source), par/notes.txt (an unrelated file)
MODEL = {"m.caffemodel": "counting.caffemodel"}


def C(cid, script, argv, expect, prep=None, known=None):
    """known: why the case still fails (its script is another issue's); the test is then a strict xfail."""
    return dict(id=cid, script=script, argv=argv.split() if isinstance(argv, str) else argv,
                expect=[expect] if isinstance(expect, str) else list(expect), prep=dict(prep or {}), known=known)


CASES = [
    # ---- make_lmdb: data loss
    C("make_lmdb-out-is-source", "tools/make_lmdb.py", "{W}/par/imgs {W}/par/imgs --overwrite", "SOURCE", PAR),
    C("make_lmdb-out-is-parent", "tools/make_lmdb.py", "{W}/par/imgs {W}/par --overwrite", "contains the SOURCE", PAR),
    C("make_lmdb-out-inside-source", "tools/make_lmdb.py", "{W}/par/imgs {W}/par/imgs/db", "inside", PAR),
    C("make_lmdb-out-is-symlink-to-parent", "tools/make_lmdb.py", "{W}/par/imgs {W}/lnk --overwrite",
      "contains the SOURCE", dict(PAR, lnk="@symlink:par")),
    C("make_lmdb-out-is-file", "tools/make_lmdb.py", "{W}/par/imgs {W}/par/notes.txt --overwrite", "not an LMDB", PAR),
    C("make_lmdb-out-is-file-no-overwrite", "tools/make_lmdb.py", "{W}/par/imgs {W}/par/notes.txt", "not an LMDB",
      PAR),
    C("make_lmdb-out-is-user-folder", "tools/make_lmdb.py", "{W}/par/imgs {W}/user --overwrite", "not an LMDB",
      dict(PAR, user="par")),
    C("make_lmdb-out-under-file", "tools/make_lmdb.py", "{W}/par/imgs {W}/par/notes.txt/db", "notes.txt", PAR),
    C("make_lmdb-label-huge", "tools/make_lmdb.py", "{W}/par/imgs {W}/db --label 99999999999", "--label", PAR),
    C("make_lmdb-workers-1000", "tools/make_lmdb.py", "{W}/par/imgs {W}/db --workers 1000", "--workers", PAR),
    C("make_lmdb-size-0", "tools/make_lmdb.py", "{W}/par/imgs {W}/db --size 0", "--size", PAR),
    C("make_lmdb-max-pixels-nan", "tools/make_lmdb.py", "{W}/par/imgs {W}/db --max-pixels nan", "--max-pixels", PAR),
    C("make_lmdb-batch-negative", "tools/make_lmdb.py", "{W}/par/imgs {W}/db --batch -5", "--batch", PAR),
    C("make_lmdb-missing-source", "tools/make_lmdb.py", "{W}/nothing {W}/db", "nothing"),
    C("make_lmdb-summary-json-is-folder", "tools/make_lmdb.py", "{W}/par/imgs {W}/db --summary-json {W}/par",
      "--summary-json", PAR),
    # ---- port_weights / export: output == input, bad numbers, bad models
    C("port_weights-out-is-in", "tools/port_weights.py", "{W}/m.caffemodel {W}/m.caffemodel", "same file", MODEL),
    C("port_weights-out-is-symlink-to-in", "tools/port_weights.py", "{W}/m.caffemodel {W}/link.caffemodel",
      "same file", dict(MODEL, **{"link.caffemodel": "@symlink:m.caffemodel"})),
    C("port_weights-out-is-hardlink-to-in", "tools/port_weights.py", "{W}/m.caffemodel {W}/hard.caffemodel",
      "same file", dict(MODEL, **{"hard.caffemodel": "@hardlink:m.caffemodel"})),
    C("port_weights-fold-std-inf", "tools/port_weights.py", "{F}/counting.caffemodel {W}/o.caffemodel "
      "--fold-std-value inf", "--fold-std-value"),
    C("port_weights-fold-std-nan", "tools/port_weights.py", "{F}/counting.caffemodel {W}/o.caffemodel "
      "--fold-std-value nan", "--fold-std-value"),
    C("port_weights-empty-model", "tools/port_weights.py", "{F}/empty.caffemodel {W}/o.caffemodel", "empty.caffemodel"),
    C("port_weights-random-model", "tools/port_weights.py", "{F}/random.caffemodel {W}/o.caffemodel",
      "random.caffemodel"),
    C("port_weights-truncated-model", "tools/port_weights.py", "{F}/truncated.caffemodel {W}/o.caffemodel",
      "truncated"),
    C("port_weights-model-is-folder", "tools/port_weights.py", "{F}/lmdb_good {W}/o.caffemodel", "directory"),
    C("port_weights-solverstate-as-model", "tools/port_weights.py", "{F}/x_iter_10.solverstate {W}/o.caffemodel",
      "solver state"),
    C("port_weights-rescale-truncated-lmdb", "tools/port_weights.py", "{F}/counting.caffemodel {W}/o.caffemodel "
      "--fold-std-value 50 --rescale {F}/lmdb_truncated", "truncated"),
    C("port_weights-rescale-net-is-solver", "tools/port_weights.py", "{F}/counting.caffemodel {W}/o.caffemodel "
      "--fold-std-value 50 --rescale {F}/lmdb_good --rescale-net {F}/solver.prototxt", "solver prototxt"),
    C("port_weights-out-under-file", "tools/port_weights.py", "{F}/counting.caffemodel {W}/par/notes.txt/o.caffemodel",
      "notes.txt", PAR),
    C("export-out-is-in", "tools/export.py", "{W}/m.caffemodel {W}/m.caffemodel", "same file", MODEL),
    C("export-eps-negative", "tools/export.py", "{F}/counting.caffemodel {W}/o.pt --eps -1", "--eps"),
    C("export-eps-nan", "tools/export.py", "{F}/counting.caffemodel {W}/o.pt --eps nan", "--eps"),
    C("export-fold-std-inf", "tools/export.py", "{F}/counting.caffemodel {W}/o.pt --fold-std-value inf",
      "--fold-std-value"),
    C("export-input-size-0", "tools/export.py", "{F}/counting.caffemodel {W}/o.pt --input-size 0", "--input-size"),
    C("export-model-is-folder", "tools/export.py", "{F}/lmdb_good {W}/o.pt", "directory"),
    # ---- lmdb_info: damaged LMDBs
    C("lmdb_info-truncated", "tools/lmdb_info.py", "{F}/lmdb_truncated", "truncated"),
    C("lmdb_info-random", "tools/lmdb_info.py", "{F}/lmdb_random", "not an LMDB"),
    C("lmdb_info-empty-data-mdb", "tools/lmdb_info.py", "{F}/lmdb_empty", "empty"),
    C("lmdb_info-no-data-mdb", "tools/lmdb_info.py", "{F}/par/imgs", "no data.mdb"),
    C("lmdb_info-file-as-lmdb", "tools/lmdb_info.py", "{F}/par/notes.txt", "notes.txt"),
    C("lmdb_info-1-channel-sheet", "tools/lmdb_info.py", "{F}/lmdb_gray --sheet {W}/s.png", "3 channels"),
    C("lmdb_info-sheet-under-file", "tools/lmdb_info.py", "{F}/lmdb_good --sheet {W}/par/notes.txt/s.png", "--sheet",
      PAR),
    C("lmdb_info-n-0", "tools/lmdb_info.py", "{F}/lmdb_good --n 0", "--n"),
    C("lmdb_info-limit-negative", "tools/lmdb_info.py", "{F}/lmdb_good --limit -1", "--limit"),
    # ---- analyze: models and prototxts Caffe would abort on, damaged sources, bad numbers
    C("analyze-random-model", "tools/analyze.py", "mean-vector --deploy {F}/deploy.prototxt --weights "
      "{F}/random.caffemodel --source {F}/lmdb_good --out {W}/o", "random.caffemodel"),
    C("analyze-truncated-model", "tools/analyze.py", "mean-vector --deploy {F}/deploy.prototxt --weights "
      "{F}/truncated.caffemodel --source {F}/lmdb_good --out {W}/o", "truncated"),
    C("analyze-model-is-folder", "tools/analyze.py", "mean-vector --deploy {F}/deploy.prototxt --weights "
      "{F}/lmdb_good --source {F}/lmdb_good --out {W}/o", "directory"),
    C("analyze-solverstate-as-model", "tools/analyze.py", "mean-vector --deploy {F}/deploy.prototxt --weights "
      "{F}/x_iter_10.solverstate --source {F}/lmdb_good --out {W}/o", "solver state"),
    C("analyze-solver-as-deploy", "tools/analyze.py", "mean-vector --deploy {F}/solver.prototxt --weights "
      "{F}/counting.caffemodel --source {F}/lmdb_good --out {W}/o", "solver prototxt"),
    C("analyze-empty-deploy", "tools/analyze.py", "mean-vector --deploy {F}/empty.prototxt --weights "
      "{F}/counting.caffemodel --source {F}/lmdb_good --out {W}/o", "empty"),
    C("analyze-garbage-deploy", "tools/analyze.py", "mean-vector --deploy {F}/garbage.prototxt --weights "
      "{F}/counting.caffemodel --source {F}/lmdb_good --out {W}/o", "garbage.prototxt"),
    C("analyze-lenet-deploy", "tools/analyze.py", "mean-vector --deploy {F}/lenet.prototxt --weights "
      "{F}/counting.caffemodel --source {F}/lmdb_good --out {W}/o", "do not fit"),
    C("analyze-truncated-source", "tools/analyze.py", "mean-vector --deploy {F}/deploy.prototxt --weights "
      "{F}/counting.caffemodel --source {F}/lmdb_truncated --out {W}/o", "truncated"),
    C("analyze-random-source", "tools/analyze.py", "mean-vector --deploy {F}/deploy.prototxt --weights "
      "{F}/counting.caffemodel --source {F}/lmdb_random --out {W}/o", "not an LMDB"),
    C("analyze-count-check-unlabelled", "tools/analyze.py", "count-check --deploy {F}/deploy.prototxt --weights "
      "{F}/counting.caffemodel --source {F}/lmdb_unlabelled --out {W}/o", "label"),
    C("analyze-max-images-0", "tools/analyze.py", "mean-vector --max-images 0", "--max-images"),
    C("analyze-batch-negative", "tools/analyze.py", "norm-ranking --batch -1", "--batch"),
    C("analyze-gray-prob-2", "tools/analyze.py", "table5 --gray-prob 2", "--gray-prob"),
    C("analyze-margin-inf", "tools/analyze.py", "log --log x.log --margin inf", "--margin"),
    C("analyze-out-under-file", "tools/analyze.py", "mean-vector --out {W}/par/notes.txt/o", "--out", PAR),
    # ---- linear_probe
    C("linear_probe-iters-0", "tools/linear_probe.py", "--random-init --iters 0", "--iters"),
    C("linear_probe-val-images-negative", "tools/linear_probe.py", "--random-init --val-images -3", "--val-images"),
    C("linear_probe-batch-0", "tools/linear_probe.py", "--random-init --batch 0", "--batch"),
    C("linear_probe-base-lr-inf", "tools/linear_probe.py", "--random-init --base-lr inf", "--base-lr"),
    C("linear_probe-crop-300", "tools/linear_probe.py", "--random-init --crop 300 --train-lmdb {F}/lmdb_good "
      "--val-lmdb {F}/lmdb_good --out-dir {W}/o", "--crop"),
    C("linear_probe-1-channel-lmdb", "tools/linear_probe.py", "--random-init --crop 32 --train-lmdb {F}/lmdb_gray "
      "--val-lmdb {F}/lmdb_good --out-dir {W}/o", "3 channels"),
    C("linear_probe-truncated-lmdb", "tools/linear_probe.py", "--random-init --train-lmdb {F}/lmdb_truncated "
      "--val-lmdb {F}/lmdb_good --out-dir {W}/o", "truncated"),
    C("linear_probe-unported-model", "tools/linear_probe.py", "--model a={F}/counting.caffemodel --train-lmdb "
      "{F}/lmdb_good --val-lmdb {F}/lmdb_good --out-dir {W}/o", "port it first"),
    C("linear_probe-out-dir-is-file", "tools/linear_probe.py", "--random-init --train-lmdb {F}/lmdb_good "
      "--val-lmdb {F}/lmdb_good --out-dir {W}/par/notes.txt", "--out-dir", PAR),
    # ---- table1
    C("table1-iters-0", "tools/table1.py", "cls --random-init --iters 0", "--iters"),
    C("table1-limit-test-negative", "tools/table1.py", "cls --random-init --limit-test -1", "--limit-test"),
    C("table1-base-lr-nan", "tools/table1.py", "cls --random-init --base-lr nan", "--base-lr"),
    C("table1-unported-model", "tools/table1.py", "cls --model a={F}/counting.caffemodel --out {W}/o",
      "port it first"),
    C("table1-out-is-file", "tools/table1.py", "cls --random-init --out {W}/par/notes.txt", "--out", PAR),
    # ---- transfer_check
    C("transfer_check-fcn-size-0", "tools/transfer_check.py", "{F}/ported.caffemodel --fcn-size 0", "--fcn-size"),
    C("transfer_check-batch-0", "tools/transfer_check.py", "{F}/ported.caffemodel --batch 0", "--batch"),
    C("transfer_check-unported-model", "tools/transfer_check.py", "{F}/counting.caffemodel --lmdb {F}/lmdb_good "
      "--out-dir {W}/o", "port it first"),
    C("transfer_check-1-channel-lmdb", "tools/transfer_check.py", "{F}/ported.caffemodel --lmdb {F}/lmdb_gray "
      "--out-dir {W}/o", "3 channels"),
    C("transfer_check-truncated-lmdb", "tools/transfer_check.py", "{F}/ported.caffemodel --lmdb {F}/lmdb_truncated "
      "--out-dir {W}/o", "truncated"),
    # ---- reproduce, resume, train_multigpu, demo_*, check_caffe, make_*prototxt
    C("reproduce-threads-0", "tools/reproduce.py", "--dry-run --threads 0", "--threads"),
    C("reproduce-poll-nan", "tools/reproduce.py", "--dry-run --poll nan", "--poll"),
    C("reproduce-bad-resume", "tools/reproduce.py", "--dry-run --resume nothing", "--resume"),
    C("reproduce-out-under-file", "tools/reproduce.py", "--stage report --out {W}/par/notes.txt/o", "--out", PAR),
    C("resume-missing-prefix", "tools/resume.py", "{W}/nothing/counting", "nothing"),
    C("resume-truncated-state", "tools/resume.py", "{W}/snap/x --solver {F}/solver.prototxt --dry-run",
      "snap/x' is intact",
      {"snap/x_iter_10.solverstate": "truncated.solverstate", "snap/x_iter_10.caffemodel": "counting.caffemodel"}),
    C("train_multigpu-missing-solver", "tools/train_multigpu.py", "--solver {W}/nothing.prototxt --dry-run",
      "nothing.prototxt"),
    C("train_multigpu-garbage-solver", "tools/train_multigpu.py", "--solver {F}/garbage.prototxt --dry-run "
      "--workdir {W}/o", "garbage.prototxt"),
    C("demo_summary-missing-run", "tools/demo_summary.py", "--run {W}/nothing", "nothing"),
    C("demo_summary-corrupt-json", "tools/demo_summary.py", "--run {W}/run", "count_check.json",
      {"run/count_check/count_check.json": "garbage.prototxt", "run/curves/log.json": "garbage.prototxt"}),
    C("demo_seeds-seeds-negative", "tools/demo_seeds.py", "--seeds -1 --out {W}/o", "--seeds"),
    C("check_caffe-locate-missing", "tools/check_caffe.py", "--locate {W}/nothing", "nothing"),
    C("domain_probe-missing-model", "tools/domain_probe.py", "--model a={W}/nothing.caffemodel --out-dir {W}/o",
      "nothing.caffemodel"),
    C("domain_probe-seeds-1", "tools/domain_probe.py", "--model a={F}/counting.caffemodel --seeds 1 --out-dir {W}/o",
      "--seeds"),
    C("test_isa-unknown-setting", "tools/test_isa.py", "--settings nothing", "nothing"),
    C("test_isa-missing-file", "tools/test_isa.py", "--files {W}/nothing.py", "nothing.py"),
    C("bundle-split-negative", "tools/bundle.py", "--out {W}/o.tar.xz --split -1", "--split"),
    C("bundle-missing-locations", "tools/bundle.py", "--out {W}/o.tar.xz --locations {W}/nothing", "nothing"),
    C("make_prototxt-margin-negative", "tools/make_prototxt.py", "--custom {W}/net --margin -1", "--margin"),
    C("make_prototxt-dim-0", "tools/make_prototxt.py", "--custom {W}/net --dim 0", "--dim"),
    C("make_prototxt-out-root-is-file", "tools/make_prototxt.py", "--out-root {W}/par/notes.txt", "notes.txt", PAR),
    C("make_transfer_prototxt-out-root-is-file", "tools/make_transfer_prototxt.py", "--out-root {W}/par/notes.txt",
      "notes.txt", PAR),
    # ---- data_prep
    C("embedded-val-every-negative", "data_prep/embedded.py", "--out {W}/o --val-every -1 --no-install",
      "--val-every"),
    C("embedded-out-lmdb-is-file", "data_prep/embedded.py", "--out {W}/o --no-install --overwrite", "not an LMDB",
      {"o/train_lmdb": "par/notes.txt"}),
    C("embedded-workers-1000", "data_prep/embedded.py", "--out {W}/o --workers 1000 --no-install", "--workers"),
    C("voc-toy-train-0", "data_prep/voc.py", "--toy --toy-train 0 --out-dir {W}/o", "--toy-train"),
    C("voc-out-dir-is-file", "data_prep/voc.py", "--toy --out-dir {W}/par/notes.txt", "--out-dir", PAR),
    C("voc-missing-fashion", "data_prep/voc.py", "--toy --out-dir {W}/o --fashion-dir {W}/nothing", "nothing"),
    C("photos-val-fraction-2", "data_prep/photos.py", "--out {W}/o --val-fraction 2", "--val-fraction"),
    C("photos-views-negative", "data_prep/photos.py", "--out {W}/o --views -1", "--views"),
    C("fashion_scenes-train-scenes-0", "data_prep/fashion_scenes.py", "--out-dir {W}/o --train-scenes 0",
      "--train-scenes"),
    C("fashion_scenes-out-is-user-folder", "data_prep/fashion_scenes.py", "--out-dir {W}/o --what scenes "
      "--overwrite --fashion-dir {W}/nothing", "not an LMDB", {"o/scenes_train_lmdb": "par"}),
    C("imagenet-out-inside-source", "data_prep/imagenet.py", "--root {W}/inet --out-dir {W}/inet/train --split train",
      "inside", {"inet/train/n01/a.png": "par/imgs/0.png"}),
    C("imagenet-missing-root", "data_prep/imagenet.py", "--root {W}/nothing --out-dir {W}/o", "nothing"),
    C("imagenet-per-class-negative", "data_prep/imagenet.py", "--root {W}/x --per-class -1", "--per-class"),
    C("coco-out-inside-source", "data_prep/coco.py", "--root {W}/coco --out-dir {W}/coco/train2014 --split train",
      "inside", {"coco/train2014/a.png": "par/imgs/0.png"}),
    C("coco-limit-negative", "data_prep/coco.py", "--root {W}/coco --limit -1", "--limit"),
    C("coco-size-0", "data_prep/coco.py", "--root {W}/coco --size 0", "--size"),
    # ---- bench (where cheap)
    C("bench-fault_latency-truncated-lmdb", "bench/fault_latency.py", "--lmdb {F}/lmdb_truncated --out {W}/o.csv",
      "truncated"),
    C("bench-run_cost-missing-log", "bench/run_cost.py", "{W}/nothing.log --csv {W}/o.csv", "nothing.log"),
]


# --------------------------------------------------------------------------- fixtures
def _png(path, seed, size=40):
    import cv2
    rng = np.random.RandomState(seed)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(path, rng.randint(0, 255, (size, size, 3), np.uint8))


def _datum_lmdb(path, items):
    """items: (key bytes, serialised Datum) pairs."""
    import lmdb
    os.makedirs(path)
    env = lmdb.open(path, map_size=1 << 26)
    with env.begin(write=True) as txn:
        for k, v in items:
            txn.put(k, v)
    env.close()


def _helper(name):
    """A module of tests/ (importable under pytest; loaded by path when this file runs as a script)."""
    import importlib
    import importlib.util
    try:
        return importlib.import_module(name)
    except ImportError:
        spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, name + ".py"))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        sys.modules[name] = mod
        return mod


def build_fixtures(F):
    """The shared bad (and a few good) inputs, written into folder F."""
    from ltc import lmdb_io
    counting_models, conftest = _helper("counting_models"), _helper("conftest")
    write_test_lmdb = conftest.write_test_lmdb
    from caffe.proto import caffe_pb2
    from ltc import surgery

    for i in range(3):
        _png(os.path.join(F, "par", "imgs", "%d.png" % i), i)
    with open(os.path.join(F, "par", "notes.txt"), "w") as f:
        f.write("a user's file that no command may delete\n")
    # LMDBs
    write_test_lmdb(os.path.join(F, "lmdb_good"), 3, size=256)
    shutil.copytree(os.path.join(F, "lmdb_good"), os.path.join(F, "lmdb_truncated"))
    d = os.path.join(F, "lmdb_truncated", "data.mdb")
    os.truncate(d, os.path.getsize(d) // 2)
    os.makedirs(os.path.join(F, "lmdb_random"))
    with open(os.path.join(F, "lmdb_random", "data.mdb"), "wb") as f:
        f.write(np.random.RandomState(1).bytes(64 << 10))
    os.makedirs(os.path.join(F, "lmdb_empty"))
    open(os.path.join(F, "lmdb_empty", "data.mdb"), "wb").close()
    gray = np.random.RandomState(2).randint(0, 255, (64, 64), np.uint8)
    _datum_lmdb(os.path.join(F, "lmdb_gray"), [(b"%08d_g.png" % i, lmdb_io.serialize_datum(
        1, 64, 64, gray.tobytes(), i, False)) for i in range(2)])
    img = np.random.RandomState(3).randint(0, 255, (120, 120, 3), np.uint8)
    _datum_lmdb(os.path.join(F, "lmdb_unlabelled"), [(b"%08d_u.png" % i, lmdb_io.image_datum_bytes(img, 0))
                                                    for i in range(3)])
    # models and prototxts
    counting = os.path.join(F, "counting.caffemodel")
    counting_models.build_counting_model(counting, "deploy", head=16)
    shutil.move(counting + ".prototxt", os.path.join(F, "deploy.prototxt"))
    surgery.port(counting, os.path.join(F, "ported.caffemodel"), log=lambda *a: None)
    data = open(counting, "rb").read()
    with open(os.path.join(F, "truncated.caffemodel"), "wb") as f:
        f.write(data[:len(data) // 2])
    open(os.path.join(F, "empty.caffemodel"), "wb").close()
    with open(os.path.join(F, "random.caffemodel"), "wb") as f:
        f.write(np.random.RandomState(4).bytes(50000))
    state = caffe_pb2.SolverState(iter=10, learned_net="x_iter_10.caffemodel", current_step=0)
    state.history.add().CopyFrom(caffe_pb2.BlobProto(shape=caffe_pb2.BlobShape(dim=[4]), data=[0.0] * 4))
    blob = state.SerializeToString()
    with open(os.path.join(F, "x_iter_10.solverstate"), "wb") as f:
        f.write(blob)
    with open(os.path.join(F, "truncated.solverstate"), "wb") as f:
        f.write(blob[:len(blob) - 9])
    open(os.path.join(F, "empty.prototxt"), "w").close()
    with open(os.path.join(F, "garbage.prototxt"), "w") as f:
        f.write("this is { not a prototxt ::: ]\n")
    with open(os.path.join(F, "solver.prototxt"), "w") as f:
        f.write('net: "train_val.prototxt"\nbase_lr: 0.01\nmax_iter: 10\n')
    with open(os.path.join(F, "lenet.prototxt"), "w") as f:
        f.write(open(os.path.join(F, "deploy.prototxt")).read().replace("num_output: 96", "num_output: 20"))
    # a non-UTF-8 file name
    _png(os.path.join(F, "nonutf8", "ok.png"), 5)
    os.rename(os.path.join(F, "nonutf8", "ok.png"), os.path.join(os.fsencode(F), b"nonutf8", b"caf\xe9.png"))


def manifest(root):
    """{relative path: (kind, size, sha1)} of everything under ``root`` (symlinks not followed)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(os.fsencode(root)):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            rel = os.path.relpath(p, os.fsencode(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir",)
            else:
                with open(p, "rb") as f:
                    out[rel] = ("file", st.st_size, hashlib.sha1(f.read()).hexdigest())
    return out


def prepare(case, F, W):
    os.makedirs(W)
    for dst, src in case["prep"].items():
        d = os.path.join(W, dst)
        os.makedirs(os.path.dirname(d), exist_ok=True)
        if src.startswith("@symlink:"):
            os.symlink(src.split(":", 1)[1], d)
        elif src.startswith("@hardlink:"):
            os.link(os.path.join(W, src.split(":", 1)[1]), d)
        elif os.path.isdir(os.path.join(F, src)):
            shutil.copytree(os.path.join(F, src), d)
        else:
            shutil.copyfile(os.path.join(F, src), d)


def sweep(F, root, tree=REPO, cases=CASES, jobs=4, timeout=120):
    """Run every case (tests/fork_runner.py: the imports once, one fork per case, ``jobs`` at a
    time); {case id: dict(rc, stderr, seconds, before, after)}."""
    import json
    requests, folders = [], []
    for case in cases:
        W = os.path.join(root, case["id"])
        prepare(case, F, W)
        folders.append((W, manifest(W)))
        logs = os.path.join(root, "_logs", case["id"])
        os.makedirs(logs)
        requests.append(dict(script=os.path.join(tree, case["script"]), cwd=W, timeout=timeout,
                             argv=[a.replace("{F}", F).replace("{W}", W) for a in case["argv"]],
                             stdout=os.path.join(logs, "out"), stderr=os.path.join(logs, "err")))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([tree, os.path.join(tree, "python_layers")]),
               GLOG_minloglevel="2", PYTHONDONTWRITEBYTECODE="1", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    r = subprocess.run([PY, os.path.join(HERE, "fork_runner.py"), "--jobs", str(jobs)], input=json.dumps(requests),
                       capture_output=True, text=True, env=env, cwd=root)
    assert r.returncode == 0, r.stderr[-3000:]
    out = {}
    for case, req, (W, before), res in zip(cases, requests, folders, json.loads(r.stdout)):
        with open(req["stderr"], encoding="utf-8", errors="replace") as f:
            err = f.read()
        out[case["id"]] = dict(res, stderr=err, before=before, after=manifest(W))
    return out


def problems(case, res):
    """What is wrong with a case's result ([] = it ended well)."""
    out = []
    rc, err = res["rc"], res["stderr"]
    if rc not in (1, 2):
        out.append("exit %s%s" % (rc, " (%s)" % BAD_EXITS[rc] if rc in BAD_EXITS else ""))
    if "Traceback (most recent call last)" in err:
        out.append("a Python traceback")
    if not any(e in err for e in case["expect"]):
        out.append("stderr names none of %s" % case["expect"])
    if "pass --overwrite" in err and "not an LMDB" in err:
        out.append("suggests --overwrite for something that is not an LMDB")
    if res["after"] != res["before"]:
        gone = sorted(set(res["before"]) - set(res["after"]))
        new = sorted(set(res["after"]) - set(res["before"]))
        changed = sorted(k for k in set(res["before"]) & set(res["after"]) if res["before"][k] != res["after"][k])
        out.append("folder changed: lost %s, left behind %s, changed %s" % (gone[:4], new[:4], changed[:4]))
    return out


def last_line(err):
    lines = [line for line in err.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "(nothing on stderr)"


# --------------------------------------------------------------------------- pytest
@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    F = str(tmp_path_factory.mktemp("hostile_fixtures"))
    build_fixtures(F)
    return F


@pytest.fixture(scope="module")
def results(fixtures, tmp_path_factory):
    before = manifest(fixtures)
    t0 = time.time()
    res = sweep(fixtures, str(tmp_path_factory.mktemp("hostile_cases")))
    res["_seconds"] = time.time() - t0
    res["_fixtures_unchanged"] = manifest(fixtures) == before
    print("\nhostile-input sweep: %d cases in %.1f s" % (len(CASES), res["_seconds"]))
    return res


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.xfail(strict=True, reason=c["known"]))
                                  if c["known"] else c for c in CASES], ids=[c["id"] for c in CASES])
def test_case_ends_with_a_message_and_loses_nothing(case, results):
    res = results[case["id"]]
    assert problems(case, res) == [], "%s %s: exit %s, stderr: %s" % (
        case["script"], " ".join(case["argv"]), res["rc"], res["stderr"][-1500:])


def test_shared_fixtures_unchanged(results):
    assert results["_fixtures_unchanged"]


def test_every_entry_point_has_a_case():
    """A script under tools/ or data_prep/ (tracked by git) without a case fails here."""
    out = subprocess.run(["git", "ls-files", "tools/*.py", "data_prep/*.py"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.split()
    scripts = {f for f in out if os.path.isfile(os.path.join(REPO, f)) and f.count("/") == 1}
    covered = {c["script"] for c in CASES}
    assert sorted(scripts - covered) == []
    assert sorted(f for f in covered if not os.path.isfile(os.path.join(REPO, f))) == []


def test_layers_report_every_method():
    """Every setup/reshape/forward/backward of a Python layer goes through report_errors, so its
    message reaches the user under the caffe binary."""
    import ast
    missing = []
    folder = os.path.join(REPO, "python_layers")
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".py"):
            continue
        tree = ast.parse(open(os.path.join(folder, name)).read())
        for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
            for fn in (n for n in cls.body if isinstance(n, ast.FunctionDef)):
                if fn.name in ("setup", "reshape", "forward", "backward") and not any(
                        getattr(d, "id", None) == "report_errors" for d in fn.decorator_list):
                    missing.append("%s:%s.%s" % (name, cls.name, fn.name))
    assert missing == []


@pytest.mark.skipif(not os.path.exists(CAFFE), reason="the caffe binary is not built")
def test_layer_forward_error_reaches_the_user_under_caffe(tmp_path):
    """A Python layer failing in forward (ROIs with a batch index past the batch) under the caffe
    binary: Caffe still aborts, but the layer's own message is on stderr."""
    net = tmp_path / "net.prototxt"
    net.write_text('''name: "roi"
layer { name: "x" type: "DummyData" top: "x" dummy_data_param { shape { dim: 1 dim: 2 dim: 8 dim: 8 } } }
layer { name: "r" type: "DummyData" top: "r"
        dummy_data_param { shape { dim: 1 dim: 5 } data_filler { type: "constant" value: 3 } } }
layer { name: "p" type: "Python" bottom: "x" bottom: "r" top: "p"
        python_param { module: "roi_pooling_layer" layer: "ROIPoolingLayer"
                       param_str: '{"pooled_h": 2, "pooled_w": 2, "spatial_scale": 1.0}' } }
''')
    r = subprocess.run([CAFFE, "time", "-model", str(net), "-iterations", "1"], capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, GLOG_minloglevel="2"))
    assert r.returncode != 0
    assert "ERROR in Python layer ROIPoolingLayer.forward" in r.stderr and "batch indices" in r.stderr, r.stderr[-2000:]


def test_non_utf8_file_names(fixtures, tmp_path):
    """make_lmdb keys a non-UTF-8 name by its bytes; the analyses read such a file (np.fromfile +
    imdecode; cv2.imread died of SIGSEGV on it)."""
    import lmdb
    from ltc.analysis import features
    out = str(tmp_path / "db")
    r = subprocess.run([PY, os.path.join(REPO, "tools", "make_lmdb.py"), os.path.join(fixtures, "nonutf8"), out,
                        "--no-progress", "--workers", "0"], capture_output=True, text=True, errors="replace")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    env = lmdb.open(out, readonly=True, lock=False)
    with env.begin() as txn:
        assert [bytes(k) for k, _ in txn.cursor()] == [b"00000000_caf\xe9.png"]
    env.close()
    images = features.ImageSet(os.path.join(fixtures, "nonutf8"), who="test")
    img, label = images.load(0)
    assert img.shape == (40, 40, 3) and label is None and images.names == ["caf\ufffd.png"]


def test_truncated_lmdb_is_refused_before_mapping(fixtures):
    from ltc import lmdb_io
    with pytest.raises(lmdb_io.LmdbError, match="truncated"):
        lmdb_io.open_lmdb(os.path.join(fixtures, "lmdb_truncated"))
    psize, pages = lmdb_io.check_data_file(os.path.join(fixtures, "lmdb_good", "data.mdb"))
    assert psize * pages <= os.path.getsize(os.path.join(fixtures, "lmdb_good", "data.mdb"))


def test_port_weights_x_x_leaves_x_byte_identical(fixtures, tmp_path):
    x = tmp_path / "x.caffemodel"
    shutil.copyfile(os.path.join(fixtures, "counting.caffemodel"), x)
    digest = hashlib.sha1(x.read_bytes()).hexdigest()
    r = subprocess.run([PY, os.path.join(REPO, "tools", "port_weights.py"), str(x), str(x)], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "same file" in r.stderr
    assert hashlib.sha1(x.read_bytes()).hexdigest() == digest


def test_reproduce_dry_run_writes_nothing(tmp_path, monkeypatch, capsys):
    """--dry-run --stage data with none of the study's data built: the commands are printed, nothing
    is written (it used to mix the 456 MB study LMDB and write commands.txt)."""
    from ltc import study
    monkeypatch.setattr(study.train, "REPO", str(tmp_path))   # where prepare_data looks for the data
    runner = study.Runner(str(tmp_path / "results"), dry=True)
    study.prepare_data(runner)
    assert os.listdir(tmp_path) == []
    out = capsys.readouterr().out
    for step in ("data_prep/fashion_scenes.py", "data_prep/embedded.py --set all", "ltc.mixdata.mix_lmdbs",
                 "ltc.mixdata.subset_per_class"):
        assert step in out, step


def _main():
    import argparse
    import tempfile
    ap = argparse.ArgumentParser(description="run the sweep against a checkout, print one line per case")
    ap.add_argument("--tree", default=REPO)
    ap.add_argument("--jobs", type=int, default=4)
    args = ap.parse_args()
    os.environ.setdefault("GLOG_minloglevel", "2")   # before pycaffe loads (the fixtures' counting model)
    root = tempfile.mkdtemp(prefix="hostile_")
    F = os.path.join(root, "fixtures")
    os.makedirs(F)
    build_fixtures(F)
    t0 = time.time()
    res = sweep(F, os.path.join(root, "cases"), tree=os.path.abspath(args.tree), jobs=args.jobs)
    for c in CASES:
        r = res[c["id"]]
        bad = problems(c, r)
        print("%-45s exit %-4s %5.1fs %-4s %s%s" % (c["id"], r["rc"], r["seconds"], "ok" if not bad else "BAD",
                                                    last_line(r["stderr"]), "" if not bad else "  [" + "; ".join(bad) + "]"))
    print("%d cases, %d ok, %.1f s" % (len(CASES), sum(not problems(c, res[c["id"]]) for c in CASES),
                                       time.time() - t0))
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    _main()
