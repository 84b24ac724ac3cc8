"""Fixtures giving integration tests real PostgreSQL 15 servers (see ``appliance/testkit/pgcluster.py``).

- ``pg_primary``: one cluster for the whole session. Do not stop, promote or reconfigure it for good;
  use unique role/database names, and :meth:`PgCluster.hba_override` for temporary pg_hba.conf lines.
- ``pg_fresh``: a new cluster for one test (about 1 s); break it as you like.
- ``pg_pair``: a new primary plus a streaming standby for one test (about 2 s): promote, kill...
- ``pg_pair_shared``: a primary/standby pair for the whole session, for read-only use.
- ``silent_port`` / ``closed_port``: a TCP port that accepts but never answers / where nothing listens.

Every cluster is stopped (fast, then ``kill -9``) and removed when its fixture ends, even if the test
failed. The ``pg`` marker is added to every test using these fixtures; without the PostgreSQL binaries
those tests are skipped. Set ``PGCLUSTER_KEEP=1`` to keep the data directories and logs.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.testkit.pgcluster import TIMINGS, PgCluster, PgPair
from appliance.testkit.pghost import free_port, make_base_dir, pg_unavailable_reason

SUPERUSER_PASSWORD = "sup3r 'secret' pw"  # odd characters on purpose: the harness must cope
PG_FIXTURES = frozenset({"pg_primary", "pg_fresh", "pg_pair", "pg_pair_shared"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if PG_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.pg)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    parts = []
    for what in ("initdb", "start", "basebackup"):
        values: list[float] = getattr(TIMINGS, what)
        if values:
            parts.append(f"{what} x{len(values)} mean {statistics.mean(values):.2f}s max {max(values):.2f}s")
    if parts:
        terminalreporter.write_line("pgcluster: " + "; ".join(parts))


def _require_pg() -> None:
    reason = pg_unavailable_reason()
    if reason:
        pytest.skip(reason)


def _remove(base: Path) -> None:
    if not os.environ.get("PGCLUSTER_KEEP"):
        shutil.rmtree(base, ignore_errors=True)


def _started(base: Path, name: str) -> PgCluster:
    cluster = PgCluster.init(base, superuser_password=SUPERUSER_PASSWORD, name=name)
    try:
        cluster.start()
    except BaseException:
        cluster.destroy()
        raise
    return cluster


@pytest.fixture(scope="session")
def pg_primary() -> Iterator[PgCluster]:
    _require_pg()
    base = make_base_dir("pgcluster-session-")
    try:
        cluster = _started(base, "primary")
        try:
            yield cluster
        finally:
            cluster.destroy()
    finally:
        _remove(base)


@pytest.fixture
def pg_fresh() -> Iterator[PgCluster]:
    _require_pg()
    base = make_base_dir("pgcluster-fresh-")
    try:
        cluster = _started(base, "fresh")
        try:
            yield cluster
        finally:
            cluster.destroy()
    finally:
        _remove(base)


def _pair(prefix: str) -> Iterator[PgPair]:
    _require_pg()
    base = make_base_dir(prefix)
    try:
        primary = _started(base, "primary")
        try:
            standby = primary.add_standby("standby")
            yield PgPair(primary, standby)
        finally:
            primary.destroy()  # stops and removes its standbys first
    finally:
        _remove(base)


@pytest.fixture
def pg_pair() -> Iterator[PgPair]:
    yield from _pair("pgcluster-pair-")


@pytest.fixture(scope="session")
def pg_pair_shared() -> Iterator[PgPair]:
    yield from _pair("pgcluster-sharedpair-")


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port on 127.0.0.1 that completes the TCP handshake but never sends a byte."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)  # never accept(): the kernel queues the connection, nobody answers
        yield s.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (connection refused)."""
    return free_port()
