#!/usr/bin/env python3
"""Load a ported model into the linear-probe and FCN-AlexNet nets and run one SGD step of each.

    python tools/transfer_check.py runs/demo/caffenet_counting.caffemodel
    python tools/transfer_check.py PORTED.caffemodel --lmdb data/sample/val_lmdb --fcn-size 256

A smoke check of the transfer path in real (BVLC) Caffe, no downstream data set needed:

1. linear probe (prototxt/transfer/linear_probe*/train_val.prototxt, built by
   tools/make_transfer_prototxt.py with Input blobs instead of the Data layer): a batch of
   centre-cropped, mean-subtracted images from --lmdb with their labels, one solver step;
2. FCN-AlexNet (prototxt/transfer/fcn_alexnet/train.prototxt; iter_size 1): one image of
   --lmdb, reshaped to --fcn-size, and a stand-in label map (pixels brighter than the image
   median = class 1, else 0; a 5-pixel border = 255, ignored), one solver step.

For each net it checks that conv1..conv5 hold exactly the ported blobs after loading, that
they stay frozen in the probe, and prints the losses; exit status 1 on any failure.
"""
import argparse
import os
import sys

import numpy as np

from ltc import caffe_env
caffe_env.quiet_glog()   # before pycaffe loads: Caffe's per-layer log is long (GLOG_minloglevel=0 shows it)
from ltc import REPO

import caffe

from ltc import cli_checks, lmdb_io  # noqa: E402
from ltc import probe as lp
from ltc import transfer_nets

MEAN = np.array(transfer_nets.PROBE_DEFAULTS["mean"], np.float32).reshape(3, 1, 1)


def _write(path, msg):
    with open(path, "w") as f:
        f.write(str(msg))
    return path


def _check_loaded(net, ref, what):
    for layer, blobs in ref.items():
        for i, b in enumerate(blobs):
            if not np.array_equal(net.params[layer][i].data, b):
                raise RuntimeError("%s: %s blob %d differs from the ported model" % (what, layer, i))
    print("%s: conv1..conv5 hold exactly the ported blobs" % what)


def probe_step(weights, ref, images, labels, out_dir, crop=227):
    n = len(images)
    cfg = dict(batch=n, num_classes=max(2, int(max(labels)) + 1))
    tv = _write(os.path.join(out_dir, "probe_train.prototxt"), transfer_nets.linear_probe_net(cfg, inputs="input"))
    sp = transfer_nets.probe_solver(cfg, tv)
    for f in ("test_iter", "test_interval"):
        sp.ClearField(f)
    sp.snapshot_prefix = os.path.join(out_dir, "probe")
    solver = caffe.SGDSolver(_write(os.path.join(out_dir, "probe_solver.prototxt"), sp))
    net = solver.net
    net.copy_from(weights)
    _check_loaded(net, ref, "linear probe")
    for k, img in enumerate(images):
        chw = img.transpose(2, 0, 1).astype(np.float32)
        y0, x0 = (chw.shape[1] - crop) // 2, (chw.shape[2] - crop) // 2
        net.blobs["data"].data[k] = chw[:, y0:y0 + crop, x0:x0 + crop] - MEAN
    net.blobs["label"].data[...] = labels
    solver.step(1)
    _check_loaded(net, ref, "linear probe after one step (frozen)")
    print("linear probe: one step done; losses " + ", ".join(
        "%s %.3f" % (l, float(net.blobs[l + "_loss"].data)) for l in lp.LAYERS))


def fcn_step(weights, ref, image, out_dir, size):
    """One SGD step of FCN-AlexNet on ``image`` resized to size x size; returns the trained net."""
    import cv2
    train = _write(os.path.join(out_dir, "fcn_train.prototxt"), transfer_nets.fcn_alexnet(dict(size=size)))
    sp = transfer_nets.fcn_solver(dict(iter_size=1), train, train)
    for f in ("test_net", "test_iter", "test_interval"):
        sp.ClearField(f)
    sp.snapshot_prefix = os.path.join(out_dir, "fcn")
    solver = caffe.SGDSolver(_write(os.path.join(out_dir, "fcn_solver.prototxt"), sp))
    net = solver.net
    net.copy_from(weights)
    _check_loaded(net, ref, "FCN-AlexNet")
    img = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    gray = img.mean(2)
    label = (gray > np.median(gray)).astype(np.float32)
    label[:5], label[-5:], label[:, :5], label[:, -5:] = 255, 255, 255, 255
    net.blobs["data"].reshape(1, 3, size, size)
    net.blobs["label"].reshape(1, 1, size, size)
    net.blobs["data"].data[0] = img.transpose(2, 0, 1) - MEAN
    net.blobs["label"].data[0, 0] = label
    net.reshape()
    up = net.params["upscore"][0].data.copy()
    solver.step(1)
    if net.blobs["score"].data.shape != (1, 21, size, size):
        raise RuntimeError("FCN score is %s, expected 1x21x%dx%d" % (net.blobs["score"].data.shape, size, size))
    if not np.array_equal(net.params["upscore"][0].data, up):
        raise RuntimeError("FCN upscore (bilinear, lr 0) changed")
    print("FCN-AlexNet: one step done on a %dx%d image; loss %.1f (summed over pixels); score %s"
          % (size, size, float(net.blobs["loss"].data), "x".join(map(str, net.blobs["score"].data.shape))))
    return net


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("weights", help="ported CaffeNet .caffemodel (tools/port_weights.py)")
    ap.add_argument("--lmdb", default="data/sample/val_lmdb", help="LMDB of >= 227x227 images to feed")
    ap.add_argument("--batch", type=cli_checks.int_range(1, 256), default=4, help="probe batch")
    ap.add_argument("--fcn-size", type=cli_checks.int_range(32, 2048), default=256, help="FCN input side")
    ap.add_argument("--out-dir", default="runs/transfer_check", help="generated nets and solvers go here")
    ap.add_argument("--seed", type=cli_checks.int_range(0, 2 ** 31 - 1), default=1701, help="Caffe seed")
    args = ap.parse_args(argv)
    out_dir = args.out_dir if os.path.isabs(args.out_dir) else os.path.join(REPO, args.out_dir)
    print("transfer_check:", dict(vars(args), out_dir=out_dir))
    try:
        ref = lp.check_weights(lmdb_io.resolve_path(args.weights))
        items = list(lmdb_io.iter_images(args.lmdb, limit=args.batch))
        cli_checks.writable_dir(out_dir, "--out-dir")
    except (lp.ProbeError, lmdb_io.LmdbError, cli_checks.PathError) as e:
        print("transfer_check: error: %s" % e, file=sys.stderr)
        return 2
    images = [img for _, img, _ in items]
    if min(min(i.shape[:2]) for i in images) < 227:
        print("transfer_check: error: %s: images must be at least 227x227" % args.lmdb, file=sys.stderr)
        return 2
    os.makedirs(out_dir, exist_ok=True)
    caffe.set_mode_cpu()
    caffe.set_random_seed(args.seed)
    labels = np.array([lab for _, _, lab in items], np.float32)
    weights = lmdb_io.resolve_path(args.weights)
    probe_step(weights, ref, images, labels, out_dir)
    fcn_step(weights, ref, images[0], out_dir, args.fcn_size)
    print("transfer_check: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
