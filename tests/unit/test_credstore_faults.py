"""Fault injection: ENOSPC (or any OS error) at every single system call of a set write or a rotation.

The os functions the store uses are wrapped to raise ``OSError(ENOSPC)`` at the Nth call, for every
N, either once (a transient error) or from then on (a disk that stays full). After each failure the
store must hold the complete previous set (or, if the error says so, the complete new one) and
report a clear, secret-free error; the next write must succeed and clean up.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from appliance.secrets import CredentialError, CredentialErrorKind, CredentialStore, Keyring

MARKER = "S3cr3tMarker"
NAMES = ("agent", "shell", "webapp")
OLD = {n: {"hosts": ["db1"], "ports": [5432], "user": n, "password": f"{MARKER} old '{n}' =\\ é"} for n in NAMES}
NEW = {n: {"hosts": ["db2"], "ports": [6432], "user": n, "password": f"{MARKER} new '{n}' =\\ é"} for n in NAMES}

WRITE_FSYNC = ("write", "fsync")
ALL_CALLS = ("open", "read", "write", "fsync", "mkdir", "symlink", "rename", "unlink", "rmdir", "fchmod", "fchown")


class Injector:
    """Counts calls to selected os functions and makes the Nth one (and later ones if sticky) fail."""

    def __init__(self, names: tuple[str, ...], fail_at: int | None, sticky: bool) -> None:
        self.names = names
        self.fail_at = fail_at
        self.sticky = sticky
        self.calls = 0
        self.failed: list[str] = []

    def wrap(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.fail_at is not None and (self.calls == self.fail_at or (self.sticky and self.calls > self.fail_at)):
                self.failed.append(name)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(*args, **kwargs)

        return wrapper


@contextmanager
def injected(
    monkeypatch: pytest.MonkeyPatch, names: tuple[str, ...], fail_at: int | None, sticky: bool = False
) -> Iterator[Injector]:
    injector = Injector(names, fail_at, sticky)
    with monkeypatch.context() as patch:
        for name in names:
            patch.setattr(os, name, injector.wrap(name, getattr(os, name)))
        yield injector


@pytest.fixture
def base(tmp_path: Path) -> Iterator[Path]:
    """A scratch directory, on tmpfs when there is one.

    These tests check the logic of every failure path, which needs thousands of writes; fsync on
    tmpfs is free, so they stay fast. Real-disk behaviour is covered by the crash test.
    """
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="credstore-faults-", dir=shm))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def fresh_store(base: Path) -> CredentialStore:
    base.mkdir()
    ring = Keyring(base / "keys")
    ring.create()
    store = CredentialStore(base / "creds", ring)
    store.write_set(OLD)
    return store


def generations(store: CredentialStore) -> list[str]:
    return sorted(e for e in os.listdir(store.root) if e.startswith(".gen-"))


def kids(store: CredentialStore) -> set[str]:
    ids = set()
    for name in store.names():
        header = (Path(store.root) / "current" / f"{name}.cred").read_bytes().split(b"\n")[1]
        ids.add(header.split(b'"kid":"')[1][:16].decode())
    return ids


def no_secret(exc: BaseException) -> None:
    text = "".join(traceback.format_exception(exc)) + repr(exc) + str(getattr(exc, "hint", ""))
    assert MARKER not in text


def count_calls(base: Path, monkeypatch: pytest.MonkeyPatch, names: tuple[str, ...], op: str) -> int:
    store = fresh_store(base / "count")
    with injected(monkeypatch, names, None) as injector:
        store.write_set(NEW) if op == "write" else store.rotate_key()
    return injector.calls


@pytest.mark.parametrize("sticky", [False, True], ids=["once", "disk-stays-full"])
def test_enospc_at_every_write_and_fsync_keeps_the_old_set(
    base: Path, monkeypatch: pytest.MonkeyPatch, sticky: bool
) -> None:
    total = count_calls(base, monkeypatch, WRITE_FSYNC, "write")
    assert total >= 3 + 3 + 2  # 3 file writes, 3 file fsyncs, directory fsyncs
    failures = 0
    for n in range(1, total + 1):
        store = fresh_store(base / f"{n}")
        old_gens = generations(store)
        with injected(monkeypatch, WRITE_FSYNC, n, sticky):
            try:
                store.write_set(NEW)
                raised: CredentialError | None = None
            except CredentialError as exc:
                raised = exc
        if raised is None:
            # Only the very last, best-effort fsync (after the switch) may fail without an error.
            assert store.read_all() == NEW, n
            continue
        failures += 1
        assert raised.kind is CredentialErrorKind.WRITE_FAILED, (n, raised)
        assert "No space left on device" in str(raised)
        assert "previous credential set is unchanged" in str(raised)
        assert raised.hint is not None and "free disk space" in raised.hint
        no_secret(raised)
        assert store.read_all() == OLD, n
        assert generations(store) == old_gens, n  # the half-written generation was removed
        assert not os.path.lexists(Path(store.root) / ".current.tmp")
        store.write_set(NEW)  # the disk has space again
        assert store.read_all() == NEW and len(generations(store)) == 1
    assert failures >= total - 1  # all but the best-effort fsync after old generations are removed


@pytest.mark.parametrize("sticky", [False, True], ids=["once", "sticky"])
def test_error_at_every_system_call_leaves_one_complete_set(
    base: Path, monkeypatch: pytest.MonkeyPatch, sticky: bool
) -> None:
    total = count_calls(base, monkeypatch, ALL_CALLS, "write")
    outcomes = {"old": 0, "new": 0}
    for n in range(1, total + 1):
        store = fresh_store(base / f"{n}")
        with injected(monkeypatch, ALL_CALLS, n, sticky) as injector:
            try:
                store.write_set(NEW)
                raised: Exception | None = None
            except Exception as exc:  # anything but a CredentialError is a bug
                raised = exc
        state = store.read_all()
        if raised is None:
            assert state == NEW, (n, injector.failed)
            outcomes["new"] += 1
        else:
            assert isinstance(raised, CredentialError), (n, injector.failed, raised)
            no_secret(raised)
            if "could not be switched back" in str(raised):
                assert state == NEW, n  # the error says so, and the set is complete
            else:
                assert state == OLD, (n, injector.failed, raised)
            outcomes["old" if state == OLD else "new"] += 1
        store.write_set(NEW)  # recovers and cleans up whatever was left
        assert store.read_all() == NEW and len(generations(store)) == 1
        assert sorted(os.listdir(store.root)) == sorted([".lock", "current", generations(store)[0]])
    assert outcomes["old"] > total // 2


@pytest.mark.parametrize("names", [WRITE_FSYNC, ALL_CALLS], ids=["write-fsync", "all-calls"])
@pytest.mark.parametrize("sticky", [False, True], ids=["once", "sticky"])
def test_rotation_failing_at_every_call_keeps_old_key_and_data(
    base: Path, monkeypatch: pytest.MonkeyPatch, names: tuple[str, ...], sticky: bool
) -> None:
    total = count_calls(base, monkeypatch, names, "rotate")
    for n in range(1, total + 1):
        store = fresh_store(base / f"{n}")
        ring = store.keyring
        old_kid = ring.load_current().key_id
        with injected(monkeypatch, names, n, sticky) as injector:
            try:
                store.rotate_key()
                raised: Exception | None = None
            except Exception as exc:
                raised = exc
        assert store.read_all() == OLD, (n, injector.failed)  # same data whatever happened
        current = ring.load_current().key_id
        assert kids(store) <= set(ring.key_ids())  # every file's key is present
        if raised is None:
            assert current != old_kid and ring.key_ids() == [current] and kids(store) == {current}
        else:
            assert isinstance(raised, CredentialError), (n, injector.failed, raised)
            no_secret(raised)
            assert old_kid in ring.key_ids(), (n, injector.failed)  # the old key is only retired last
            if "previous credential set is unchanged" in str(raised):
                assert current == old_kid and kids(store) == {old_kid}
        final = store.rotate_key()  # a clean retry finishes the job
        assert ring.key_ids() == [final.key_id] and kids(store) == {final.key_id}
        assert store.read_all() == OLD
