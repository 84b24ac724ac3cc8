"""Join codes from the shell: issue (``ha add node``), list, revoke, and join with one (``ha join``).

Issuing records the code in the cluster's database (its secret only as a hash), makes sure this node's
join service listens (the agent starts it when it sees an outstanding code of its own, within a
notification's time) and prints the code. Joining fetches the cluster's credentials from that service
(:mod:`appliance.ha.joinclient`) and hands them to ``redirect``'s own machinery as a secondary
(:func:`appliance.redirect.preflight`, :func:`appliance.redirect.execute`): the same pre-flight,
confirmation, rollback and timing, with the code spent in the registration's transaction. The admin
never types or sees the database password.

What happens when the issuing node fails over before the code is used: nothing. A code is checked and
spent in the cluster's database, and the join service runs on the issuing node whatever its role. If
the issuing node is down, its codes cannot be used until it is back (the code names its address and
pins its certificate); a node that leaves the cluster takes its codes with it; issue a new code on any
online node.
"""

from __future__ import annotations

import hashlib
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

from appliance.clock import Clock
from appliance.config import Config
from appliance.configcheck import split_listen
from appliance.errors import Conflict, NotConfigured, Unavailable
from appliance.fsutil import write_atomic
from appliance.ha.joinclient import fetch, probe
from appliance.ha.joincode import JoinCode, parse, secret_hash
from appliance.ha.jointls import own_fingerprint
from appliance.ha.model import JoinCodeInfo
from appliance.ha.session import cluster_store
from appliance.node import ActiveTarget, identity, read_targets
from appliance.redirect import JoinTicket, Plan, Request, preflight

DEFAULT_MINUTES = 30
MAX_MINUTES = 24 * 60
LISTEN_WAIT_S = 10.0  # how long `ha add node` waits for this node's agent to open its join service
SCHEMA_SUFFIX = "appliance"


@dataclass(frozen=True)
class Issued:
    code: str
    code_id: str
    expires: datetime
    endpoint: str


def advertised(config: Config, active: ActiveTarget) -> tuple[str, int]:
    """Where joining nodes reach this node's join service: ``[join] advertise``, else the listen address
    if it is a specific one, else this node's address towards the cluster's database."""
    if config.join.advertise:
        name, _, number = config.join.advertise.rpartition(":")
        return name.strip("[]"), int(number)
    host, port = split_listen(config.join.listen)
    if host not in ("0.0.0.0", "::"):
        return host, port
    db_host, db_port = active.target.host_ports()[0]
    try:
        family = socket.AF_INET6 if ":" in db_host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((db_host, db_port))  # no packet is sent: the kernel only picks the route
            return str(sock.getsockname()[0]), port
    except OSError:
        raise NotConfigured("cannot tell which address other nodes reach this node's join service at",
                            hint="set [join] advertise = \"HOST:PORT\" in the configuration") from None


def issue(config: Config, minutes: int, clock: Clock) -> Issued:
    """Issue a join code valid for ``minutes``, once this node's join service answers.

    :raises NotConfigured: not in a cluster, no join service. :raises Unavailable: the agent did not open it.
    """
    me = identity(config)
    _origin, active = read_targets(config)
    if active.local:
        raise NotConfigured(f"this node ({me.name}) is not in a cluster: it runs on its local database",
                            hint="issue the code on a node of the cluster (redirect this one as primary first)")
    if not config.join.listen:
        raise NotConfigured("this node's join service is off ([join] listen is empty)",
                            hint="set [join] listen in the configuration, or issue the code on another node")
    fingerprint = own_fingerprint(config)
    host, port = advertised(config, active)
    code_id, secret = secrets.token_hex(5), secrets.token_bytes(16)
    with cluster_store(config) as (store, _active, _me):
        view = store.snapshot()
        mine = view.node(me.node_id)
        if mine is None:
            raise NotConfigured(f"this node ({me.name}) is not registered in cluster {active.cluster_id}",
                                hint="run redirect again")
        if not view.online(mine):
            raise Unavailable(f"this node ({me.name}) is not online in the cluster: its agent, which serves the "
                              "join code, is not running", hint="start appliance-agent, then try again")
        store.issue_join_code(code_id, secret_hash(secret), me.node_id, minutes * 60.0)
        info = next(c for c in store.join_codes() if c.code_id == code_id)
        expires = info.issued_at + timedelta(minutes=minutes)
        listen_host, listen_port = split_listen(config.join.listen)
        local = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(listen_host, listen_host)
        deadline = clock.monotonic() + LISTEN_WAIT_S
        while not probe(local, listen_port, fingerprint, timeout=1.0):
            if clock.monotonic() >= deadline:
                store.revoke_join_code(code_id)
                raise Unavailable(f"this node's join service did not start listening on {config.join.listen} "
                                  f"within {LISTEN_WAIT_S:g} s; the code was revoked",
                                  hint="see the agent's log (is the port in use?), then try again")
            clock.sleep(0.05)
    code = JoinCode(code_id, secret, active.cluster_id, fingerprint, host, port, int(expires.timestamp()))
    return Issued(code.text(), code_id, expires, code.endpoint())


