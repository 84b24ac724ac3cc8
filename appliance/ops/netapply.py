"""Commit-confirm for network changes, as root: apply, then confirm or have it reverted by itself.

``system set network`` must never lock the admin out of a remote VM. So the privileged helper:

1. keeps the interface's current file (or its absence) in a *pending* record, with a deadline;
2. writes the new ``10-appliance-IF.network``;
3. arms a systemd timer (``systemd-run --on-active``) that runs ``privhelper network-revert`` at
   the deadline, *before* anything takes effect;
4. has systemd-networkd reload its files (the interface is reconfigured at once).

``network-confirm`` before the deadline removes the record (the commit point) and stops the timer.
``network-revert`` (the timer, a boot-time unit, or a confirmation that came too late) puts the
previous file back and reloads. The record lives in ``<root>/var/lib/appliance-network`` (root's,
0755; the record itself holds no secret and is 0644, so ``system get network`` can show it), so a
reboot before the confirmation also reverts: the boot unit runs before systemd-networkd.

One change at a time (a lock file serialises the helper's runs): a second ``network-apply`` while
one waits is refused, unless its deadline has passed (then it is reverted first). The decisions
depend only on the :class:`~appliance.clock.Clock` and the files, so they are tested with a fake
clock; the timer is systemd's.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from appliance.clock import Clock
from appliance.config import Config
from appliance.errors import ApplianceError, CommandFailed, Conflict, NotConfigured
from appliance.fsutil import write_atomic
from appliance.ops.netconf import NetworkSpec, check_interface, file_name
from appliance.proc import run_tool

REVERT_UNIT = "appliance-network-deadline"  # a transient timer and service (not the boot unit)
TOOL_TIMEOUT_S = 30.0

# Runs a program by absolute path with an argv list (appliance.proc.run_tool); tests record instead.
Runner = Callable[[Path, Sequence[str]], str]


def _run(tool: Path, args: Sequence[str]) -> str:
    return run_tool(tool, args, timeout_s=TOOL_TIMEOUT_S)


def interface_exists(name: str) -> bool:
    """The interface is in this process's network namespace (asked of the kernel, not of /sys, which a
    container may show from another namespace)."""
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def state_dir(config: Config) -> Path:
    return config.system.root / "var" / "lib" / "appliance-network"


def pending_path(config: Config) -> Path:
    return state_dir(config) / "pending.json"


def network_dir(config: Config) -> Path:
    return config.system.root / "etc" / "systemd" / "network"


@dataclass(frozen=True)
class Pending:
    """A change waiting for confirmation: what was there before, what is there now, and until when."""

    interface: str
    file: str  # the file name under the network directory
    previous: str | None  # its text before the change; None: there was none
    spec: dict[str, object]
    applied_at: float  # wall clock, seconds since the epoch (UTC)
    deadline: float

    def due(self, now: datetime) -> bool:
        return now.timestamp() >= self.deadline

    def deadline_text(self) -> str:
        return datetime.fromtimestamp(self.deadline, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Pending:
        doc = json.loads(text)
        return cls(interface=check_interface(str(doc["interface"])), file=file_name(str(doc["interface"])),
                   previous=doc["previous"] if isinstance(doc["previous"], str) else None,
                   spec=dict(doc["spec"]), applied_at=float(doc["applied_at"]), deadline=float(doc["deadline"]))


def read_pending(config: Config) -> Pending | None:
    """The change waiting for confirmation, if any (readable by anyone: it holds no secret)."""
    try:
        return Pending.from_json(pending_path(config).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise NotConfigured(f"the pending network change record {pending_path(config)} is unreadable: {exc}",
                            hint="run `system confirm network` to discard it, or restore the file") from None


class NetworkChanges:
    """The helper's side of ``system set network`` / ``system confirm network`` (see the module)."""

    def __init__(self, config: Config, clock: Clock, run: Runner = _run,
                 exists: Callable[[str], bool] = interface_exists) -> None:
        self.config = config
        self.clock = clock
        self.run = run
        self.exists = exists
        self.tools = config.tools
        self.net_dir = network_dir(config)
        self.state_dir = state_dir(config)
        self.pending_file = pending_path(config)

    # --- the three requests -----------------------------------------------------------------------

    def apply(self, spec: NetworkSpec, confirm_s: int) -> str:
        spec.check()
        if not self.exists(spec.interface):
            raise NotConfigured(f"there is no interface {spec.interface} on this node",
                                hint="see `system get network` for the interfaces")
        with self._locked():
            notes = []
            waiting = read_pending(self.config)
            if waiting is not None:
                if not waiting.due(self.clock.now()):
                    raise Conflict(f"a change to {waiting.interface} waits for confirmation until "
                                   f"{waiting.deadline_text()}",
                                   hint="run `system confirm network` first, or wait for it to be reverted")
                notes.append(self._revert(waiting, "its deadline had passed") + " ")
            target = self.net_dir / file_name(spec.interface)
            previous = target.read_text(encoding="utf-8") if target.exists() else None
            now = self.clock.now().timestamp()
            pending = Pending(spec.interface, target.name, previous, spec.as_dict(), now, now + confirm_s)
            write_atomic(self.pending_file, pending.to_json(), mode=0o644)
            try:
                write_atomic(target, spec.render(), mode=0o644)
                self._arm(confirm_s)
            except (OSError, ApplianceError) as exc:
                self._restore(pending)
                self.pending_file.unlink(missing_ok=True)
                raise CommandFailed(f"the change to {spec.interface} was not applied: {_reason(exc)}") from None
            try:
                self._reload()
            except ApplianceError as exc:
                self._revert(pending, "systemd-networkd did not accept it")
                raise CommandFailed(f"systemd-networkd could not reload: {exc.message}; "
                                    "the previous configuration is back") from None
            return (f"{''.join(notes)}applied {spec.summary()}; it is reverted at {pending.deadline_text()} "
                    "unless confirmed")

    def confirm(self) -> str:
        with self._locked():
            pending = read_pending(self.config)
            if pending is None:
                raise Conflict("no network change is waiting for confirmation")
            if pending.due(self.clock.now()):
                self._revert(pending, "the confirmation came after the deadline")
                raise CommandFailed(f"too late: the deadline was {pending.deadline_text()}; the previous "
                                    f"configuration of {pending.interface} is back")
            self.pending_file.unlink()  # the commit point: a revert from now on finds nothing to do
            self._disarm()
            return f"confirmed: {pending.interface} keeps its new configuration"

    def revert(self, reason: str = "it was not confirmed in time") -> str:
        with self._locked():
            pending = read_pending(self.config)
            if pending is None:
                return "nothing to revert"
            return self._revert(pending, reason)

    # --- steps ------------------------------------------------------------------------------------

    def _revert(self, pending: Pending, reason: str) -> str:
        self._restore(pending)
        self.pending_file.unlink(missing_ok=True)
        self._disarm()
        try:
            self._reload()
        except ApplianceError:
            # At boot the revert runs before systemd-networkd, which then reads the restored files.
            return f"reverted {pending.interface} ({reason}); systemd-networkd reads it when it starts"
        return f"reverted {pending.interface} to its previous configuration ({reason})"

    def _restore(self, pending: Pending) -> None:
        target = self.net_dir / pending.file
        if pending.previous is None:
            target.unlink(missing_ok=True)
        else:
            write_atomic(target, pending.previous, mode=0o644)

    def _arm(self, seconds: int) -> None:
        self._disarm()
        self.run(self.tools.systemd_run, [
            f"--unit={REVERT_UNIT}", f"--on-active={seconds}s", "--timer-property=AccuracySec=1s",
            "--description=Revert an unconfirmed network change (system set network)",
            "--", str(self.tools.privhelper), "network-revert",
        ])

    def _disarm(self) -> None:
        timer, service = f"{REVERT_UNIT}.timer", f"{REVERT_UNIT}.service"
        for args in (["stop", timer], ["reset-failed", timer, service]):
            try:
                self.run(self.tools.systemctl, args)
            except ApplianceError:
                pass  # not loaded (nothing armed, or already fired): nothing to stop

    def _reload(self) -> None:
        self.run(self.tools.networkctl, ["reload"])

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        self.net_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        fd = os.open(self.state_dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ApplianceError):
        return exc.message
    if isinstance(exc, OSError):
        return f"{exc.filename or ''}: {exc.strerror}".lstrip(": ")
    return str(exc)
