"""The service backends' bookkeeping with real processes, and the agent's reconciliation of a role's services."""

from __future__ import annotations

import os
import time
from pathlib import Path

from appliance.clock import FakeClock
from appliance.config import load_config
from appliance.ha.memstore import InMemoryStore
from appliance.ha.model import Action
from appliance.ha.runtime import Runtime
from appliance.services import ProcessServices, ServiceManager


def config(tmp_path: Path, demo: list[str]) -> Path:
    path = tmp_path / "appliance.toml"
    path.write_text(f'[paths]\nstate_dir = "{tmp_path / "state"}"\n[hostname]\nbackend = "file"\n'
                    '[services]\nbackend = "process"\nstop_timeout_s = 5\n'
                    f'[[services.process]]\nname = "demo"\ncommand = {demo!r}\nroles = ["primary"]\n'.replace("'", '"'))
    return path


def zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except OSError:
        return False


def test_a_service_that_exits_is_reaped_and_reported_missing(tmp_path: Path) -> None:
    services = ProcessServices(load_config(config(tmp_path, ["/bin/sh", "-c", "exit 0"])))
    assert services.start("primary") == ["demo"]
    pid = int((tmp_path / "state" / "run" / "demo.pid").read_text())
    deadline = time.monotonic() + 5
    while services.running() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert services.running() == [] and services.missing("primary") == ["demo"]
    assert not zombie(pid) and not os.path.exists(f"/proc/{pid}")  # reaped, not left a zombie


def test_a_stopped_service_leaves_no_zombie(tmp_path: Path) -> None:
    services = ProcessServices(load_config(config(tmp_path, ["/bin/sleep", "60"])))
    services.start("primary")
    pid = int((tmp_path / "state" / "run" / "demo.pid").read_text())
    assert services.stop() == ["demo"]
    assert not os.path.exists(f"/proc/{pid}")


class Recording(ServiceManager):
    """The primary's service exited by itself (at its fence deadline) while the lease was renewed."""

    def __init__(self) -> None:
        self.role: str | None = None
        self.alive: set[str] = set()
        self.starts = 0
        self.startable = True

    def start(self, role: str) -> list[str]:
        self.role, self.starts = role, self.starts + 1
        self.alive = {"demo"} if role == "primary" and self.startable else set()
        return sorted(self.alive)

    def stop(self) -> list[str]:
        was, self.alive = sorted(self.alive), set()
        return was

    def running(self) -> list[str]:
        return sorted(self.alive)

    def wanted(self, role: str) -> list[str]:
        return ["demo"] if role == "primary" else []


def test_the_next_tick_starts_a_primary_service_that_should_run_and_does_not() -> None:
    clock = FakeClock()
    store = InMemoryStore(clock, keepalive_s=1.0)
    store.register("a", "EMS-1", 10)
    services = Recording()
    runtime = Runtime(store, "a", services, clock, keepalive_s=1.0)
    assert runtime.tick().action is Action.ACQUIRE and services.alive == {"demo"}
    services.alive.clear()  # it exited at the very moment the lease was renewed
    clock.advance(0.5)
    decision = runtime.tick()
    assert services.alive == {"demo"} and "started demo again" in decision.reason
    services.alive.clear()
    services.startable = False
    clock.advance(0.5)
    decision = runtime.tick()
    assert runtime.services_missing == ["demo"] and "demo not running and cannot be started" in decision.reason
