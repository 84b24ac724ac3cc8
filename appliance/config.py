"""Typed, frozen, validated configuration loaded from one TOML file.

The file is found from ``--config PATH``, else ``$APPLIANCE_CONFIG``, else
``/etc/appliance/appliance.toml``. Every key is optional and has the default shown in the packaged,
commented ``appliance/data/appliance.toml``. A missing file, a TOML syntax error, an unknown key or a
bad value is a :class:`~appliance.errors.ConfigError` naming the file and the key. Nothing is read at
import time.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from appliance import configcheck as C
from appliance.errors import ConfigError
from appliance.ha.timing import KEEPALIVE_RANGE_S, STATEMENT_CAP_S, statement_timeout_problem

DEFAULT_CONFIG_PATH = Path("/etc/appliance/appliance.toml")
CONFIG_ENV = "APPLIANCE_CONFIG"


@dataclass(frozen=True)
class NodeConfig:
    default_hostname: str = "EMS"
    hardware_id: str = ""


@dataclass(frozen=True)
class PathsConfig:
    state_dir: Path = Path("/var/lib/appliance")
    history_file: Path | None = None
    audit_log: Path | None = None
    log_file: Path | None = None

    @property
    def history(self) -> Path:
        return self.history_file or self.state_dir / "history"

    @property
    def audit(self) -> Path:
        return self.audit_log or self.state_dir / "audit.log"

    @property
    def log(self) -> Path:
        return self.log_file or self.state_dir / "shell.log"

    @property
    def run_dir(self) -> Path:
        """Run-time files: the pid files of the ``process`` services and the fence."""
        return self.state_dir / "run"


@dataclass(frozen=True)
class ShellConfig:
    idle_timeout_s: int = 900
    prompt: str = "{hostname} $ "
    history_size: int = 1000


@dataclass(frozen=True)
class HostnameConfig:
    backend: str = "hostnamectl"
    etc_root: Path = Path("/")
    set_kernel: bool = True


@dataclass(frozen=True)
class ToolsConfig:
    ping: Path = Path("/usr/bin/ping")
    hostnamectl: Path = Path("/usr/bin/hostnamectl")
    systemctl: Path = Path("/usr/bin/systemctl")
    # The privileged helper program (root's units and timers run it; everyone else uses [privhelper] socket).
    privhelper: Path = Path("/usr/libexec/appliance/privhelper")
    # The administration commands (network, time, logs, diagnostics, backup, passwd) and the helper;
    # ip also for the virtual IP's holder, which adds, refreshes and deletes the address with it.
    traceroute: Path = Path("/usr/bin/traceroute")
    ip: Path = Path("/usr/sbin/ip")
    journalctl: Path = Path("/usr/bin/journalctl")
    timedatectl: Path = Path("/usr/bin/timedatectl")
    networkctl: Path = Path("/usr/bin/networkctl")
    systemd_run: Path = Path("/usr/bin/systemd-run")
    pg_dump: Path = Path("/usr/lib/postgresql/15/bin/pg_dump")
    pg_restore: Path = Path("/usr/lib/postgresql/15/bin/pg_restore")
    passwd: Path = Path("/usr/bin/passwd")


@dataclass(frozen=True)
class PrivhelperConfig:
    """The root helper's socket (socket-activated, one connection per request) and who may use it."""

    socket: Path = Path("/run/appliance-privhelper.sock")
    users: tuple[str, ...] = ("ems", "appliance-agent")


@dataclass(frozen=True)
class AuditConfig:
    target: str = "auto"


@dataclass(frozen=True)
class DatabaseConfig:
    """Defaults and limits for the shared database that ``redirect`` moves the node to."""

    name: str = "appliance"
    schema_prefix: str = ""
    sslmode: str = "require"
    connect_timeout_s: int = 5
    statement_timeout_s: int = 30
    lock_wait_s: int = 60
    min_free_disk_mb: int = 16


