#!/usr/bin/env python3
"""Export a trained counting net's CaffeNet trunk to PyTorch or ONNX (usable without Caffe).

    python tools/export.py runs/demo/counting_demo_iter_600.caffemodel runs/demo/counting_trunk.pt
    python tools/export.py runs/demo/counting_demo_iter_600.caffemodel runs/demo/counting.onnx --format onnx --head
    python tools/export.py PORTED.caffemodel trunk.pt --input bgr-mean     # from tools/port_weights.py --fold-std

TRAINED: a counting snapshot (six-branch, stacked or deploy; the branch copies must agree)
or a CaffeNet-layout model written by tools/port_weights.py. OUT:
  --format torch  a torch.save file {"format", "version", "metadata", "state_dict"}; the state
                  dict (conv1.weight ... conv5.bias, + fc6..fc8 with --head) holds the Caffe
                  blobs unchanged and loads into ltc.torch_caffenet.CaffeNet (ltc.torch_caffenet.load)
  --format onnx   an ONNX model, input 'data' (N x 3 x H x W; H, W free for the trunk), outputs
                  conv1..conv5, pool5 (+ fc6, fc7, fc8 with --head; H = W = the input size)
The input convention (BGR, 0-255, per-image normalisation or BGR mean with the std folded into
conv1) is written into the file's metadata ("metadata"; ONNX: metadata_props "ltc.metadata").
A counting snapshot is exported for per-image normalised input unless --fold-std/--fold-std-value
is given; a ported model needs --input, as its file does not record whether it was folded.

Exit status: 0 done, 2 bad input or usage (the message names the file), 1 other failures
(e.g. torch/onnx not installed: `make extras`). OUT is written only when complete.
"""
import argparse
import sys

from ltc import caffe_env
caffe_env.quiet_glog()   # before pycaffe loads (ltc.export reads Caffe's protobuf definitions)
from ltc import cli_checks, export as ex, surgery  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("trained", help="counting-net snapshot or ported CaffeNet .caffemodel")
    ap.add_argument("out", help="output file (.pt or .onnx)")
    ap.add_argument("--format", choices=("torch", "onnx"),
                    help="output format (default: onnx if OUT ends in .onnx, else torch)")
    ap.add_argument("--head", action="store_true", help="include the counting head fc6..fc8 (+ ReLU)")
    ap.add_argument("--input", choices=ex.NORMALIZATIONS,
                    help="input normalisation the weights expect (required for a ported model; a counting "
                         "snapshot: per-image, or bgr-mean with --fold-std)")
    ap.add_argument("--input-size", type=cli_checks.int_range(1, 4096), default=ex.COUNTING_INPUT,
                    help="image side recorded as the default input size (the counting net's tiles are 114)")
    ap.add_argument("--eps", type=cli_checks.positive_float, default=ex.DEFAULT_EPS, help="eps of the per-image normalisation")
    surgery.add_fold_std_arguments(ap, "fold the input std into conv1 (for BGR-mean inputs; as tools/port_weights.py)")
    args = ap.parse_args(argv)
    fmt = args.format or ("onnx" if args.out.lower().endswith(".onnx") else "torch")
    try:  # before any work: the paths
        cli_checks.model_file(args.trained, "TRAINED")
        cli_checks.refuse_same(args.trained, args.out, "TRAINED", "OUT")
        cli_checks.writable_file(args.out, "OUT")
    except cli_checks.PathError as e:
        print("export: error: %s" % e, file=sys.stderr)
        return 2
    try:
        # optional dependencies first: fail before reading a large snapshot
        ex.require(fmt)
        try:
            fold = surgery.fold_std_from_arguments(args)
        except surgery.PortError as e:
            raise ex.ExportError(str(e))
        ex.export(args.trained, args.out, fmt, normalization=args.input, fold_std=fold, head=args.head,
                  size=args.input_size, eps=args.eps)
    except ex.MissingDependency as e:
        print("export: error: %s" % e, file=sys.stderr)
        return 1
    except ex.ExportError as e:
        print("export: error: %s" % e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
