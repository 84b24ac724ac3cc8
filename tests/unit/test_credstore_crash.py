"""Real crashes and real concurrency: a child process writing credential sets is SIGKILLed at random
moments (no mocks), and readers run while a child process keeps replacing the set.
"""

from __future__ import annotations

import importlib.util
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from appliance.secrets import CredentialStore, Keyring

CHILD = Path(__file__).with_name("credstore_crash_child.py")
PROJECT = Path(__file__).resolve().parents[2]
MIN_KILLS = 30
MAX_KILLS = 45
TIME_BUDGET = 8.0  # seconds; at least MIN_KILLS are done even if the machine is slow


def _child_module() -> Any:
    spec = importlib.util.spec_from_file_location("credstore_crash_child", CHILD)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


creds_for = _child_module().creds_for


def start_child(tmp_path: Path, start_gen: int, rotate_every: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(PROJECT))
    proc = subprocess.Popen(
        [
            sys.executable,
            str(CHILD),
            str(tmp_path / "creds"),
            str(tmp_path / "keys"),
            str(start_gen),
            str(rotate_every),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=str(PROJECT),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line != b"ready\n":
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"child did not start: {line!r} {err.decode(errors='replace')}")
    return proc


def setup(tmp_path: Path) -> tuple[Keyring, CredentialStore]:
    ring = Keyring(tmp_path / "keys")
    ring.create()
    store = CredentialStore(tmp_path / "creds", ring)
    store.write_set(creds_for(0))
    return ring, store


def file_kids(store: CredentialStore) -> set[str]:
    kids = set()
    for name in store.names():
        header = (Path(store.root) / "current" / f"{name}.cred").read_bytes().split(b"\n")[1]
        kids.add(header.split(b'"kid":"')[1][:16].decode())
    return kids


def test_sigkill_at_random_moments_leaves_a_complete_old_or_new_set(tmp_path: Path) -> None:
    ring, store = setup(tmp_path)
    rng = random.Random(os.getpid() ^ int(time.time()))
    committed = 0  # the newest generation known to be completely written
    stats: Counter[str] = Counter()
    started = time.monotonic()
    kills = 0
    while kills < MAX_KILLS and (kills < MIN_KILLS or time.monotonic() - started < TIME_BUDGET):
        proc = start_child(tmp_path, committed, rotate_every=4)
        time.sleep(rng.uniform(0.0, 0.03))
        os.kill(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        kills += 1
        assert proc.returncode == -signal.SIGKILL, err.decode(errors="replace")  # it did not die by itself
        reported = [int(line.split()[1]) for line in out.decode().splitlines()]
        committed = max([committed, *reported])

        # Evidence of where the kill landed: a staged generation or temporary link left behind
        # means the child died in the middle of a write.
        entries = os.listdir(store.root)
        if sum(e.startswith(".gen-") for e in entries) > 1 or ".current.tmp" in entries:
            stats["mid-write"] += 1
        if len(ring.key_ids()) > 1:
            stats["mid-rotation"] += 1

        got = store.read_all()
        gens = {cred["gen"] for cred in got.values()}
        assert len(gens) == 1, f"mixed set after kill {kills}: {sorted(gens)}"
        gen = gens.pop()
        # Entirely the last reported set, or entirely the one being written when it was killed.
        assert gen in (committed, committed + 1), (gen, committed)
        assert got == creds_for(gen)
        assert file_kids(store) <= set(ring.key_ids())
        ring.load_current()
        stats["new" if gen == committed + 1 else "old"] += 1
        committed = gen
    elapsed = time.monotonic() - started
    assert kills >= MIN_KILLS and committed >= kills // 2  # the children made progress
    assert stats["mid-write"] >= 3, stats  # the kills really hit writes in progress
    # The next writer cleans up everything the killed ones left behind.
    store.write_set(creds_for(committed + 1))
    store.rotate_key()
    assert sum(e.startswith(".gen-") for e in os.listdir(store.root)) == 1
    assert len(ring.key_ids()) == 1
    assert store.read_all() == creds_for(committed + 1)
    sys.stderr.write(f"\n{kills} kills in {elapsed:.1f}s, {committed} sets written, {dict(stats)}\n")


def test_readers_see_complete_sets_while_a_writer_runs(tmp_path: Path) -> None:
    ring, store = setup(tmp_path)
    proc = start_child(tmp_path, 0, rotate_every=3)
    try:
        reads = 0
        last_gen = 0
        seen: set[int] = set()
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            # A second store object, as a separate consumer would have.
            reader = CredentialStore(store.root, Keyring(ring.directory))
            got = reader.read_all()
            gens = {cred["gen"] for cred in got.values()}
            assert len(gens) == 1, sorted(gens)
            gen = gens.pop()
            assert got == creds_for(gen)
            assert gen >= last_gen  # never goes back to an older set
            last_gen = gen
            seen.add(gen)
            agent = reader.read("agent")
            assert agent["gen"] >= gen and agent["user"] == "agent"
            reads += 1
    finally:
        proc.kill()
        proc.communicate()
    assert reads > 50 and len(seen) > 10, (reads, len(seen))
