"""Upload settings that the command line reads without loading the database drivers: the
environment variable names, batch sizes and the retry policy (results/upload.py uses them)."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

UPLOAD_ENV = "COLOSSUS_BENCH_UPLOAD_URL"
TRIES_ENV = "COLOSSUS_BENCH_UPLOAD_TRIES"
BACKOFF_ENV = "COLOSSUS_BENCH_UPLOAD_BACKOFF"
# Rows per transaction. 5,000 rows of 1-3 KB is 5-15 MB a round trip: large enough to amortise
# latency to a remote server, small enough that a failed batch costs little (assumption, checked
# by `python -m results.upload_bench`).
DEFAULT_BATCH = 5000
MAX_BATCH = 10_000  # keeps the IN (...) lists under SQLite's 32,766 bound-parameter limit


@dataclass(frozen=True)
class RetryPolicy:
    """Tries per step (opening the shared table, each batch) and the waits between them.

    Waits grow exponentially (1, 2, 4, 8, 16 s caps by default) with full jitter: each wait is
    drawn uniformly from 0 to its cap, so 32 uploaders that lost the same server do not come
    back in lockstep (AWS Architecture Blog, "Exponential Backoff And Jitter", 2015: full
    jitter spreads retries evenly and does the least work). The defaults wait 15.5 s on
    average, 31 s at most, before giving up: enough to ride out a server restart or a network
    blip, short enough that a node's job does not hang (assumption).
    """

    tries: int = 6
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.tries, int) or self.tries < 1:
            raise ValueError(f"retry tries must be an integer >= 1, got {self.tries!r}")
        if self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError("retry backoff must be >= 0 seconds")

    @classmethod
    def from_env(cls, tries: int | None = None, backoff_s: float | None = None) -> RetryPolicy:
        """Arguments, else $COLOSSUS_BENCH_UPLOAD_TRIES / _BACKOFF, else the defaults (so
        `run --upload` in a batch job can be tuned without new flags)."""
        try:
            tries = tries if tries is not None else int(os.environ.get(TRIES_ENV, cls.tries))
            backoff_s = backoff_s if backoff_s is not None else \
                float(os.environ.get(BACKOFF_ENV, cls.backoff_s))
        except ValueError as e:
            raise ValueError(f"bad {TRIES_ENV} or {BACKOFF_ENV}: {e}") from None
        return cls(tries=tries, backoff_s=backoff_s)

    def cap_s(self, attempt: int) -> float:
        """The longest wait after failed attempt `attempt` (1-based): exponential, capped."""
        return min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s)

    def wait_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait after failed attempt `attempt`: uniform in [0, cap] (full jitter)."""
        cap = self.cap_s(attempt)
        return (rng or _RNG).uniform(0, cap) if self.jitter else cap


_RNG = random.SystemRandom()  # no shared seed: forked uploaders draw different waits
