"""``execute backup``: a consistent dump of the appliance's schema; reading and checking such a dump.

The dump is ``pg_dump --format=custom --schema=<the appliance's schema>`` of the database the node
uses now (its local PostgreSQL while standalone, the shared one in a cluster): one repeatable-read
snapshot, so consistent, compressed, owner- and privilege-free (it restores under another role).
What it holds: the whole schema, i.e. the cluster's identity (``meta``), its nodes and lease, and its
cluster and system settings. What it does not hold: any credential (database roles and their
passwords are not part of a schema dump, and the node's encrypted credential files and master key
live on the node, never in the database).

pg_dump gets its password from a ``PGPASSFILE`` written for the run (0600 under the state dir,
removed afterwards), never on its command line. It runs without a statement timeout (as pg_dump
always does: a dump is one long transaction), so the whole run is bounded by
``support.backup_timeout_s`` and its lock waits by ``--lock-wait-timeout``.

A dump is only called good after a full read: ``pg_restore --list`` accepts truncated or corrupted
archives, ``pg_restore --file=/dev/null`` reads every block and fails on them (:func:`verify`).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO

from psycopg.conninfo import make_conninfo

from appliance.config import Config
from appliance.errors import CommandFailed, NotConfigured, Unavailable
from appliance.fsutil import write_atomic
from appliance.ha.session import probe, writer_choice
from appliance.node import ActiveTarget
from appliance.ops.redact import redact_patterns
from appliance.proc import CHILD_ENV, tool_argv

CHUNK = 256 * 1024
MAGIC = b"PGDMP"
LOCK_WAIT_MS = 30_000
_TOC_DATA = re.compile(r"^\d+; \d+ \d+ TABLE DATA (\S+) (\S+) ")
_TOC_TABLE = re.compile(r"^\d+; \d+ \d+ TABLE (\S+) (\S+) ")


def database_of(config: Config, active: ActiveTarget) -> ActiveTarget:
    """``active`` narrowed to the one database node the cluster writes to now (the agent's rule).

    With several hosts (a primary/standby pair) libpq's own choice could be a stale old primary that
    came back read-write: a dump of it, or a restore into it, would be of data the cluster threw away.
    :raises Unavailable: no node may be written to now (the reason: a split brain, nobody answering).
    """
    if len(active.target.host_ports()) == 1:
        return active
    choice = writer_choice(config, active, probe(active))
    if choice.writer is None:
        raise Unavailable(f"no database node to use now: {choice.alarm or 'no read-write node answers'}",
                          hint="see `ha get nodes`: it shows every database node and what it answered")
    host, port = choice.writer.address
    return replace(active, target=active.target.for_host(host, port))


def backups_dir(config: Config) -> Path:
    return config.paths.state_dir / "backups"


def _pgpass_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


@contextmanager
def passfile(config: Config, active: ActiveTarget) -> Iterator[Path]:
    """A ``PGPASSFILE`` for ``active`` (0600 under the state dir), removed when the block ends."""
    directory = config.paths.state_dir
    fd, name = tempfile.mkstemp(dir=directory, prefix=".pgpass-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(f"*:*:*:{_pgpass_escape(active.target.user)}:{_pgpass_escape(active.target.password)}\n")
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def conninfo(active: ActiveTarget, connect_timeout_s: int) -> str:
    """libpq connection string for ``active`` without its password (that goes in the passfile)."""
    t = active.target
    # pg_dump runs on the system's libpq (15), which has no require_auth; where TLS is required,
    # channel_binding=require gives the same guarantee (a server asking for a cleartext or MD5
    # password, or for none, is refused), and the CA stored with the credentials is the one checked.
    tls = {"channel_binding": "require"} if t.sslmode in ("require", "verify-ca", "verify-full") else {}
    if t.sslrootcert:
        tls["sslrootcert"] = t.sslrootcert
    return make_conninfo(host=",".join(t.hosts), port=",".join(str(p) for p in t.ports), user=t.user,
                         dbname=t.dbname, sslmode=t.sslmode, connect_timeout=str(connect_timeout_s),
                         application_name="appliance-shell:backup", target_session_attrs="any",
                         gssencmode="disable", **tls)


def dump_args(config: Config, active: ActiveTarget) -> list[str]:
    return ["--format=custom", f"--schema={active.schema}", "--no-owner", "--no-privileges",
            f"--lock-wait-timeout={LOCK_WAIT_MS}", f"--dbname={conninfo(active, config.database.connect_timeout_s)}"]


def dump(config: Config, active: ActiveTarget) -> Iterator[bytes]:
    """The dump's bytes as pg_dump writes them.

    :raises CommandFailed: (at the end, or before the first chunk) pg_dump failed or timed out.
    """
    with passfile(config, active) as pgpass, tempfile.TemporaryFile(dir=config.paths.state_dir) as errors:
        argv = tool_argv(config.tools.pg_dump, dump_args(config, active))
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors,
                                env={**CHILD_ENV, "PGPASSFILE": str(pgpass)}, close_fds=True)
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            proc.kill()

        timer = threading.Timer(config.support.backup_timeout_s, expire)
        timer.daemon = True
        timer.start()
        assert proc.stdout is not None
        try:
            while chunk := proc.stdout.read(CHUNK):
                yield chunk
            returncode = proc.wait(timeout=30)
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
            proc.stdout.close()
        if expired.is_set():
            raise CommandFailed(f"the backup did not finish within {config.support.backup_timeout_s} s")
        if returncode != 0:
            errors.seek(0)
            raise CommandFailed(f"pg_dump failed: {_first_error(errors.read())}",
                                hint="check the database with `ha get nodes`; see `execute log show shell`")


def _first_error(raw: bytes) -> str:
    lines = [line.strip() for line in raw.decode("utf-8", errors="replace").splitlines() if line.strip()]
    line = next((li for li in lines if "error" in li.lower()), lines[0] if lines else "no message")
    for prefix in ("pg_dump: ", "pg_restore: ", "error: "):
        line = line.removeprefix(prefix)
    return redact_patterns(line)[:300]


# --- reading a dump --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Toc:
    created: str | None
    database: str | None
    server_version: str | None
    tables: tuple[tuple[str, str], ...]  # (schema, table) with a TABLE entry
    data: tuple[tuple[str, str], ...] = field(default=())  # (schema, table) with a TABLE DATA entry


def _pg_restore(config: Config, args: list[str], source: IO[bytes], *, timeout_s: float) -> bytes:
    """Run pg_restore on the open archive ``source`` (passed as /dev/fd/N); return its output."""
    fd = source.fileno()
    argv = tool_argv(config.tools.pg_restore, [*args, f"/dev/fd/{fd}"])
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, env=CHILD_ENV, pass_fds=(fd,),
                              timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise CommandFailed(f"pg_restore did not finish within {timeout_s:g} s") from None
    if done.returncode != 0:
        raise CommandFailed(f"the dump is damaged or not a dump of this kind: {_first_error(done.stderr)}")
    return done.stdout


def read_toc(config: Config, source: IO[bytes]) -> Toc:
    source.seek(0)
    if source.read(len(MAGIC)) != MAGIC:
        raise CommandFailed("not a PostgreSQL custom-format dump (it does not start with PGDMP)",
                            hint="give a file made by `execute backup`")
    text = _pg_restore(config, ["--list"], source, timeout_s=60).decode("utf-8", errors="replace")
    header: dict[str, str] = {}
    tables, data = [], []
    for line in text.splitlines():
        if line.startswith("; Archive created at "):
            header["created"] = line.removeprefix("; Archive created at ").strip()
        elif line.startswith(";") and ":" in line:
            key, _, value = line[1:].strip().partition(":")
            header.setdefault(key.strip(), value.strip())
        elif match := _TOC_DATA.match(line):
            data.append((match.group(1), match.group(2)))
        elif match := _TOC_TABLE.match(line):
            tables.append((match.group(1), match.group(2)))
    return Toc(header.get("created"), header.get("dbname"), header.get("Dumped from database version"),
               tuple(tables), tuple(data))


def verify(config: Config, source: IO[bytes]) -> None:
    """Read the whole archive (every data block decompressed). :raises CommandFailed: it is damaged."""
    _pg_restore(config, ["--file=/dev/null"], source, timeout_s=config.support.backup_timeout_s)


def table_rows(config: Config, source: IO[bytes], schema: str, table: str) -> list[dict[str, str | None]]:
    """The rows of one table of the archive, from its COPY data (text format, decoded)."""
    out = _pg_restore(config, ["--data-only", f"--schema={schema}", f"--table={table}", "--file=-"], source,
                      timeout_s=120).decode("utf-8")
    columns: list[str] | None = None
    rows: list[dict[str, str | None]] = []
    for line in out.splitlines():
        if columns is None:
            match = re.match(r"COPY \S+ \((.*)\) FROM stdin;$", line)
            if match:
                columns = [c.strip().strip('"') for c in match.group(1).split(",")]
            continue
        if line == "\\.":
            break
        values = [decode_copy_field(v) for v in line.split("\t")]
        if len(values) != len(columns):
            raise CommandFailed(f"the dump's rows of {table} do not match its columns")
        rows.append(dict(zip(columns, values, strict=True)))
    return rows


_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


def decode_copy_field(text: str) -> str | None:
    r"""One field of PostgreSQL's COPY text format: ``\N`` is NULL; backslash escapes decoded."""
    if text == "\\N":
        return None
    if "\\" not in text:
        return text

    def one(match: re.Match[str]) -> str:
        body = match.group(1)
        if body in _ESCAPES:
            return _ESCAPES[body]
        if body.startswith("x"):
            return chr(int(body[1:], 16))
        if body[0].isdigit():
            return chr(int(body, 8))
        return body

    return re.sub(r"\\(x[0-9A-Fa-f]{1,2}|[0-7]{1,3}|.)", one, text)


# --- writing a backup file -------------------------------------------------------------------------


@dataclass(frozen=True)
class SavedBackup:
    path: Path
    size: int
    sha256: str


def save(config: Config, active: ActiveTarget, name: str) -> SavedBackup:
    """Dump into ``<state_dir>/backups/NAME.dump`` (0600), verify it by a full read, then write
    ``NAME.dump.sha256``; a failed or damaged dump leaves nothing behind."""
    directory = backups_dir(config)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".backup-")
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "w+b") as handle:
            for chunk in dump(config, active):
                handle.write(chunk)
                digest.update(chunk)
                size += len(chunk)
            handle.flush()
            os.fsync(handle.fileno())
            read_toc(config, handle)
            verify(config, handle)
        path = directory / f"{name}.dump"
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    write_atomic(directory / f"{name}.dump.sha256", f"{digest.hexdigest()}  {name}.dump\n", mode=0o600)
    return SavedBackup(path, size, digest.hexdigest())


