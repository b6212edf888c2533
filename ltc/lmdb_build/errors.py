"""How a build ends early: its errors (each with an exit code for the command line) and the
signal guard that turns SIGTERM/SIGINT into an exception, so that cleanup runs."""
import signal

from ltc.workers import signal_name


class BuildError(RuntimeError):
    """The build cannot go on. exit_code: 2 for bad input (arguments, an existing output, an
    unreadable list file; the default), 1 for a failure while building (a worker died)."""

    def __init__(self, message, exit_code=2):
        super().__init__(message)
        self.exit_code = exit_code


class DiskFull(BuildError):
    """The filesystem of OUTPUT is out of space, or will clearly be (the up-front estimate): a failure."""

    def __init__(self, message, exit_code=1):
        super().__init__(message, exit_code)


class WorkerDied(BuildError):
    """A decoding worker process ended without answering (a signal, the OOM killer, a crash): a failure."""

    def __init__(self, message, exit_code=1):
        super().__init__(message, exit_code)


class Interrupted(BaseException):
    """SIGTERM/SIGINT arrived; the build is abandoned and its partial folder removed."""

    def __init__(self, signum):
        BaseException.__init__(self, "interrupted by signal %d (%s)" % (signum, signal_name(signum)))
        self.signum = signum


class signals_raise(object):
    """Context manager: SIGTERM (and SIGINT) raise ``Interrupted`` in the main thread.

    With it, ``finally``/``with`` cleanup runs when the build is killed politely.
    """

    def __enter__(self):
        self.old = {}
        for s in (signal.SIGTERM, signal.SIGINT):
            try:
                self.old[s] = signal.signal(s, self._handler)
            except ValueError:  # not the main thread
                pass
        return self

    @staticmethod
    def _handler(signum, frame):
        raise Interrupted(signum)

    def hold(self):
        """Ignore further SIGTERM/SIGINT until ``__exit__``: cleanup must not be cut short."""
        for s in self.old:
            signal.signal(s, signal.SIG_IGN)

    def __exit__(self, *exc):
        for s, h in self.old.items():
            signal.signal(s, h)
        return False
