"""One rank under torchrun: `python -m bench.collectives --config FILE` (the launcher's command).

SIGTERM and SIGHUP are taken by a thread of their own before torch is imported and starts
threads (bench/collectives/signals.py): a rank stopped while it still imports torch, or while
it waits inside a collective, exits at once.
"""

from bench.collectives import signals

signals.install()

from bench.collectives.rank import main  # noqa: E402  (after the signals, on purpose)

main()
