"""What ``system get info`` and ``service get status`` show, read from the live system as the login user.

``system get info``: product and OS versions, kernel, CPUs, memory, the disk use of the state and
database volumes, load, and the uptime of the node and of its HA agent. ``service get status``: the
appliance's services (the agent, the primary-only and every-node services, the local PostgreSQL,
sshd), each with its state and since when. Under systemd that is ``systemctl show`` (no privilege
needed); with the ``process`` services backend (a sandbox) it comes from pid files, the agent's status
file and a connection attempt to the local database, and what cannot be known is shown as such.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from appliance import __version__
from appliance.clock import Clock
from appliance.config import Config
from appliance.errors import NotConfigured, UsageError
from appliance.ha.statusfile import read_status
from appliance.identity import uptime_s
from appliance.proc import run_tool

OS_RELEASE = (Path("/etc/os-release"), Path("/usr/lib/os-release"))


@dataclass(frozen=True)
class Disk:
    volume: str  # what it holds: "state" | "database"
    path: str
    total_mb: int
    used_mb: int
    free_mb: int
    use_percent: float


def os_name() -> str:
    for path in OS_RELEASE:
        try:
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
        except OSError:
            continue
    return "unknown"


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def memory_mb() -> tuple[int | None, int | None]:
    """(total, available) in MiB, from /proc/meminfo."""
    values: dict[str, int] = {}
    try:
        for line in Path("/proc/meminfo").read_text(encoding="ascii").splitlines():
            key, _, rest = line.partition(":")
            if key in ("MemTotal", "MemAvailable"):
                values[key] = int(rest.split()[0]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return values.get("MemTotal"), values.get("MemAvailable")


def disk(volume: str, path: Path) -> Disk | None:
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    total = st.f_blocks * st.f_frsize
    free = st.f_bavail * st.f_frsize
    used = total - st.f_bfree * st.f_frsize
    mb = 1024 * 1024
    percent = round(100 * used / (used + free), 1) if used + free else 0.0
    return Disk(volume, str(path), total // mb, used // mb, free // mb, percent)


def process_age_s(pid: int) -> float | None:
    """Seconds since process ``pid`` started (None if it does not run)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat[stat.rindex(")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None
    up = uptime_s()
    return None if up is None else max(0.0, up - ticks / os.sysconf("SC_CLK_TCK"))


def agent_pid(config: Config) -> int | None:
    """The agent's pid from its status file, if that process still runs."""
    status = read_status(config) or {}
    pid = status.get("pid")
    return pid if isinstance(pid, int) and process_age_s(pid) is not None else None


@dataclass(frozen=True)
class SystemInfo:
    version: str
    hostname: str
    os: str
    kernel: str
    architecture: str
    cpus: int | None
    cpu_model: str | None
    memory_total_mb: int | None
    memory_available_mb: int | None
    disks: tuple[Disk, ...]
    load: tuple[float, ...] | None
    uptime_s: int | None
    agent_pid: int | None
    agent_uptime_s: int | None

    def as_dict(self) -> dict[str, object]:
        doc = dict(self.__dict__)
        doc["disks"] = [d.__dict__ for d in self.disks]
        return doc


def system_info(config: Config, hostname: str) -> SystemInfo:
    total, available = memory_mb()
    pid = agent_pid(config)
    agent_up = process_age_s(pid) if pid else None
    up = uptime_s()
    try:
        load: tuple[float, ...] | None = tuple(round(x, 2) for x in os.getloadavg())
    except OSError:
        load = None
    disks = tuple(d for d in (disk("state", config.paths.state_dir), disk("database", config.local_db.data_dir)) if d)
    return SystemInfo(
        version=__version__, hostname=hostname, os=os_name(), kernel=os.uname().release,
        architecture=os.uname().machine, cpus=os.cpu_count(), cpu_model=cpu_model(), memory_total_mb=total,
        memory_available_mb=available, disks=disks, load=load, uptime_s=int(up) if up is not None else None,
        agent_pid=pid, agent_uptime_s=int(agent_up) if agent_up is not None else None,
    )


# --- services -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceState:
    name: str  # what `service restart` takes
    unit: str  # the systemd unit, or what runs it
    runs_on: str  # every node | primary only
    state: str  # active, inactive, failed... ; "running"/"stopped" from pid files; "unknown"
    since: datetime | None
    pid: int | None


def services(config: Config) -> list[tuple[str, str, str]]:
    """(name, unit, runs_on) of every service of the appliance, in the order shown."""
    s = config.services
    found = [("agent", s.agent_unit, "every node")]
    found += [(_stem(u), u, "primary only") for u in s.primary_units]
    found += [(_stem(u), u, "every node") for u in s.standby_units]
    found += [("database", s.database_unit, "every node"), ("ssh", s.ssh_unit, "every node")]
    return found


def _stem(unit: str) -> str:
    return unit.removesuffix(".service")


def service_status(config: Config, clock: Clock) -> list[ServiceState]:
    if config.services.backend == "systemd":
        return _systemd_status(config)
    return _local_status(config, clock)


def _systemd_status(config: Config) -> list[ServiceState]:
    listed = services(config)
    out = run_tool(config.tools.systemctl, ["show", "--timestamp=unix", "--property=Id,ActiveState,SubState,"
                                            "ActiveEnterTimestamp,MainPID", "--", *(u for _n, u, _r in listed)],
                   timeout_s=15)
    blocks = [dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
              for block in out.strip().split("\n\n")]
    found = []
    for (name, unit, runs_on), props in zip(listed, blocks + [{}] * len(listed), strict=False):
        active, sub = props.get("ActiveState", "unknown"), props.get("SubState", "")
        stamp = props.get("ActiveEnterTimestamp", "")
        since = datetime.fromtimestamp(int(stamp[1:]), UTC) if stamp.startswith("@") and stamp[1:].isdigit() \
            and active == "active" else None
        pid = int(props.get("MainPID", "0") or 0) or None
        found.append(ServiceState(name, unit, runs_on, f"{active} ({sub})" if sub else active, since, pid))
    return found


def _since(clock: Clock, pid: int | None) -> datetime | None:
    age = process_age_s(pid) if pid else None
    return None if age is None else (clock.now() - timedelta(seconds=age)).replace(microsecond=0)


def _local_status(config: Config, clock: Clock) -> list[ServiceState]:
    """Without systemd (the ``process`` or ``none`` services backend): pid files and probes."""
    found = []
    pid = agent_pid(config)
    found.append(ServiceState("agent", "appliance-agent", "every node", "running" if pid else "stopped",
                              _since(clock, pid), pid))
    for service in config.services.process:
        service_pid = _pid_file(config.paths.run_dir / f"{service.name}.pid")
        runs_on = "primary only" if service.roles == ("primary",) else "every node"
        found.append(ServiceState(service.name, Path(service.command[0]).name, runs_on,
                                  "running" if service_pid else "stopped", _since(clock, service_pid), service_pid))
    db = config.local_db
    found.append(ServiceState("database", f"PostgreSQL {db.host}:{db.port}", "every node",
                              "reachable" if _db_listening(db.host, db.port) else "not reachable", None, None))
    found.append(ServiceState("ssh", "-", "every node", "not managed here", None, None))
    return found


def _pid_file(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if process_age_s(pid) is not None else None


def _db_listening(host: str, port: int) -> bool:
    if host.startswith("/"):
        return Path(host, f".s.PGSQL.{port}").exists()
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def restart_unit(config: Config, name: str) -> str:
    """The unit ``service restart NAME`` restarts. :raises ApplianceError: not one of the services."""
    if config.services.backend != "systemd":
        raise NotConfigured(f"services are not run by systemd on this node (services.backend is "
                            f"{config.services.backend!r}): nothing to restart here")
    for known, unit, _runs_on in services(config):
        if name in (known, unit):
            return unit
    names = ", ".join(n for n, _u, _r in services(config))
    raise UsageError(f"no service named {name!r}", hint=f"the services: {names} (see `service get status`)")

