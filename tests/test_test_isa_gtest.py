"""tools/test_isa.py's `gtest` rows (Caffe's own gtests under each kernel setting) and
tools/caffe/build_gtests.sh's command line.

A fake gtest binary (a Python script speaking gtest's console format and filter syntax) checks the
wiring end to end: the per-file rows, the GPU filter, the test that runs apart with its own
environment, the working directory, a failure, and a crash that must not hide the tests after it.
With the real binary built (make caffe-gtests), its output is parsed as well."""
import importlib.util
import os
import stat
import subprocess
import sys

import pytest

from ltc import REPO

TOOL = os.path.join(REPO, "tools", "test_isa.py")
BUILD = os.path.join(REPO, "tools", "caffe", "build_gtests.sh")


def _tool():
    spec = importlib.util.spec_from_file_location("test_isa_under_test", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


FAKE = r'''#!%(python)s
import fnmatch, os, sys
TESTS = ["AlphaTest/0.A", "AlphaTest/0.B", "AlphaTest/1.A", "BetaTest.C",
         "ConvolutionLayerTest/0.TestNDAgainst2D", "GammaTest.TestGPUThing"]
mode = os.environ.get("FAKE_GTEST_MODE", "ok")
filt = "*"
for a in sys.argv[1:]:
    if a.startswith("--gtest_filter="):
        filt = a.split("=", 1)[1]
pos, _, neg = filt.partition("-")
pos = [p for p in pos.split(":") if p] or ["*"]
neg = [n for n in neg.split(":") if n]
chosen = [t for t in TESTS if any(fnmatch.fnmatchcase(t, p) for p in pos)
          and not any(fnmatch.fnmatchcase(t, n) for n in neg)]
if "--gtest_list_tests" in sys.argv:
    for t in chosen:
        s, n = t.split(".")
        print(s + ".\n  " + n)
    sys.exit(0)
if mode == "dead":  # aborts before any test, as a binary with a layer registered twice does
    print("F0101 layer_factory.hpp:69] Check failed: registry.count(type) == 0 (1 vs. 0)", flush=True)
    os.abort()
# the real tests read src/caffe/test/test_data relative to the working directory
if not os.path.isdir("src/caffe/test/test_data"):
    print("F hdf5_data_layer.cpp:90] Failed to open source file: src/caffe/test/test_data/solver_data_list.txt")
    sys.exit(134)
print("[==========] Running %%d tests from the fake." %% len(chosen))
failed = []
for t in chosen:
    print("[ RUN      ] " + t, flush=True)
    if mode == "broken" and t == "AlphaTest/0.B":
        print("F0101 00:00:00.0 1 blob.cpp:1] Check failed: planted crash", flush=True)
        os.abort()
    bad = (mode == "broken" and t == "BetaTest.C") or "GPU" in t \
        or (t.endswith("TestNDAgainst2D") and os.environ.get("CAFFE_CONV_BATCH") != "1")
    if bad:
        print("fake.cpp:1: Failure\nValue of: x\n  Actual: 1\nExpected: 2")
        print("[  FAILED  ] %%s, where TypeParam = caffe::CPUDevice<float> (0 ms)" %% t)
        failed.append(t)
    else:
        print("[       OK ] %%s (0 ms)" %% t)
print("[  PASSED  ] %%d tests." %% (len(chosen) - len(failed)))
if failed:
    print("[  FAILED  ] %%d tests, listed below:" %% len(failed))
    for t in failed:
        print("[  FAILED  ] %%s, where TypeParam = caffe::CPUDevice<float>" %% t)
sys.exit(1 if failed else 0)
'''


@pytest.fixture
def fake_gtest(tmp_path):
    d = tmp_path / "gtests-fake"
    (d / "src" / "caffe" / "test" / "test_data").mkdir(parents=True)
    b = d / "test.testbin"
    b.write_text(FAKE % {"python": sys.executable})
    b.chmod(b.stat().st_mode | stat.S_IXUSR)
    (d / "suites.tsv").write_text("test_alpha\tAlphaTest \ntest_beta\tBetaTest \n"
                                  "test_convolution_layer\tConvolutionLayerTest CuDNNConvolutionLayerTest \n")
    return str(b)


def _run(args, **env):
    return subprocess.run([sys.executable, TOOL] + args, capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, **env), timeout=600)


