"""Worker processes that must not outlive their parent, defined once.

Both process pools of the project (the data layer's batch makers, ltc/pipeline.py, and the
LMDB builder's decoders, ltc/lmdb_build/ring.py) start their workers with ``start_worker``: the
worker ignores Ctrl-C (the parent handles it), dies on SIGTERM without Caffe's glog handler,
asks the kernel for a signal when the parent dies, and reports whether the parent is still
the one that started it (it may have died before the request took effect). While idle, a
worker polls ``parent_alive`` as well.

When a worker dies anyway, both pools end with an error that names the worker, how it
died and what it was doing, worded here:

    exit_text(-7)                 'was killed by SIGBUS (bus error: ...)'
    reap(pid)                     the exit code of a child that has ended (-signal if
                                  killed), None while it still runs
    death_message("make_lmdb", "decoding worker 1 (pid 412)", -7, "image 'a.jpg'")
"""
import ctypes
import errno
import os
import signal
import time

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig=signal.SIGTERM):
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux prctl);
    elsewhere nothing happens and only the ``parent_alive`` polling applies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


def parent_alive(parent_pid):
    """True while this process is still the child of ``parent_pid``."""
    return os.getppid() == parent_pid


def start_worker(parent_pid, death_signal=signal.SIGTERM):
    """The common start of a worker process; returns parent_alive(parent_pid) (False: exit now)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The caffe binary installs glog's failure handler for SIGTERM, which would print
    # "*** Aborted at ..." when the death signal arrives: a worker just dies quietly.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    die_with_parent(death_signal)
    return parent_alive(parent_pid)


def pid_alive(pid):
    """True if a process ``pid`` exists (also one of another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# What a signal usually means for a data worker (the hint the user needs).
_HINTS = {
    signal.SIGBUS: "bus error: a memory-mapped page could not be backed, usually because /dev/shm "
                   "or the disk under a memory-mapped file is full",
    signal.SIGSEGV: "segmentation fault, e.g. a crash in an image decoder",
    signal.SIGKILL: "killed from outside, e.g. by the kernel's out-of-memory killer",
    signal.SIGABRT: "aborted, e.g. a failed assertion in a native library",
    signal.SIGTERM: "terminated from outside",
    signal.SIGFPE: "arithmetic fault in native code",
    signal.SIGILL: "illegal instruction in native code",
}


def signal_name(signum):
    try:
        return signal.Signals(signum).name
    except ValueError:
        return "signal %d" % signum


def exit_text(exitcode):
    """multiprocessing-style exit code (negative: killed by that signal) -> words."""
    if exitcode is None:
        return "vanished (its exit status is unknown)"
    if exitcode < 0:
        sig = -exitcode
        hint = _HINTS.get(sig)
        return "was killed by %s%s" % (signal_name(sig), " (%s)" % hint if hint else "")
    return "exited with status %d" % exitcode


def reap(pid, wait_s=0.0):
    """Exit code of child ``pid`` (negative signal number when killed), or None if it still runs.

    ``wait_s`` > 0 waits up to that long for a child whose end is already known (its
    pipe closed) to become reapable. Returns None also for a child reaped elsewhere.
    """
    end = time.monotonic() + wait_s
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() >= end:
            return None
        time.sleep(0.02)


def death_message(who, worker, exitcode, doing):
    """'<who>: <worker> <how it died> while <doing>' (``doing`` may be empty)."""
    return "%s: %s %s%s" % (who, worker, exit_text(exitcode), " while %s" % doing if doing else "")


def is_no_space(exc):
    """True for an OSError that means 'no space left' (ENOSPC, or EDQUOT: over quota)."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
