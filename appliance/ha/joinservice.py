"""The join service: a short-lived TLS listener in the agent that hands a joining node the cluster's
credentials in exchange for a valid join code.

It listens only while codes this node issued are outstanding (the agent's background work starts and
stops it, :mod:`appliance.ha.background`), on ``[join] listen``. One request per connection, one JSON
line each way, over TLS with the node's own certificate (:mod:`appliance.ha.jointls`; the code pins its
fingerprint). The joining node sends the code's id and secret, the cluster id from the code and its own
identity; the service checks, in order:

1. **rate limit**: a peer address with :data:`RATE_MAX_FAILURES` wrong requests within
   :data:`RATE_WINDOW_S` is refused (with when to retry) without looking at its request;
2. **cluster**: the code's cluster id must be the one this node serves now (a node that left and
   joined another cluster serves nobody's old codes);
3. **the code**, in the cluster's database (:meth:`~appliance.ha.store.HaStore.claim_join_code`): known,
   secret matching (only its hash is stored), not expired, revoked or used, not claimed by another node.
   A wrong secret counts against the code too; at :data:`MAX_FAILURES_PER_CODE` it is revoked.

Then it answers with the credential set's active target (hosts, ports, user, password, database,
schema), read through the credential backend, inside the TLS session: never logged, never on disk
here. A wrong code, an unknown one and a wrong secret get the same answer. Connections are capped
(:data:`MAX_CONNECTIONS`) and each must finish within :data:`REQUEST_TIMEOUT_S`, so a client holding a
connection open costs one slot, never the agent's loop.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import select
import socket
import ssl
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from appliance.clock import Clock
from appliance.errors import ApplianceError
from appliance.ha.joincode import secret_hash
from appliance.ha.jointls import TlsFiles, server_context
from appliance.ha.model import ClaimOutcome
from appliance.ha.store import HaStore

logger = logging.getLogger("appliance.agent")

RATE_WINDOW_S = 60.0
RATE_MAX_FAILURES = 5
MAX_FAILURES_PER_CODE = 10
REQUEST_TIMEOUT_S = 5.0
MAX_REQUEST = 8192
MAX_CONNECTIONS = 4


class RateLimiter:
    """Wrong requests per peer address in a sliding window (monotonic seconds)."""

    def __init__(self, window_s: float = RATE_WINDOW_S, max_failures: int = RATE_MAX_FAILURES) -> None:
        self.window_s, self.max_failures = window_s, max_failures
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def blocked_for(self, peer: str, now: float) -> float:
        """Seconds ``peer`` must wait before it may try again (0: it may now)."""
        with self._lock:
            times = self._failures.get(peer)
            if times is None:
                return 0.0
            while times and times[0] <= now - self.window_s:
                times.popleft()
            if len(times) < self.max_failures:
                return 0.0
            return times[-self.max_failures] + self.window_s - now

    def failed(self, peer: str, now: float) -> None:
        with self._lock:
            self._failures.setdefault(peer, deque()).append(now)
            if len(self._failures) > 10_000:  # a flood of addresses must not grow memory without bound
                self._failures.pop(next(iter(self._failures)))


class JoinAnswers:
    """What the service answers (the protocol, without sockets: unit-tested directly)."""

    def __init__(self, store: HaStore, *, cluster_id: Callable[[], str], target: Callable[[], dict[str, Any]],
                 issuer: str, clock: Clock, limiter: RateLimiter | None = None) -> None:
        self.store, self.cluster_id, self.target, self.issuer = store, cluster_id, target, issuer
        self.clock = clock
        self.limiter = limiter or RateLimiter()

    def answer(self, request: Any, peer: str) -> dict[str, Any]:
        now = self.clock.monotonic()
        wait = self.limiter.blocked_for(peer, now)
        if wait > 0:
            logger.warning("join service: refused %s (too many wrong join codes; %.0f s to wait)", peer, wait)
            return {"ok": False, "error": "rate_limited", "retry_in_s": math.ceil(wait)}
        try:
            code_id = str(request["code_id"])
            secret = base64.b64decode(str(request["secret"]), validate=True)
            cluster, node = str(request["cluster_id"]), request["node"]
            hardware_id, name = str(node["hardware_id"])[:200], str(node["name"])[:63]
        except (KeyError, TypeError, ValueError, binascii.Error):
            self.limiter.failed(peer, now)
            return {"ok": False, "error": "bad_request"}
        if cluster != self.cluster_id():
            self.limiter.failed(peer, now)
            logger.warning("join service: %s presented a code of cluster %s; this node serves %s", peer, cluster,
                           self.cluster_id())
            return {"ok": False, "error": "wrong_cluster", "cluster_id": self.cluster_id()}
        outcome = self.store.claim_join_code(code_id, secret_hash(secret), hardware_id,
                                             max_failures=MAX_FAILURES_PER_CODE)
        if outcome is ClaimOutcome.UNKNOWN:
            self.limiter.failed(peer, now)
            logger.warning("join service: wrong join code from %s (code id %s)", peer, code_id[:20])
            return {"ok": False, "error": "wrong_code"}
        if outcome is not ClaimOutcome.OK:
            logger.warning("join service: join code %s from %s is %s", code_id, peer, outcome.value)
            return {"ok": False, "error": outcome.value}
        logger.info("join service: join code %s accepted from %s (%s); handing over the cluster's credentials",
                    code_id, name, peer)
        return {"ok": True, "target": self.target(), "cluster_id": self.cluster_id(), "issuer": self.issuer}


class JoinService:
    """The TLS listener; :meth:`start` and :meth:`stop` may be called any number of times."""

    def __init__(self, listen: tuple[str, int], tls: TlsFiles, answers: JoinAnswers) -> None:
        self.listen, self.tls, self.answers = listen, tls, answers
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    @property
    def listening(self) -> bool:
        return self._sock is not None

    def start(self) -> None:
        """Listen (raises OSError: the address cannot be bound)."""
        if self._sock is not None:
            return
        host, port = self.listen
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, reuse_port=False)
        sock.setblocking(False)
        context = server_context(self.tls)
        self._stop.clear()
        self._sock = sock
        self._thread = threading.Thread(target=self._accept, args=(sock, context), name="join-service", daemon=True)
        self._thread.start()
        logger.info("join service listening on %s:%d (join codes outstanding)", host, port)

    def stop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        sock.close()
        logger.info("join service stopped (no join code outstanding)")

    def _accept(self, sock: socket.socket, context: ssl.SSLContext) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([sock], [], [], 0.2)
                if not ready:
                    continue
                conn, peer = sock.accept()
            except OSError:
                if self._stop.is_set():
                    return
                continue
            if not self._slots.acquire(blocking=False):
                conn.close()  # full: the client retries; never queue behind a slow one
                continue
            threading.Thread(target=self._serve, args=(conn, str(peer[0]), context), daemon=True,
                             name="join-request").start()

    def _serve(self, conn: socket.socket, peer: str, context: ssl.SSLContext) -> None:
        try:
            conn.settimeout(REQUEST_TIMEOUT_S)
            with context.wrap_socket(conn, server_side=True) as tls:
                line = _read_line(tls)
                if line is None:
                    return  # a probe (ha add node checks the service is up) or a client that gave up
                try:
                    request = json.loads(line)
                except ValueError:
                    request = None
                try:
                    reply = self.answers.answer(request, peer)
                except ApplianceError as exc:
                    logger.warning("join service: cannot check a join code from %s: %s", peer, exc.message)
                    reply = {"ok": False, "error": "unavailable"}
                tls.sendall((json.dumps(reply) + "\n").encode())
        except (OSError, ssl.SSLError, ValueError):
            pass  # the client went away, spoke no TLS or took too long: nothing to answer
        finally:
            conn.close()
            self._slots.release()


def _read_line(tls: ssl.SSLSocket) -> bytes | None:
    data = b""
    while b"\n" not in data and len(data) <= MAX_REQUEST:
        chunk = tls.recv(4096)
        if not chunk:
            return None
        data += chunk
    return data.split(b"\n", 1)[0] if b"\n" in data else None