def prune(config: Config, prefix: str, keep: int) -> None:
    """Keep the newest ``keep`` backups named ``PREFIX*.dump`` (and their checksums)."""
    for old in sorted(backups_dir(config).glob(f"{prefix}*.dump"))[:-keep]:
        old.unlink(missing_ok=True)
        old.with_name(old.name + ".sha256").unlink(missing_ok=True)


def stream_verified(config: Config, active: ActiveTarget) -> Iterator[bytes]:
    """The dump's bytes for standard output; a copy is verified at the end (an error if it is damaged)."""
    with tempfile.TemporaryFile(dir=config.paths.state_dir) as copy:
        for chunk in dump(config, active):
            copy.write(chunk)
            yield chunk
        copy.flush()
        read_toc(config, copy)
        verify(config, copy)


def open_backup(config: Config, name: str) -> IO[bytes]:
    """A backup kept under ``<state_dir>/backups`` by name. :raises NotConfigured: there is none."""
    path = backups_dir(config) / name
    if "/" in name or not path.is_file() or path.is_symlink():
        kept = sorted(p.name for p in backups_dir(config).glob("*.dump")) if backups_dir(config).is_dir() else []
        raise NotConfigured(f"there is no backup {name!r} on this node",
                            hint=f"backups here: {', '.join(kept)}" if kept else "make one with `execute backup`")
    return path.open("rb")
