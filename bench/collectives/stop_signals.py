"""How the allreduce launcher answers SIGINT, SIGTERM and SIGHUP.

While torchrun runs, a stop signal raises `Stopped` in the launcher's main thread and the
launcher tears the ranks down. From the first signal on, all three are ignored, so a second
Ctrl-C cannot cut the kill sweep short. During the final storing pass they are Ctrl-C to
spool.save ("stop storing, keep the rows"). At the end the caller's handlers come back.

Two gaps are closed. A signal that arrives while torchrun is being forked is held until the
launcher has its process to tear down (a flag, not a signal mask: a process-directed signal
may be taken by any thread, and Python runs its handler in the main thread anyway). A signal
inherited as ignored (a background job's SIGINT) stays ignored throughout. Only the main thread
can take signals; elsewhere every method is a no-op.
"""

from __future__ import annotations

import contextlib
import signal
import threading

# Ctrl-C stops a run as SIGTERM and SIGHUP do
TEARDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(BaseException):
    """SIGINT, SIGTERM or SIGHUP reached the launcher."""


def _stop_storing(signum, _frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


class StopSignals:
    """The stop signals of one launch: `catch`, `hold`, `ignore`, `storing`, `restore`."""

    def __init__(self) -> None:
        main = threading.current_thread() is threading.main_thread()
        self.signals = tuple(s for s in TEARDOWN_SIGNALS
                             if main and signal.getsignal(s) is not signal.SIG_IGN)
        self.saved: dict = {}
        self.held = False
        self.pending: int | None = None

    def catch(self) -> None:
        """From here a stop signal raises Stopped (and the others are ignored after it)."""
        self.saved = {s: signal.signal(s, self._raise) for s in self.signals}

    def _raise(self, signum, _frame):
        self.ignore()  # first: a second signal lands in the teardown, which ignores it
        if self.held:
            self.pending = signum
            return
        raise Stopped(signal.Signals(signum).name)

    def hold(self) -> None:
        """Until `release`: a stop signal is noted, not raised."""
        self.held = True

    def release(self) -> None:
        """Raise Stopped now for a signal noted while held."""
        self.held = False
        if self.pending is not None:
            raise Stopped(signal.Signals(self.pending).name)

    def ignore(self) -> None:
        for s in self.signals:
            signal.signal(s, signal.SIG_IGN)

    @contextlib.contextmanager
    def storing(self):
        """While the final pass stores the spool: the signals as Ctrl-C, which spool.save takes
        as "stop storing, keep the rows" (a transaction it cuts short is rolled back); ignored
        again after it."""
        for s in self.signals:
            signal.signal(s, _stop_storing)
        try:
            yield
        finally:
            self.ignore()

    def restore(self) -> None:
        for s, h in self.saved.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)

