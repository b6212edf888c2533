"""The linear-probe transfer check: which layers are probed, reading an LMDB's labels, refusing
weights that are not a ported CaffeNet conv1..conv5 model, and the probe itself.
The probe itself is ``linear_probe`` (its keyword arguments are tools/linear_probe.py's options, with
the same defaults); tools/transfer_check.py uses the same checks."""
import os

import numpy as np
from caffe.proto import caffe_pb2

from ltc import lmdb_io
from ltc import surgery
from ltc import transfer_nets

LAYERS = tuple(name for name, _ in transfer_nets.PROBE_SIZES)   # conv1..conv5, pool5


class ProbeError(ValueError):
    """Bad input to the probe; the message names the file and the problem."""


def read_labels(path, limit=None):
    """Labels of an LMDB in key order (Datum field 'label'; images are not decoded)."""
    env = lmdb_io.open_lmdb(path, "linear_probe")
    labels = []
    try:
        with env.begin() as txn:
            d = caffe_pb2.Datum()
            for i, (_, v) in enumerate(txn.cursor()):
                if limit is not None and i >= limit:
                    break
                d.ParseFromString(v)
                labels.append(d.label)
    finally:
        env.close()
    return np.array(labels, np.int64)


def check_weights(path):
    """Refuse a file that is not a CaffeNet conv1..conv5 model; returns {layer: [weights, bias]}."""
    if not os.path.isfile(path):
        raise ProbeError("%s: no such file" % path)
    try:
        model = surgery.CountingModel(path)
        raise ProbeError("%s: this is a %s counting snapshot; port it first: python tools/port_weights.py %s OUT.caffemodel "
                         "--fold-std TRAIN_LMDB" % (path, model.kind, path))
    except surgery.PortError:
        pass
    net = caffe_pb2.NetParameter()
    try:
        with open(path, "rb") as f:
            net.ParseFromString(f.read())
    except Exception as e:  # protobuf DecodeError
        raise ProbeError("%s: not a readable .caffemodel (%s)" % (path, e))
    by = {l.name: l for l in net.layer}
    out = {}
    for name, shape in surgery.CONV_SHAPES:
        if name not in by or len(by[name].blobs) != 2:
            raise ProbeError("%s: no layer '%s' with weights and bias: not a CaffeNet-layout model "
                             "(tools/port_weights.py writes one)" % (path, name))
        got = surgery.blob_shape(by[name].blobs[0])
        if got != shape:
            raise ProbeError("%s: '%s' weights are %s, CaffeNet's are %s" % (path, name, surgery.fmt_shape(got), surgery.fmt_shape(shape)))
        out[name] = [surgery.blob_array(b) for b in by[name].blobs]
    return out


def warn_if_sorted(labels, num_classes):
    if len(labels) > 20 and num_classes > 2:
        same = float(np.mean(labels[1:] == labels[:-1]))
        if same > 0.5:
            print("WARNING: %.0f%% of consecutive training labels are equal: the LMDB looks sorted by class, and "
                  "Caffe's Data layer reads it in key order; rebuild it shuffled for a meaningful probe" % (100 * same))


# ----------------------------------------------------------------------------- the probe itself
CSV_FIELDS = ["model", "weights"] + list(LAYERS) + ["iters", "batch", "base_lr", "train_lmdb", "val_lmdb",
                                                    "val_images", "num_classes", "seed", "train_seconds"]


def probe_one(name, weights, cfg, out_dir, seed, iters, test_batch, n_val, val_labels):
    """Train the six linear classifiers for one model (weights None: random init); returns
    ({layer: top-1 %}, training seconds)."""
    import math
    import time
    import caffe
    out_dir = os.path.join(out_dir, name)
    os.makedirs(out_dir, exist_ok=True)
    tv = os.path.join(out_dir, "train_val.prototxt")
    with open(tv, "w") as f:
        f.write(str(transfer_nets.linear_probe_net(cfg)))
    sp = transfer_nets.probe_solver(cfg, tv)
    sp.test_interval = 10 ** 9          # scored below, over every validation image once
    sp.snapshot = 0
    sp.snapshot_prefix = os.path.join(out_dir, "probe")
    sp.display = 0
    solver_path = os.path.join(out_dir, "solver.prototxt")
    with open(solver_path, "w") as f:
        f.write(str(sp))
    caffe.set_random_seed(seed)
    solver = caffe.SGDSolver(solver_path)
    net = solver.net
    if weights is not None:
        ref = check_weights(weights)
        net.copy_from(weights)
        for layer, blobs in ref.items():
            for i, b in enumerate(blobs):
                if not np.array_equal(net.params[layer][i].data, b):
                    raise ProbeError("%s: '%s' did not load into the probe net" % (weights, layer))
        print("[%s] loaded conv1..conv5 from %s" % (name, weights))
    else:
        print("[%s] random initialisation (Gaussian std 0.01, seed %d)" % (name, seed))
    frozen = {l: net.params[l][0].data.copy() for l in transfer_nets.CONV_NAMES}
    t0 = time.time()
    losses = np.zeros(len(LAYERS))
    try:
        from tqdm import tqdm
        bar = tqdm(range(iters), desc="[%s] training" % name, mininterval=5)
    except ImportError:  # pragma: no cover
        bar = range(iters)
    for it in bar:
        solver.step(1)
        cur = np.array([float(net.blobs[l + "_loss"].data) for l in LAYERS])
        losses = cur if it == 0 else 0.95 * losses + 0.05 * cur
        if hasattr(bar, "set_postfix_str"):
            bar.set_postfix_str(" ".join("%s %.2f" % (l, v) for l, v in zip(LAYERS, losses)), refresh=False)
    for l, w in frozen.items():
        if not np.array_equal(net.params[l][0].data, w):
            raise RuntimeError("%s changed during the probe: the conv layers must be frozen" % l)
    train_s = time.time() - t0
    test = solver.test_nets[0]
    test.share_with(net)   # what Solver::Test does: the test net uses the trained blobs (BN statistics too)
    batches = int(math.ceil(n_val / float(test_batch)))
    correct = np.zeros(len(LAYERS))
    seen = 0
    for _ in range(batches):
        test.forward()
        take = min(test_batch, n_val - seen)
        labels = test.blobs["label"].data[:take].astype(np.int64)
        if not np.array_equal(labels, val_labels[seen:seen + take]):
            raise RuntimeError("validation batches are out of step with the LMDB order")
        for j, l in enumerate(LAYERS):
            correct[j] += np.sum(test.blobs[l + "_fc"].data[:take].argmax(1) == labels)
        seen += take
    acc = {l: 100.0 * c / n_val for l, c in zip(LAYERS, correct)}
    print("[%s] trained %d iterations in %.0f s; scored %d validation images" % (name, iters, train_s, n_val))
    return acc, train_s


