"""Resume a `caffe train` run from its newest intact snapshot (or start it when there is none).

    python tools/resume.py snapshots/counting                      # solver found by its snapshot_prefix
    python tools/resume.py --solver prototxt/solver.prototxt       # prefix read from the solver
    python tools/resume.py snapshots/counting_iter_5000.solverstate --solver prototxt/solver.prototxt
    python tools/resume.py snapshots/counting -- -gpu 0            # more caffe arguments after --

Looks at every '<PREFIX>_iter_N.solverstate', newest first, and checks it and the .caffemodel
it names (ltc.snapshots.check_pair: both parse completely, blob sizes, iter, history vs
weights); says which files it skipped and why, then replaces itself with
`caffe train -solver SOLVER -snapshot PREFIX_iter_N.solverstate [more args]`. A snapshot
named directly is checked the same way and refused when it is not intact.

Stopping a run: Ctrl-C (or `kill -INT -PGID`). With caffe's default -sigint_effect stop the
solver finishes its iteration, snapshots and exits; SIGHUP (default -sighup_effect snapshot)
snapshots and trains on. The data workers ignore both and exit with caffe.

Exit codes: 2 usage or input errors (no solver, unreadable solver), 1 no snapshot (without
--new-ok), only damaged ones (never starts over on top of them), or a refused snapshot;
otherwise caffe's own.
"""
import argparse
import glob
import os
import shutil
import sys

from ltc import REPO, snapshots as snap


def find_solver(prefix):
    """The committed solver(s) under prototxt/ whose snapshot_prefix is ``prefix``."""
    hits = []
    for path in sorted(glob.glob(os.path.join("prototxt", "**", "*solver*.prototxt"), recursive=True)):
        try:
            if os.path.normpath(snap.read_solver(path).snapshot_prefix) == os.path.normpath(prefix):
                hits.append(path)
        except snap.SnapshotError:
            continue
    return hits


def default_caffe():
    venv = os.path.join(REPO, ".venv", "bin", "caffe")
    return venv if os.path.exists(venv) else (shutil.which("caffe") or "caffe")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(description="Resume `caffe train` from the newest intact snapshot of a prefix.",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                 epilog="Arguments after -- go to caffe train unchanged.")
    ap.add_argument("prefix", nargs="?", default=None,
                    help="snapshot prefix (the solver's snapshot_prefix), or one .solverstate file; "
                         "default: the solver's snapshot_prefix")
    ap.add_argument("--solver", default=None,
                    help="solver .prototxt; default: the one under prototxt/ whose snapshot_prefix is PREFIX")
    ap.add_argument("--caffe", default=default_caffe(), help="the caffe binary")
    ap.add_argument("--new-ok", action="store_true",
                    help="start the training from iteration 0 when PREFIX has no snapshot files at all")
    ap.add_argument("--dry-run", action="store_true", help="print the caffe command instead of running it")
    args = ap.parse_args(argv)

    if args.prefix is None and args.solver is None:
        ap.error("give a snapshot PREFIX, a .solverstate, or --solver")
    solver_param = None
    if args.solver is not None:
        try:
            solver_param = snap.read_solver(args.solver)
        except snap.SnapshotError as e:
            print("resume: %s" % e, file=sys.stderr)
            return 2
    explicit = args.prefix is not None and args.prefix.endswith(snap.STATE_EXT)
    prefix = args.prefix
    if prefix is None:
        prefix = solver_param.snapshot_prefix
        if not prefix:
            print("resume: solver '%s' sets no snapshot_prefix; give PREFIX" % args.solver, file=sys.stderr)
            return 2
    base = prefix[:prefix.rfind("_iter_")] if explicit and "_iter_" in prefix else prefix
    if args.solver is None:
        hits = find_solver(base)
        if len(hits) != 1:
            print("resume: %s solver under prototxt/ has snapshot_prefix '%s'%s; name it with --solver"
                  % ("no" if not hits else "more than one", base, (" (%s)" % ", ".join(hits)) if hits else ""),
                  file=sys.stderr)
            return 2
        args.solver = hits[0]
        solver_param = snap.read_solver(args.solver)
    print("resume: solver %s" % args.solver, flush=True)
    if solver_param.snapshot_prefix and os.path.normpath(base) != os.path.normpath(solver_param.snapshot_prefix):
        print("resume: note: the solver writes its new snapshots to '%s', not '%s'"
              % (solver_param.snapshot_prefix, base), flush=True)

    if explicit:
        try:
            state, model = snap.check_pair(prefix)
        except snap.SnapshotError as e:
            print("resume: refused: %s" % e, file=sys.stderr)
            return 1
        state_path, it = prefix, state.iter
    else:
        pick, skipped = snap.newest_intact(prefix)
        for path, why in skipped:
            print("resume: skipped %s: %s" % (path, why), flush=True)
        if pick is None:
            if skipped:   # never start over silently on top of damaged snapshots
                print("resume: none of the %d snapshot file(s) of '%s' is intact; move them away to start from "
                      "iteration 0" % (len(skipped), prefix), file=sys.stderr)
                return 1
            if not args.new_ok:
                print("resume: no snapshot '%s_iter_N.solverstate' found (--new-ok starts from iteration 0)"
                      % prefix, file=sys.stderr)
                return 1
            state_path = None
        else:
            it, state_path, model = pick
    if state_path is None:
        cmd = [args.caffe, "train", "-solver", args.solver] + extra
        print("resume: no snapshot yet: starting at iteration 0", flush=True)
    else:
        cmd = [args.caffe, "train", "-solver", args.solver, "-snapshot", state_path] + extra
        print("resume: iteration %d from %s + %s" % (it, state_path, model), flush=True)
    print("resume: " + " ".join(cmd), flush=True)
    if args.dry_run:
        return 0
    snap_dir = os.path.dirname(solver_param.snapshot_prefix)
    if snap_dir:   # Caffe does not make it, and would fail at the first snapshot, hours in
        os.makedirs(snap_dir, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        if os.sep in cmd[0]:
            os.execv(cmd[0], cmd)
        os.execvp(cmd[0], cmd)
    except OSError as e:
        print("resume: cannot run %s: %s" % (cmd[0], e.strerror or e), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
