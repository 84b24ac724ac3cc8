"""This node's identity and database target, as kept on its own disk.

* ``<state_dir>/node-id``: a UUID made at initialisation; the node's key in the cluster registry.
* ``<state_dir>/hardware-id``: the stable hardware id (see :mod:`appliance.identity`).
* The encrypted credential set (:mod:`appliance.credentials`): ``origin`` (the node's own PostgreSQL) and
  one file per consuming service holding the *active* target: where the node's data lives now (with
  its TLS mode and CA, used by every later connection: agent, shell, reports), the schema, the
  cluster id and the role it registered with. Writing that set is the single,
  atomic switch of "which database and which role"; nothing else records it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance import credentials
from appliance.config import Config
from appliance.db.target import DbTarget
from appliance.errors import NotConfigured
from appliance.ha.model import NodeIdentity
from appliance.hostname import backend_for
from appliance.identity import hardware_id
from appliance.names import check_node_name

ORIGIN = "origin"


@dataclass(frozen=True)
class ActiveTarget:
    """Where this node's data lives and what it is there. ``target`` carries the password."""

    target: DbTarget
    schema: str
    cluster_id: str
    role: str  # primary | standby
    local: bool  # True while the node runs on its own PostgreSQL (the origin)

    def payload(self) -> dict[str, Any]:
        t = self.target
        return {
            "hosts": list(t.hosts), "ports": list(t.ports), "user": t.user, "password": t.password,
            "dbname": t.dbname, "sslmode": t.sslmode, "sslrootcert": t.sslrootcert, "schema": self.schema,
            "cluster_id": self.cluster_id, "role": self.role, "local": self.local,
        }

    @classmethod
    def from_payload(cls, data: Any) -> ActiveTarget:
        target = DbTarget(
            hosts=tuple(data["hosts"]), ports=tuple(data["ports"]), user=data["user"], password=data["password"],
            dbname=data["dbname"], sslmode=data["sslmode"], sslrootcert=data.get("sslrootcert"),
        )
        return cls(target, data["schema"], data["cluster_id"], data["role"], bool(data["local"]))


def node_id_path(config: Config) -> Path:
    return config.paths.state_dir / "node-id"


def identity(config: Config) -> NodeIdentity:
    """This node's identity.

    :raises NotConfigured: the node was never initialised, or its hostname is not a valid node name
        (the cluster registry would refuse it).
    """
    try:
        node_id = str(uuid.UUID(node_id_path(config).read_text(encoding="ascii").strip()))
    except (OSError, ValueError):
        raise NotConfigured(
            "this node is not initialised (no node id)",
            hint="run `appliance-admin init` (first boot does it) before joining a cluster",
        ) from None
    name = backend_for(config).get()
    try:
        check_node_name(name)
    except ValueError as exc:
        raise NotConfigured(f"this node's hostname {name!r} cannot name it in the cluster: it {exc}",
                            hint="set a valid one with 'system set hostname NAME'") from None
    return NodeIdentity(node_id, hardware_id(config.paths.state_dir), name)


def read_targets(config: Config) -> tuple[ActiveTarget, ActiveTarget]:
    """The origin (local DB) and the active target, both from one generation of the credential set.

    :raises CredentialError: missing, unreadable or tampered credentials (never a fallback).
    """
    everything = credentials.backend_for(config).read_set()
    try:
        origin = everything[ORIGIN]
        active = everything[config.credentials.services[0]]
    except KeyError as exc:
        raise NotConfigured(
            f"the credential set has no entry {exc.args[0]!r}", hint="run `appliance-admin init` again"
        ) from None
    return ActiveTarget.from_payload(origin), ActiveTarget.from_payload(active)


def write_targets(config: Config, origin: ActiveTarget, active: ActiveTarget) -> None:
    """Write the whole credential set (origin + one file per service) atomically, then verify it."""
    creds = {ORIGIN: origin.payload()}
    for service in config.credentials.services:
        creds[service] = active.payload()
    credentials.backend_for(config).write_set(creds)