def _row(text, name):
    lines = [l for l in text.splitlines() if l.startswith(name + " ")]
    assert len(lines) == 1, (name, text)
    return lines[0][len(name):].strip()


def test_gtest_rows_per_file_across_two_settings(fake_gtest, tmp_path):
    out = tmp_path / "table.txt"
    res = _run(["--files", "gtest", "--gtest-bin", fake_gtest, "--settings", "avx2-zen-1", "avx2-haswell-1",
                "--out", str(out)], FAKE_GTEST_MODE="ok")
    assert res.returncode == 0, res.stdout + res.stderr
    table = out.read_text()
    # one column per setting; AlphaTest/0 and /1 are one file's row; the *GPU* test is filtered
    # out; TestNDAgainst2D passes only because it ran apart with CAFFE_CONV_BATCH=1
    assert _row(table, "gtest/test_alpha").split() == ["passed", "3", "passed", "3"]
    assert _row(table, "gtest/test_beta").split() == ["passed", "1", "passed", "1"]
    assert _row(table, "gtest/test_convolution_layer").split() == ["passed", "1", "passed", "1"]
    assert "gtest/other" not in table
    assert "# gtest: %s (5 CPU tests of 3 Caffe test files" % fake_gtest in table
    assert "*TestNDAgainst2D* with CAFFE_CONV_BATCH=1" in table
    assert "no failures" in table


def test_gtest_failure_and_crash_are_reported_and_the_rest_still_runs(fake_gtest):
    res = _run(["--files", "gtest", "--gtest-bin", fake_gtest, "--settings", "avx2-zen-1"],
               FAKE_GTEST_MODE="broken")
    assert res.returncode == 1, res.stdout + res.stderr
    # AlphaTest/0.B aborted the binary: it counts as failed, and AlphaTest/1.A, BetaTest.C and the
    # apart test, which come after it, still ran in the second invocation
    assert _row(res.stdout, "gtest/test_alpha") == "FAILED 1/3"
    assert _row(res.stdout, "gtest/test_beta") == "FAILED 1/1"
    assert _row(res.stdout, "gtest/test_convolution_layer") == "passed 1"
    assert "AlphaTest/0.B: crashed" in res.stdout
    assert "BetaTest.C: failed" in res.stdout
    assert "FAILED under avx2-zen-1" in res.stdout


def test_a_binary_that_dies_before_any_test_fails_every_row(fake_gtest):
    res = _run(["--files", "gtest", "--gtest-bin", fake_gtest, "--settings", "avx2-zen-1"],
               FAKE_GTEST_MODE="dead")
    assert res.returncode == 1, res.stdout + res.stderr
    for row in ("gtest/test_alpha", "gtest/test_beta", "gtest/test_convolution_layer"):
        assert _row(res.stdout, row) == "FAILED (binary error)"
    assert "binary: exit -6 before any test ran" in res.stdout


def test_parse_gtest_and_cells():
    m = _tool()
    text = "\n".join([
        "[ RUN      ] ConvolutionLayerTest/0.TestSetup",
        "[       OK ] ConvolutionLayerTest/0.TestSetup (1 ms)",
        "[ RUN      ] ConvolutionLayerTest/0.TestNDAgainst2D",
        "test_convolution_layer.cpp:694: Failure",
        "[  FAILED  ] ConvolutionLayerTest/0.TestNDAgainst2D, where TypeParam = caffe::CPUDevice<float> (1168 ms)",
        "[ RUN      ] DnnlConvolutionLayerTest.TestGradient",
        "[       OK ] DnnlConvolutionLayerTest.TestGradient (3 ms)",
        "[ RUN      ] PoolingLayerTest/1.TestGradientMax",
        "*** Check failure stack trace: ***",
        "[  FAILED  ] 1 test, listed below:",
    ])
    st = m.parse_gtest(text)
    assert st == {"ConvolutionLayerTest/0.TestSetup": "ok", "ConvolutionLayerTest/0.TestNDAgainst2D": "failed",
                  "DnnlConvolutionLayerTest.TestGradient": "ok", "PoolingLayerTest/1.TestGradientMax": "crashed"}
    rows = [("gtest/test_convolution_layer", ["ConvolutionLayerTest"]),
            ("gtest/test_dnnl_conv_layer", ["DnnlConvolutionLayerTest"])]
    cells = m.gtest_cells(st, rows)
    assert cells == {"gtest/test_convolution_layer": "FAILED 1/2", "gtest/test_dnnl_conv_layer": "passed 1",
                     "gtest/other": "FAILED 1/1"}


