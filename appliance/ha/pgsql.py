"""The SQL of the PostgreSQL HA store, as data: every statement :class:`~appliance.ha.pgstore.PgStore`
runs, with ``{s}`` standing for the appliance's schema (quoted as an identifier by the store).

Every time written or compared is the server's ``now()`` (the transaction's start time, the same for
every statement of one transaction); ages and remainders are computed by the server.
"""

from __future__ import annotations

from typing import LiteralString

# Written by set_setting in the same transaction as a new keepalive interval: the interval it replaced
# (value) and when (updated_at), so that a snapshot can judge liveness by the longer of the two while
# the change propagates.
PREVIOUS_KEEPALIVE_KEY = "keepalive_previous_s"

# --- the HA loop ----------------------------------------------------------------------------------------

HEARTBEAT: LiteralString = (
    "UPDATE {s}.nodes SET last_heartbeat = now(), heartbeat_seq = heartbeat_seq + 1 WHERE node_id = %s"
)
SNAPSHOT_NODES: LiteralString = (
    "SELECT node_id::text, name, priority, role, admin_state,"
    " extract(epoch FROM now() - last_heartbeat)::float8, heartbeat_seq, last_heartbeat"
    " FROM {s}.nodes ORDER BY name, node_id"
)
# handover_to and timeline are read through the row's JSON so that the snapshot also reads a schema
# older than the product's (v1 has neither): the pre-flight of an upgrade judges the registry first.
SNAPSHOT_LEASE: LiteralString = (
    "SELECT holder::text, epoch, extract(epoch FROM expires_at - now())::float8,"
    " to_jsonb(l) ->> 'handover_to', pg_is_in_recovery(), (to_jsonb(l) ->> 'timeline')::bigint"
    " FROM {s}.lease AS l WHERE id = 1"
)

SNAPSHOT_SETTINGS: LiteralString = (
    "SELECT key, value, extract(epoch FROM now() - updated_at)::float8 FROM {s}.cluster_settings"
    " WHERE key IN ('keepalive_interval_s', 'keepalive_previous_s', 'maintenance', 'db_check_interval_s', 'vip')"
)
NODE_EXISTS: LiteralString = "SELECT 1 FROM {s}.nodes WHERE node_id = %s FOR KEY SHARE"
# The compare-and-set of the contract. The new epoch is bound to the timeline of the node it is written
# on (the current WAL file's name starts with it). `expires_at IS NULL` as the in-memory store: a holder recorded
# without an expiry (never written by the HA core) counts as free rather than held forever.
ACQUIRE: LiteralString = (
    "UPDATE {s}.lease SET holder = %(me)s, epoch = epoch + 1, timeline = "
    "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint,"
    " expires_at = now() + make_interval(secs => %(ttl)s), renewed_at = now(), handover_to = NULL"
    " WHERE id = 1 AND epoch = %(expected)s"
    " AND (holder IS NULL OR expires_at IS NULL OR expires_at <= now())"
    " RETURNING epoch"
)
# Demote first, then promote: nodes_one_primary is a unique index checked row by row.
DEMOTE_OTHERS: LiteralString = "UPDATE {s}.nodes SET role = 'standby' WHERE role = 'primary' AND node_id <> %s"
PROMOTE: LiteralString = "UPDATE {s}.nodes SET role = 'primary' WHERE node_id = %s AND role <> 'primary'"
RENEW: LiteralString = (
    "UPDATE {s}.lease SET expires_at = now() + make_interval(secs => %(ttl)s), renewed_at = now()"
    " WHERE id = 1 AND holder = %(me)s AND epoch = %(epoch)s RETURNING 1"
)
# A successor that is not (or no longer) registered is not recorded: the lease is still given up at
# once, and the best candidate takes over.
RELEASE: LiteralString = (
    "UPDATE {s}.lease SET expires_at = now(),"
    " handover_to = (SELECT node_id FROM {s}.nodes WHERE node_id = %(target)s)"
    " WHERE id = 1 AND holder = %(me)s AND epoch = %(epoch)s AND expires_at > now() RETURNING 1"
)
REQUEST_HANDOVER: LiteralString = "UPDATE {s}.lease SET handover_to = %s WHERE id = 1"
SET_ADMIN_STATE: LiteralString = "UPDATE {s}.nodes SET admin_state = %s WHERE node_id = %s"
RENAME: LiteralString = "UPDATE {s}.nodes SET name = %s WHERE node_id = %s"
SET_PRIORITY: LiteralString = "UPDATE {s}.nodes SET priority = %s WHERE node_id = %s"

