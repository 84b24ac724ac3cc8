"""``execute diagnostic``: the support bundle, a tar.gz an admin hands to support without a system shell.

What it holds (``README.txt`` inside says the same, with what could not be collected and why):

* ``versions.json``: product, Python, OS, kernel, and the Debian packages the appliance depends on;
* ``config/appliance.toml``: the node's configuration (it names files, never holds a secret);
* ``ha/*.json``, ``system/*.json``: what ``ha get nodes/status/events`` and ``system get
  info/network/time``, ``service get status`` print with ``--json``, run in-process (a command this
  version lacks, such as ``ha get events`` before it exists, is listed as not available);
* ``db/reachability.json``: every database host of the active target and the local database, probed;
* ``logs/*.log``: the agent's, the audit, the shell's and the system journal of the last
  ``support.log_hours`` hours, at most ``support.max_log_mb`` MiB each (the newest part).

Never in it: credential files, keys, the local superuser's password file, /etc/shadow, host keys.
Every member also passes through a :class:`~appliance.ops.redact.Redactor` that knows this node's
database passwords and the local superuser's password and masks them wherever they would appear,
and masks anything that looks like a secret. Built in a temporary file (unlinked at once), then
streamed or renamed into ``<state_dir>/support`` (0600; the newest :data:`KEEP` bundles are kept).
"""

from __future__ import annotations

import io
import json
import os
import platform
import tarfile
import tempfile
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from appliance import __version__
from appliance.clock import Clock
from appliance.config import Config
from appliance.db.connect import probe
from appliance.db.errors import DbError
from appliance.errors import ApplianceError
from appliance.ha.timing import report_timeouts
from appliance.node import read_targets
from appliance.ops import logs
from appliance.ops.redact import Redactor
from appliance.ops.sysinfo import os_name

KEEP = 5
CHUNK = 256 * 1024
PACKAGES = ("appliance", "systemd", "openssh-server", "postgresql-15", "polkitd", "python3", "iputils-ping",
            "traceroute", "systemd-resolved", "systemd-timesyncd", "linux-image-cloud-amd64")
DPKG_STATUS = Path("/var/lib/dpkg/status")
# The JSON documents of commands, in the bundle under these names.
COMMANDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ha/nodes.json", ("ha", "get", "nodes")),
    ("ha/status.json", ("ha", "get", "status")),
    ("ha/events.json", ("ha", "get", "events")),
    ("system/info.json", ("system", "get", "info")),
    ("system/status.json", ("system", "get", "status")),
    ("system/network.json", ("system", "get", "network")),
    ("system/time.json", ("system", "get", "time")),
    ("system/services.json", ("service", "get", "status")),
)

# Runs one command of the shell's table and returns its --json document (raises ApplianceError).
RunJson = Callable[[tuple[str, ...]], Any]


@dataclass
class Bundle:
    """The members collected so far (name -> bytes, already redacted) and what was left out."""

    redact: Redactor
    members: dict[str, bytes] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, text: str) -> None:
        self.members[name] = self.redact(text).encode("utf-8")

    def add_json(self, name: str, doc: Any) -> None:
        self.add(name, json.dumps(doc, indent=2, default=str) + "\n")

    def skip(self, name: str, why: str) -> None:
        self.missing[name] = why


def known_secrets(config: Config) -> list[str]:
    """The secrets this node can read: its database passwords and the local superuser's password."""
    found = []
    try:
        for target in read_targets(config):
            found.append(target.target.password)
    except ApplianceError:
        pass
    path = config.local_db.admin_password_file
    if path is not None:
        try:
            found.append(path.read_text(encoding="utf-8").strip())
        except OSError:
            pass  # root-only on the appliance: then it cannot be in anything this process reads either
    return found


def collect(config: Config, clock: Clock, run_json: RunJson, hostname: str) -> Bundle:
    bundle = Bundle(Redactor(known_secrets(config)))
    bundle.add_json("versions.json", {
        "product": __version__, "python": platform.python_version(), "os": os_name(),
        "kernel": os.uname().release, "architecture": os.uname().machine, "packages": installed_packages(),
    })
    if config.source is not None:
        try:
            bundle.add("config/appliance.toml", config.source.read_text(encoding="utf-8"))
        except OSError as exc:
            bundle.skip("config/appliance.toml", exc.strerror or "unreadable")
    for name, words in COMMANDS:
        try:
            bundle.add_json(name, run_json(words))
        except ApplianceError as exc:
            bundle.skip(name, exc.message)
        except Exception as exc:  # a bug in one part must not cost the admin the whole bundle
            bundle.skip(name, f"internal error ({type(exc).__name__})")
    bundle.add_json("db/reachability.json", reachability(config))
    hours = config.support.log_hours
    for source in logs.SOURCES:
        name = f"logs/{source}.log"
        try:
            text = _log_text(config, source, hours * 3600, clock)
        except ApplianceError as exc:
            bundle.skip(name, exc.message)
            continue
        bundle.add(name, text)
    bundle.add("README.txt", _readme(bundle, hostname, clock.now(), hours))
    return bundle


