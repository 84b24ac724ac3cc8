-- Schema v2: controls for planned handover, maintenance and DB health checks.

-- A primary that stops cleanly or is asked to switch over names its successor here, so the successor
-- can take the lease at once instead of waiting for it to expire.
ALTER TABLE lease ADD COLUMN handover_to uuid REFERENCES nodes (node_id) ON DELETE SET NULL;

INSERT INTO cluster_settings (key, value) VALUES
    ('db_check_interval_s', '10'),
    ('maintenance', 'off');
