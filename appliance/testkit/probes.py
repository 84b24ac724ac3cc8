"""What a client or a load balancer sees, asked from outside: an HTTP status, a service's one-line answer.

Each probe is one short connection with a timeout; a refused or silent peer is an answer too (None).
"""

from __future__ import annotations

import socket


def http_status(host: str, port: int, path: str = "/primary", timeout: float = 0.5) -> int | None:
    """The status of ``GET path`` (HTTP/1.0, as HAProxy's check sends it), None without an answer in time."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
            line = sock.recv(64)
    except OSError:
        return None
    parts = line.split(b" ")
    return int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else None


def service_line(host: str, port: int, timeout: float = 0.5) -> str | None:
    """The first line a service port answers (``node2 epoch=5``), None if refused, silent or empty."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            data = sock.recv(200)
    except OSError:
        return None
    text = data.decode(errors="replace").strip()
    return text or None
