"""The appliance's database schema: versioned SQL shipped in the package, deployed or checked.

Rules (``creds-schema.md`` 2.3): absent -> deploy (primary only); same version -> verify checksum and
catalog, reuse; older -> upgrade only when asked, as primary; newer than this product -> refuse;
foreign or half-present objects -> refuse and list them. Everything a deployment writes, DDL and
the ``meta`` row alike, is one transaction: there is no half-deployed state to recover from.

Deployers are serialised by a session advisory lock taken by *polling* ``pg_try_advisory_lock`` with a
deadline (a blocked ``pg_advisory_lock`` holds a snapshot and can deadlock with other DDL), and the
state is read again once the lock is held. The lock is freed with the session if the deployer dies.
"""

from __future__ import annotations

import enum
import hashlib
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.clock import Clock
from appliance.errors import Conflict, InternalError, UsageError

if TYPE_CHECKING:
    import psycopg

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schema"
_FILE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
LOCK_POLL_S = 0.2


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


@cache
def migrations() -> tuple[Migration, ...]:
    """The shipped SQL files, in order; versions must run 1, 2, 3... without a gap."""
    found = []
    for path in sorted(SCHEMA_DIR.glob("*.sql")):
        match = _FILE.match(path.name)
        if not match:
            raise InternalError(f"unexpected file in the schema directory: {path.name}")
        found.append(Migration(int(match.group(1)), match.group(2), path.read_text(encoding="utf-8")))
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise InternalError("schema files are not numbered 001, 002, ... without gaps")
    return tuple(found)


def latest_version() -> int:
    return migrations()[-1].version


def checksum(upto: int) -> str:
    """sha256 over the SQL of versions 1..upto (file names included), as ``sha256:<hex>``."""
    digest = hashlib.sha256()
    for migration in migrations()[:upto]:
        digest.update(f"{migration.version:03d}_{migration.name}.sql\n".encode())
        digest.update(migration.sql.encode())
    return "sha256:" + digest.hexdigest()


def schema_name(prefix: str) -> str:
    """The PostgreSQL schema holding the appliance's tables: ``<prefix>appliance``."""
    name = f"{prefix}appliance"
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise UsageError(
            f"the schema prefix {prefix!r} gives an invalid schema name",
            hint="use lower-case letters, digits and underscores (at most 54 characters)",
        )
    return name


class StateKind(enum.Enum):
    ABSENT = "absent"  # no schema, or an empty one: can be deployed
    CURRENT = "current"  # this product's version, checksum and catalog match
    OLDER = "older"  # an earlier version: upgradable by a primary when asked
    NEWER = "newer"  # a later product deployed it: refuse
    FOREIGN = "foreign"  # objects that are not (or not entirely) ours: refuse, list them
    DRIFT = "drift"  # our version, but the SQL or the catalog differs from what was deployed


@dataclass(frozen=True)
class SchemaState:
    kind: StateKind
    schema: str
    version: int | None = None
    product_version: str | None = None
    cluster_id: str | None = None
    system_identifier: str | None = None
    detail: tuple[str, ...] = ()  # objects found (foreign) or differences (drift)

    def describe(self) -> str:
        if self.kind is StateKind.ABSENT:
            return f"schema {self.schema} is not deployed"
        if self.kind is StateKind.FOREIGN:
            return f"schema {self.schema} holds objects that are not this appliance's: {', '.join(self.detail)}"
        if self.kind is StateKind.DRIFT:
            return f"schema {self.schema} v{self.version} differs from what was deployed: {'; '.join(self.detail)}"
        return f"schema {self.schema} v{self.version} (cluster {self.cluster_id}, product {self.product_version})"


# --- reading the catalog ------------------------------------------------------------------------

