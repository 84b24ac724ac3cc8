-- Schema v5: a node's name is a host name (RFC 1123: dot-separated labels of letters, digits and
-- hyphens, 1-63 characters each, no hyphen at either end, at most 253 in all, the last label not all
-- digits), the rule of appliance.names.check_node_name. So a name stored here can never carry a control
-- character, an escape sequence or a newline into a table, a message or a log on any node.

-- A name already stored that breaks the rule (written by hand, or by an older product) becomes 'node-'
-- and the start of the node's id: the cluster keys on the node id, not the name, and the node's agent
-- records its hostname again on its next tick.
UPDATE nodes SET name = 'node-' || left(node_id::text, 8)
 WHERE NOT (length(name) BETWEEN 1 AND 253
            AND name ~ '^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$'
            AND name !~ '(^|\.)[0-9]+$');

ALTER TABLE nodes ADD CONSTRAINT nodes_name_is_a_host_name CHECK (
    length(name) BETWEEN 1 AND 253
    AND name ~ '^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$'
    AND name !~ '(^|\.)[0-9]+$'
);
