"""Starting and stopping this node's services for a role: the backends ``none``, ``process``, ``systemd``.

``process`` (sandboxes and tests) runs the configured commands as detached children with a pid file
each under ``<state_dir>/run`` and their output in ``<state_dir>/log``; stopping sends SIGTERM, then
SIGKILL after ``stop_timeout_s``. ``systemd`` starts and stops the configured units with
``systemctl --no-ask-password start|stop``, as whatever user this process runs as: root may, and on the
appliance image polkit lets the agent's user manage exactly the configured units (the rules are
written from the same configuration, :mod:`appliance.privileged.polkit`); anyone else gets systemd's
"access denied" as a one-line error. Reading the state (``systemctl is-active``) needs no privilege.
Every wait is bounded.
"""

from __future__ import annotations

import os
import signal
from abc import ABC, abstractmethod
from pathlib import Path

from appliance.clock import Clock, SystemClock
from appliance.config import Config, ProcessService
from appliance.errors import CommandFailed
from appliance.fsutil import write_atomic
from appliance.hostname import backend_for
from appliance.proc import run_tool

ROLES = ("primary", "standby")
# Set back to their defaults in a service: ignored signals survive exec, and the shell ignores some.
_RESET_SIGNALS = (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGHUP,
                  signal.SIGTERM, signal.SIGPIPE)


class ServiceManager(ABC):
    @abstractmethod
    def start(self, role: str) -> list[str]:
        """Start the services of ``role`` (stopping those of the other role); return their names."""

    @abstractmethod
    def stop(self) -> list[str]:
        """Stop every service this node runs; return the names of those that were running."""

    @abstractmethod
    def running(self) -> list[str]:
        """Names of the services running now."""

    @abstractmethod
    def wanted(self, role: str) -> list[str]:
        """Names of the services that run in ``role``."""

    def missing(self, role: str) -> list[str]:
        """The services of ``role`` that should run and do not (one that exited on its own at the fence
        deadline while the lease was being renewed, one that crashed). The agent starts them again."""
        running = set(self.running())
        return [name for name in self.wanted(role) if name not in running]


class NoServices(ServiceManager):
    def start(self, role: str) -> list[str]:
        return []

    def stop(self) -> list[str]:
        return []

    def running(self) -> list[str]:
        return []

    def wanted(self, role: str) -> list[str]:
        return []


class ProcessServices(ServiceManager):
    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        self.services = config.services.process
        self.run_dir = config.paths.run_dir
        self.log_dir = config.paths.state_dir / "log"
        self.stop_timeout_s = config.services.stop_timeout_s
        self.config_path = config.source
        self.clock = clock or SystemClock()
        self.config = config

    def _pidfile(self, service: ProcessService) -> Path:
        return self.run_dir / f"{service.name}.pid"

    def _pid(self, service: ProcessService) -> int | None:
        try:
            pid = int(self._pidfile(service).read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def running(self) -> list[str]:
        return [s.name for s in self.services if self._pid(s) is not None]

    def wanted(self, role: str) -> list[str]:
        return [s.name for s in self.services if role in s.roles]

    def start(self, role: str) -> list[str]:
        started = []
        for service in self.services:
            if role not in service.roles:
                self._stop_one(service)
                continue
            if self._pid(service) is not None:
                started.append(service.name)
                continue
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.log_dir.mkdir(parents=True, exist_ok=True)
            env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "APPLIANCE_ROLE": role,
                   "APPLIANCE_FENCE_FILE": str(self.config.fence_file),
                   "APPLIANCE_NODE": backend_for(self.config).get()}
            if self.config_path is not None:
                env["APPLIANCE_CONFIG"] = str(self.config_path)
            log = str(self.log_dir / f"{service.name}.log")
            # posix_spawn, not fork+exec with preexec_fn: its own session (a Ctrl-C at the shell is not
            # the service's), and the signals the shell ignores (Ctrl-Z, Ctrl-\, Ctrl-C during a
            # rollback) reset to their defaults, since ignored signals survive exec.
            pid = os.posix_spawn(
                service.command[0], list(service.command), env,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_OPEN, 1, log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644),
                    (os.POSIX_SPAWN_DUP2, 1, 2),
                ],
                setsid=True,
                setsigdef=_RESET_SIGNALS,
                setsigmask=(),
            )
            _write_pid(self._pidfile(service), pid)
            started.append(service.name)
        return started

    def stop(self) -> list[str]:
        return [s.name for s in self.services if self._stop_one(s)]

    def _stop_one(self, service: ProcessService) -> bool:
        pid = self._pid(service)
        if pid is None:
            self._pidfile(service).unlink(missing_ok=True)
            return False
        _signal(pid, signal.SIGTERM)
        deadline = self.clock.monotonic() + self.stop_timeout_s
        while _alive(pid) and self.clock.monotonic() < deadline:
            self.clock.sleep(0.01)
        if _alive(pid):
            _signal(pid, signal.SIGKILL)
            deadline = self.clock.monotonic() + 5
            while _alive(pid) and self.clock.monotonic() < deadline:
                self.clock.sleep(0.01)
        self._pidfile(service).unlink(missing_ok=True)
        return True


