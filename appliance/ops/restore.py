"""``execute restore``: put a backup's settings back, checked first, in one transaction.

What a restore replaces, and what it keeps:

* **Replaced** from the dump: the cluster settings (keepalive interval, maintenance, DB check
  interval; written through the HA store, so each value is checked and every agent is woken) and the
  system settings.
* **Kept** as they are: the cluster's identity (``meta``), its registered nodes and their addresses,
  and the lease. Restoring those would re-register nodes that left and move the lease's epoch (the
  fencing token) backwards, which could let a stale primary act. Also kept: the events and their
  deliveries (this cluster's history and outbox: restoring them would resend old notifications), the
  join codes (a restore must not revive a code that was used or revoked since), and the sealed
  cluster secrets (sealed under this cluster's id and database credential, which a dump of another
  cluster does not share; set them again with the notification commands if needed).

Before anything is replaced (all of it before the confirmation question): the archive is read in full
(:func:`~appliance.ops.backup.verify`), its tables must be the appliance's, its schema version not
newer than the live one, its settings valid; the node must be standalone or the acting primary; the
live schema must be this product's, undrifted. Then a backup of the current state is written under
``<state_dir>/backups`` (``pre-restore-...``), and the replacement runs as one transaction that rolls
back entirely on any failure.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import psycopg
from psycopg import sql

from appliance.clock import Clock
from appliance.config import Config
from appliance.db.connect import connect
from appliance.db.errors import error_from_exception
from appliance.db.schema import StateKind, read_state
from appliance.db.target import Timeouts
from appliance.errors import CommandFailed, Conflict, UsageError
from appliance.ha.pgstore import PgStore
from appliance.ha.session import cluster_snapshot
from appliance.ha.settings import Setting
from appliance.ha.store import StoreUnavailable
from appliance.node import ActiveTarget, read_targets
from appliance.ops import backup

# Every table of the schema is one or the other (a test holds this true as the schema grows).
KEPT = ("meta", "nodes", "node_addresses", "lease", "events", "deliveries", "join_codes", "cluster_secrets")
RESTORED = ("cluster_settings", "system_settings")
PREVIOUS_KEEPALIVE = "keepalive_previous_s"  # a store-internal record of a change, not a setting
CHUNK = 256 * 1024
PRE_RESTORE = "pre-restore-"
KEEP_PRE_RESTORE = 5  # the automatic backups made before a restore; `execute backup`'s are the admin's
TIMEOUTS = Timeouts(connect_timeout=5.0, statement_timeout=60.0, lock_timeout=10.0)


@dataclass
class RestorePlan:
    source: IO[bytes]
    label: str
    active: ActiveTarget
    dump_schema: str
    dump_meta: dict[str, str | None]
    created: str | None
    cluster_settings: dict[str, str]
    system_settings: list[dict[str, str | None]]
    changes: list[str]
    notes: list[str]

    def text(self) -> str:
        meta = self.dump_meta
        same = meta.get("cluster_id") == self.live_cluster_id
        lines = [f"Restore from {self.label}: a dump made {self.created or 'at an unknown time'} of cluster "
                 f"{meta.get('cluster_id')} ({'this cluster' if same else 'ANOTHER cluster'}), schema "
                 f"v{meta.get('schema_version')}, product {meta.get('product_version')}.",
                 f"Into {self.active.target.describe()} (schema {self.active.schema}). It replaces:"]
        lines += [f"  {change}" for change in self.changes] or ["  nothing: the settings are the same"]
        lines.append("It keeps this cluster's identity, nodes and lease (and its events, join codes and sealed "
                     "secrets). A backup of the current state is made first (under the state dir).")
        lines += [f"Note: {note}" for note in self.notes]
        return "\n".join(lines)

    live_cluster_id: str | None = None


def spool_stdin(config: Config, stdin: IO[bytes]) -> IO[bytes]:
    """Copy standard input into an unlinked file under the state dir (bounded by support.max_restore_mb)."""
    limit = config.support.max_restore_mb * 1024 * 1024
    spool = tempfile.TemporaryFile(dir=config.paths.state_dir)
    size = 0
    while chunk := stdin.read(CHUNK):
        size += len(chunk)
        if size > limit:
            spool.close()
            raise UsageError(f"the dump on standard input is larger than {config.support.max_restore_mb} MiB",
                             hint="raise support.max_restore_mb in the configuration")
        spool.write(chunk)
    if size == 0:
        spool.close()
        raise UsageError("nothing was read from standard input",
                         hint="ssh ems@vm 'execute restore --input - --yes' < appliance.dump")
    spool.flush()
    return spool


def _check_node(config: Config, active: ActiveTarget) -> None:
    """Only a standalone node or the acting primary may restore. :raises Conflict:"""
    if active.local:
        return
    view, _active, me = cluster_snapshot(config)
    holder = view.holder()
    if holder is None or holder.node_id != me.node_id:
        primary = f"the primary is {holder.name}" if holder else "there is no primary now"
        raise Conflict(f"this node is not the acting primary ({primary}): a restore runs on the primary",
                       hint="run it on the primary (see `ha get nodes`)")


def prepare(config: Config, source: IO[bytes], label: str) -> RestorePlan:
    """Read and check everything; change nothing. :raises ApplianceError: the restore would be refused."""
    toc = backup.read_toc(config, source)
    backup.verify(config, source)
    schemas = {schema for schema, table in toc.data if table == "meta"}
    if len(schemas) != 1:
        raise CommandFailed("the dump does not hold exactly one appliance schema (a meta table)",
                            hint="give a file made by `execute backup`")
    schema = schemas.pop()
    unknown = sorted({table for s, table in toc.tables if s == schema} - set(KEPT) - set(RESTORED))
    if unknown:
        raise CommandFailed(f"the dump holds tables this version does not know: {', '.join(unknown)}",
                            hint="restore it on the appliance version that made it")
    meta_rows = backup.table_rows(config, source, schema, "meta")
    if len(meta_rows) != 1:
        raise CommandFailed("the dump's meta table does not hold exactly one row")
    meta = meta_rows[0]
    cluster = {str(r["key"]): str(r["value"]) for r in backup.table_rows(config, source, schema, "cluster_settings")}
    system = backup.table_rows(config, source, schema, "system_settings")
    notes = []
    for key in sorted(cluster):
        if key == PREVIOUS_KEEPALIVE:
            del cluster[key]
            continue
        try:
            Setting(key).check(cluster[key])
        except ValueError as exc:
            if key in {s.value for s in Setting}:
                raise CommandFailed(f"the dump's setting is not valid: {exc}") from None
            notes.append(f"the dump's cluster setting {key!r} is not known to this version and is left out")
            del cluster[key]

    _origin, active = read_targets(config)
    _check_node(config, active)
    active = backup.database_of(config, active)
    with connect(active.target, application_name="appliance-shell:restore", timeouts=TIMEOUTS,
                 autocommit=True) as conn:
        state = read_state(conn, active.schema)
        if state.kind not in (StateKind.CURRENT, StateKind.OLDER):
            raise Conflict(f"the live database cannot take a restore: {state.describe()}")
        dumped = int(meta.get("schema_version") or 0)
        if state.version is None or dumped > state.version:
            raise CommandFailed(f"the dump is of a newer schema (v{dumped}) than this cluster's "
                                f"(v{state.version}): it cannot be restored here",
                                hint="upgrade this appliance first, or use a dump made by this version")
        live_cluster = _settings(conn, active.schema, "cluster_settings")
        live_system = _settings(conn, active.schema, "system_settings")
    changes = [f"cluster setting {key}: {live_cluster.get(key, '(unset)')} -> {value}"
               for key, value in sorted(cluster.items()) if live_cluster.get(key) != value]
    dump_system = {str(r["key"]): str(r["value"]) for r in system}
    if dump_system != live_system:
        changes.append(f"system settings: {len(live_system)} -> {len(dump_system)} entries "
                       f"({', '.join(sorted(set(dump_system) ^ set(live_system))) or 'values differ'})")
    return RestorePlan(source, label, active, schema, meta, toc.created, cluster, system, changes, notes,
                       live_cluster_id=state.cluster_id)


def _settings(conn: Any, schema: str, table: str) -> dict[str, str]:
    rows = conn.execute(sql.SQL("SELECT key, value FROM {}.{}").format(sql.Identifier(schema),
                                                                       sql.Identifier(table))).fetchall()
    return {str(k): str(v) for k, v in rows if k != PREVIOUS_KEEPALIVE}


def apply(config: Config, plan: RestorePlan, clock: Clock, hostname: str) -> Iterator[str]:
    """A backup of the current state, then the replacement in one transaction. Lines say what happened."""
    active = plan.active
    if not plan.changes:
        yield "Nothing to replace: the dump's settings are the ones in use."
        return
    saved = backup.save(config, active, f"{PRE_RESTORE}{hostname}-{clock.now().strftime('%Y%m%dT%H%M%SZ')}")
    backup.prune(config, PRE_RESTORE, KEEP_PRE_RESTORE)
    yield f"Saved the current state first: {saved.path} ({saved.size} bytes)."
    failure: str | None = None
    try:
        with connect(active.target, application_name="appliance-shell:restore", timeouts=TIMEOUTS) as conn:
            with conn.transaction():
                state = read_state(conn, active.schema)
                if state.kind not in (StateKind.CURRENT, StateKind.OLDER):
                    raise Conflict(f"the live database changed meanwhile: {state.describe()}; nothing was replaced")
                store = PgStore.on_connection(conn, active.target, active.schema)
                live = _settings(conn, active.schema, "cluster_settings")
                for key, value in sorted(plan.cluster_settings.items()):
                    if live.get(key) != value:
                        store.set_setting(key, value)
                table = sql.Identifier(active.schema, "system_settings")
                conn.execute(sql.SQL("DELETE FROM {}").format(table))
                for row in plan.system_settings:
                    conn.execute(sql.SQL("INSERT INTO {} (key, value, updated_at) VALUES (%s, %s, "
                                         "coalesce(%s::timestamptz, now()))").format(table),
                                 (row["key"], row["value"], row.get("updated_at")))
    except psycopg.Error as exc:
        failure = error_from_exception(exc, active.target, timeouts=TIMEOUTS, action="Cannot restore").message
    except StoreUnavailable as exc:
        failure = exc.message
    if failure is not None:  # raised here, outside the except block: no psycopg exception in __context__
        raise CommandFailed(f"{failure}; the transaction was rolled back, nothing was replaced",
                            hint=f"the state before is also saved in {saved.path}")
    for change in plan.changes:
        yield f"Restored {change}."
    yield "Done: every node follows the restored cluster settings."