def codes(config: Config) -> list[JoinCodeInfo]:
    with cluster_store(config) as (store, _active, _me):
        return store.join_codes()


def revoke(config: Config, code_id: str) -> None:
    """:raises NotConfigured: no such code that may still be used."""
    with cluster_store(config) as (store, _active, _me):
        if not store.revoke_join_code(code_id):
            known = {c.code_id: c for c in store.join_codes()}
            state = known[code_id].state.value if code_id in known else None
            raise NotConfigured(f"join code {code_id} is {state}: nothing to revoke" if state
                                else f"no join code {code_id} in this cluster",
                                hint="see 'ha get join-codes'")


def _store_ca(config: Config, pem: str) -> str:
    """Keep the cluster's database CA on this node (named by its digest: idempotent, never overwritten
    with something else); redirect's pre-flight then checks it holds a certificate."""
    name = hashlib.sha256(pem.encode("ascii", "replace")).hexdigest()[:16]
    path = config.paths.state_dir / "ca" / f"db-{name}.pem"
    path.parent.mkdir(mode=0o755, exist_ok=True)
    if not path.exists():
        write_atomic(path, pem, mode=0o644)  # a CA certificate is public
    return str(path)


def join_plan(config: Config, text: str) -> Plan:
    """The pre-flight of ``ha join``: fetch the credentials with the code, then redirect's own pre-flight
    as a secondary. Nothing on this node changes.

    :raises Conflict: this node is in a cluster already, or the database holds another cluster.
    """
    code = parse(text)
    me = identity(config)
    _origin, active = read_targets(config)
    if not active.local:
        raise Conflict(f"this node ({me.name}) is already in cluster {active.cluster_id} "
                       f"({active.target.describe()})", hint="take it out first with 'ha leave', then join")
    offer = fetch(code, me)
    if offer.cluster_id != code.cluster_id or not offer.schema.endswith(SCHEMA_SUFFIX):
        raise Conflict(f"the join service at {code.endpoint()} serves cluster {offer.cluster_id}, not "
                       f"{code.cluster_id} the code was issued for", hint="issue a new code on that cluster")
    target = offer.target
    root = _store_ca(config, offer.ca_pem) if offer.ca_pem else target.sslrootcert
    request = Request(hosts=target.hosts, ports=target.ports, user=target.user, password=target.password,
                      dbname=target.dbname, prefix=offer.schema[: -len(SCHEMA_SUFFIX)], role="standby",
                      sslmode=target.sslmode, sslrootcert=root,
                      join=JoinTicket(code.code_id, code.cluster_id, offer.issuer))
    plan = preflight(config, request)
    if plan.state.cluster_id != code.cluster_id:
        raise Conflict(f"the database {plan.target.describe()} holds cluster {plan.state.cluster_id}, not cluster "
                       f"{code.cluster_id} the code was issued for; nothing was changed",
                       hint="issue a new code on a node of the cluster you want to join")
    return plan
