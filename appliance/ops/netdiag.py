"""The network checks an admin runs from the node: name lookup, a TCP port check, traceroute's argv.

* :func:`lookup` (``execute nslookup``): through the system resolver (NSS: ``/etc/hosts``, then DNS,
  as the appliance's own services resolve names), or, with ``server``, one query to that DNS server
  (dnspython). Addresses get a reverse (PTR) lookup. Bounded by ``timeout_s``.
* :func:`tcp_check` (``execute tcp-check``): does a TCP handshake complete with HOST:PORT from here?
  No payload is sent; at most :data:`MAX_ADDRESSES` addresses of a name are tried, within the timeout.
* :func:`traceroute_args`: the fixed options for ``traceroute`` (numeric, bounded waits and hops,
  ``--`` before the host).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from appliance.errors import CommandFailed, Unavailable

MAX_ADDRESSES = 4
PROBE_WAIT_S = 2  # traceroute -w: seconds to wait for each probe's answer
PROBES_PER_HOP = 3

T = TypeVar("T")


@dataclass(frozen=True)
class Answer:
    name: str
    kind: str  # A | AAAA | PTR
    value: str


@dataclass(frozen=True)
class Lookup:
    name: str
    server: str  # "system resolver" or the DNS server asked
    answers: tuple[Answer, ...]
    seconds: float


def _bounded(what: str, timeout_s: float, work: Callable[[], T]) -> T:
    """Run ``work`` in a thread and give up after ``timeout_s`` (the resolver has no timeout of its own).

    A resolver call that does not return stays in its daemon thread; the shell goes on.
    """
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = work()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise Unavailable(f"{what}: no answer within {timeout_s:g} s", hint="check the DNS servers: system get network")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def lookup(name: str, server: str | None, timeout_s: float, *, port: int = 53) -> Lookup:
    """Resolve ``name`` (or reverse-resolve an address); with ``server``, ask that DNS server (on ``port``).

    :raises CommandFailed: the name does not exist, or has no address.
    :raises Unavailable: no answer in time.
    """
    started = time.monotonic()
    if server is None:
        answers = _bounded(f"looking up {name}", timeout_s, lambda: _system(name))
    else:
        answers = _dns(name, server, timeout_s, port)
    if not answers:
        raise CommandFailed(f"{name} has no address" if not _is_ip(name) else f"{name} has no name (no PTR record)")
    return Lookup(name, server or "system resolver", tuple(answers), time.monotonic() - started)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _system(name: str) -> list[Answer]:
    if _is_ip(name):
        try:
            host, aliases, _addrs = socket.gethostbyaddr(name)
        except (socket.herror, socket.gaierror):
            return []
        return [Answer(name, "PTR", n) for n in (host, *aliases)]
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM, flags=socket.AI_CANONNAME)
    except socket.gaierror as exc:
        raise CommandFailed(f"{name} does not resolve: {exc.strerror}") from None
    canonical = next((info[3] for info in infos if info[3]), name)
    found: list[Answer] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        answer = Answer(canonical, "AAAA" if family == socket.AF_INET6 else "A", str(sockaddr[0]))
        if answer not in found:
            found.append(answer)
    return found


def _dns(name: str, server: str, timeout_s: float, port: int) -> list[Answer]:
    import dns.exception  # dnspython is heavy: loaded only when a server is named
    import dns.resolver
    import dns.reversename

    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [server]
    resolver.port = port
    resolver.lifetime = timeout_s
    resolver.timeout = timeout_s
    queries = [(str(dns.reversename.from_address(name)), "PTR")] if _is_ip(name) else [(name, "A"), (name, "AAAA")]
    found: list[Answer] = []
    for qname, kind in queries:
        try:
            answer = resolver.resolve(qname, kind, raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN:
            raise CommandFailed(f"{name} does not exist (NXDOMAIN from {server})") from None
        except dns.resolver.NoNameservers:
            raise Unavailable(f"the DNS server {server} failed to answer for {name} (SERVFAIL or refused)") from None
        except dns.exception.Timeout:
            raise Unavailable(f"no answer from the DNS server {server} within {timeout_s:g} s",
                              hint=f"is {server} reachable from here? (execute tcp-check {server} 53)") from None
        found += [Answer(str(answer.canonical_name).rstrip("."), kind, rr.to_text().rstrip(".")) for rr in answer]
    return found


@dataclass(frozen=True)
class PortCheck:
    address: str
    port: int
    result: str  # open | refused | timed out | unreachable | <error>
    ms: float | None


def tcp_check(host: str, port: int, timeout_s: float) -> list[PortCheck]:
    """Try a TCP handshake with each address of ``host`` (at most :data:`MAX_ADDRESSES`), within ``timeout_s``.

    :raises CommandFailed: the host name does not resolve.
    """
    deadline = time.monotonic() + timeout_s
    if _is_ip(host):
        addresses = [host]
    else:
        infos = _bounded(f"looking up {host}", timeout_s, lambda: _resolve(host, port))
        addresses = list(dict.fromkeys(infos))[:MAX_ADDRESSES]
    results = []
    for address in addresses:
        left = deadline - time.monotonic()
        if left <= 0:
            results.append(PortCheck(address, port, "not tried (timeout used up)", None))
            continue
        results.append(_connect(address, port, left))
    return results


def _resolve(host: str, port: int) -> list[str]:
    try:
        return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
    except socket.gaierror as exc:
        raise CommandFailed(f"{host} does not resolve: {exc.strerror}") from None


def _connect(address: str, port: int, timeout_s: float) -> PortCheck:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    started = time.monotonic()
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect((address, port))
        except TimeoutError:
            return PortCheck(address, port, "timed out", None)
        except ConnectionRefusedError:
            return PortCheck(address, port, "refused", round((time.monotonic() - started) * 1000, 1))
        except OSError as exc:
            return PortCheck(address, port, (exc.strerror or "failed").lower(), None)
    return PortCheck(address, port, "open", round((time.monotonic() - started) * 1000, 1))


def traceroute_args(host: str, max_hops: int) -> list[str]:
    """traceroute's options, all ours: numeric (no DNS per hop), bounded waits and hops, then ``--``."""
    return ["-n", "-q", str(PROBES_PER_HOP), "-w", str(PROBE_WAIT_S), "-m", str(max_hops), "--", host]


def traceroute_deadline_s(max_hops: int) -> float:
    """A hard cap on a whole traceroute run: every hop's probes waiting in full, plus slack."""
    return 10.0 + max_hops * PROBE_WAIT_S
