"""SIGTERM and SIGHUP for a rank, taken by a thread of its own from the first moment.

A Python signal handler runs in the main thread, which may sit for minutes inside a collective
(or inside `import torch` at start-up); so the signals are blocked, every thread started later
inherits the mask, and one thread takes them with sigwait: the rank records `terminated` in
its status file (once it has one) and exits at once. `install` must run before torch starts
threads of its own (bench/collectives/__main__.py calls it first); threads started earlier,
as in a CLI that imported torch before becoming a rank, fall back on a plain handler.
No torch import here, on purpose.
"""

from __future__ import annotations

import os
import signal
import threading

SIGNALS = {signal.SIGTERM, signal.SIGHUP}
_state: dict = {"installed": False, "status": None}


def _stop(signum: int = signal.SIGTERM, *_) -> None:
    status = _state["status"]
    if status is not None:
        from bench.collectives.status import TERMINATED

        status.finish(TERMINATED, f"stopped by {signal.Signals(signum).name} (from torchrun "
                                  "or the launcher)")
    os._exit(128 + signum)


def install() -> None:
    """Block the signals and start the thread that takes them (main thread only; once)."""
    if _state["installed"] or threading.current_thread() is not threading.main_thread():
        return
    for s in SIGNALS:
        signal.signal(s, _stop)  # for threads started before the mask
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    threading.Thread(target=lambda: _stop(signal.sigwait(SIGNALS)), name="sigterm",
                     daemon=True).start()
    _state["installed"] = True


def attach(status) -> None:
    """From now on a signal records `terminated` in this StatusWriter before exiting."""
    _state["status"] = status
