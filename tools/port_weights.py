#!/usr/bin/env python3
"""Port a trained counting net to a CaffeNet-layout .caffemodel (the logic is ltc/surgery.py).

    python tools/port_weights.py TRAINED.caffemodel OUT.caffemodel --fold-std data/imagenet/train_lmdb
    python tools/port_weights.py TRAINED.caffemodel OUT.caffemodel --fold-std-value 58.4 --rescale LMDB
"""
import argparse
import os
import sys

from ltc import caffe_env
caffe_env.quiet_glog()   # before pycaffe loads: Caffe's per-layer log (only --rescale builds a net)
from ltc import cli_checks, lmdb_io, surgery  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=surgery.__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("trained", help="counting-net .caffemodel (six-branch, stacked or deploy)")
    ap.add_argument("out", help="output CaffeNet-layout .caffemodel")
    ap.add_argument("--keep-head", action="store_true",
                    help="keep fc6-fc8 as %sfc6..%sfc8 (ignored by downstream nets)" % (surgery.HEAD_PREFIX, surgery.HEAD_PREFIX))
    surgery.add_fold_std_arguments(ap, "input statistics (fold 1/std into conv1; see the module docstring)")
    r = ap.add_argument_group("optional: Kraehenbuehl et al. data-dependent init of the layers downstream training "
                              "initialises randomly; OUT then holds every parameter of --rescale-net")
    r.add_argument("--rescale", metavar="LMDB", help="images to compute the statistics on")
    r.add_argument("--rescale-net", default="prototxt/transfer/fcn_alexnet/train.prototxt",
                   help="downstream net (images via an Input blob 'data')")
    r.add_argument("--rescale-layers", default="fc6,fc7,score_fr", help="comma-separated layers, in net order")
    r.add_argument("--rescale-images", type=cli_checks.int_range(1, 1024), default=16, help="images in the batch")
    r.add_argument("--rescale-size", type=cli_checks.int_range(1, 4096), default=227, help="image side fed to the net")
    args = ap.parse_args(argv)
    print("port_weights:", vars(args))
    try:  # before any work: OUT must not be TRAINED (a symlink or hard link to it included)
        cli_checks.model_file(args.trained, "TRAINED")
        cli_checks.refuse_same(args.trained, args.out, "TRAINED", "OUT")
        cli_checks.writable_file(args.out, "OUT")
        if args.rescale:   # --rescale's inputs too, so that a bad one fails before OUT is written
            from ltc import model_checks
            model_checks.read_net_prototxt(lmdb_io.resolve_path(args.rescale_net), "--rescale-net")
            lmdb_io.open_lmdb(args.rescale, "--rescale").close()
    except ValueError as e:   # cli_checks.PathError, lmdb_io.LmdbError, model_checks.ModelError
        print("port_weights: error: %s" % e, file=sys.stderr)
        return 2
    try:
        fold = surgery.fold_std_from_arguments(args)
        surgery.port(args.trained, args.out, keep_head=args.keep_head, fold_std=fold)
        if args.rescale:
            net_path = lmdb_io.resolve_path(args.rescale_net)
            if not os.path.isfile(net_path):
                raise surgery.PortError("%s: --rescale-net does not exist" % args.rescale_net)
            net = surgery.rescale_init(net_path, args.out, args.rescale, [l for l in args.rescale_layers.split(",") if l],
                               args.rescale_images, args.rescale_size, args.seed)
            net.save(args.out)
            print("wrote %s: every parameter of %s (ported conv1..conv5, rescaled %s)"
                  % (args.out, args.rescale_net, args.rescale_layers))
    except surgery.PortError as e:
        print("port_weights: error: %s" % e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
