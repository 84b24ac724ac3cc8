"""The agent's status file, ``<state_dir>/agent-status.json``: what this node's agent does now.

The agent rewrites it atomically after every tick (state, role, epoch, the decision and its reason,
the names of the cluster's nodes); ``ha get status`` and ``system get status`` read it, so they can
answer even when the database cannot, and Tab completion reads the node names from it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from appliance.config import Config
from appliance.fsutil import write_atomic
from appliance.names import check_node_name


def status_path(config: Config) -> Path:
    return config.paths.state_dir / "agent-status.json"


def read_status(config: Config) -> dict[str, Any] | None:
    """The last status the agent wrote, or None (no agent ran yet, or the file is unreadable)."""
    try:
        doc = json.loads(status_path(config).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def write_status(config: Config, doc: dict[str, Any]) -> None:
    """Replace the status file (0644: it holds no secret). :raises OSError: it cannot be written."""
    write_atomic(status_path(config), json.dumps(doc) + "\n", mode=0o644)


def known_nodes(config: Config) -> list[str]:
    """The cluster's node names as the agent last saw them (checked again: the file is only a cache)."""
    doc = read_status(config) or {}
    names = doc.get("nodes")
    found: list[str] = []
    for name in names if isinstance(names, list) else []:
        try:
            found.append(check_node_name(name if isinstance(name, str) else ""))
        except ValueError:
            continue
    return sorted(set(found))
