"""Worker processes that must not outlive their parent, defined once.

Both process pools of the project (the data layer's batch makers, ltc/pipeline.py, and the
LMDB builder's decoders, ltc/lmdb_build.py) start their workers with ``start_worker``: the
worker ignores Ctrl-C (the parent handles it), dies on SIGTERM without Caffe's glog handler,
asks the kernel for a signal when the parent dies, and reports whether the parent is still
the one that started it (it may have died before the request took effect). While idle, a
worker polls ``parent_alive`` as well.
"""
import ctypes
import os
import signal

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