# --- settings ---------------------------------------------------------------------------------------------

LOCK_KEEPALIVE: LiteralString = (
    "SELECT value FROM {s}.cluster_settings WHERE key = 'keepalive_interval_s' FOR UPDATE"
)
PREVIOUS_KEEPALIVE: LiteralString = (
    "SELECT value, extract(epoch FROM now() - updated_at)::float8 FROM {s}.cluster_settings"
    " WHERE key = 'keepalive_previous_s'"
)
UPSERT_SETTING: LiteralString = (
    "INSERT INTO {s}.cluster_settings (key, value, updated_at) VALUES (%s, %s, now())"
    " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at"
)
FORGET_PREVIOUS_KEEPALIVE: LiteralString = "DELETE FROM {s}.cluster_settings WHERE key = 'keepalive_previous_s'"

# --- membership -----------------------------------------------------------------------------------------

# Lock order lease -> nodes, the same as a takeover, so registration and the HA loop never deadlock.
LOCK_LEASE: LiteralString = (
    "SELECT holder::text, epoch, expires_at FROM {s}.lease WHERE id = 1 FOR UPDATE"
)
LEASE_ROW: LiteralString = (
    "SELECT holder::text, epoch, expires_at, (to_jsonb(l) ->> 'timeline')::bigint FROM {s}.lease AS l WHERE id = 1"
)
LOCK_NODES: LiteralString = (
    "SELECT node_id::text, hardware_id, name, priority, role, admin_state,"
    " extract(epoch FROM now() - last_heartbeat)::float8 FROM {s}.nodes ORDER BY name FOR UPDATE"
)
NODE_ADDRESSES: LiteralString = "SELECT host(address) FROM {s}.node_addresses WHERE node_id = %s ORDER BY 1"
DEMOTE_NODE: LiteralString = "UPDATE {s}.nodes SET role = 'standby' WHERE node_id = %s"
PROMOTE_NODE: LiteralString = "UPDATE {s}.nodes SET role = 'primary' WHERE node_id = %s"
UPSERT_NODE: LiteralString = (
    "INSERT INTO {s}.nodes (node_id, hardware_id, name, priority, role, product_version, last_heartbeat)"
    " VALUES (%s, %s, %s, %s, %s, %s, now())"
    " ON CONFLICT (node_id) DO UPDATE SET hardware_id = EXCLUDED.hardware_id, name = EXCLUDED.name,"
    " role = EXCLUDED.role, product_version = EXCLUDED.product_version, admin_state = 'active',"
    " last_heartbeat = now(), heartbeat_seq = {s}.nodes.heartbeat_seq + 1"
)
DELETE_ADDRESSES: LiteralString = "DELETE FROM {s}.node_addresses WHERE node_id = %s"
RECORD_CLIENT_ADDRESS: LiteralString = (
    "INSERT INTO {s}.node_addresses (node_id, address) SELECT %s, inet_client_addr()"
    " WHERE inet_client_addr() IS NOT NULL"
)
INSERT_ADDRESS: LiteralString = "INSERT INTO {s}.node_addresses (node_id, address) VALUES (%s, %s)"
TAKE_LEASE: LiteralString = (
    "UPDATE {s}.lease SET holder = %s, epoch = epoch + 1, renewed_at = now(), timeline = "
    "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint,"
    " expires_at = now() + make_interval(secs => %s) WHERE id = 1"
)
DROP_LEASE: LiteralString = "UPDATE {s}.lease SET holder = NULL, epoch = epoch + 1 WHERE id = 1"
FREE_LEASE_OF: LiteralString = (
    "UPDATE {s}.lease SET holder = NULL, expires_at = NULL, epoch = epoch + 1 WHERE id = 1 AND holder = %s"
)
# The epoch only ever grows (it is a fencing token), even when the holder is put back.
RESTORE_LEASE: LiteralString = (
    "UPDATE {s}.lease SET holder = %s, expires_at = %s, epoch = epoch + 1 WHERE id = 1"
    " AND holder IS DISTINCT FROM %s"
)
UNDO_NEW_NODE_LEASE: LiteralString = "UPDATE {s}.lease SET holder = NULL WHERE holder = %s"
DELETE_NODE: LiteralString = "DELETE FROM {s}.nodes WHERE node_id = %s"
RESTORE_NODE: LiteralString = "UPDATE {s}.nodes SET name = %s, role = %s, admin_state = %s WHERE node_id = %s"
WITHDRAW_HANDOVER_TO: LiteralString = "UPDATE {s}.lease SET handover_to = NULL WHERE id = 1 AND handover_to = %s"
