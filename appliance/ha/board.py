"""What the agent shows to the outside while its loop runs: an immutable record published every tick,
and the fence deadline at the moment it changes. The health endpoint and the metrics read only this.

Why this shape:

* The HA loop is single-threaded and must never wait for a reader. It replaces whole immutable
  objects (:class:`Published`, the fence tuple); assigning a reference is atomic in CPython, so a
  reader on another thread sees either the old or the new one, never half of each. No lock is taken.
* "Primary" is not remembered as a flag. :class:`BoardFence` wraps the fence the runtime grants and
  revokes, so the board's deadline is the fence file's deadline at the same instant (revoked first,
  before the file, so a step-down answers 503 before anything else happens). Readers compare it with
  the monotonic clock themselves: an agent blocked on a dead database stops being "primary" at its
  deadline without running a single line of its loop. A frozen agent freezes its readers too
  (a load balancer's check then times out, which is also a failure).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from appliance.ha.dbnodes import HostState
from appliance.ha.model import ClusterView
from appliance.ha.runtime import Fence

if TYPE_CHECKING:
    from prometheus_client import Histogram


@dataclass(frozen=True)
class Published:
    """One tick's outcome, as the agent saw it at the end of the tick (``ticked_at``, monotonic)."""

    node_id: str
    name: str
    state: str  # PRIM, ALONE, SECOND, STOP, WAIT (appliance.ha.status)
    acting: bool
    epoch: int | None
    keepalive_s: float
    view: ClusterView | None  # None: the last snapshot failed (database unreachable)
    db_hosts: tuple[HostState, ...]  # the last probe of every configured database host
    ticked_at: float
    failovers: int  # takeovers by this node since the agent started


class Board:
    def __init__(self, renewals: Histogram | None = None) -> None:
        self.fence: tuple[float, int] | None = None  # (monotonic deadline, epoch) while granted
        self.published: Published | None = None
        self.renewals = renewals  # durations of lease renewals (metrics), if kept
        self.started = time.monotonic()

    def publish(self, record: Published) -> None:
        self.published = record

    def trusted(self, now: float) -> tuple[float, int] | None:
        """(seconds left, epoch) while this node may act as primary, else None."""
        fence = self.fence
        if fence is None or now >= fence[0]:
            return None
        return fence[0] - now, fence[1]

    def observe_renewal(self, seconds: float, renewed: bool) -> None:
        if self.renewals is not None and renewed:
            self.renewals.observe(seconds)


class BoardFence:
    """A :class:`~appliance.ha.runtime.Fence` that also tells the board, at the same instant."""

    def __init__(self, inner: Fence, board: Board) -> None:
        self.inner = inner
        self.board = board

    def grant(self, until_monotonic: float, epoch: int, timeline: int | None = None) -> None:
        self.inner.grant(until_monotonic, epoch, timeline)
        self.board.fence = (until_monotonic, epoch)

    def revoke(self) -> None:
        self.board.fence = None  # first: no "200 primary" from here on, whatever the file write costs
        self.inner.revoke()
