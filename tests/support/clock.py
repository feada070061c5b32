"""A clock for deterministic tests: wall and monotonic time move only by `advance` or `sleep`."""

from __future__ import annotations

import threading


class FakeClock:
    """reindexer.clock.Clock whose time stands still: `sleep` and `advance` move both clocks at once, so a
    backoff, a lease expiry or a deadline is reached without waiting."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self._now = now
        self._started = now
        self._guard = threading.Lock()
        self.slept: list[float] = []

    def time(self) -> float:
        with self._guard:
            return self._now

    def monotonic(self) -> float:
        with self._guard:
            return self._now - self._started

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        with self._guard:
            self._now += max(0.0, seconds)

    @property
    def now(self) -> float:
        return self.time()