def test_gtest_options_are_checked_at_the_door(fake_gtest, tmp_path):
    res = _run(["--gtest-bin", fake_gtest, "--settings", "avx2-zen-1"])
    assert res.returncode == 2 and "--gtest-bin needs --files ... gtest" in res.stderr
    res = _run(["--files", "gtest", "--gtest-bin", str(tmp_path / "nothing"), "--settings", "avx2-zen-1"])
    assert res.returncode == 2 and "nothing: no such executable" in res.stderr
    os.remove(os.path.join(os.path.dirname(fake_gtest), "suites.tsv"))
    res = _run(["--files", "gtest", "--gtest-bin", fake_gtest, "--settings", "avx2-zen-1"])
    assert res.returncode == 2 and "no suites.tsv next to" in res.stderr
    assert "Traceback" not in res.stderr


def test_build_gtests_refuses_bad_arguments(tmp_path):
    def run(*args):
        return subprocess.run(["bash", BUILD] + list(args), capture_output=True, text=True, timeout=120)
    res = run("--tests", "convolution_layer pooling_layer")
    assert res.returncode == 2 and "--tests 'convolution_layer pooling_layer'" in res.stderr
    res = run("--jobs", "0")
    assert res.returncode == 2 and "--jobs '0'" in res.stderr
    res = run("--plant", str(tmp_path / "nothing.patch"))
    assert res.returncode == 2 and "nothing.patch': no such file" in res.stderr
    res = run("--interpose", "/etc/passwd")
    assert res.returncode == 2 and "--interpose '/etc/passwd'" in res.stderr
    res = run("--prefix", str(tmp_path), "--check")
    assert res.returncode == 3 and "is not a Caffe installed by ./setup.sh" in res.stderr
    res = run("--bogus")
    assert res.returncode == 2 and "unknown option '--bogus'" in res.stderr


def test_make_test_isa_adds_the_gtests_when_they_can_be_built():
    res = subprocess.run(["make", "-n", "test-isa"], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert "build_gtests.sh --check" in res.stdout and "--files numerical gtest" in res.stdout
    res = subprocess.run(["make", "-n", "caffe-gtests"], capture_output=True, text=True, cwd=REPO)
    assert "tools/caffe/build_gtests.sh" in res.stdout


def _built_binary():
    res = subprocess.run(["bash", BUILD, "--print-path"], capture_output=True, text=True)
    return res.stdout.strip().splitlines()[-1] if res.returncode == 0 else None


def test_real_gtest_output_is_parsed():
    """The real binary (make caffe-gtests): one small suite's console output parses into as many
    passed tests as gtest lists, all in the inner-product row."""
    binary = _built_binary()
    if binary is None:
        pytest.skip("Caffe's gtests are not built (make caffe-gtests)")
    m = _tool()
    filt = "InnerProductLayerTest/0.*" + m.GTEST_FILTER   # without the tests the sweep leaves out
    listed = subprocess.run([binary, "--gtest_list_tests", "--gtest_filter=" + filt], capture_output=True,
                            text=True, cwd=os.path.dirname(binary)).stdout
    n = sum(1 for l in listed.splitlines() if l.startswith("  "))
    assert n >= 5
    res = subprocess.run([binary, "--gtest_filter=" + filt], capture_output=True, text=True,
                         cwd=os.path.dirname(binary), env=dict(os.environ, GLOG_minloglevel="1"), timeout=300)
    assert res.returncode == 0, res.stdout[-2000:]
    st = m.parse_gtest(res.stdout)
    assert len(st) == n and set(st.values()) == {"ok"}
    assert m.gtest_cells(st, m.gtest_rows(binary))["gtest/test_inner_product_layer"] == "passed %d" % n
