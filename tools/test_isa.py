#!/usr/bin/env python
"""Run the numerical test files under several kernel choices on this machine (`make test-isa`).

A setting fixes the three things that change which float32 kernels run, and so the summation
order of every sum: ONEDNN_MAX_CPU_ISA (oneDNN's convolution: AVX2 or AVX512_CORE), OPENBLAS_CORETYPE
(OpenBLAS's GEMM kernels: Haswell, SkylakeX, Zen; always set explicitly, as some machines preset
it) and the thread count (OPENBLAS_NUM_THREADS = OMP_NUM_THREADS = 1 or 2; the tests pin
CAFFE_CPU_THREADS themselves where they compare thread counts). On an Intel CPU with AVX-512,
OPENBLAS_CORETYPE=Zen and ONEDNN_MAX_CPU_ISA=AVX2 give the kernels an AMD Zen CPU gets.

Settings: the default list covers every pair of values (each ISA with each core type, each with
each thread count: 6 settings); --full runs all 12 combinations; --settings picks some by name
(e.g. avx2-zen-1). Each test file runs in a pytest process of its own per setting. Before the
tests, each setting's kernels are probed (the core OpenBLAS reports, the ISA and convolution
implementation oneDNN reports under ONEDNN_VERBOSE=1) and printed, so the table shows what ran.
OPENBLAS_CORETYPE=SkylakeX needs AVX-512: on a CPU without it that setting is skipped, named.

Caffe's own gtests: the pseudo-file `gtest` runs the binary that tools/caffe/build_gtests.sh built
(`make caffe-gtests`; --gtest-bin picks another) once per setting, CPU tests only (-*GPU*), and
reports one row per Caffe test file (gtest/test_convolution_layer, ...). A test that crashes the
binary counts as failed and the run goes on without it. ConvolutionLayerTest.TestNDAgainst2D
demands bit equality of the N-D and the 2-D im2col path, which holds only while both run one GEMM
per image: it runs apart, under the same setting with CAFFE_CONV_BATCH=1 (GTEST_APART).

Prints a table file x setting -> passed (counts) / FAILED / skipped, optionally writes it to
--out, and exits 1 if any file failed under any setting (2 on bad arguments).

    python tools/test_isa.py                          # the 6 pairwise settings, NUMERICAL files
    python tools/test_isa.py --settings avx2-zen-1 --files core    # what `make test` adds
    python tools/test_isa.py --full --out bench/results/test_isa.txt
    python tools/test_isa.py --files gtest            # Caffe's own gtests (make caffe-gtests first)
"""
import argparse
import itertools
import os
import re
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The tests that compare two summation orders or check values against arithmetic bounds
CORE = ["tests/test_caffe_parallel.py", "tests/test_caffe_dnnl_conv.py", "tests/test_caffe_sgd_update.py",
        "tests/test_counting_loss.py"]
# ... plus the other tests that compare Caffe's numbers with another implementation (numpy, PyTorch)
NUMERICAL = CORE + ["tests/test_caffe_env.py", "tests/test_transfer.py", "tests/test_port_weights.py",
                    "tests/test_export_torch.py"]
ISAS = ["AVX2", "AVX512_CORE"]
CORES = ["Haswell", "SkylakeX", "Zen"]
THREADS = [1, 2]
# every pair of (ISA, core), (ISA, threads), (core, threads) occurs in one of these
PAIRWISE = [("AVX2", "Haswell", 1), ("AVX512_CORE", "Haswell", 2), ("AVX2", "SkylakeX", 2),
            ("AVX512_CORE", "SkylakeX", 1), ("AVX2", "Zen", 1), ("AVX512_CORE", "Zen", 2)]


# A CPU_ONLY build has no GPU tests but a few named *GPU*. InnerProductLayerTest's
# TestForwardTranspose / TestBackwardTranspose compare the plain and the transposed-weight GEMM
# within 4 ULPs (EXPECT_FLOAT_EQ) on inputs drawn from an unseeded RNG: two summation orders over
# 60 terms of size ~1 may differ by far more than 4 ULPs of the result, so the outcome is luck
# (seen: 5 ULPs, 1 run in 40, on the Intel Xeon). The layer's gradients stay checked by
# TestGradient / TestGradientTranspose (finite differences).
GTEST_FILTER = "-*GPU*:*InnerProductLayerTest*.TestForwardTranspose:*InnerProductLayerTest*.TestBackwardTranspose"
# (positive filter, extra environment, why): tests that run in an invocation of their own
GTEST_APART = [("*TestNDAgainst2D*", {"CAFFE_CONV_BATCH": "1"},
                "bit equality of the N-D and the 2-D im2col convolution, exact only with one GEMM per image")]
