"""The joining node's side of the join service: fetch the cluster's credentials with a join code.

One TLS connection to the address in the code. Before a byte of the request is sent, the service's
certificate must have exactly the fingerprint the code carries (:mod:`appliance.ha.jointls`): a node
that is not the issuer, or anything in between, learns nothing. The answer (the cluster's database
target, its password included) stays in memory; ``ha join`` passes it to ``redirect``'s machinery,
which writes it only into the node's encrypted credential set.
"""

from __future__ import annotations

import base64
import hmac
import json
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any

from appliance.db.target import SYSTEM_CA, DbTarget
from appliance.errors import Conflict, NotConfigured, Unavailable
from appliance.ha.joincode import JoinCode
from appliance.ha.jointls import fingerprint_of, pinned_client_context
from appliance.ha.model import NodeIdentity

TIMEOUT_S = 10.0
MAX_ANSWER = 65536


CA_PEM_MAX = 1 << 20  # a CA bundle, not a dump: the same limit as redirect's --db_sslrootcert file


@dataclass(frozen=True)
class Offer:
    """What the join service handed over."""

    target: DbTarget = field(repr=False)
    schema: str
    cluster_id: str
    issuer: str
    ca_pem: str | None = None  # the CA the cluster verifies its database with (sslrootcert=PATH there)


def probe(host: str, port: int, fingerprint: bytes, *, timeout: float = 1.0) -> bool:
    """Whether a join service with this certificate answers at host:port (a TLS handshake, no request)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock, \
                pinned_client_context().wrap_socket(sock) as tls:
            der = tls.getpeercert(binary_form=True) or b""
            return hmac.compare_digest(fingerprint_of(der), fingerprint)
    except (OSError, ssl.SSLError):
        return False


def fetch(code: JoinCode, me: NodeIdentity, *, timeout: float = TIMEOUT_S) -> Offer:
    """Ask the issuing node's join service for the cluster's credentials.

    :raises Unavailable: the service cannot be reached (the issuing node is down, or its codes are all
        spent or expired so it stopped listening). :raises Conflict: another certificate (not the
        issuer). :raises NotConfigured: the code was refused (wrong, expired, used, revoked, rate limited).
    """
    where = code.endpoint()
    request = {"v": 1, "code_id": code.code_id, "secret": base64.b64encode(code.secret).decode(),
               "cluster_id": code.cluster_id,
               "node": {"node_id": me.node_id, "hardware_id": me.hardware_id, "name": me.name}}
    failure = ""
    try:
        with socket.create_connection((code.host, code.port), timeout=timeout) as sock, \
                pinned_client_context().wrap_socket(sock) as tls:
            der = tls.getpeercert(binary_form=True) or b""
            if not hmac.compare_digest(fingerprint_of(der), code.fingerprint):
                raise Conflict(f"the join service at {where} has another certificate than the join code names: it "
                               "is not the node that issued the code (or something in between answers)",
                               hint="check the address; issue a new code on the cluster's node")
            tls.sendall((json.dumps(request) + "\n").encode())
            data = b""
            while b"\n" not in data and len(data) < MAX_ANSWER:
                chunk = tls.recv(65536)
                if not chunk:
                    break
                data += chunk
    except TimeoutError:
        failure = f"no answer within {timeout:g} s"
    except ssl.SSLError as exc:
        failure = f"TLS failed ({exc.reason or type(exc).__name__})"
    except ConnectionRefusedError:
        failure = "nothing listens there (the issuing node is down, or none of its codes is outstanding)"
    except OSError as exc:
        failure = exc.strerror or type(exc).__name__
    if failure:
        raise Unavailable(f"cannot reach the join service of the issuing node at {where}: {failure}",
                          hint="check that the node is online and the code outstanding ('ha get join-codes' "
                               "there), and that this node can reach it")
    try:
        reply: Any = json.loads(data.split(b"\n", 1)[0])
    except ValueError:
        reply = None
    if not isinstance(reply, dict):
        raise Unavailable(f"the join service at {where} gave no answer", hint="try again")
    if not reply.get("ok"):
        raise _refusal(str(reply.get("error", "")), reply, code)
    try:
        t = reply["target"]
        root = SYSTEM_CA if t.get("sslrootcert") == SYSTEM_CA else None
        target = DbTarget(tuple(t["hosts"]), tuple(int(p) for p in t["ports"]), str(t["user"]), str(t["password"]),
                          str(t["dbname"]), str(t.get("sslmode") or "prefer"), sslrootcert=root)
        pem = t.get("ca_pem")
        return Offer(target, str(t["schema"]), str(reply["cluster_id"]), str(reply.get("issuer", "?")),
                     ca_pem=str(pem)[:CA_PEM_MAX] if pem else None)
    except (KeyError, TypeError, ValueError):
        raise Unavailable(f"the join service at {where} answered something this node cannot use",
                          hint="both nodes must run the same product version") from None


def _refusal(error: str, reply: dict[str, Any], code: JoinCode) -> NotConfigured:
    new = "issue a new code with 'ha add node' on an online node of the cluster"
    if error == "rate_limited":
        return NotConfigured(f"the join service refuses this node for now: too many wrong join codes from its "
                             f"address; try again in {reply.get('retry_in_s', '?')} s", hint="check the code")
    if error == "wrong_code":
        return NotConfigured(f"join code {code.code_id} was refused: unknown to the issuing node's cluster, or its "
                             "secret is wrong", hint=new)
    if error == "wrong_cluster":
        return NotConfigured(f"join code {code.code_id} is for cluster {code.cluster_id}; the node at "
                             f"{code.endpoint()} now serves cluster {reply.get('cluster_id', '?')}", hint=new)
    if error in ("expired", "used", "revoked"):
        return NotConfigured(f"join code {code.code_id} was {error}" if error != "expired"
                             else f"join code {code.code_id} expired", hint=new)
    if error == "taken":
        return NotConfigured(f"join code {code.code_id} was already used by another node to fetch the credentials",
                             hint=new)
    return NotConfigured(f"the join service refused join code {code.code_id} ({error or 'no reason'})", hint=new)
