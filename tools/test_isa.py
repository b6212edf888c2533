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

Prints a table file x setting -> passed (counts) / FAILED / skipped, optionally writes it to
--out, and exits 1 if any file failed under any setting (2 on bad arguments).

    python tools/test_isa.py                          # the 6 pairwise settings, NUMERICAL files
    python tools/test_isa.py --settings avx2-zen-1 --files core    # what `make test` adds
    python tools/test_isa.py --full --out bench/results/test_isa.txt
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--full", action="store_true", help="all 12 combinations instead of the 6 pairwise ones")
    ap.add_argument("--settings", nargs="+", metavar="ISA-CORE-THREADS",
                    help="only these settings, e.g. avx2-zen-1 avx512_core-skylakex-2")
    ap.add_argument("--files", nargs="+", default=["numerical"],
                    help="test files, or 'core' (%s) / 'numerical' (core + %s)"
                    % (", ".join(os.path.basename(f) for f in CORE),
                       ", ".join(os.path.basename(f) for f in NUMERICAL[len(CORE):])))
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
    missing = [f for f in files if not os.path.isfile(os.path.join(REPO, f))]
    if missing:
        ap.error("no such test file: %s" % ", ".join(missing))
    files = list(dict.fromkeys(files))

    from ltc import machine
    avx512 = "avx512f" in machine.cpu_flags()
    lines = ["# python tools/test_isa.py %s" % " ".join(argv if argv is not None else sys.argv[1:]),
             "# %s, %s, %d CPUs, avx512f=%s; %s" % (machine.cpu_name(), machine.cpu_vendor(), os.cpu_count() or 1,
                                                     avx512, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))]
    for line in lines:
        print(line, flush=True)
    results = {}
    probes = {}
    t_all = time.time()
    for s in settings:
        name = setting_name(*s)
        if s[1] == "SkylakeX" and not avx512:
            probes[name] = "skipped: OPENBLAS_CORETYPE=SkylakeX needs AVX-512, which this CPU lacks"
            for f in files:
                results[f, name] = "skipped (no AVX-512)"
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
    width = max(len(os.path.basename(f)) for f in files)
    cols = [max(len(n), max(len(results[f, n]) for f in files)) for n in names]
    table = ["", "setting (ONEDNN_MAX_CPU_ISA-OPENBLAS_CORETYPE-threads) and what it dispatched:"]
    table += ["  %-24s %s" % (n, probes[n]) for n in names]
    table += ["", "  ".join(["file".ljust(width)] + [n.ljust(c) for n, c in zip(names, cols)]),
              "  ".join(["-" * width] + ["-" * c for c in cols])]
    for f in files:
        table.append("  ".join([os.path.basename(f).ljust(width)] + [results[f, n].ljust(c) for n, c in zip(names, cols)]))
    failed = sorted({n for (f, n), r in results.items() if r.startswith("FAILED")})
    table.append("")
    table.append("%d files x %d settings in %.0f s: %s" % (len(files), len(names), time.time() - t_all,
                                                           "FAILED under " + ", ".join(failed) if failed else "no failures"))
    print("\n".join(table), flush=True)
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            f.write("\n".join(lines + table) + "\n")
        print("wrote %s" % a.out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
