"""A threaded loopback TCP forwarder that tests can cut, to simulate a network partition.

``TcpProxy(target_port)`` listens on ``127.0.0.1:<proxy.port>`` and forwards every connection to
``127.0.0.1:<target_port>``. :meth:`cut` simulates a partition between the proxy's clients and the
target:

* every current connection is dropped: both sides are closed with an RST (``SO_LINGER`` 0), so the
  client sees ``connection reset`` on its next read or write, as after a router lost the flow;
* new connections are refused (``mode="refuse"``: the listening socket is closed, the kernel answers
  with RST) or blackholed (``mode="blackhole"``: accepted by the kernel, never answered: the client
  waits for its connect timeout, as behind a firewall that DROPs packets).

:meth:`restore` forwards new connections again (the connections dropped by ``cut`` stay dropped).
:meth:`close` stops everything. Usable as a context manager. No shell, no root, no iptables.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading

_BUFSIZE = 65536


def _rst_close(sock: socket.socket) -> None:
    """Close with an RST rather than a FIN (the peer sees a reset, not a clean end of stream)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class TcpProxy:
    """Forward ``127.0.0.1:port`` to ``target_host:target_port``; :meth:`cut` / :meth:`restore` it."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1", *, port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.port = port
        self._lock = threading.Lock()
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._blackholed: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._mode = "forward"  # forward | refuse | blackhole
        self._accept_thread: threading.Thread | None = None
        self.connections = 0  # forwarded connections so far (for tests of the proxy itself)
        self._listen()

    # --- public ------------------------------------------------------------------------------------

    @property
    def is_cut(self) -> bool:
        return self._mode != "forward"

    def cut(self, mode: str = "refuse") -> None:
        """Drop every current connection; refuse (``"refuse"``) or blackhole (``"blackhole"``) new ones."""
        if mode not in ("refuse", "blackhole"):
            raise ValueError(f"mode must be 'refuse' or 'blackhole', not {mode!r}")
        with self._lock:
            self._mode = mode
            pairs, self._pairs = self._pairs, set()
        if mode == "refuse":
            self._close_listener()
        for a, b in pairs:
            _rst_close(a)
            _rst_close(b)

    def restore(self) -> None:
        """Forward new connections again (on the same port)."""
        with self._lock:
            held, self._blackholed = self._blackholed, []
            self._mode = "forward"
        for sock in held:
            _rst_close(sock)
        if self._listener is None:
            self._listen()

    def close(self) -> None:
        self._stop.set()
        self.cut("refuse")
        with self._lock:
            held, self._blackholed = self._blackholed, []
        for sock in held:
            _rst_close(sock)
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing ----------------------------------------------------------------------------------

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._accept_thread = threading.Thread(target=self._accept_loop, args=(listener,), daemon=True,
                                               name=f"tcpproxy-{self.port}")
        self._accept_thread.start()

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accept loop's select()
            with contextlib.suppress(OSError):
                listener.close()
        thread = self._accept_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._stop.is_set() and self._listener is listener:
            try:
                ready, _, _ = select.select([listener], [], [], 0.1)
            except (OSError, ValueError):
                return
            if not ready:
                continue
            try:
                client, _addr = listener.accept()
            except OSError:
                return
            with self._lock:
                mode = self._mode
            if mode == "blackhole":
                with self._lock:
                    self._blackholed.append(client)  # never read, never answered, never closed (until restore)
                continue
            if mode == "refuse":
                _rst_close(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _rst_close(client)
                continue
            pair = (client, upstream)
            with self._lock:
                if self._mode != "forward":  # cut while we were connecting
                    _rst_close(client)
                    _rst_close(upstream)
                    continue
                self._pairs.add(pair)
                self.connections += 1
            threading.Thread(target=self._pump, args=(pair,), daemon=True, name="tcpproxy-pump").start()

    def _pump(self, pair: tuple[socket.socket, socket.socket]) -> None:
        a, b = pair
        peer = {a: b, b: a}
        try:
            while not self._stop.is_set():
                with self._lock:
                    if pair not in self._pairs:
                        return  # cut: the sockets are closed already
                try:
                    ready, _, _ = select.select([a, b], [], [], 0.2)
                except (OSError, ValueError):
                    return
                for sock in ready:
                    try:
                        data = sock.recv(_BUFSIZE)
                    except OSError:
                        data = b""
                    if not data:
                        return
                    try:
                        peer[sock].sendall(data)
                    except OSError:
                        return
        finally:
            with self._lock:
                mine = pair in self._pairs
                self._pairs.discard(pair)
            if mine:  # ended by one side: pass the end on
                with contextlib.suppress(OSError):
                    a.close()
                with contextlib.suppress(OSError):
                    b.close()