_CATALOG_SQL = """
SELECT 'table ' || c.relname || ' ' || c.relkind::text
  FROM pg_class c WHERE c.relnamespace = %(ns)s AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
UNION ALL
SELECT 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
       || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
       || COALESCE(' default ' || replace(pg_get_expr(d.adbin, d.adrelid), %(qualified)s, ''), '')
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE c.relnamespace = %(ns)s AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT 'constraint ' || c.relname || '.' || k.conname || ' ' || replace(pg_get_constraintdef(k.oid), %(qualified)s, '')
  FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid WHERE c.relnamespace = %(ns)s
UNION ALL
SELECT 'index ' || i.relname || ' ' || replace(pg_get_indexdef(i.oid), %(qualified)s, '')
  FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid WHERE i.relnamespace = %(ns)s
UNION ALL
SELECT 'function ' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')'
  FROM pg_proc p WHERE p.pronamespace = %(ns)s
UNION ALL
SELECT 'type ' || t.typname
  FROM pg_type t WHERE t.typnamespace = %(ns)s AND t.typtype IN ('e', 'd', 'r')
"""


def _namespace(conn: psycopg.Connection[Any], schema: str) -> int | None:
    row = conn.execute("SELECT oid FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
    return int(row[0]) if row else None


def catalog_text(conn: psycopg.Connection[Any], schema: str) -> str:
    """A normalised, sorted listing of the schema's tables, columns, constraints, indexes, functions."""
    ns = _namespace(conn, schema)
    if ns is None:
        return ""
    # Definitions are printed relative to search_path: print them all fully qualified, then strip our
    # own schema's qualifier, so the listing depends neither on the session nor on --db_prefix.
    # Transaction-local (a savepoint when the caller is in a transaction), restored on the way out.
    with conn.transaction():
        saved = conn.execute("SELECT current_setting('search_path')").fetchone()
        conn.execute("SELECT set_config('search_path', 'pg_catalog', true)")
        qualified = conn.execute("SELECT quote_ident(%s) || '.'", (schema,)).fetchone()
        rows = conn.execute(_CATALOG_SQL, {"ns": ns, "qualified": qualified[0] if qualified else ""}).fetchall()
        conn.execute("SELECT set_config('search_path', %s, true)", (saved[0] if saved else "",))
    return "\n".join(sorted(str(r[0]) for r in rows))


def _object_names(catalog: str) -> list[str]:
    return sorted({line.split(" ")[1].split(".")[0].split("(")[0] for line in catalog.splitlines() if line})


def _diff(expected: str, actual: str, limit: int = 6) -> tuple[str, ...]:
    want, have = set(expected.splitlines()), set(actual.splitlines())
    lines = [f"missing {line}" for line in sorted(want - have)] + [f"unexpected {line}" for line in sorted(have - want)]
    if len(lines) > limit:
        lines = [*lines[:limit], f"and {len(lines) - limit} more"]
    return tuple(lines)


def read_state(conn: psycopg.Connection[Any], schema: str) -> SchemaState:
    """Classify what the database holds under ``schema`` (reads only)."""
    if _namespace(conn, schema) is None:
        return SchemaState(StateKind.ABSENT, schema)
    catalog = catalog_text(conn, schema)
    if not catalog:
        return SchemaState(StateKind.ABSENT, schema)
    if "table meta r" not in catalog.splitlines():
        return SchemaState(StateKind.FOREIGN, schema, detail=tuple(_object_names(catalog)))
    from psycopg import sql

    row = conn.execute(
        sql.SQL(
            "SELECT schema_version, product_version, cluster_id::text, checksum, catalog, system_identifier "
            "FROM {}.meta WHERE id = 1"
        ).format(sql.Identifier(schema))
    ).fetchone()
    if row is None:
        return SchemaState(StateKind.FOREIGN, schema, detail=("meta (no version row)", *_object_names(catalog)))
    version, product, cluster_id, stored_sum, stored_catalog, sysid = row
    common = {"version": version, "product_version": product, "cluster_id": cluster_id, "system_identifier": sysid}
    if version > latest_version():
        return SchemaState(StateKind.NEWER, schema, **common)
    problems: tuple[str, ...] = ()
    if stored_sum != checksum(version):
        problems = (f"the SQL of v{version} has checksum {stored_sum}, this product ships {checksum(version)}",)
    problems += _diff(stored_catalog, catalog)
    if problems:
        return SchemaState(StateKind.DRIFT, schema, detail=problems, **common)
    kind = StateKind.CURRENT if version == latest_version() else StateKind.OLDER
    return SchemaState(kind, schema, **common)


# --- changing it ----------------------------------------------------------------------------------


def _apply(conn: psycopg.Connection[Any], schema: str, start: int, upto: int) -> None:
    from psycopg import sql

    conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
    for migration in migrations()[start:upto]:
        conn.execute(migration.sql.encode())  # bytes: the file is SQL, never a format string


def deploy(
    conn: psycopg.Connection[Any],
    schema: str,
    *,
    deployed_by: str,
    product_version: str,
    upto: int | None = None,
) -> str:
    """Create the schema at version ``upto`` (default: the latest) and record it. Returns the cluster id.

    Must run inside the caller's transaction, so the DDL and the meta row commit together.
    """
    from psycopg import sql

    upto = upto or latest_version()
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    _apply(conn, schema, 0, upto)
    cluster_id = str(uuid.uuid4())
    sysid = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.meta (schema_version, product_version, cluster_id, checksum, catalog,"
            " system_identifier, deployed_by) VALUES (%s, %s, %s, %s, '', %s, %s)"
        ).format(sql.Identifier(schema)),
        (upto, product_version, cluster_id, checksum(upto), sysid[0] if sysid else "", deployed_by),
    )
    _record_catalog(conn, schema)
    return cluster_id