@dataclass(frozen=True)
class LocalDbConfig:
    """The node's own PostgreSQL (the "origin" the node runs on until it is redirected)."""

    host: str = "/var/run/postgresql"
    port: int = 5432
    name: str = "appliance"
    user: str = "appliance"
    admin_user: str = "postgres"
    admin_password_file: Path | None = None
    # Only for the disk use `system get info` shows; nothing is read or written there.
    data_dir: Path = Path("/var/lib/postgresql")


@dataclass(frozen=True)
class CredentialsConfig:
    backend: str = "file"
    dir: Path | None = None
    key_dir: Path | None = None
    services: tuple[str, ...] = ("agent", "shell")


@dataclass(frozen=True)
class HaConfig:
    """This node's side of the HA loop (the cluster-wide settings live in the database).

    :param keepalive_interval_s: the interval of a cluster this node deploys (``redirect
        --is_primary_node`` onto an empty database, node initialisation); afterwards the cluster's own
        setting rules (``ha set keepalive-interval``). Also what the agent assumes until it has read it.
    :param statement_timeout_s: cap on the HA loop's statement timeout; 0: derived from the interval
        (I/2, at most 5 s). Never more than half the interval (checked here and applied at run time).
    """

    keepalive_interval_s: int = 10
    statement_timeout_s: float = 0.0


@dataclass(frozen=True)
class HealthConfig:
    """The agent's HTTP endpoint for load balancers and monitoring (:mod:`appliance.ha.health`).

    :param listen: ``HOST:PORT`` (``[V6]:PORT``) to bind; empty: no endpoint.
    :param max_connections: connections served at once; past it the oldest pending one is dropped.
    :param request_timeout_s: a client must send its whole request head within this time.
    :param detail_networks: clients allowed ``/cluster`` and ``/metrics`` (node names, DB hosts); every
        client may ask ``/primary``, ``/standby`` and ``/health``, which show a role and nothing else.
    """

    listen: str = ""
    max_connections: int = 32
    request_timeout_s: float = 2.0
    detail_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")


@dataclass(frozen=True)
class VipConfig:
    """This node's side of the cluster's virtual IP (the address itself is a cluster setting).

    :param interface: the interface the VIP goes on when this node is primary; empty: never here.
    :param refresh_announce_s: while holding it, announce it again this often (switch and router
        caches that missed the burst at takeover); 0: only the burst.
    """

    interface: str = ""
    refresh_announce_s: int = 60


@dataclass(frozen=True)
class JoinConfig:
    """This node's join service (:mod:`appliance.ha.joinservice`), listening only while codes it issued
    are outstanding.

    :param listen: ``ADDRESS:PORT`` to bind; empty: this node issues no join codes.
    :param advertise: ``HOST:PORT`` the codes name (for NAT or a DNS name); empty: the listen address if
        it is a specific one, else this node's address towards the cluster's database.
    """

    listen: str = "0.0.0.0:8009"
    advertise: str = ""


@dataclass(frozen=True)
class AgentConfig:
    """The agent's control socket (:mod:`appliance.agentctl`): how the shell reaches the agent.

    :param control_socket: the Unix socket's path; empty: no socket, the shell reads the database and
        writes the credentials itself (sandboxes and configurations from before the socket).
    :param control_users: the users whose processes may use it (checked by SO_PEERCRED); the agent's
        own user and root always may.
    :param request_timeout_s: how long either side waits for the other's next message (a frozen agent,
        a silent client); a redirect's progress lines each reset it.
    """

    control_socket: Path | None = None
    control_users: tuple[str, ...] = ("ems", "root")
    request_timeout_s: float = 30.0


@dataclass(frozen=True)
class ProcessService:
    name: str
    command: tuple[str, ...]
    roles: tuple[str, ...]


@dataclass(frozen=True)
class ServicesConfig:
    backend: str = "none"
    stop_timeout_s: int = 20
    primary_units: tuple[str, ...] = ()
    standby_units: tuple[str, ...] = ()
    process: tuple[ProcessService, ...] = ()
    # The node's other services, as `service get status` shows them and `service restart` may restart
    # them (systemd backend only).
    agent_unit: str = "appliance-agent.service"
    database_unit: str = "postgresql@15-main.service"
    ssh_unit: str = "ssh.service"


