"""One contract suite for :class:`~appliance.credentials.CredentialBackend`, run against BOTH implementations.

``file``: :class:`FileCredentialBackend` on real directories under ``tmp_path`` (nothing mocked).
``memory``: :class:`InMemoryCredentialBackend`. Each test says what the contract promises, never how
a backend keeps it; the file format, modes and fault cases of the file store itself are tested in
test_credstore*.py.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from appliance import credentials
from appliance.config import Config, CredentialsConfig, with_state_dir
from appliance.credentials import CredentialBackend
from appliance.credentials.file import FileCredentialBackend
from appliance.credentials.memory import InMemoryCredentialBackend
from appliance.errors import ApplianceError, ConfigError, NotConfigured, UsageError
from appliance.secrets import CredentialMissing, InvalidCredentialError, UnknownKeyError

MARKER = "S3cr3tMarker"  # every secret value contains it, so one substring check finds any leak
NASTY = f"-{MARKER} 'q\" = \\ %s ü€😀\n\x00"  # quotes, '=', backslash, '%', leading '-', non-ASCII, NUL


def make_creds(tag: str = "v1", names: tuple[str, ...] = ("origin", "agent", "shell")) -> dict[str, dict[str, Any]]:
    return {
        name: {
            "hosts": ["db1.example", "::1"], "ports": [5432, 6432], "user": f"{name}_user",
            "password": f"{NASTY}-{name}-{tag}", "dbname": "appliance", "tag": tag,
        }
        for name in names
    }


def plain(got: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: dict(fields) for name, fields in got.items()}


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert MARKER not in text and "S3cr3t" not in text


def check_error(exc: BaseException) -> None:
    """No secret in the message, hint or full traceback (chained exceptions included)."""
    hint = exc.hint if isinstance(exc, ApplianceError) else None
    assert_no_secret(str(exc), repr(exc), "".join(traceback.format_exception(exc)), hint or "")


@dataclass
class Harness:
    """One implementation under test, and the few things a test must do to it from outside."""

    kind: str
    backend: CredentialBackend
    other: Callable[[], CredentialBackend]  # another consumer of the same credentials (the agent, say)
    lose_key: Callable[[], None]  # the master key disappears (deleted key directory)


def file_harness(tmp_path: Path) -> Harness:
    creds, keys = tmp_path / "credentials", tmp_path / "keys"
    return Harness("file", FileCredentialBackend(creds, keys), lambda: FileCredentialBackend(creds, keys),
                   lambda: shutil.rmtree(keys))


def memory_harness(tmp_path: Path) -> Harness:
    backend = InMemoryCredentialBackend()
    return Harness("memory", backend, lambda: backend, backend.lose_key)


@pytest.fixture(params=[file_harness, memory_harness], ids=["file", "memory"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    made: Harness = request.param(tmp_path)
    return made


@pytest.fixture
def ready(harness: Harness) -> CredentialBackend:
    assert harness.backend.initialise()
    return harness.backend


# --- round trip and names ---------------------------------------------------------------------------


def test_round_trip(ready: CredentialBackend) -> None:
    creds = make_creds()
    creds["origin"]["ports"] = (5432, 6432)  # JSON has no tuples: read back as a list
    ready.write_set(creds)
    got = ready.read_set()
    assert sorted(got) == ["agent", "origin", "shell"]
    assert plain(got) == make_creds()
    assert got["agent"]["password"] == f"{NASTY}-agent-v1"  # byte for byte


def test_a_write_replaces_the_whole_set(ready: CredentialBackend) -> None:
    ready.write_set(make_creds("v1"))
    ready.write_set(make_creds("v2", names=("origin", "agent")))
    assert plain(ready.read_set()) == make_creds("v2", names=("origin", "agent"))


def test_what_a_read_returns_cannot_change_the_set(ready: CredentialBackend) -> None:
    ready.write_set(make_creds())
    got = ready.read_set()
    got["agent"]["hosts"].append("evil.example")
    got.pop("origin")
    assert plain(ready.read_set()) == make_creds()


def test_another_consumer_reads_the_same_set(harness: Harness, ready: CredentialBackend) -> None:
    ready.write_set(make_creds())
    assert plain(harness.other().read_set()) == make_creds()


@pytest.mark.parametrize(
    "creds",
    [
        {},
        {"": {"a": 1}},
        {"../agent": {"a": 1}},
        {".hidden": {"a": 1}},
        {"a/b": {"a": 1}},
        {"x" * 65: {"a": 1}},
        {5: {"a": 1}},
        {"agent": {"password": MARKER, "bad": object()}},
        {"agent": {"password": MARKER, "nan": float("nan")}},
        {"agent": [MARKER]},
    ],
    ids=["empty", "empty-name", "dotdot", "hidden", "slash", "too-long", "not-a-string", "object", "nan", "not-a-map"],
)
def test_invalid_names_and_payloads_change_nothing(ready: CredentialBackend, creds: Any) -> None:
    ready.write_set(make_creds())
    before = ready.generation()
    with pytest.raises(InvalidCredentialError) as info:
        ready.write_set(creds)
    assert isinstance(info.value, UsageError)
    check_error(info.value)
    assert ready.generation() == before
    assert plain(ready.read_set()) == make_creds()


def test_nothing_shows_a_value(harness: Harness, ready: CredentialBackend) -> None:
    ready.write_set(make_creds())
    got = ready.read_set()
    assert_no_secret(repr(got), str(got), repr(got["agent"]), repr(ready), repr(harness.other()))


# --- atomicity and generations ----------------------------------------------------------------------


def test_a_reader_sees_the_old_or_the_new_set_never_a_mix(harness: Harness, ready: CredentialBackend) -> None:
    names = ("origin", "agent", "shell", "webapp")
    ready.write_set(make_creds("t0", names))
    stop = threading.Event()
    writes = 0

    def writer() -> None:
        nonlocal writes
        while not stop.is_set():
            writes += 1
            ready.write_set(make_creds(f"t{writes}", names))

    thread = threading.Thread(target=writer)
    thread.start()
    reader = harness.other()
    seen: set[str] = set()
    reads = 0
    try:
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and (reads < 100 or len(seen) < 5):
            got = plain(reader.read_set())
            tags = {fields["tag"] for fields in got.values()}
            assert len(tags) == 1, f"a mixed set: {sorted(tags)}"
            tag = tags.pop()
            assert got == make_creds(tag, names)
            seen.add(tag)
            reads += 1
    finally:
        stop.set()
        thread.join()
    assert writes >= 2 and len(seen) >= 2, (writes, reads, sorted(seen))


def test_generation_changes_on_every_write_and_never_on_a_read(harness: Harness) -> None:
    backend, watcher = harness.backend, harness.other()
    assert backend.generation() is None
    backend.initialise()
    assert backend.generation() is None  # a key, but no set yet
    backend.write_set(make_creds())
    first = watcher.generation()
    assert first is not None and first == backend.generation()
    backend.read_set()
    backend.check_ready()
    backend.initialise()
    assert watcher.generation() == first and not watcher.changed_since(first)
    backend.write_set(make_creds())  # the same content is still a new set
    second = watcher.generation()
    assert second not in (None, first)
    assert watcher.changed_since(first) and not watcher.changed_since(second) and watcher.changed_since(None)
    backend.rotate_key()
    assert watcher.changed_since(second)


# --- keys: rotation and readiness ---------------------------------------------------------------------


def test_rotation_keeps_the_values_and_changes_the_key(ready: CredentialBackend) -> None:
    ready.write_set(make_creds())
    before = ready.key_id()
    first = ready.rotate_key()
    assert first.previous_key_id == before and ready.key_id() == first.key_id
    assert first.previous_key_id != first.key_id and first.files == 3
    assert plain(ready.read_set()) == make_creds()
    second = ready.rotate_key()
    assert second.previous_key_id == first.key_id and second.key_id not in (first.key_id, first.previous_key_id)
    assert plain(ready.read_set()) == make_creds()
    ready.check_ready()


def test_rotation_without_a_set_just_replaces_the_key(ready: CredentialBackend) -> None:
    rotation = ready.rotate_key()
    assert rotation.files == 0 and ready.generation() is None
    ready.write_set(make_creds())
    assert ready.rotate_key().previous_key_id == rotation.key_id


def test_without_a_key_nothing_can_be_written_or_rotated(harness: Harness) -> None:
    backend = harness.backend
    for call in (backend.check_ready, backend.key_id, backend.read_set, backend.rotate_key,
                 lambda: backend.write_set(make_creds())):
        with pytest.raises(CredentialMissing) as info:
            call()
        assert isinstance(info.value, NotConfigured) and info.value.hint
        check_error(info.value)
    assert backend.generation() is None


def test_initialise_is_idempotent(harness: Harness) -> None:
    backend = harness.backend
    assert backend.initialise() is True
    backend.check_ready()
    backend.write_set(make_creds())
    assert backend.initialise() is False
    assert harness.other().initialise() is False
    assert plain(backend.read_set()) == make_creds()  # the key in use was kept


def test_a_lost_key_is_reported_and_a_new_write_recovers(harness: Harness, ready: CredentialBackend) -> None:
    ready.write_set(make_creds())
    harness.lose_key()
    with pytest.raises(CredentialMissing) as missing:
        ready.check_ready()
    check_error(missing.value)
    with pytest.raises(UnknownKeyError) as unknown:
        ready.read_set()
    assert isinstance(unknown.value, NotConfigured) and unknown.value.hint
    check_error(unknown.value)
    assert ready.initialise() is True  # a new key: the set stays unreadable, and rotating it fails
    before = ready.generation()
    with pytest.raises(UnknownKeyError):
        ready.rotate_key()
    assert ready.generation() == before
    ready.check_ready()
    ready.write_set(make_creds("v2"))  # what redirect does: write the set again
    assert plain(ready.read_set()) == make_creds("v2")


# --- the factory ---------------------------------------------------------------------------------------


def test_the_factory_builds_the_configured_backend(tmp_path: Path) -> None:
    config = with_state_dir(Config(), tmp_path)
    backend = credentials.backend_for(config)
    assert isinstance(backend, FileCredentialBackend)
    assert not (tmp_path / "keys").exists() and not (tmp_path / "credentials").exists()  # built, nothing touched
    backend.initialise()
    backend.write_set(make_creds())
    assert (config.credentials_dir / "current").is_symlink() and (config.key_dir / "current").is_symlink()
    other = replace(config, credentials=CredentialsConfig(dir=tmp_path / "c2", key_dir=tmp_path / "k2"))
    assert credentials.backend_for(other).generation() is None


def test_an_unknown_backend_is_a_config_error(tmp_path: Path) -> None:
    config = replace(Config(), credentials=CredentialsConfig(backend="vault"))
    with pytest.raises(ConfigError, match="unknown credential backend 'vault'"):
        credentials.backend_for(config)


def test_importing_the_seam_does_not_load_cryptography() -> None:
    # The shell's start-up path (`appliance-shell -c "system get hostname"`) imports these modules.
    code = ("import sys, appliance.credentials, appliance.node, commands.system; "
            "print('cryptography' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"
