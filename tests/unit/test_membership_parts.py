"""The pure parts of the membership and notification work: join codes, the join service's answers and rate
limit, sealed secrets, the event outbox, the notification rules and the command types."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import uuid
from pathlib import Path

import pytest

from appliance.clock import FakeClock
from appliance.errors import UsageError
from appliance.ha.events import KINDS, EventKind, NewEvent
from appliance.ha.joincode import JoinCode, parse, secret_hash
from appliance.ha.joinservice import JoinAnswers, RateLimiter
from appliance.ha.memstore import InMemoryStore
from appliance.ha.notify import check_addresses, check_smtp, check_url, retry_in_s, signature
from appliance.ha.outbox import Outbox
from appliance.ha.sealed import SealError, cluster_key, seal, unseal
from commands.ha_cluster import EVENT_KINDS, Duration


def _code(**kwargs: object) -> JoinCode:
    values: dict[str, object] = {"code_id": os.urandom(5).hex(), "secret": os.urandom(16),
                                 "cluster_id": str(uuid.uuid4()), "fingerprint": os.urandom(32),
                                 "host": "192.0.2.10", "port": 8009, "expires": 2_000_000_000}
    values.update(kwargs)
    return JoinCode(**values)  # type: ignore[arg-type]


def test_a_join_code_survives_its_text_and_a_typo_is_caught() -> None:
    for host in ("192.0.2.10", "2001:db8::7", "ems-1.example.com"):
        code = _code(host=host)
        text = code.text()
        assert text.startswith("EMS1-") and len(text) < 160 and parse(text) == code
        assert code.secret.hex() not in repr(code)
    text = _code().text()
    for broken in (text[:-1], text[:-2] + ("A" if text[-2] != "A" else "B") + text[-1], "EMS2-" + text[5:],
                   text.replace("EMS1-", ""), text + "AAAA"):
        with pytest.raises(UsageError, match="not a join code"):
            parse(broken)


def test_only_a_hash_of_the_secret_is_kept() -> None:
    secret = os.urandom(16)
    assert secret_hash(secret) != secret and len(secret_hash(secret)) == 32
    assert secret_hash(secret) == secret_hash(secret) and secret_hash(secret) != secret_hash(os.urandom(16))


def test_the_rate_limit_blocks_an_address_for_the_rest_of_its_window() -> None:
    limiter = RateLimiter(window_s=60, max_failures=3)
    for at in (0, 1, 2):
        assert limiter.blocked_for("10.0.0.1", at) == 0
        limiter.failed("10.0.0.1", at)
    assert limiter.blocked_for("10.0.0.1", 10) == pytest.approx(50)  # until the first failure leaves the window
    assert limiter.blocked_for("10.0.0.2", 10) == 0  # another address is not punished
    assert limiter.blocked_for("10.0.0.1", 60.5) == 0


def _answers(store: InMemoryStore, cluster_id: str) -> JoinAnswers:
    return JoinAnswers(store, cluster_id=lambda: cluster_id, issuer="node1", clock=store.clock,
                       target=lambda: {"hosts": ["db"], "password": "pw"}, limiter=RateLimiter(60, 2))


def _request(code: JoinCode, secret: bytes | None = None) -> dict[str, object]:
    return {"code_id": code.code_id, "secret": base64.b64encode(secret or code.secret).decode(),
            "cluster_id": code.cluster_id, "node": {"hardware_id": "HW-3", "name": "node3"}}


def test_the_join_service_answers_a_valid_code_once_and_nothing_else() -> None:
    store = InMemoryStore(FakeClock())
    store.register("n1", "node1", 10)
    code = _code()
    store.issue_join_code(code.code_id, secret_hash(code.secret), "n1", 60)
    answers = _answers(store, code.cluster_id)
    assert answers.answer(_request(code, os.urandom(16)), "10.0.0.3") == {"ok": False, "error": "wrong_code"}
    other = _code(code_id=code.code_id, secret=code.secret)
    assert answers.answer(_request(other), "10.0.0.4")["error"] == "wrong_cluster"
    assert answers.answer("garbage", "10.0.0.5") == {"ok": False, "error": "bad_request"}
    ok = answers.answer(_request(code), "10.0.0.6")
    assert ok["ok"] and ok["target"] == {"hosts": ["db"], "password": "pw"} and ok["cluster_id"] == code.cluster_id
    store.use_join_code(code.code_id, "HW-3", "node3")
    assert answers.answer(_request(code), "10.0.0.6") == {"ok": False, "error": "used"}
    answers.answer(_request(code, os.urandom(16)), "10.0.0.6")
    answers.answer(_request(code, os.urandom(16)), "10.0.0.6")
    assert answers.answer(_request(code), "10.0.0.6")["error"] == "rate_limited"


def test_a_sealed_secret_opens_only_with_the_clusters_credential_and_its_name() -> None:
    key = cluster_key("the db password", "cluster-a")
    sealed = seal(key, "notify_smtp_password", "s3cret")
    assert b"s3cret" not in sealed
    assert unseal(key, "notify_smtp_password", sealed) == "s3cret"
    for wrong_key, name in ((cluster_key("another password", "cluster-a"), "notify_smtp_password"),
                            (cluster_key("the db password", "cluster-b"), "notify_smtp_password"),
                            (key, "notify_webhook_secret")):
        with pytest.raises(SealError):
            unseal(wrong_key, name, sealed)
    with pytest.raises(SealError, match="damaged"):
        unseal(key, "notify_smtp_password", sealed[:10])


def test_the_outbox_keeps_events_across_a_restart_and_gives_their_age(tmp_path: Path) -> None:
    clock = FakeClock()
    box = Outbox(tmp_path, clock)
    box.add(NewEvent(EventKind.STEP_DOWN, "node1", details={"reason": "fence_expired"}))
    clock.advance(12)
    box.add(NewEvent(EventKind.TAKEOVER, "node1"))
    assert [round(e.age_s) for e in box.pending()] == [12, 0]
    again = Outbox(tmp_path, clock)  # the agent restarted in the same boot
    assert [(e.kind, round(e.age_s)) for e in again.pending()] == [(EventKind.STEP_DOWN, 12),
                                                                 (EventKind.TAKEOVER, 0)]
    again.written({again.pending()[0].id})
    assert [e.kind for e in Outbox(tmp_path, clock).pending()] == [EventKind.TAKEOVER]
    again.written({e.id for e in again.pending()})
    assert not (tmp_path / "events-outbox.jsonl").exists()


def test_notification_targets_and_rules() -> None:
    assert check_url("https://hooks.example.com/ha?x=1") and check_url("http://127.0.0.1:9000/x")
    assert check_url("http://[::1]:9000/x")
    for bad in ("http://hooks.example.com/ha", "ftp://x/", "https://user:pw@example.com/", "https://", "not a url"):
        with pytest.raises(ValueError):
            check_url(bad)
    assert check_addresses("a@example.com, b@example.org") == ("a@example.com", "b@example.org")
    with pytest.raises(ValueError):
        check_addresses("not-an-address")
    assert check_smtp("mail.example.com") == ("mail.example.com", 25)
    assert check_smtp("[2001:db8::25]:587") == ("2001:db8::25", 587)
    with pytest.raises(ValueError):
        check_smtp("mail:99999")
    body = b'{"kind": "takeover"}'
    assert signature("k", body) == "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert [retry_in_s(n) for n in (1, 2, 3, 7, 20)] == [1, 2, 4, 60, 60]


def test_the_command_declares_every_event_kind_and_durations_parse() -> None:
    assert EVENT_KINDS == KINDS
    assert [Duration().parse(t) for t in ("90s", "10m", "2h", "1h30m", "7d")] == [90, 600, 7200, 5400, 604800]
    for bad in ("", "10", "5x", "1h 30m", "-5m"):
        with pytest.raises(ValueError):
            Duration().parse(bad)
    assert json.dumps(KINDS)  # stable snake_case words
