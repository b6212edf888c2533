"""Every entry point answers --help (exit 0, a usage line), subcommands included.

argparse formats help strings with %, so a knob whose meaning says "67 %" once made
`make_prototxt.py --help` die with a ValueError; this walks every script that builds a parser.
"""
import glob
import os
import re
import subprocess
import sys

import pytest

from ltc import REPO

SCRIPTS = sorted(p for d in ("tools", "data_prep", "bench")
                 for p in glob.glob(os.path.join(REPO, d, "*.py"))
                 if "argparse" in open(p).read())


def _help(args):
    r = subprocess.run([sys.executable] + args + ["--help"], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, "%s --help: exit %d\n%s" % (" ".join(args), r.returncode, r.stderr[-2000:])
    assert r.stdout.startswith("usage:"), r.stdout[:200]
    assert "Traceback" not in r.stderr
    return r.stdout


def test_scripts_found():
    names = {os.path.relpath(p, REPO) for p in SCRIPTS}
    assert {"tools/make_prototxt.py", "tools/make_lmdb.py", "tools/port_weights.py",
            "data_prep/photos.py", "tools/analyze.py"} <= names


@pytest.mark.parametrize("script", [os.path.relpath(p, REPO) for p in SCRIPTS])
def test_help(script):
    out = _help([script])
    sub = re.search(r"\{([a-z0-9_,-]+)\}\s*\.\.\.", out)   # a parser with subcommands: each one's help too
    if sub:
        for cmd in sub.group(1).split(","):
            _help([script, cmd])
