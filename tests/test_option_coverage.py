"""Every command-line option and param_str key is turned on by some test, or recorded as a known gap
in tests/option_coverage_gaps.txt (issue 32; the list comes from tests/option_coverage.py)."""
import os
import subprocess
import sys

from ltc import REPO

TOOL = os.path.join(REPO, "tests", "option_coverage.py")


def _run(*args):
    # a subprocess: the collector imports every script, whose imports may set environment variables
    r = subprocess.run([sys.executable, TOOL] + list(args), capture_output=True, text=True, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def _recorded():
    with open(os.path.join(REPO, "tests", "option_coverage_gaps.txt")) as f:
        return {ln.strip() for ln in f if ln.strip() and not ln.startswith("#")}


def test_no_option_is_untested_and_unrecorded():
    table = _run()
    # the collector sees the options (a broken one would find no gaps at all)
    for row in ("| tools/make_prototxt.py | --warmup |", "| tools/analyze.py count-check | --fit-source |",
                "| tools/port_weights.py | --seed |", "| python_layers/counting_data.py | partner |",
                "| python_layers/counting_loss.py | M |", "| tools/make_lmdb.py | --jpeg-quality |"):
        assert row in table, row
    gaps = [ln for ln in table.split("\n\n")[-1].splitlines() if ln.strip()]
    new = sorted(set(gaps) - _recorded())
    assert not new, ("options / param_str keys that no test turns on: %s. Add a test that turns each on and checks "
                     "what it changes (tests/test_cli_options.py and its neighbours), or, for a deliberate gap, "
                     "record it: python tests/option_coverage.py --write" % "; ".join(new))
    # issue 32's six: each has a test now
    for opt in ("tools/make_prototxt.py --warmup", "tools/analyze.py count-check --fit-source",
                "tools/port_weights.py --seed", "tools/analyze.py mean-vector --threshold"):
        assert opt not in gaps, opt
