"""A small primary-only demo service for sandboxes and tests:
``python -m appliance.ha.demo_service LOG [--listen HOST:PORT]``.

While the fence (``$APPLIANCE_FENCE_FILE``) allows it, it appends one line per tick to LOG:
``<monotonic> <wall time> <node> epoch=<N>``; when the fence closes it logs ``fenced`` and exits, so
an outside observer sees exactly when each node acted as primary. SIGTERM ends it at once.

With ``--listen`` it is also the node's client-facing service port (like the vendor's port that a
load balancer forwards to): every connection gets one line ``<node> epoch=<N>`` and is closed, but
only while the fence allows it (checked for each connection); a node that is not primary does not
run it, so its port refuses connections.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import sys
import time
from pathlib import Path

from appliance.configcheck import split_listen
from appliance.ha.fence import may_act

TICK_S = 0.05
BIND_RETRY_S = 3.0  # the previous instance's socket may linger for a moment


def _listener(text: str) -> socket.socket:
    host, port = split_listen(text)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    deadline = time.monotonic() + BIND_RETRY_S
    while True:
        try:
            sock.bind((host, port))
            break
        except OSError:
            if time.monotonic() >= deadline:
                sock.close()
                raise
            time.sleep(0.05)
    sock.listen(64)
    sock.setblocking(False)
    return sock


def _answer(listener: socket.socket, fence: Path, node: str) -> None:
    while True:
        try:
            conn, _peer = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        with conn:
            allowed, epoch = may_act(fence)  # at this very moment: never answer past the deadline
            if allowed:
                conn.settimeout(1.0)
                try:
                    conn.sendall(f"{node} epoch={epoch}\n".encode())
                except OSError:
                    pass


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    listen = None
    if len(args) == 3 and args[1] == "--listen":
        listen = args[2]
    elif len(args) != 1:
        sys.stderr.write("usage: python -m appliance.ha.demo_service LOG [--listen HOST:PORT]\n")
        return 2
    log = Path(args[0])
    fence = Path(os.environ.get("APPLIANCE_FENCE_FILE", ""))
    node = os.environ.get("APPLIANCE_NODE", "?")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        listener = _listener(listen) if listen else None
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"demo service: cannot listen on {listen}: {exc}\n")
        return 1
    with selectors.DefaultSelector() as sel, log.open("a", buffering=1) as out:
        if listener is not None:
            sel.register(listener, selectors.EVENT_READ)
        next_line = time.monotonic()
        while True:
            allowed, epoch = may_act(fence)
            now = time.monotonic()
            if not allowed:
                out.write(f"{now:.3f} {time.time():.3f} {node} fenced\n")
                return 0
            if now >= next_line:
                out.write(f"{now:.3f} {time.time():.3f} {node} epoch={epoch}\n")
                next_line = now + TICK_S
            if listener is None:
                time.sleep(max(0.0, next_line - time.monotonic()))
            elif sel.select(max(0.0, min(0.01, next_line - time.monotonic()))):
                _answer(listener, fence, node)


if __name__ == "__main__":
    sys.exit(main())
