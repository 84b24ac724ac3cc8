"""A local fence for primary-only services: they act only while the agent's trust window is open.

The agent writes ``{"until": <monotonic deadline>, "epoch": N, "timeline": T}`` atomically after every
successful renewal (``timeline``: the database history the epoch was issued on, null if unknown);
CLOCK_MONOTONIC is one clock for every process on the host, so a service compares it with its own
``time.monotonic()``. If the agent is frozen (SIGSTOP, a VM pause of the agent alone, CPU
starvation), it stops writing and its services stop acting when the deadline passes, which is before
the lease can be taken by another node. A stepped-down agent removes the file. The file's path
comes from the configuration (:attr:`appliance.config.Config.fence_file`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from appliance.fsutil import write_atomic


class FileFence:
    def __init__(self, path: Path) -> None:
        self.path = path

    def grant(self, until_monotonic: float, epoch: int, timeline: int | None = None) -> None:
        doc = {"until": until_monotonic, "epoch": epoch, "timeline": timeline}
        write_atomic(self.path, json.dumps(doc) + "\n", mode=0o644)

    def revoke(self) -> None:
        self.path.unlink(missing_ok=True)


def read_fence(path: Path) -> tuple[float, int] | None:
    """The fence's (monotonic deadline, epoch), or None when there is none (revoked, never granted)."""
    try:
        doc = json.loads(path.read_text())
        return float(doc["until"]), int(doc["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def may_act(path: Path) -> tuple[bool, int | None]:
    """For a primary-only service: may it act now, and under which epoch (the fencing token)?"""
    try:
        doc = json.loads(path.read_text())
        return time.monotonic() < float(doc["until"]), int(doc["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return False, None
