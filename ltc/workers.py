"""How a worker process ended, in words: one helper for every pool in the package.

``lmdb_build`` (the make_lmdb decoding pool) and the counting data layer's batch
pipeline both watch worker processes; when one disappears they end with an error that
names the worker, how it died and what it was doing. Both word it through here:

    exit_text(-7)                 'was killed by SIGBUS (bus error: ...)'
    reap(pid)                     the exit code of a child that has ended (-signal if
                                  killed), None while it still runs
    death_message("make_lmdb", "decoding worker 1 (pid 412)", -7, "image 'a.jpg'")
"""
import errno
import os
import signal
import time

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
