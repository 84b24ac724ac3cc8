"""The injected clock: wall time for records, a monotonic clock for every interval.

Nothing in the product calls ``time.time()`` or ``time.monotonic()`` directly outside this module;
code takes a :class:`Clock`, and tests pass a :class:`FakeClock` they advance by hand.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from datetime import UTC, datetime, timedelta


class Clock(ABC):
    @abstractmethod
    def now(self) -> datetime:
        """Wall-clock time, timezone-aware UTC (for records shown to people; never for intervals)."""

    @abstractmethod
    def monotonic(self) -> float:
        """Seconds on a clock that never jumps (for timeouts, durations and leases' local windows)."""

    @abstractmethod
    def sleep(self, seconds: float) -> None:
        """Wait; a fake clock just advances."""


class SystemClock(Clock):
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class FakeClock(Clock):
    """A clock that moves only when told to; ``sleep`` advances it."""

    def __init__(self, start: datetime | None = None, monotonic: float = 1000.0) -> None:
        self._now = start or datetime(2026, 11, 22, 22, 0, 0, tzinfo=UTC)
        self._mono = monotonic

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        self._mono += seconds
        self._now += timedelta(seconds=seconds)

    def jump_wall(self, seconds: float) -> None:
        """Step the wall clock only (an NTP correction); the monotonic clock is untouched."""
        self._now += timedelta(seconds=seconds)
