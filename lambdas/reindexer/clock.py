"""Time as the indexer reads it, in one object: wall time for lease expiries and dates written, a monotonic
clock for deadlines and durations, and sleep for backoffs. Tests pass a fake one to all of them at once."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Seconds since the epoch (compared across machines: lease expiries)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (deadlines and durations within one process)."""
        ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The machine's clocks."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


SYSTEM_CLOCK: Clock = SystemClock()


def utc_now(clock: Clock) -> datetime:
    return datetime.fromtimestamp(clock.time(), UTC)
