-- Schema v1: the cluster's shared state. Runs inside one transaction with search_path set to the
-- appliance's schema, so every name below is created there. No braces, no psql meta-commands.

-- What was deployed: one row. checksum = sha256 of the SQL files applied, in order; catalog = the
-- normalised catalog of this schema right after deployment (drift is judged against it).
CREATE TABLE meta (
    id                smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    schema_version    integer NOT NULL,
    product_version   text NOT NULL,
    cluster_id        uuid NOT NULL,
    checksum          text NOT NULL,
    catalog           text NOT NULL,
    system_identifier text NOT NULL,
    deployed_at       timestamptz NOT NULL DEFAULT now(),
    deployed_by       text NOT NULL,
    upgraded_at       timestamptz
);

-- App nodes. priority is random at registration (ties broken by node_id); last_heartbeat is written
-- with the database clock; heartbeat_seq lets observers judge liveness on their own monotonic clock.
CREATE TABLE nodes (
    node_id         uuid PRIMARY KEY,
    hardware_id     text NOT NULL UNIQUE,
    name            text NOT NULL,
    priority        integer NOT NULL CHECK (priority BETWEEN 1 AND 1000000),
    role            text NOT NULL CHECK (role IN ('primary', 'standby')),
    admin_state     text NOT NULL DEFAULT 'active' CHECK (admin_state IN ('active', 'stopped')),
    product_version text NOT NULL,
    registered_at   timestamptz NOT NULL DEFAULT now(),
    last_heartbeat  timestamptz,
    heartbeat_seq   bigint NOT NULL DEFAULT 0
);
-- Two nodes can never both be registered as primary, even when they register at the same instant.
CREATE UNIQUE INDEX nodes_one_primary ON nodes (role) WHERE role = 'primary';

CREATE TABLE node_addresses (
    node_id uuid NOT NULL REFERENCES nodes (node_id) ON DELETE CASCADE,
    address inet NOT NULL,
    PRIMARY KEY (node_id, address)
);

-- The leadership lease: one row. Taking it is one conditional UPDATE; epoch is the fencing token
-- and grows with every change of holder; expires_at is computed with the database clock.
CREATE TABLE lease (
    id         smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    holder     uuid REFERENCES nodes (node_id) ON DELETE SET NULL,
    epoch      bigint NOT NULL DEFAULT 0,
    expires_at timestamptz,
    renewed_at timestamptz
);
INSERT INTO lease (id) VALUES (1);

-- Cluster-wide settings (keepalive interval...), validated by the product before they are written.
CREATE TABLE cluster_settings (
    key        text PRIMARY KEY,
    value      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO cluster_settings (key, value) VALUES ('keepalive_interval_s', '10');

-- Settings of the appliance itself that live in its database (shared by every node of the cluster).
CREATE TABLE system_settings (
    key        text PRIMARY KEY,
    value      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