def upgrade(conn: psycopg.Connection[Any], schema: str, state: SchemaState, *, product_version: str) -> None:
    """Apply the versions after ``state.version`` (inside the caller's transaction)."""
    from psycopg import sql

    if state.kind is not StateKind.OLDER or state.version is None:
        raise InternalError(f"upgrade called on a schema that is {state.kind.value}")
    _apply(conn, schema, state.version, latest_version())
    conn.execute(
        sql.SQL(
            "UPDATE {}.meta SET schema_version = %s, product_version = %s, checksum = %s, upgraded_at = now()"
        ).format(sql.Identifier(schema)),
        (latest_version(), product_version, checksum(latest_version())),
    )
    _record_catalog(conn, schema)


def _record_catalog(conn: psycopg.Connection[Any], schema: str) -> None:
    from psycopg import sql

    conn.execute(
        sql.SQL("UPDATE {}.meta SET catalog = %s").format(sql.Identifier(schema)), (catalog_text(conn, schema),)
    )


# --- privileges -----------------------------------------------------------------------------------

# Every table the migrations create (tests/unit/test_schema_tables.py holds this true as they grow).
TABLES = ("meta", "nodes", "node_addresses", "lease", "cluster_settings", "system_settings",
          "events", "deliveries", "join_codes", "cluster_secrets")


def missing_privileges(conn: psycopg.Connection[Any], schema: str, *, create: bool) -> list[str]:
    """What the connected role lacks: CREATE on the database (to deploy), or use of the tables."""
    missing: list[str] = []
    if create:
        row = conn.execute("SELECT has_database_privilege(current_database(), 'CREATE')").fetchone()
        if not (row and row[0]):
            missing.append("CREATE on the database (to create the schema)")
        return missing
    row = conn.execute("SELECT has_schema_privilege(%s, 'USAGE')", (schema,)).fetchone()
    if not (row and row[0]):
        return [f"USAGE on schema {schema}"]
    for table in TABLES:
        # One privilege at a time: given a list, has_table_privilege is true if ANY of them is held.
        # A table a later migration adds is not there yet in an older schema (the upgrade creates it,
        # as its owner): only the tables that exist are checked.
        rows = conn.execute(
            "SELECT p FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']) AS p "
            "WHERE to_regclass(%s) IS NOT NULL AND NOT has_table_privilege(%s, p)",
            (f"{schema}.{table}", f"{schema}.{table}"),
        ).fetchall()
        if rows:
            missing.append(f"{'/'.join(r[0] for r in rows)} on {schema}.{table}")
    return missing


def missing_read_privileges(conn: psycopg.Connection[Any], schema: str) -> list[str]:
    """What the connected role lacks to read the state of an existing ``schema`` ([] if it is absent)."""
    if _namespace(conn, schema) is None:
        return []
    row = conn.execute("SELECT has_schema_privilege(%s, 'USAGE')", (schema,)).fetchone()
    if not (row and row[0]):
        return [f"USAGE on schema {schema}"]
    meta = f"{schema}.meta"
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (meta,)).fetchone()
    if not (exists and exists[0]):
        return []  # no meta table: read_state reports the schema as foreign or absent, from the catalog
    row = conn.execute("SELECT has_table_privilege(%s, 'SELECT')", (meta,)).fetchone()
    return [] if row and row[0] else [f"SELECT on {meta}"]