GTEST_MAX_CRASHES = 5


def setting_name(isa, core, threads):
    return "%s-%s-%d" % (isa.lower(), core.lower(), threads)


def setting_env(isa, core, threads, base=None):
    env = dict(os.environ if base is None else base)
    env.update(ONEDNN_MAX_CPU_ISA=isa, DNNL_MAX_CPU_ISA=isa, OPENBLAS_CORETYPE=core,
               OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    env.pop("CAFFE_CPU_THREADS", None)
    env.pop("CAFFE_CONV_BATCH", None)
    env.pop("CAFFE_CONV_ENGINE", None)
    return env


def parse_summary(text):
    """{passed, failed, skipped, error, ...} from pytest's last summary line."""
    lines = [l for l in text.strip().splitlines() if l.strip()]
    last = lines[-1] if lines else ""
    return {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)", last)}


def cell(rc, counts):
    """passed (n), FAILED (k of n), skipped (all skipped), no tests."""
    failed = counts.get("failed", 0) + counts.get("error", 0) + counts.get("errors", 0)
    if rc == 0 and counts.get("passed"):
        return "passed %d" % counts["passed"] + (" (%d skipped)" % counts["skipped"] if counts.get("skipped") else "")
    if rc in (0, 5) and not failed:
        return "skipped" if counts.get("skipped") else "no tests"
    return "FAILED %d/%d" % (failed, failed + counts.get("passed", 0)) if failed else "FAILED rc %d" % rc


def gtest_binary(path=None):
    """(binary, None) or (None, why): --gtest-bin, else the cached build of build_gtests.sh."""
    if path:
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return None, "--gtest-bin %s: no such executable" % path
        return os.path.abspath(path), None
    res = subprocess.run(["bash", os.path.join(REPO, "tools", "caffe", "build_gtests.sh"), "--print-path"],
                         capture_output=True, text=True)
    if res.returncode != 0:
        return None, (res.stderr.strip().splitlines() or ["build_gtests.sh --print-path failed"])[-1]
    return res.stdout.strip().splitlines()[-1], None


def gtest_rows(binary):
    """[(row, [suite, ...])] from suites.tsv next to the binary (build_gtests.sh writes it)."""
    rows = []
    tsv = os.path.join(os.path.dirname(binary), "suites.tsv")
    if os.path.isfile(tsv):
        with open(tsv) as f:
            for line in f:
                if line.strip():
                    name, _, suites = line.rstrip("\n").partition("\t")
                    rows.append(("gtest/" + name, suites.split()))
    return rows


def parse_gtest(text):
    """{full test name: 'ok' | 'failed' | 'crashed'} from gtest's console output, in run order
    (a test that started and never ended crashed the binary or ran out of time)."""
    status = {}
    for line in text.splitlines():
        m = re.match(r"\[ RUN      \] (\S+)$", line)
        if m:
            status[m.group(1)] = "crashed"
            continue
        m = re.match(r"\[ +(OK|FAILED) +\] (\S+?)(,| \(|$)", line)
        if m and m.group(2) in status and status[m.group(2)] == "crashed":
            status[m.group(2)] = "ok" if m.group(1) == "OK" else "failed"
    return status


def suite_of(test):
    """ConvolutionLayerTest/0.TestSetup -> ConvolutionLayerTest"""
    return test.split(".", 1)[0].split("/", 1)[0]


def run_gtest(binary, env, timeout):
    """Run the binary (its folder as working directory: the tests read src/caffe/test/test_data)
    under env: the main filter, then each GTEST_APART group with its extra environment. Returns
    ({test: status}, log text, [error]). A crash excludes the test and runs the rest again; a run
    that ends in neither gtest's pass (0) nor fail (1) without a test to blame is an error."""
    env = dict(env, GLOG_logtostderr="1", GLOG_minloglevel="1")
    apart = ":".join(f for f, _, _ in GTEST_APART)
    groups = [("", GTEST_FILTER[1:] + (":" + apart if apart else ""), {})]
    groups += [(f, GTEST_FILTER[1:], extra) for f, extra, _ in GTEST_APART]
    status, log, errors = {}, [], []
    t_end = time.time() + timeout
    for positive, negative, extra in groups:
        crashes = 0
        while True:
            done = [t for t in status if status[t] in ("ok", "failed") or status[t].startswith("crashed")]
            filt = positive + "-" + ":".join([negative] + done)
            left = t_end - time.time()
            if left <= 0:
                log.append("timeout: %.0f s per setting spent" % timeout)
                break
            try:
                res = subprocess.run([binary, "--gtest_filter=" + filt], env=dict(env, **extra),
                                     cwd=os.path.dirname(binary), capture_output=True, text=True, timeout=left)
                out, rc = res.stdout + res.stderr, res.returncode
            except subprocess.TimeoutExpired as e:
                out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
                rc = 124
            log.append(out)
            new = parse_gtest(out)
            crashed = [t for t, st in new.items() if st == "crashed"]
            for t, st in new.items():
                status[t] = "crashed (timeout)" if st == "crashed" and rc == 124 else st
            if rc not in (0, 1, 124) and not crashed:
                errors.append("exit %d before any test ran: %s" % (rc, (out.strip().splitlines() or ["no output"])[-1][:200]))
            if rc == 124 or not crashed or rc in (0, 1):
                break
            crashes += 1
            if crashes >= GTEST_MAX_CRASHES:
                log.append("gave up after %d crashes" % crashes)
                break
    if not status and not errors:
        errors.append("no test ran (filter %s)" % GTEST_FILTER)
    return status, "\n".join(log), errors


def gtest_cells(status, rows):
    """{row: cell} for the rows (plus 'gtest/other' for suites no row names)."""
    row_of = {s: r for r, suites in rows for s in suites}
    counts = {}
    for t, st in status.items():
        c = counts.setdefault(row_of.get(suite_of(t), "gtest/other"), {"passed": 0, "failed": 0})
        c["passed" if st == "ok" else "failed"] += 1
    out = {}
    for r in [r for r, _ in rows] + (["gtest/other"] if "gtest/other" in counts else []):
        c = counts.get(r, {})
        out[r] = cell(1 if c.get("failed") else 0, c)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--full", action="store_true", help="all 12 combinations instead of the 6 pairwise ones")
    ap.add_argument("--settings", nargs="+", metavar="ISA-CORE-THREADS",
                    help="only these settings, e.g. avx2-zen-1 avx512_core-skylakex-2")
    ap.add_argument("--files", nargs="+", default=["numerical"],
                    help="test files, or 'core' (%s) / 'numerical' (core + %s) / 'gtest' (Caffe's own "
                    "gtests, built by tools/caffe/build_gtests.sh)"
                    % (", ".join(os.path.basename(f) for f in CORE),
                       ", ".join(os.path.basename(f) for f in NUMERICAL[len(CORE):])))
    ap.add_argument("--gtest-bin", metavar="PATH",
                    help="the Caffe gtest binary for 'gtest' (default: build_gtests.sh's cached build)")
    ap.add_argument("--pytest-args", default="", help="extra pytest arguments (one string)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per file and setting")
    ap.add_argument("--out", help="also write the table to this file")
    a = ap.parse_args(argv)

    everything = list(itertools.product(ISAS, CORES, THREADS))
    by_name = {setting_name(*s): s for s in everything}
    if a.settings:
        unknown = [s for s in a.settings if s.lower() not in by_name]
        if unknown:
            ap.error("unknown setting(s) %s; known: %s" % (", ".join(unknown), ", ".join(sorted(by_name))))
        settings = [by_name[s.lower()] for s in a.settings]
    else:
        settings = everything if a.full else PAIRWISE
    files = []
    for f in a.files:
        files += {"core": CORE, "numerical": NUMERICAL}.get(f, [f])
    missing = [f for f in files if f != "gtest" and not os.path.isfile(os.path.join(REPO, f))]
    if missing:
        ap.error("no such test file: %s" % ", ".join(missing))
    files = list(dict.fromkeys(files))
    if a.gtest_bin and "gtest" not in files:
        ap.error("--gtest-bin needs --files ... gtest")
    gbin, grows = None, []
    if "gtest" in files:
        gbin, why = gtest_binary(a.gtest_bin)
        if gbin is None:
            ap.error("'gtest': %s" % why)
        grows = gtest_rows(gbin)
        if not grows:
            ap.error("'gtest': no suites.tsv next to %s (build it with tools/caffe/build_gtests.sh)" % gbin)
    rows = []
    for f in files:
        rows += [r for r, _ in grows] if f == "gtest" else [f]

    from ltc import machine
    avx512 = "avx512f" in machine.cpu_flags()
    lines = ["# python tools/test_isa.py %s" % " ".join(argv if argv is not None else sys.argv[1:]),
             "# %s, %s, %d CPUs, avx512f=%s; %s" % (machine.cpu_name(), machine.cpu_vendor(), os.cpu_count() or 1,
                                                     avx512, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))]
    if gbin:
        lines.append("# gtest: %s (%s CPU tests of %d Caffe test files; %s)" % (
            gbin, gtest_count(gbin), len(grows), " ".join(r.split("/", 1)[1] for r, _ in grows)))
    for line in lines:
        print(line, flush=True)
    results = {}
    probes = {}
    t_all = time.time()
    for s in settings:
        name = setting_name(*s)
        if s[1] == "SkylakeX" and not avx512:
            probes[name] = "skipped: OPENBLAS_CORETYPE=SkylakeX needs AVX-512, which this CPU lacks"
            for r in rows:
                results[r, name] = "skipped (no AVX-512)"
            print("%s: %s" % (name, probes[name]), flush=True)
            continue
        env = setting_env(*s)
        p = machine.kernel_probe(env, python=sys.executable)
        probes[name] = ("OpenBLAS core %s, %s threads; oneDNN %s, ISA %s, conv %s%s"
                        % (p["openblas_core"], p["openblas_threads"], p["onednn_version"], p["onednn_isa"],
                           p["onednn_conv_impl"], "; probe error: %s" % p["error"] if p["error"] else ""))
        print("%s: %s" % (name, probes[name]), flush=True)
        for f in files:
            t = time.time()
            if f == "gtest":
                status, out, errors = run_gtest(gbin, env, a.timeout)
                cells = gtest_cells(status, grows)
                if errors:
                    cells = {r: "FAILED (binary error)" for r in cells}
                for r, c in cells.items():
                    if r not in rows:
                        rows.append(r)
                    results[r, name] = c
                n_ok = sum(st == "ok" for st in status.values())
                print("  %-36s %-22s %5.0f s" % ("gtest (%d rows)" % len(cells), "passed %d of %d" % (n_ok, len(status)),
                                                 time.time() - t), flush=True)
                bad = [t_ + ": " + st for t_, st in status.items() if st != "ok"][:12]
                bad += ["binary: " + e for e in errors]
                if bad or not status:
                    print("\n".join("    " + l for l in bad or out.strip().splitlines()[-12:]), flush=True)
                continue
            cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f] + a.pytest_args.split()
            try:
                res = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=a.timeout)
                out, rc = res.stdout + res.stderr, res.returncode
            except subprocess.TimeoutExpired as e:
                out, rc = (e.stdout or "") if isinstance(e.stdout, str) else "", 124
            results[f, name] = cell(rc, parse_summary(out)) if rc != 124 else "FAILED (timeout %.0f s)" % a.timeout
            print("  %-36s %-22s %5.0f s" % (f, results[f, name], time.time() - t), flush=True)
            if results[f, name].startswith("FAILED"):
                tail = [l for l in out.splitlines() if l.startswith(("FAILED", "ERROR", "E   "))][:12]
                print("\n".join("    " + l for l in tail), flush=True)

    names = [setting_name(*s) for s in settings]
    for r in rows:
        for n in names:
            results.setdefault((r, n), "not run")
    width = max(len(os.path.basename(r)) if not r.startswith("gtest/") else len(r) for r in rows)
    cols = [max(len(n), max(len(results[r, n]) for r in rows)) for n in names]
    table = ["", "setting (ONEDNN_MAX_CPU_ISA-OPENBLAS_CORETYPE-threads) and what it dispatched:"]
    table += ["  %-24s %s" % (n, probes[n]) for n in names]
    table += ["", "  ".join(["file".ljust(width)] + [n.ljust(c) for n, c in zip(names, cols)]),
              "  ".join(["-" * width] + ["-" * c for c in cols])]
    for r in rows:
        label = r if r.startswith("gtest/") else os.path.basename(r)
        table.append("  ".join([label.ljust(width)] + [results[r, n].ljust(c) for n, c in zip(names, cols)]))
    failed = sorted({n for (f, n), r in results.items() if r.startswith("FAILED")})
    if gbin:
        table.append("")
        table.append("gtest rows: filter %s; apart, under the same setting: %s" % (GTEST_FILTER, "; ".join(
            "%s with %s (%s)" % (f, " ".join("%s=%s" % kv for kv in extra.items()), why) for f, extra, why in GTEST_APART)))
    table.append("")
    table.append("%d files x %d settings in %.0f s: %s" % (len(rows), len(names), time.time() - t_all,
                                                           "FAILED under " + ", ".join(failed) if failed else "no failures"))
    print("\n".join(table), flush=True)
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            f.write("\n".join(lines + table) + "\n")
        print("wrote %s" % a.out)
    return 1 if failed else 0


def gtest_count(binary):
    """How many CPU tests the binary holds (gtest --gtest_list_tests)."""
    try:
        res = subprocess.run([binary, "--gtest_list_tests", "--gtest_filter=" + GTEST_FILTER],
                             capture_output=True, text=True, timeout=60, cwd=os.path.dirname(binary))
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return sum(1 for l in res.stdout.splitlines() if l.startswith("  "))


if __name__ == "__main__":
    sys.exit(main())