def _log_text(config: Config, source: str, since_s: int, clock: Clock) -> str:
    query = logs.LogQuery(source, lines=1_000_000, since_s=since_s)
    _origin, lines = logs.show(config, query, clock, notes=False)
    limit = config.support.max_log_mb * 1024 * 1024
    kept: deque[str] = deque()
    size = 0
    for line in lines:
        kept.append(line)
        size += len(line) + 1
        while size > limit and kept:  # the newest part is the useful one
            size -= len(kept.popleft()) + 1
    return "\n".join(kept) + "\n"


def installed_packages(status: Path = DPKG_STATUS) -> dict[str, str]:
    """Versions of :data:`PACKAGES` from dpkg's status file (no program run)."""
    found: dict[str, str] = {}
    try:
        text = status.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return found
    for stanza in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line[0].isspace())
        if fields.get("Package") in PACKAGES and fields.get("Status", "").endswith(" installed"):
            found[fields["Package"]] = fields.get("Version", "?")
    return found


def reachability(config: Config) -> list[dict[str, Any]]:
    """Every database host of the active target, and the local database, probed with short timeouts."""
    try:
        origin, active = read_targets(config)
    except ApplianceError as exc:
        return [{"error": exc.message}]
    rows = []
    seen = set()
    for what, target in (("active", active), ("local", origin)):
        for host, port in target.target.host_ports():
            if (host, port, target.target.dbname) in seen:
                continue
            seen.add((host, port, target.target.dbname))
            row: dict[str, Any] = {"target": what, "host": host, "port": port, "database": target.target.dbname}
            try:
                info = probe(target.target, host, port, application_name="appliance-shell:diagnostic",
                             timeouts=report_timeouts(), samples=3)
                row.update(reachable=True, role="standby" if info.is_in_recovery else "primary",
                           version=info.version, connect_ms=info.connect_ms, latency_ms=info.latency_ms)
            except DbError as exc:
                row.update(reachable=False, error=exc.message)
            rows.append(row)
    return rows


def _readme(bundle: Bundle, hostname: str, now: datetime, hours: int) -> str:
    lines = [f"Support bundle of {hostname}, made {now.isoformat(timespec='seconds')} by appliance {__version__}.",
             "", f"Logs cover the last {hours} hours. Secrets (database passwords, the local superuser's",
             "password, anything that looks like a password or key) are masked as ********; credential",
             "files, keys and host keys are never included.", "", "Files:"]
    lines += [f"  {name} ({len(data)} bytes)" for name, data in sorted(bundle.members.items())]
    if bundle.missing:
        lines += ["", "Not available:"]
        lines += [f"  {name}: {why}" for name, why in sorted(bundle.missing.items())]
    return "\n".join(lines) + "\n"


def write_tar(bundle: Bundle, sink: IO[bytes], top: str, when: datetime) -> None:
    with tarfile.open(fileobj=sink, mode="w:gz", compresslevel=6) as tar:
        for name, data in sorted(bundle.members.items()):
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mode, info.mtime = len(data), 0o600, int(when.timestamp())
            tar.addfile(info, io.BytesIO(data))


def bundle_name(hostname: str, when: datetime) -> str:
    return f"diagnostic-{hostname}-{when.strftime('%Y%m%dT%H%M%SZ')}"


def support_dir(config: Config) -> Path:
    return config.paths.state_dir / "support"


def stream(bundle: Bundle, hostname: str, when: datetime, work_dir: Path) -> Iterator[bytes]:
    """The archive's bytes, built in an unlinked temporary file under ``work_dir``."""
    work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with tempfile.TemporaryFile(dir=work_dir) as tmp:
        write_tar(bundle, tmp, bundle_name(hostname, when), when)
        tmp.seek(0)
        while chunk := tmp.read(CHUNK):
            yield chunk


def save(bundle: Bundle, config: Config, hostname: str, when: datetime) -> Path:
    """Write the archive under ``<state_dir>/support`` (0600, atomically); keep the newest :data:`KEEP`."""
    directory = support_dir(config)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / (bundle_name(hostname, when) + ".tar.gz")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".diagnostic-")
    try:
        with os.fdopen(fd, "wb") as handle:
            write_tar(bundle, handle, bundle_name(hostname, when), when)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    for old in sorted(directory.glob("diagnostic-*.tar.gz"))[:-KEEP]:
        old.unlink(missing_ok=True)
    return path