def owns_schema(conn: psycopg.Connection[Any], schema: str) -> bool:
    row = conn.execute(
        "SELECT pg_has_role(nspowner, 'USAGE') FROM pg_namespace WHERE nspname = %s", (schema,)
    ).fetchone()
    return bool(row and row[0])


# --- serialising deployers ------------------------------------------------------------------------


def lock_key(schema: str) -> int:
    """The advisory lock key for deployments and registrations under ``schema`` (signed 64-bit)."""
    raw = int.from_bytes(hashlib.sha256(f"appliance-deploy:{schema}".encode()).digest()[:8], "big")
    return raw - (1 << 64) if raw >= (1 << 63) else raw


def lock_holders(conn: psycopg.Connection[Any], key: int) -> list[str]:
    """Who holds the advisory lock ``key``: pid, client address, application name, since when.

    A role that is not a superuser (nor in pg_read_all_stats) sees only the pid of other users'
    sessions; the rest then reads "unknown".
    """
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    rows = conn.execute(
        "SELECT a.pid, COALESCE(host(a.client_addr), CASE WHEN a.backend_start IS NULL THEN 'unknown'"
        " ELSE 'local socket' END), COALESCE(NULLIF(a.application_name, ''), 'unknown'),"
        " COALESCE(to_char(a.backend_start, 'YYYY-MM-DD HH24:MI:SS'), 'unknown') "
        "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s AND l.objsubid = 1",
        (unsigned >> 32, unsigned & 0xFFFFFFFF),
    ).fetchall()
    return [f"pid {pid}, client {addr}, application {app}, connected since {since}"
            for pid, addr, app, since in rows]


def acquire_deploy_lock(
    conn: psycopg.Connection[Any], schema: str, *, wait_s: float, clock: Clock
) -> Iterator[str]:
    """Take the deployment lock of ``schema`` on ``conn`` (autocommit), polling until ``wait_s``.

    A generator: it yields one line when it starts waiting (naming the holder), so a caller can show
    progress, and returns once the lock is held. Release it with :func:`release_deploy_lock`.

    :raises Conflict: not obtained in time; the message names the holder and how to end its session.
    """
    key = lock_key(schema)
    deadline = clock.monotonic() + wait_s
    told = False
    while True:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        if row and row[0]:
            return
        if not told:
            holders = lock_holders(conn, key)
            yield f"another node holds the deployment lock ({'; '.join(holders) or 'unknown'}); waiting"
            told = True
        if clock.monotonic() >= deadline:
            holders = lock_holders(conn, key)
            pids = ", ".join(h.split(",")[0].removeprefix("pid ") for h in holders)
            raise Conflict(
                f"another node is deploying or registering on this database and did not finish within "
                f"{wait_s:g} s ({'; '.join(holders) or 'holder unknown'})",
                hint="retry when it is done; if that node is gone, a DBA can end its session with "
                f"SELECT pg_terminate_backend({pids or 'PID'})",
            )
        clock.sleep(LOCK_POLL_S)


def release_deploy_lock(conn: psycopg.Connection[Any], schema: str) -> None:
    try:
        conn.execute("SELECT pg_advisory_unlock(%s)", (lock_key(schema),))
    except Exception:  # the session is gone, and the lock with it
        pass


@contextmanager
def deploy_lock(
    conn: psycopg.Connection[Any],
    schema: str,
    *,
    wait_s: float,
    clock: Clock,
    on_wait: Callable[[str], None] = lambda _: None,
) -> Iterator[None]:
    """Hold the deployment lock of ``schema`` on ``conn`` (an autocommit connection) for the block.

    :raises Conflict: not obtained within ``wait_s``; the message names the holder.
    """
    for note in acquire_deploy_lock(conn, schema, wait_s=wait_s, clock=clock):
        on_wait(note)
    try:
        yield
    finally:
        release_deploy_lock(conn, schema)