@dataclass(frozen=True)
class SystemConfig:
    """What the administration commands change on the running system (through the privileged helper).

    :param root: prefix of every system file the helper writes for network and time
        (``<root>/etc/systemd/network``, ``<root>/etc/systemd/timesyncd.conf.d``,
        ``<root>/var/lib/appliance-network``): ``/`` on the appliance, a test directory in tests.
    :param network_confirm_s: the default commit-confirm deadline of ``system set network``.
    """

    root: Path = Path("/")
    network_confirm_s: int = 120


@dataclass(frozen=True)
class LogsConfig:
    """Where ``execute log show`` reads, and its bounds.

    :param agent_file: the agent's log file; empty: the journal of ``services.agent_unit``.
    """

    agent_file: Path | None = None
    max_lines: int = 10000
    follow_max_s: int = 3600


@dataclass(frozen=True)
class SupportConfig:
    """The support bundle (``execute diagnostic``) and the database backup (``execute backup``)."""

    log_hours: int = 24
    max_log_mb: int = 20
    backup_timeout_s: int = 1800
    max_restore_mb: int = 4096


@dataclass(frozen=True)
class Config:
    """The whole configuration; ``source`` is the file it came from (None for built-in defaults)."""

    node: NodeConfig = field(default_factory=NodeConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    shell: ShellConfig = field(default_factory=ShellConfig)
    hostname: HostnameConfig = field(default_factory=HostnameConfig)
    tools: ToolsConfig = field(default_factory=ToolsConfig)
    privhelper: PrivhelperConfig = field(default_factory=PrivhelperConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    local_db: LocalDbConfig = field(default_factory=LocalDbConfig)
    credentials: CredentialsConfig = field(default_factory=CredentialsConfig)
    services: ServicesConfig = field(default_factory=ServicesConfig)
    ha: HaConfig = field(default_factory=HaConfig)
    system: SystemConfig = field(default_factory=SystemConfig)
    logs: LogsConfig = field(default_factory=LogsConfig)
    support: SupportConfig = field(default_factory=SupportConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    vip: VipConfig = field(default_factory=VipConfig)
    join: JoinConfig = field(default_factory=JoinConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    source: Path | None = None

    @property
    def credentials_dir(self) -> Path:
        return self.credentials.dir or self.paths.state_dir / "credentials"

    @property
    def key_dir(self) -> Path:
        return self.credentials.key_dir or self.paths.state_dir / "keys"

    @property
    def fence_file(self) -> Path:
        """The fence of primary-only services (:mod:`appliance.ha.fence`): the agent writes it, they read it."""
        return self.paths.run_dir / "fence"


def _process_services(value: Any) -> tuple[ProcessService, ...]:
    if not isinstance(value, list):
        raise ValueError("must be a list of [[services.process]] tables")
    found = []
    for index, item in enumerate(value):
        where = f"[{index}]"
        if not isinstance(item, dict) or set(item) - {"name", "command", "roles"}:
            raise ValueError(f"{where} takes the keys name, command and roles")
        name, command, roles = item.get("name"), item.get("command"), item.get("roles", ["primary"])
        if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9-]{0,31}", name):
            raise ValueError(f"{where}.name must be 1-32 lower-case letters, digits or hyphens")
        if not (isinstance(command, list) and command and all(isinstance(a, str) for a in command)
                and command[0].startswith("/")):
            raise ValueError(f"{where}.command must be a list of strings starting with an absolute path")
        if not (isinstance(roles, list) and roles and set(roles) <= {"primary", "standby"}):
            raise ValueError(f'{where}.roles must list "primary" and/or "standby"')
        found.append(ProcessService(name, tuple(command), tuple(roles)))
    if len({s.name for s in found}) != len(found):
        raise ValueError("names a service twice")
    return tuple(found)



def _checks(base: Path) -> dict[str, dict[str, C.Check]]:
    path, opt_path, exe = C.PathCheck(base), C.PathCheck(base, optional=True), C.PathCheck(base, absolute=True)
    return {
        "node": {"default_hostname": C.string, "hardware_id": C.hardware_id},
        "paths": {"state_dir": path, "history_file": opt_path, "audit_log": opt_path, "log_file": opt_path},
        "shell": {
            "idle_timeout_s": C.int_range(0, 86400),
            "prompt": C.prompt,
            "history_size": C.int_range(1, 100000),
        },
        "hostname": {
            "backend": C.choice("hostnamectl", "helper", "etc", "file"),
            "etc_root": path,
            "set_kernel": C.boolean,
        },
        "tools": {name: exe for name in ("ping", "hostnamectl", "systemctl", "privhelper", "traceroute", "ip",
                                         "journalctl", "timedatectl", "networkctl", "systemd_run", "pg_dump",
                                         "pg_restore", "passwd")},
        "privhelper": {"socket": exe, "users": C.name_list(r"[a-z_][a-z0-9_-]{0,31}", "user names")},
        "audit": {"target": C.choice("auto", "syslog", "file")},
        "database": {
            "name": C.identifier,
            "schema_prefix": C.prefix,
            "sslmode": C.choice("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
            "connect_timeout_s": C.int_range(2, 120),
            "statement_timeout_s": C.int_range(1, 3600),
            "lock_wait_s": C.int_range(1, 3600),
            "min_free_disk_mb": C.int_range(0, 1_000_000),
        },
        "local_db": {
            "host": C.db_host,
            "port": C.int_range(1, 65535),
            "name": C.identifier,
            "user": C.identifier,
            "admin_user": C.identifier,
            "admin_password_file": opt_path,
            "data_dir": path,
        },
        "credentials": {
            "backend": C.choice("file"),
            "dir": opt_path,
            "key_dir": opt_path,
            "services": C.name_list(r"[a-z][a-z0-9_-]{0,31}", "service names (lower-case letters, digits, - or _)"),
        },
        "services": {
            "backend": C.choice("none", "process", "systemd"),
            "stop_timeout_s": C.int_range(1, 600),
            "primary_units": C.name_list(r"[A-Za-z0-9@._-]+\.service", "systemd unit names (NAME.service)"),
            "standby_units": C.name_list(r"[A-Za-z0-9@._-]+\.service", "systemd unit names (NAME.service)"),
            "process": _process_services,
            "agent_unit": C.unit,
            "database_unit": C.unit,
            "ssh_unit": C.unit,
        },
        "ha": {
            "keepalive_interval_s": C.int_range(*KEEPALIVE_RANGE_S),
            "statement_timeout_s": C.seconds(0, STATEMENT_CAP_S),
        },
        "system": {"root": path, "network_confirm_s": C.int_range(10, 3600)},
        "logs": {"agent_file": opt_path, "max_lines": C.int_range(10, 100000), "follow_max_s": C.int_range(10, 86400)},
        "support": {
            "log_hours": C.int_range(1, 24 * 31),
            "max_log_mb": C.int_range(1, 1024),
            "backup_timeout_s": C.int_range(10, 86400),
            "max_restore_mb": C.int_range(1, 1024 * 1024),
        },
        "health": {
            "listen": C.listen,
            "max_connections": C.int_range(1, 1024),
            "request_timeout_s": C.seconds(0.1, 30),
            "detail_networks": C.networks,
        },
        "vip": {"interface": C.interface, "refresh_announce_s": C.int_range(0, 3600)},
        "join": {"listen": C.listen, "advertise": C.advertise},
        "agent": {"control_socket": opt_path,
                  "control_users": C.name_list(r"[a-z_][a-z0-9_-]{0,31}", "user names"),
                  "request_timeout_s": C.seconds(1, 3600)},
    }


_SECTION_TYPES: dict[str, type] = {
    "node": NodeConfig,
    "paths": PathsConfig,
    "shell": ShellConfig,
    "hostname": HostnameConfig,
    "tools": ToolsConfig,
    "privhelper": PrivhelperConfig,
    "audit": AuditConfig,
    "database": DatabaseConfig,
    "local_db": LocalDbConfig,
    "credentials": CredentialsConfig,
    "services": ServicesConfig,
    "ha": HaConfig,
    "system": SystemConfig,
    "logs": LogsConfig,
    "support": SupportConfig,
    "health": HealthConfig,
    "vip": VipConfig,
    "join": JoinConfig,
    "agent": AgentConfig,
}


def parse_config(data: Mapping[str, Any], source: Path | None, base: Path) -> Config:
    """Validate a parsed TOML mapping into a :class:`Config`.

    :raises ConfigError: naming the file and the ``section.key`` at fault.
    """
    where = str(source) if source else "<built-in defaults>"
    checks = _checks(base)
    sections: dict[str, Any] = {}
    for name, table in data.items():
        if name not in checks:
            raise ConfigError(
                f"{where}: unknown section [{name}]",
                hint=f"known sections: {', '.join(sorted(checks))}",
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: [{name}] must be a table")
        values: dict[str, Any] = {}
        for key, raw in table.items():
            check = checks[name].get(key)
            if check is None:
                raise ConfigError(
                    f"{where}: unknown key {name}.{key}",
                    hint=f"keys of [{name}]: {', '.join(sorted(checks[name]))}",
                )
            try:
                values[key] = check(raw)
            except ValueError as exc:
                raise ConfigError(f"{where}: {name}.{key} {exc}") from None
        sections[name] = _SECTION_TYPES[name](**values)
    config = Config(**sections, source=source)
    _check_across(config, where)
    return config


def _check_across(config: Config, where: str) -> None:
    """Rules between keys: a configured HA statement timeout must fit the configured interval."""
    ha = config.ha
    problem = statement_timeout_problem(ha.statement_timeout_s, ha.keepalive_interval_s) \
        if ha.statement_timeout_s else None
    if problem:
        raise ConfigError(
            f"{where}: ha.statement_timeout_s {problem} (ha.keepalive_interval_s = {ha.keepalive_interval_s})",
            hint="lower ha.statement_timeout_s (0 derives it from the interval), or raise ha.keepalive_interval_s",
        )


def config_path(explicit: str | None, environ: Mapping[str, str]) -> Path:
    """Which file to read: ``--config``, then ``$APPLIANCE_CONFIG``, then the default path."""
    if explicit:
        return Path(explicit)
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV])
    return DEFAULT_CONFIG_PATH


def load_config(path: Path) -> Config:
    """Read and validate ``path``.

    :raises ConfigError: the file is missing, unreadable, not valid TOML, or holds a bad value.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: configuration file not found",
            hint=f"create it (a commented default ships in the package) or point {CONFIG_ENV} at one",
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration file: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, source=path, base=path.parent.resolve())


def default_config_text() -> str:
    """The packaged, commented default configuration file."""
    return (Path(__file__).parent / "data" / "appliance.toml").read_text(encoding="utf-8")


def section_keys() -> dict[str, list[str]]:
    """Every ``section -> keys``, for the test that keeps the packaged default file complete."""
    return {name: [f.name for f in fields(cls)] for name, cls in _SECTION_TYPES.items()}


def with_state_dir(config: Config, state_dir: Path) -> Config:
    """A copy of ``config`` writing under ``state_dir`` (used by tests and sandboxes)."""
    from dataclasses import replace

    return replace(config, paths=replace(config.paths, state_dir=state_dir))


def environ_user(environ: Mapping[str, str]) -> str:
    """The login name for audit records (``$USER``/``$LOGNAME``, else the uid's name)."""
    user = environ.get("USER") or environ.get("LOGNAME")
    if user:
        return user
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (KeyError, ImportError):
        return str(os.getuid())
