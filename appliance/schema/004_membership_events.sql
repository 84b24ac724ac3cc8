-- Schema v4: the membership life cycle (priority 0, boot start, join codes), the history of HA events
-- and their notifications.

-- Priority 0 = never primary (a witness-like standby); registration still picks 1..1000000 at random.
ALTER TABLE nodes DROP CONSTRAINT nodes_priority_check;
ALTER TABLE nodes ADD CONSTRAINT nodes_priority_check CHECK (priority BETWEEN 0 AND 1000000);
-- What a node does when its agent starts (after a reboot): enabled = take part as a standby, disabled =
-- stay out of the cluster (STOP), keep = the admin state it had before.
ALTER TABLE nodes ADD COLUMN boot_start text NOT NULL DEFAULT 'enabled'
    CHECK (boot_start IN ('enabled', 'disabled', 'keep'));

-- When an admin asked for the handover (a switchover; a clean stop names a successor without asking):
-- the new holder reports the switchover's duration by the database clock.
ALTER TABLE lease ADD COLUMN handover_requested_at timestamptz;

INSERT INTO cluster_settings (key, value) VALUES ('failback', 'off');

-- Every HA event, once. id is made by the node that saw it, so a write retried after a lost answer is
-- not a second event; dedup_key names an occurrence several nodes see (a database failover) so that only
-- the first report of it within a short window is kept. No foreign key to nodes: the history outlives
-- a node that left.
CREATE TABLE events (
    seq        bigserial PRIMARY KEY,
    id         uuid NOT NULL UNIQUE,
    time       timestamptz NOT NULL DEFAULT now(),
    node_id    uuid,
    node       text NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('takeover', 'step_down', 'switchover', 'maintenance', 'node_stop',
                                             'node_start', 'join', 'leave', 'setting', 'db_failover',
                                             'db_split_brain', 'redirect')),
    epoch      bigint,
    details    jsonb NOT NULL DEFAULT '{}'::jsonb,
    duration_s double precision,
    dedup_key  text
);
CREATE INDEX events_time ON events (time);
CREATE INDEX events_dedup ON events (dedup_key, time) WHERE dedup_key IS NOT NULL;

-- One notification of one event on one channel. Claimed by the node that sends it (first the one that
-- wrote the event); another node takes it over only once the claimant is offline or its claim expired,
-- so a failover during delivery neither loses nor doubles it.
CREATE TABLE deliveries (
    event_seq        bigint NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
    channel          text NOT NULL CHECK (channel IN ('webhook', 'email')),
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    deadline_at      timestamptz NOT NULL,
    claimed_by       uuid,
    claim_expires_at timestamptz,
    done_at          timestamptz,
    done_by          text,
    last_error       text,
    PRIMARY KEY (event_seq, channel)
);
CREATE INDEX deliveries_pending ON deliveries (next_attempt_at) WHERE status = 'pending';

-- One-time join codes. Only a hash of the secret is kept. The node that fetched the cluster's credentials
-- with a code is recorded (claimed_by: its hardware id); the code is spent in the joining node's
-- registration transaction. A node that leaves takes the codes it issued with it.
CREATE TABLE join_codes (
    code_id     text PRIMARY KEY,
    secret_hash bytea NOT NULL,
    issued_by   uuid NOT NULL REFERENCES nodes (node_id) ON DELETE CASCADE,
    issued_at   timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    claimed_by  text,
    claimed_at  timestamptz,
    used_by     text,
    used_at     timestamptz,
    revoked_at  timestamptz,
    failures    integer NOT NULL DEFAULT 0
);

-- Secrets every node needs (the webhook's signing secret, the SMTP password), sealed with AES-256-GCM
-- under a key derived from the cluster's database credential: the table alone does not give them away.
CREATE TABLE cluster_secrets (
    name       text PRIMARY KEY,
    sealed     bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
