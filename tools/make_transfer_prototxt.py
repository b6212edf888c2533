#!/usr/bin/env python3
"""Generate the transfer nets into prototxt/transfer/ (the nets are ltc/transfer_nets.py).

    python tools/make_transfer_prototxt.py            # regenerate every committed file
    python tools/make_transfer_prototxt.py --check    # exit 1 if a committed file is stale
"""
import argparse
import sys

from ltc import REPO, cli_checks, nets, transfer_nets


def main(argv=None):
    ap = argparse.ArgumentParser(description=transfer_nets.__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out-root", default=REPO, help="folder that receives prototxt/transfer/...")
    ap.add_argument("--check", action="store_true", help="compare with the files on disk instead of writing")
    args = ap.parse_args(argv)
    print("make_transfer_prototxt:", vars(args))
    files = transfer_nets.all_files()
    try:
        cli_checks.writable_dir(args.out_root, "--out-root")
    except cli_checks.PathError as e:
        print("make_transfer_prototxt: error: %s" % e, file=sys.stderr)
        return 2
    if args.check:
        return nets.check_files(files, args.out_root, transfer_nets.GENERATOR, "generated transfer files")
    nets.write_files(files, args.out_root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
