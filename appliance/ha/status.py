"""The one place that derives the state shown to the admin for a node (after Milestone's states).

``ha get nodes``, ``ha get status``, ``system get status`` (through the agent's status file) and the
simulation's checks all ask :func:`status_of`. The agent, which knows what its own node does *now*
(the snapshot predates the tick's action), passes ``acting``.
"""

from __future__ import annotations

from appliance.ha.model import ClusterView, NodeState, NodeStatus


def status_of(view: ClusterView, node: NodeState, *, acting: bool | None = None) -> NodeStatus:
    """PRIM/ALONE/SECOND/STOP/WAIT for ``node``.

    :param acting: for the node's own agent: whether it acts as primary right now. Then the lease as
        the snapshot saw it is not trusted for the primary states (it may have moved since); a node
        that does not act is never shown as primary.
    """
    holds_lease = view.lease.holder == node.node_id and not view.lease.expired
    if acting or (acting is None and holds_lease and node.admin_state != "stopped"):
        others = [n for n in view.candidates() if n.node_id != node.node_id]
        return NodeStatus.PRIM if others else NodeStatus.ALONE
    if node.admin_state == "stopped":
        return NodeStatus.STOP
    if holds_lease:
        return NodeStatus.WAIT  # its own agent: holds the lease but does not act (yet, or any more)
    if view.online(node):
        return NodeStatus.SECOND
    return NodeStatus.WAIT
