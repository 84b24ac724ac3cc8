"""The membership life cycle on real agents and real PostgreSQL, driven through the shell as an admin would.

One cluster for the module (three nodes, I = 1 s), used in order: node3 leaves as a standby and joins back
with a join code and nothing else (after a wrong, an expired and another cluster's code were refused);
the code cannot be used twice; wrong codes are rate limited; the acting primary leaves with a handover;
a node of priority 0 never becomes primary, not even as the last node; boot start is honoured across
agent restarts. What is judged: exit statuses and messages, ``ha get nodes --json``, the agents' status
files, the lease and the events in the cluster's database.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import replace
from typing import Any

import pytest

from appliance.errors import NotConfigured
from appliance.ha.joinclient import fetch
from appliance.ha.joincode import JoinCode, parse
from appliance.ha.model import NodeIdentity
from appliance.services import ProcessServices
from appliance.testkit.hacluster import HaCluster

I = 1  # noqa: E741
LEFT: set[str] = set()  # nodes that left the cluster for good (their agent stopped)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, pg_primary: Any) -> Any:
    made = HaCluster(tmp_path_factory.mktemp("members"), pg_primary, local=pg_primary, keepalive_s=I, nodes=3)
    made.build()
    made.wait_stable(30)
    yield made
    made.stop_all()


def sh(cluster: HaCluster, name: str, line: str, stdin: str | None = None) -> Any:
    return cluster.nodes[name].sh(line, stdin=stdin)


def nodes(cluster: HaCluster, name: str) -> dict[str, dict[str, Any]]:
    done = sh(cluster, name, "ha get nodes --json")
    assert done.returncode == 0, done.stderr
    return {n["name"]: n for n in json.loads(done.stdout)["nodes"]}


def events(cluster: HaCluster, kind: str) -> list[tuple[str, dict[str, Any]]]:
    rows = cluster.sql("SELECT node, details FROM appliance.events WHERE kind = %s ORDER BY seq", (kind,))
    return [(str(r[0]), dict(r[1])) for r in rows]


def acting_alone(cluster: HaCluster, name: str) -> bool:
    doc = cluster.status(name)
    return bool(doc and doc.get("acting") and doc.get("state") in ("ALONE", "PRIM"))


def add_node(cluster: HaCluster, name: str = "node1") -> str:
    done = sh(cluster, name, "ha add node --json")
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert set(doc) >= {"code", "expires"}
    return str(doc["code"])


def test_a_standby_leaves_and_joins_back_with_a_code_and_nothing_else(cluster: HaCluster) -> None:
    left = sh(cluster, "node3", "ha leave --yes")
    assert left.returncode == 0, left.stdout + left.stderr
    assert "left cluster" in left.stdout
    assert set(nodes(cluster, "node1")) == {"node1", "node2"}
    cluster.wait_for(lambda: acting_alone(cluster, "node3"), 10, "node3 standalone primary on its local database")
    assert nodes(cluster, "node3").keys() == {"node3"}  # its own database: itself only
    assert events(cluster, "leave") == [("node3", {"handed_over_to": None, "last_node": False})]

    code = add_node(cluster)
    real = parse(code)
    assert real.secret.hex() not in cluster.nodes["node1"].log_text() + cluster.nodes["node3"].log_text()

    wrong = replace(real, secret=os.urandom(16)).text()
    refused = sh(cluster, "node3", f"ha join --code {wrong} --yes")
    assert refused.returncode == 1 and "secret is wrong" in refused.stderr, refused.stderr
    other = replace(real, cluster_id=str(uuid.uuid4())).text()
    refused = sh(cluster, "node3", f"ha join --code {other} --yes")
    assert refused.returncode == 1 and "now serves cluster" in refused.stderr, refused.stderr
    mistyped = sh(cluster, "node3", f"ha join --code {code[:-3]}xyz --yes")
    assert mistyped.returncode == 2 and "not a join code" in mistyped.stderr
    with cluster.store() as store:  # a code that lives half a second, next to the outstanding one
        store.issue_join_code("0123456789", _hash(b"e" * 16), cluster.nodes["node1"].node_id, 0.5)
    time.sleep(0.8)
    expired = replace(real, code_id="0123456789", secret=b"e" * 16).text()
    refused = sh(cluster, "node3", f"ha join --code {expired} --yes")
    assert refused.returncode == 1 and "expired" in refused.stderr, refused.stderr
    assert cluster.nodes["node3"].node.targets()[1].local  # every refusal left node3 untouched

    joined = sh(cluster, "node3", f"ha join --code {code} --yes")
    assert joined.returncode == 0, joined.stdout + joined.stderr
    assert "with join code" in joined.stdout and cluster.remote.password not in joined.stdout + joined.stderr
    cluster.wait_for(lambda: nodes(cluster, "node1").get("node3", {}).get("state") == "SECOND", 15,
                     "node3 SECOND in the cluster")
    assert [d["code_id"] for _, d in events(cluster, "join")] == [real.code_id]

    # Used: the service refuses it to anyone else, and node3 itself is in a cluster now.
    stranger = NodeIdentity(str(uuid.uuid4()), "HW-stranger", "stranger")
    with pytest.raises(NotConfigured, match="used"):
        fetch(real, stranger)
    again = sh(cluster, "node3", f"ha join --code {code} --yes")
    assert again.returncode == 1 and "already in cluster" in again.stderr
    listed = json.loads(sh(cluster, "node1", "ha get join-codes --json").stdout)["join_codes"]
    assert {(c["id"], c["state"], c["node"]) for c in listed} >= {(real.code_id, "used", "node3")}
    assert not any(real.secret.hex() in json.dumps(c) for c in listed)


def _hash(secret: bytes) -> bytes:
    from appliance.ha.joincode import secret_hash

    return secret_hash(secret)


def test_wrong_codes_are_rate_limited_and_a_code_can_be_revoked(cluster: HaCluster) -> None:
    code = parse(add_node(cluster))
    stranger = NodeIdentity(str(uuid.uuid4()), "HW-guesser", "guesser")
    seen = []
    for _ in range(6):  # the wrong codes of the test before count too: they came from this address
        with pytest.raises(NotConfigured) as refused:
            fetch(replace(code, secret=os.urandom(16)), stranger)
        seen.append("limited" if "too many wrong join codes" in refused.value.message else refused.value.message)
    assert seen[-1] == "limited" and all("secret is wrong" in s for s in seen[:seen.index("limited")])
    assert seen.index("limited") <= 5
    with pytest.raises(NotConfigured, match="too many wrong join codes"):
        fetch(code, stranger)  # even the right code, from this address, for a while
    revoked = sh(cluster, "node1", f"ha revoke join-code {code.code_id} --yes")
    assert revoked.returncode == 0, revoked.stderr
    assert sh(cluster, "node1", f"ha revoke join-code {code.code_id} --yes").returncode == 1
    states = {c["id"]: c["state"] for c in json.loads(sh(cluster, "node1", "ha get join-codes --json").stdout)[
        "join_codes"]}
    assert states[code.code_id] == "revoked"
    # No code of node1 is outstanding any more: its join service stops listening.
    cluster.wait_for(lambda: not _answers(code), 5, "node1's join service closed")


def _answers(code: JoinCode) -> bool:
    from appliance.ha.joinclient import probe

    return probe(code.host, code.port, code.fingerprint)


def test_the_primary_leaves_with_a_handover(cluster: HaCluster) -> None:
    primary = cluster.wait_stable(20)
    preview = sh(cluster, primary, "ha leave")  # no terminal, no --yes: the question is refused, nothing done
    assert preview.returncode == 3 and "hands the role over to" in preview.stdout
    done = sh(cluster, primary, "ha leave --yes")
    assert done.returncode == 0, done.stdout + done.stderr
    rest = [n for n in ("node1", "node2", "node3") if n != primary]
    view = nodes(cluster, rest[0])
    assert set(view) == set(rest)
    assert sorted(v["role"] for v in view.values()) == ["primary", "standby"]
    cluster.wait_for(lambda: acting_alone(cluster, primary), 10, f"{primary} standalone primary")
    [(node, details)] = [e for e in events(cluster, "leave") if e[0] == primary]
    assert details["handed_over_to"] in rest
    assert any(d.get("phase") == "done" for _, d in events(cluster, "switchover"))
    # The rest of the module works on the remaining two; the standalone node's agent and services stop.
    cluster.sigterm(primary)
    cluster.wait_exit(primary)
    ProcessServices(cluster.nodes[primary].config).stop()
    LEFT.add(primary)


def test_priority_0_never_becomes_primary_even_as_the_last_node(cluster: HaCluster) -> None:
    names = sorted(set(cluster.nodes) - LEFT)
    primary = cluster.wait_stable(20)
    witness = next(n for n in names if n != primary)
    done = sh(cluster, witness, "ha set priority 0 --yes")
    assert done.returncode == 0, done.stderr
    assert nodes(cluster, witness)[witness]["priority"] == 0
    cluster.kill9(primary)
    time.sleep(4 * I)
    assert cluster.lease()[0] in (primary, None)  # never the witness
    assert not (cluster.status(witness) or {}).get("acting")
    report = sh(cluster, witness, "ha get nodes")
    assert "No primary: no node may take the lease" in report.stdout
    assert f"{witness} online with priority 0 (never primary)" in report.stdout
    cluster.start_agent(primary)
    assert cluster.wait_stable(20) == primary
    sh(cluster, witness, "ha set priority 100 --yes")


def test_boot_start_is_honoured_across_agent_restarts(cluster: HaCluster) -> None:
    primary = cluster.wait_stable(20)
    node = next(n for n in sorted(set(cluster.nodes) - LEFT) if n != primary)

    def restart() -> str | None:
        cluster.sigterm(node)
        cluster.wait_exit(node)
        cluster.start_agent(node)
        return cluster.wait_for(lambda: (cluster.status(node) or {}).get("state") in ("STOP", "SECOND")
                                and cluster.status(node)["state"], 15, f"{node} started")  # type: ignore[index]

    assert sh(cluster, node, "ha set boot-start disabled --yes").returncode == 0
    assert restart() == "STOP"
    assert nodes(cluster, primary)[node]["state"] == "STOP"
    assert sh(cluster, node, "ha set boot-start keep --yes").returncode == 0
    assert restart() == "STOP"  # keep: as it was
    assert sh(cluster, node, "ha start --yes").returncode == 0
    assert restart() == "SECOND"
    assert sh(cluster, node, "ha set boot-start enabled --yes").returncode == 0
    assert sh(cluster, node, "ha stop --yes").returncode == 0
    assert restart() == "SECOND"  # enabled: back in the cluster whatever it was
    why = [d.get("why", "") for n, d in events(cluster, "node_stop") + events(cluster, "node_start") if n == node]
    assert sum("boot start disabled" in w for w in why) == 1 and sum("boot start keep" in w for w in why) == 2
    status = sh(cluster, node, "ha get status --json")
    assert json.loads(status.stdout)["boot_start"] == "enabled"
