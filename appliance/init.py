"""Node initialisation (first boot, sandboxes): everything a node needs before it can serve or join.

Creates the master key, records the hardware id and a node id, creates the local database role with
a random password (sent to the server only as a SCRAM verifier) and its database, deploys the schema
there, registers the node as a standalone primary, and stores the local ("origin") credentials
encrypted. Every step checks first, so running it again changes nothing.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance import __version__, credentials
from appliance.clock import Clock
from appliance.config import Config
from appliance.credentials.owner import as_owner
from appliance.db import schema as S
from appliance.db.connect import connect
from appliance.db.target import DbTarget, Timeouts
from appliance.errors import NotConfigured
from appliance.fsutil import write_atomic
from appliance.ha.pgstore import PgStore
from appliance.ha.settings import Setting
from appliance.identity import hardware_id
from appliance.node import ActiveTarget, identity, node_id_path, read_targets, write_targets

if TYPE_CHECKING:
    import psycopg


def _write_once(path: Path, text: str, mode: int) -> bool:
    """Write ``path`` unless it already holds something; True if written."""
    try:
        if path.read_text(encoding="ascii").strip():
            return False
    except (OSError, UnicodeDecodeError):
        pass
    write_atomic(path, text + "\n", mode=mode)
    return True


def _admin_target(config: Config) -> DbTarget:
    local = config.local_db
    if local.admin_password_file is None:
        raise NotConfigured(
            "local_db.admin_password_file is not set: cannot create the local database role",
            hint="point it at a file holding the local PostgreSQL superuser's password",
        )
    try:
        password = local.admin_password_file.read_text(encoding="utf-8").rstrip("\n")
    except OSError as exc:
        raise NotConfigured(f"cannot read {local.admin_password_file}: {exc.strerror}") from None
    return DbTarget((local.host,), (local.port,), local.admin_user, password, "postgres", "prefer")


def _ensure_role_and_db(config: Config, password: str, timeouts: Any) -> None:
    from psycopg import sql  # deferred: psycopg is heavy, and init runs once

    local = config.local_db
    with connect(_admin_target(config), application_name="appliance-init", timeouts=timeouts,
                 autocommit=True) as admin:
        verifier = admin.pgconn.encrypt_password(password.encode(), local.user.encode(), b"scram-sha-256").decode()
        exists = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (local.user,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        admin.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(local.user), sql.Literal(verifier)))
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (local.name,)).fetchone():
            admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(local.name), sql.Identifier(local.user)))


def initialise(config: Config, *, clock: Clock, say: Callable[[str], None]) -> bool:
    """Initialise this node; return True if anything changed.

    :raises ApplianceError: with what failed and what to do; a re-run continues where it stopped.
    """
    from appliance.secrets import CredentialMissing  # deferred: loads cryptography

    changed = False
    state_dir = config.paths.state_dir
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
    with as_owner(config) as owner:
        created = credentials.backend_for(config).initialise()
    if created:
        say("created the master key" + (f" (owner {owner})" if owner else ""))
        changed = True
    if _write_once(state_dir / "hardware-id", config.node.hardware_id or hardware_id(state_dir), 0o644):
        say("recorded the hardware id")
        changed = True
    if _write_once(node_id_path(config), str(uuid.uuid4()), 0o644):
        say("created the node id")
        changed = True
    me = identity(config)
    timeouts = Timeouts(connect_timeout=config.database.connect_timeout_s,
                        statement_timeout=config.database.statement_timeout_s)
    try:
        with as_owner(config):
            origin, _active = read_targets(config)
        target = origin.target
    except CredentialMissing:
        password = secrets.token_urlsafe(32)
        _ensure_role_and_db(config, password, timeouts)
        say(f"created database role {config.local_db.user} and database {config.local_db.name}")
        target = DbTarget((config.local_db.host,), (config.local_db.port,), config.local_db.user, password,
                          config.local_db.name, "prefer")
        changed = True
        origin = None
    schema = S.schema_name(config.database.schema_prefix)
    with connect(target, application_name=f"appliance-init:{me.name}", timeouts=timeouts, autocommit=True) as conn:
        conn_any: psycopg.Connection[Any] = conn
        with S.deploy_lock(conn_any, schema, wait_s=config.database.lock_wait_s, clock=clock):
            state = S.read_state(conn_any, schema)
            store = PgStore.on_connection(conn_any, target, schema)
            with conn_any.transaction():
                if state.kind is S.StateKind.ABSENT:
                    cluster_id = S.deploy(conn_any, schema, deployed_by=me.name, product_version=__version__)
                    store.seed_settings({Setting.KEEPALIVE: str(config.ha.keepalive_interval_s)})
                    say(f"deployed schema {schema} v{S.latest_version()} on the local database")
                    changed = True
                elif state.kind is S.StateKind.OLDER:
                    S.upgrade(conn_any, schema, state, product_version=__version__)
                    say(f"upgraded schema {schema} to v{S.latest_version()} on the local database")
                    cluster_id = state.cluster_id or ""
                    changed = True
                elif state.kind is S.StateKind.CURRENT:
                    cluster_id = state.cluster_id or ""
                else:
                    raise NotConfigured(f"the local database cannot be used: {state.describe()}",
                                        hint="fix or drop the local database, then run init again")
                if store.snapshot().node(me.node_id) is None:
                    store.register_node(me, role="primary", product_version=__version__)
                    say(f"registered {me.name} as the standalone primary")
                    changed = True
    if origin is None:
        local = ActiveTarget(target, schema, cluster_id, "primary", local=True)
        with as_owner(config) as owner:
            write_targets(config, local, local)
        say("stored the local database credentials (encrypted" + (f", owner {owner})" if owner else ")"))
    return changed
