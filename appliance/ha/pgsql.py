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
    " extract(epoch FROM now() - last_heartbeat)::float8, heartbeat_seq, last_heartbeat,"
    " COALESCE(to_jsonb(n) ->> 'boot_start', 'enabled')"
    " FROM {s}.nodes AS n ORDER BY name, node_id"
)
# handover_to and timeline are read through the row's JSON so that the snapshot also reads a schema
# older than the product's (v1 has neither): the pre-flight of an upgrade judges the registry first.
SNAPSHOT_LEASE: LiteralString = (
    "SELECT holder::text, epoch, extract(epoch FROM expires_at - now())::float8,"
    " to_jsonb(l) ->> 'handover_to', pg_is_in_recovery(), (to_jsonb(l) ->> 'timeline')::bigint,"
    " extract(epoch FROM now() - (to_jsonb(l) ->> 'handover_requested_at')::timestamptz)::float8"
    " FROM {s}.lease AS l WHERE id = 1"
)

SNAPSHOT_SETTINGS: LiteralString = (
    "SELECT key, value, extract(epoch FROM now() - updated_at)::float8 FROM {s}.cluster_settings"
    " WHERE key IN ('keepalive_interval_s', 'keepalive_previous_s', 'maintenance', 'db_check_interval_s', 'vip',"
    " 'failback')"
)
NODE_EXISTS: LiteralString = "SELECT 1 FROM {s}.nodes WHERE node_id = %s FOR KEY SHARE"
# The compare-and-set of the contract. The new epoch is bound to the timeline of the node it is written
# on (the current WAL file's name starts with it). `expires_at IS NULL` as the in-memory store: a holder recorded
# without an expiry (never written by the HA core) counts as free rather than held forever.
ACQUIRE: LiteralString = (
    "UPDATE {s}.lease SET holder = %(me)s, epoch = epoch + 1, timeline = "
    "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint,"
    " expires_at = now() + make_interval(secs => %(ttl)s), renewed_at = now(), handover_to = NULL,"
    " handover_requested_at = NULL"
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
REQUEST_HANDOVER: LiteralString = (
    "UPDATE {s}.lease SET handover_to = %(target)s::uuid,"
    " handover_requested_at = CASE WHEN %(target)s::uuid IS NULL THEN NULL ELSE now() END WHERE id = 1"
)
SET_ADMIN_STATE: LiteralString = "UPDATE {s}.nodes SET admin_state = %s WHERE node_id = %s"
RENAME: LiteralString = "UPDATE {s}.nodes SET name = %s WHERE node_id = %s"
SET_PRIORITY: LiteralString = "UPDATE {s}.nodes SET priority = %s WHERE node_id = %s"
SET_BOOT_START: LiteralString = "UPDATE {s}.nodes SET boot_start = %s WHERE node_id = %s"

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
DELETE_CODES_OF: LiteralString = "DELETE FROM {s}.join_codes WHERE issued_by = %s"

# --- join codes -------------------------------------------------------------------------------------------

FORGET_CODES: LiteralString = (
    "DELETE FROM {s}.join_codes WHERE COALESCE(used_at, revoked_at, expires_at) < now() - interval '1 day'"
)
ISSUE_CODE: LiteralString = (
    "INSERT INTO {s}.join_codes (code_id, secret_hash, issued_by, expires_at)"
    " VALUES (%s, %s, %s, now() + make_interval(secs => %s)) ON CONFLICT (code_id) DO NOTHING RETURNING 1"
)
LIST_CODES: LiteralString = (
    "SELECT c.code_id, COALESCE(n.name, c.issued_by::text), c.issued_by::text, c.issued_at,"
    " extract(epoch FROM c.expires_at - now())::float8, c.claimed_by, c.used_by, c.used_at IS NOT NULL,"
    " c.revoked_at IS NOT NULL, c.failures"
    " FROM {s}.join_codes c LEFT JOIN {s}.nodes n ON n.node_id = c.issued_by ORDER BY c.issued_at DESC"
)
REVOKE_CODE: LiteralString = (
    "UPDATE {s}.join_codes SET revoked_at = now() WHERE code_id = %s AND used_at IS NULL AND revoked_at IS NULL"
    " AND expires_at > now() RETURNING 1"
)
LOCK_CODE: LiteralString = (
    "SELECT secret_hash, expires_at > now(), used_at IS NOT NULL, revoked_at IS NOT NULL, claimed_by"
    " FROM {s}.join_codes WHERE code_id = %s FOR UPDATE"
)
CODE_FAILED: LiteralString = (
    "UPDATE {s}.join_codes SET failures = failures + 1,"
    " revoked_at = CASE WHEN failures + 1 >= %s AND used_at IS NULL THEN COALESCE(revoked_at, now())"
    " ELSE revoked_at END WHERE code_id = %s"
)
CLAIM_CODE: LiteralString = (
    "UPDATE {s}.join_codes SET claimed_by = %s, claimed_at = now() WHERE code_id = %s"
)
USE_CODE: LiteralString = (
    "UPDATE {s}.join_codes SET used_by = %s, used_at = now() WHERE code_id = %s AND claimed_by = %s"
    " AND used_at IS NULL AND revoked_at IS NULL AND expires_at > now() RETURNING 1"
)
OUTSTANDING_CODES: LiteralString = (
    "SELECT max(extract(epoch FROM expires_at - now()))::float8 FROM {s}.join_codes"
    " WHERE issued_by = %s AND used_at IS NULL AND revoked_at IS NULL AND expires_at > now()"
)

# --- events and notifications ---------------------------------------------------------------------------

# The same occurrence reported by several nodes at once: serialise them on the key, then the window check.
LOCK_DEDUP: LiteralString = "SELECT pg_advisory_xact_lock(hashtext(%s))"
RECORD_EVENT: LiteralString = (
    "INSERT INTO {s}.events (id, time, node_id, node, kind, epoch, details, duration_s, dedup_key)"
    " SELECT %(id)s::uuid, COALESCE(%(wall)s::timestamptz, now() - make_interval(secs => %(age)s)),"
    " %(node_id)s::uuid, %(node)s, %(kind)s, COALESCE(%(epoch)s::bigint, (SELECT epoch FROM {s}.lease WHERE id = 1)),"
    " %(details)s::jsonb, %(duration)s::float8, %(dedup)s::text"
    " WHERE %(dedup)s::text IS NULL OR NOT EXISTS (SELECT 1 FROM {s}.events WHERE dedup_key = %(dedup)s::text"
    " AND time > now() - make_interval(secs => %(window)s))"
    " ON CONFLICT (id) DO NOTHING RETURNING seq"
)
CONFIGURED_CHANNELS: LiteralString = (
    "SELECT CASE key WHEN 'notify_webhook' THEN 'webhook' ELSE 'email' END FROM {s}.cluster_settings"
    " WHERE key IN ('notify_webhook', 'notify_email') AND value <> '' ORDER BY 1 DESC"
)
NEW_DELIVERY: LiteralString = (
    "INSERT INTO {s}.deliveries (event_seq, channel, deadline_at, claimed_by, claim_expires_at)"
    " VALUES (%(seq)s, %(channel)s, now() + make_interval(secs => %(deadline)s), %(by)s::uuid,"
    " CASE WHEN %(by)s::uuid IS NULL THEN NULL ELSE now() + make_interval(secs => %(claim)s) END)"
)
PRUNE_EVENTS: LiteralString = (
    "DELETE FROM {s}.events WHERE time < now() - make_interval(secs => %s)"
    " OR seq <= (SELECT seq FROM {s}.events ORDER BY seq DESC OFFSET %s LIMIT 1)"
)
LIST_EVENTS: LiteralString = (
    "SELECT e.id::text, e.seq, e.time, e.node, e.kind, e.epoch, e.details, e.duration_s,"
    " COALESCE((SELECT jsonb_object_agg(d.channel, d.status) FROM {s}.deliveries d WHERE d.event_seq = e.seq),"
    " '{{}}'::jsonb)"
    " FROM {s}.events e WHERE (%(kind)s::text IS NULL OR e.kind = %(kind)s::text)"
    " AND (%(since)s::float8 IS NULL OR e.time >= now() - make_interval(secs => %(since)s::float8))"
    " ORDER BY e.time DESC, e.seq DESC LIMIT %(limit)s"
)
GIVE_UP_OVERDUE: LiteralString = (
    "UPDATE {s}.deliveries SET status = 'failed', claimed_by = NULL, claim_expires_at = NULL, done_at = now(),"
    " last_error = COALESCE(last_error, 'not delivered') || ' (gave up: retry deadline passed)'"
    " WHERE status = 'pending' AND deadline_at <= now()"
)
# Claimable: unclaimed, claimed by this node, by a node not online (or gone), or with an expired claim.
CLAIM_DELIVERIES: LiteralString = (
    "WITH due AS (SELECT d.event_seq, d.channel FROM {s}.deliveries d"
    " LEFT JOIN {s}.nodes n ON n.node_id = d.claimed_by"
    " WHERE d.status = 'pending' AND d.channel = ANY(%(channels)s::text[]) AND d.next_attempt_at <= now()"
    " AND NOT (d.event_seq::text || ':' || d.channel) = ANY(%(busy)s::text[])"
    " AND (d.claimed_by IS NULL OR d.claimed_by = %(me)s::uuid OR d.claim_expires_at IS NULL"
    " OR d.claim_expires_at <= now() OR n.node_id IS NULL OR n.last_heartbeat IS NULL"
    " OR n.last_heartbeat < now() - make_interval(secs => %(liveness)s))"
    " ORDER BY d.event_seq LIMIT %(limit)s FOR UPDATE OF d SKIP LOCKED)"
    " UPDATE {s}.deliveries d SET claimed_by = %(me)s::uuid,"
    " claim_expires_at = now() + make_interval(secs => %(claim)s)"
    " FROM due, {s}.events e WHERE d.event_seq = due.event_seq AND d.channel = due.channel AND e.seq = d.event_seq"
    " RETURNING d.event_seq, d.channel, d.attempts, e.id::text, e.time, e.node, e.kind, e.epoch, e.details,"
    " e.duration_s, extract(epoch FROM d.deadline_at - now())::float8"
)
# When another pending delivery may become claimable: its next attempt, and for one another node holds,
# the end of its claim or of its claimant's liveness, whichever comes first.
NEXT_DUE: LiteralString = (
    "SELECT min(GREATEST(extract(epoch FROM d.next_attempt_at - now()), CASE"
    " WHEN d.claimed_by IS NULL OR d.claim_expires_at IS NULL THEN 0"
    " WHEN d.claimed_by = %(me)s::uuid THEN extract(epoch FROM d.claim_expires_at - now())"
    " ELSE LEAST(extract(epoch FROM d.claim_expires_at - now()),"
    " COALESCE(extract(epoch FROM n.last_heartbeat + make_interval(secs => %(liveness)s) - now()), 0)) END))::float8"
    " FROM {s}.deliveries d LEFT JOIN {s}.nodes n ON n.node_id = d.claimed_by"
    " WHERE d.status = 'pending' AND d.channel = ANY(%(channels)s::text[])"
    " AND NOT (d.event_seq::text || ':' || d.channel) = ANY(%(busy)s::text[])"
)
FINISH_DELIVERY: LiteralString = (
    "UPDATE {s}.deliveries SET attempts = attempts + CASE WHEN %(ok)s THEN 0 ELSE 1 END,"
    " status = CASE WHEN %(ok)s THEN 'delivered' WHEN %(retry)s::float8 IS NULL"
    " OR now() + make_interval(secs => %(retry)s::float8) >= deadline_at THEN 'failed' ELSE 'pending' END,"
    " next_attempt_at = CASE WHEN %(ok)s OR %(retry)s::float8 IS NULL THEN next_attempt_at"
    " ELSE now() + make_interval(secs => %(retry)s::float8) END,"
    " claimed_by = CASE WHEN %(ok)s THEN claimed_by ELSE NULL END, claim_expires_at = NULL,"
    " done_at = CASE WHEN %(ok)s OR %(retry)s::float8 IS NULL"
    " OR now() + make_interval(secs => %(retry)s::float8) >= deadline_at THEN now() END,"
    " done_by = %(me)s::text, last_error = %(error)s::text"
    " WHERE event_seq = %(seq)s AND channel = %(channel)s AND status = 'pending' AND claimed_by = %(me)s::uuid"
    " RETURNING 1"
)
NOTIFY_SETTINGS: LiteralString = (
    "SELECT key, value FROM {s}.cluster_settings WHERE key IN ('notify_webhook', 'notify_email') AND value <> ''"
)
SEALED_SECRETS: LiteralString = "SELECT name, sealed FROM {s}.cluster_secrets ORDER BY name"
UPSERT_SECRET: LiteralString = (
    "INSERT INTO {s}.cluster_secrets (name, sealed, updated_at) VALUES (%s, %s, now())"
    " ON CONFLICT (name) DO UPDATE SET sealed = EXCLUDED.sealed, updated_at = EXCLUDED.updated_at"
)
DELETE_SECRET: LiteralString = "DELETE FROM {s}.cluster_secrets WHERE name = %s"
