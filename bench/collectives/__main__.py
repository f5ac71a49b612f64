"""One rank under torchrun: `python -m bench.collectives --config FILE` (the launcher's command).

SIGTERM and SIGHUP are blocked first, before torch is imported and starts threads of its own:
every thread then inherits the mask and the rank's sigwait thread (rank.exit_on_sigterm) is
the one that takes the signal, even while the main thread waits inside a collective.
"""

import signal

signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGHUP})

from bench.collectives.rank import main  # noqa: E402  (after the mask, on purpose)

main()
