#!/usr/bin/env python3
"""Generate the counting network's prototxts into prototxt/ (the nets are ltc/nets.py).

    python tools/make_prototxt.py                 # regenerate every committed file (and docs/knobs.md)
    python tools/make_prototxt.py --check         # exit 1 if a committed file is stale
    python tools/make_prototxt.py --custom DIR --dim 20 --interpolation area ...
                                                  # one net + solver + deploy with your options
"""
import argparse
import shlex
import sys

from ltc import REPO, cli_checks, knobs, nets

MAX_WORKERS = knobs.MAX_WORKERS
# The knobs (ltc/knobs.py NET) of the second option group; the first holds the other options.
START_OPTIONS = tuple(k for k in nets.START_KEYS if k != "base_lr")


def knob_type(knob):
    """argparse type of a knob's option: the word as the knob's kind (its range is checked once, with
    the layer's words, when the net is generated: nets.render)."""
    def parse(text):
        try:
            return knob.from_text(text)
        except knobs.KnobError as e:
            raise argparse.ArgumentTypeError(str(e))
    parse.__name__ = knob.kind.__name__
    return parse


def flag(key):
    return "--" + key.replace("_", "-")


def add_knob_options(groups):
    """One option per knob of NET that is an option (``groups``: [general, start])."""
    for k in knobs.NET.knobs:
        if not k.option:
            continue
        kw = dict(type=knob_type(k), default=k.default, help=k.doc.replace("%", "%%"))   # argparse formats help with %
        if k.choices is not None:
            kw["metavar"] = "{%s}" % ",".join(str(c) for c in k.choices)
        if k.key == "snapshot_prefix":
            kw.update(default=None, help="default: snapshots/<DIR>")
        (groups[1] if k.key in START_OPTIONS else groups[0]).add_argument(flag(k.key), **kw)


def main(argv=None):
    ap = argparse.ArgumentParser(description=nets.__doc__.split("\n\n")[0], allow_abbrev=False,
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out-root", default=REPO, help="folder that receives prototxt/...")
    ap.add_argument("--check", action="store_true", help="compare with the files on disk instead of writing")
    ap.add_argument("--custom", metavar="DIR", help="write one net (train_val, solver, deploy) with the options below into prototxt/DIR")
    g = ap.add_argument_group("options for --custom (defaults: the paper's net; ranges: docs/knobs.md)")
    s = ap.add_argument_group("the start (docs/design.md; defaults: the paper's net)")
    add_knob_options([g, s])
    args = ap.parse_args(argv)
    custom_flags = {o for action in g._group_actions + s._group_actions for o in action.option_strings}
    given = sorted({a.split("=", 1)[0] for a in (argv if argv is not None else sys.argv[1:])} & custom_flags)
    if given and not args.custom:
        ap.error("%s: used only with --custom DIR (without it every committed net is regenerated and the "
                 "option would be ignored)" % ", ".join(given))
    print("make_prototxt:", {k: v for k, v in vars(args).items() if v is not None})

    if args.custom:
        cfg = {k.key: getattr(args, k.key) for k in knobs.NET.knobs if k.option}
        cfg["snapshot_prefix"] = args.snapshot_prefix or "snapshots/" + args.custom.strip("/").replace("/", "_")
        command = " ".join([nets.GENERATOR] + [shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])])
        try:
            files = nets.render(cfg, args.custom.strip("/"), command=command)
        except knobs.KnobError as e:   # the one check of the values, in the layers' words: exit 2
            ap.error("argument %s: %s" % (flag(e.key), e))
    else:
        files = nets.all_files()
        files[knobs.DOC_PATH] = knobs.doc_text(nets.GENERATOR)

    try:
        cli_checks.writable_dir(args.out_root, "--out-root")
    except cli_checks.PathError as e:
        print("make_prototxt: error: %s" % e, file=sys.stderr)
        return 2
    if args.check:
        return nets.check_files(files, args.out_root, nets.GENERATOR)
    nets.write_files(files, args.out_root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