def linear_probe(models=(), random_init=False, train_lmdb="data/fashion/items_train_lmdb",
                 val_lmdb="data/fashion/items_val_lmdb", num_classes=0, iters=200, batch=32, test_batch=50,
                 val_images=0, base_lr=0.001, stepsize=0, crop=227, seed=1701, out_dir="runs/linear_probe",
                 csv_path=None):
    """The linear probe of tools/linear_probe.py: checks the inputs (ProbeError naming the file),
    trains and scores each model of ``models`` ([(name, ported .caffemodel)]) and, with
    ``random_init``, the random-initialisation row; appends the rows to ``csv_path`` (default
    OUT_DIR/linear_probe.csv). Returns dict(results [(name, weights, {layer: top-1 %}, seconds)],
    n_val, num_classes, train_lmdb, val_lmdb, csv)."""
    import csv
    from ltc import cli_checks
    from ltc import REPO
    if not os.path.isabs(out_dir):  # repo-relative, like every default path of the project
        out_dir = os.path.join(REPO, out_dir)
    csv_path = csv_path or os.path.join(out_dir, "linear_probe.csv")
    rows = []
    for name, path in models:
        path = lmdb_io.resolve_path(path)
        check_weights(path)
        rows.append((name, path))
    if random_init:
        rows.append(("random", None))
    if not rows:
        raise ProbeError("nothing to probe: give --model NAME=CAFFEMODEL and/or --random-init")
    train_lmdb, val_lmdb = lmdb_io.resolve_path(train_lmdb), lmdb_io.resolve_path(val_lmdb)
    try:
        cli_checks.writable_dir(out_dir, "--out-dir")
        cli_checks.writable_file(csv_path, "--csv")
    except cli_checks.PathError as e:
        raise ProbeError(str(e))
    try:
        for which, lm in (("--train-lmdb", train_lmdb), ("--val-lmdb", val_lmdb)):
            # the Data layer's crop and CaffeNet's conv1 need 3-channel images of at least ``crop``
            # pixels a side; Caffe CHECK-aborts otherwise
            for _, img, _ in lmdb_io.iter_images(lm, limit=1):
                if min(img.shape[:2]) < crop:
                    raise ProbeError("%s '%s' holds %dx%d images, smaller than --crop %d"
                                     % (which, lm, img.shape[1], img.shape[0], crop))
        val_labels = read_labels(val_lmdb)
        train_head = read_labels(train_lmdb, limit=2000)
    except lmdb_io.LmdbError as e:
        raise ProbeError(str(e))
    num_classes = num_classes or int(max(val_labels.max(), train_head.max())) + 1
    if val_labels.min() < 0 or val_labels.max() >= num_classes:
        raise ProbeError("%s: labels span %d..%d, outside 0..%d" % (val_lmdb, val_labels.min(), val_labels.max(),
                                                                   num_classes - 1))
    warn_if_sorted(train_head, num_classes)
    n_val = len(val_labels) if not val_images else min(val_images, len(val_labels))
    val_labels = val_labels[:n_val]
    cfg = dict(train_lmdb=train_lmdb, val_lmdb=val_lmdb, num_classes=num_classes, batch=batch,
               test_batch=test_batch, crop=crop, base_lr=base_lr,
               stepsize=stepsize or max(1, 2 * iters // 3), max_iter=iters, seed=seed, test_iter=1)
    print("%d classes; %d validation images scored" % (num_classes, n_val))
    results = []
    for name, path in rows:
        acc, secs = probe_one(name, path, cfg, out_dir, seed, iters, test_batch, n_val, val_labels)
        results.append((name, path, acc, secs))
    os.makedirs(os.path.dirname(os.path.abspath(csv_path)), exist_ok=True)
    new = not os.path.exists(csv_path)
    with open(csv_path, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(CSV_FIELDS)
        for name, path, acc, secs in results:
            w.writerow([name, path or "random-init"] + ["%.2f" % acc[l] for l in LAYERS]
                       + [iters, batch, base_lr, train_lmdb, val_lmdb, n_val, num_classes, seed, "%.0f" % secs])
    return dict(results=results, n_val=n_val, num_classes=num_classes, train_lmdb=train_lmdb, val_lmdb=val_lmdb,
                iters=iters, batch=batch, csv=csv_path)
