"""The outside observer's reading of the demo service's shared log: who acted as primary, and when.

Every node's primary-only demo service (:mod:`appliance.ha.demo_service`) appends
``<monotonic> <wall> <node> epoch=N`` every 50 ms to one shared log while its fence allows it, and
``<monotonic> <wall> <node> fenced`` when it stops. CLOCK_MONOTONIC is one clock for every process on
the host, so these lines order the acts of every node, and compare directly with ``time.monotonic()``
read by the test. :func:`intervals` groups them into acting intervals; two intervals of two nodes that
intersect mean two primaries at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

GAP_S = 1.0  # two demo lines of one node further apart than this belong to two acting intervals


@dataclass(frozen=True)
class Interval:
    """One node acting as primary, as the demo log shows it: first and last line (monotonic)."""

    node: str
    epoch: int
    start: float
    end: float
    lines: int
    fenced: bool  # ended by the fence closing (not by a SIGTERM from the service manager)

    def overlaps(self, other: Interval) -> bool:
        return self.node != other.node and self.start <= other.end and other.start <= self.end


@dataclass(frozen=True)
class DemoLine:
    mono: float
    wall: float
    node: str
    epoch: int | None  # None: the "fenced" line


def read_demo_lines(path: Path) -> list[DemoLine]:
    """The complete lines of the demo log at ``path``, in file order."""
    lines = []
    for raw in path.read_text(errors="replace").splitlines():
        parts = raw.split()
        if len(parts) != 4:
            continue  # a line being written right now
        try:
            mono, wall = float(parts[0]), float(parts[1])
        except ValueError:
            continue
        if parts[3] == "fenced":
            lines.append(DemoLine(mono, wall, parts[2], None))
        elif parts[3].startswith("epoch="):
            lines.append(DemoLine(mono, wall, parts[2], int(parts[3][6:])))
    return lines


def intervals(lines: Iterable[DemoLine]) -> list[Interval]:
    """Group demo lines into per-node acting intervals, split by epoch, by ``fenced`` and by gaps."""
    by_node: dict[str, list[DemoLine]] = {}
    for line in lines:
        by_node.setdefault(line.node, []).append(line)
    out: list[Interval] = []
    for node, mine in by_node.items():
        mine.sort(key=lambda x: x.mono)
        cur: list[DemoLine] = []
        for nxt in [*mine, None]:  # None: past the last line, which ends the open interval
            # The interval ends at the end of the log, at a "fenced" line, at a new epoch or at a gap.
            if cur and (nxt is None or nxt.epoch is None or nxt.epoch != cur[-1].epoch
                        or nxt.mono - cur[-1].mono > GAP_S):
                fenced = nxt is not None and nxt.epoch is None
                out.append(Interval(node, cur[0].epoch or 0, cur[0].mono, cur[-1].mono, len(cur), fenced))
                cur = []
            if nxt is not None and nxt.epoch is not None:
                cur.append(nxt)
    out.sort(key=lambda i: i.start)
    return out