class SystemdServices(ServiceManager):
    def __init__(self, config: Config) -> None:
        self.config = config
        self.primary = config.services.primary_units
        self.standby = config.services.standby_units
        self.timeout_s = config.services.stop_timeout_s + 10
        self.systemctl = config.tools.systemctl

    def _control(self, verb: str, units: list[str]) -> None:
        control_units(self.config, verb, units, timeout_s=self.timeout_s)

    def start(self, role: str) -> list[str]:
        wanted = list(self.standby) + (list(self.primary) if role == "primary" else [])
        if role != "primary" and self.primary:
            self._control("stop", list(self.primary))
        if wanted:
            self._control("start", wanted)
        return wanted

    def stop(self) -> list[str]:
        units = list(self.primary) + list(self.standby)
        was = self.running()
        if units:
            self._control("stop", units)
        return was

    def running(self) -> list[str]:
        import subprocess  # only when systemctl actually runs: keeps start-up fast (as in appliance.proc)

        units = list(self.primary) + list(self.standby)
        if not units:
            return []
        # One call for every unit: it prints one state per line, in order (the agent asks at every tick).
        done = subprocess.run([str(self.systemctl), "is-active", "--", *units], env={"LC_ALL": "C"},
                              timeout=self.timeout_s, check=False, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True)
        states = done.stdout.split()
        return [unit for unit, state in zip(units, states, strict=False) if state == "active"]

    def wanted(self, role: str) -> list[str]:
        return list(self.standby) + (list(self.primary) if role == "primary" else [])


def control_units(config: Config, verb: str, units: list[str], *, timeout_s: float) -> None:
    """``systemctl --no-ask-password VERB -- UNITS``: polkit (or being root) decides; never a prompt.

    :raises CommandFailed: systemctl refused or failed (its first line), or timed out.
    """
    run_tool(config.tools.systemctl, ["--no-ask-password", verb, "--", *units], timeout_s=timeout_s)


def restart_unit(config: Config, unit: str) -> str:
    """Restart ``unit`` (``service restart``); a primary-only unit only if it runs. Returns what was done."""
    # A primary-only unit runs where this node acts as primary; restarting it must never start it on
    # a standby, so it is restarted only if it runs.
    verb = "try-restart" if unit in config.services.primary_units else "restart"
    control_units(config, verb, [unit], timeout_s=config.services.stop_timeout_s + 30)
    return f"{verb} {unit}: done"


def manager_for(config: Config) -> ServiceManager:
    if config.services.backend == "process":
        return ProcessServices(config)
    if config.services.backend == "systemd":
        return SystemdServices(config)
    return NoServices()


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs. A child of this process that exited is reaped here (no zombie is left)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass  # not our child (started by another process, e.g. redirect in the shell): just look at it
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return False
    return data[data.rindex(b")") + 2 :][:1] not in (b"Z", b"X")  # a zombie has stopped


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError as exc:
        raise CommandFailed(f"cannot stop process {pid}: permission denied") from exc


def _write_pid(path: Path, pid: int) -> None:
    write_atomic(path, f"{pid}\n", mode=0o644)
