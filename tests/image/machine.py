"""Throw-away views of the built image: an overlay of the tree (chroot tests) and an nspawn boot.

Nothing here writes to the build: every run gets an overlayfs (the build is the read-only lower
layer, the changes go to a temporary upper layer), and every mount and process is removed at the end,
also on failure. Every wait is bounded.

* :func:`overlay` -- a writable, disposable copy of the tree.
* :func:`booted` -- ``systemd-nspawn --boot --private-network --register=no --keep-unit`` of such a
  copy (or in a given network namespace); :class:`Container` runs commands inside with ``nsenter``
  (the container's PID 1 is found as the child of nspawn whose PID in its namespace is 1), opens TCP
  connections from inside the container's network namespace (a thread that ``setns()``\\ s into it:
  the socket stays there), and boots it again after it rebooted itself (nspawn exits with 133).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

COMMAND_TIMEOUT_S = 60.0
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
_CLONE_NEWNET = 0x40000000


def run(argv: Sequence[str], *, timeout: float = COMMAND_TIMEOUT_S, input: str | None = None,
        check: bool = False, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A program with a clean environment (nothing of the caller's PIP_*, PYTHON*...), bounded in time."""
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=check,
                          env={**CLEAN_ENV, **(env_extra or {})}, input=input,
                          stdin=None if input is not None else subprocess.DEVNULL)


def _unmount(path: Path) -> None:
    if run(["umount", str(path)], timeout=60).returncode != 0:
        run(["umount", "--lazy", str(path)], timeout=60)


@contextlib.contextmanager
def overlay(lower: Path, work: Path) -> Iterator[Path]:
    """A writable view of ``lower`` at ``work/merged``; the changes live in ``work/upper``."""
    upper, workdir, merged = work / "upper", work / "work", work / "merged"
    for directory in (upper, workdir, merged):
        directory.mkdir(parents=True, exist_ok=True)
    run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower},upperdir={upper},workdir={workdir}",
         str(merged)], check=True)
    try:
        yield merged
    finally:
        _unmount(merged)


def chroot(root: Path, argv: Sequence[str], *, user: str | None = None, timeout: float = COMMAND_TIMEOUT_S,
           input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in ``root``; ``user`` is looked up in the tree's /etc/passwd (not the host's)."""
    spec = []
    if user:
        fields = next(f for f in (line.split(":") for line in (root / "etc/passwd").read_text().splitlines())
                      if f[0] == user)
        spec = [f"--userspec={fields[2]}:{fields[3]}"]
    return run(["chroot", *spec, str(root), *argv], timeout=timeout, input=input)


@dataclass
class Container:
    root: Path  # the merged overlay: the container's file system, seen from the host
    nspawn: subprocess.Popen[bytes]
    leader: int  # the container's PID 1, as a host PID
    console: Path
    started: float  # time.monotonic() when nspawn was started
    argv: tuple[str, ...] = ()  # how nspawn was started (to boot it again)

    def run(self, argv: Sequence[str], *, timeout: float = COMMAND_TIMEOUT_S,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        return run(["nsenter", "-t", str(self.leader), "-m", "-u", "-i", "-n", "-p", "--", *argv],
                   timeout=timeout, input=input)

    def systemctl(self, *args: str, timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        return self.run(["systemctl", "--no-pager", *args], timeout=timeout)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        done = self.systemctl("show", unit, *(f"--property={p}" for p in props))
        return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float) -> float:
        """Poll ``check()`` until true; return the seconds since nspawn started. Fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            if check():
                return time.monotonic() - self.started
            if self.nspawn.poll() is not None:
                raise AssertionError(f"the container exited ({self.nspawn.returncode}) while waiting for {what}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout:g} s\n{self.journal()}")
            time.sleep(0.2)

    def journal(self, *args: str) -> str:
        done = self.run(["journalctl", "--no-pager", "-b", "-n", "60", *args])
        return done.stdout + done.stderr

    def boot_again_after_reboot(self, timeout: float = 120.0) -> float:
        """The container rebooted itself (nspawn exits with 133): start it again on the same files.

        Returns the seconds from the call to the new PID 1.
        """
        started = time.monotonic()
        try:
            code = self.nspawn.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the container did not go down within {timeout:g} s") from None
        assert code == 133, f"systemd-nspawn exited with {code}, not 133 (a reboot)"
        self.nspawn, self.started = _spawn(list(self.argv), self.console)
        self.leader = _find_leader(self.nspawn, timeout=30)
        return time.monotonic() - started

    def connect(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> socket.socket:
        """A TCP connection to ``host:port`` as seen from inside the container's network namespace."""
        return connect_in_netns(Path(f"/proc/{self.leader}/ns/net"), (host, port), timeout)


def connect_in_netns(netns: Path, address: tuple[str, int], timeout: float) -> socket.socket:
    libc = ctypes.CDLL(None, use_errno=True)
    result: dict[str, object] = {}

    def in_thread() -> None:
        # setns() moves only this thread; a socket keeps the namespace it was created in.
        fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if libc.setns(fd, _CLONE_NEWNET) != 0:
                errno = ctypes.get_errno()
                raise OSError(errno, f"setns({netns}): {os.strerror(errno)}")
            result["socket"] = socket.create_connection(address, timeout=timeout)
        except BaseException as exc:  # handed to the caller
            result["error"] = exc
        finally:
            os.close(fd)

    thread = threading.Thread(target=in_thread, daemon=True)
    thread.start()
    thread.join(timeout + 5)
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    if "socket" not in result:
        raise TimeoutError(f"no connection to {address} within {timeout:g} s")
    sock = result["socket"]
    assert isinstance(sock, socket.socket)
    return sock


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
            found.append(int(entry))
    return found


def _namespace_pid(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    except OSError:
        return None
    return None


def _find_leader(nspawn: subprocess.Popen[bytes], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if nspawn.poll() is not None:
            raise AssertionError(f"systemd-nspawn exited with {nspawn.returncode} before the container started")
        for child in _children(nspawn.pid):
            if _namespace_pid(child) == 1:
                return child
        time.sleep(0.05)
    raise AssertionError(f"no container PID 1 under systemd-nspawn within {timeout:g} s")


def _stop(nspawn: subprocess.Popen[bytes], leader: int | None) -> None:
    """SIGTERM to nspawn = an orderly shutdown of the container; then SIGKILL, bounded."""
    if nspawn.poll() is None:
        nspawn.send_signal(signal.SIGTERM)
        try:
            nspawn.wait(timeout=30)
        except subprocess.TimeoutExpired:
            if leader is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(leader, signal.SIGKILL)  # PID 1 of the namespace: takes every process with it
            with contextlib.suppress(ProcessLookupError):
                os.killpg(nspawn.pid, signal.SIGKILL)
            nspawn.wait(timeout=30)


def _spawn(argv: list[str], console: Path) -> tuple[subprocess.Popen[bytes], float]:
    with console.open("ab") as log:
        started = time.monotonic()
        nspawn = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                  env=CLEAN_ENV, start_new_session=True)
    return nspawn, started


@contextlib.contextmanager
def booted(rootfs: Path, work: Path, machine: str = "appliance-test",
           netns: Path | None = None) -> Iterator[Container]:
    """Boot a disposable copy of ``rootfs``; shut it down and remove everything afterwards.

    :param netns: a network namespace (``/run/netns/NAME``) to boot in; default: a private one with
        only a loopback interface. A namespace of the caller's outlives a reboot of the container.
    """
    with overlay(rootfs, work) as root:
        console = work / "console.log"
        # In a namespace of the caller's, nspawn does not grant CAP_NET_ADMIN by itself (with
        # --private-network it does): systemd-networkd needs it, and the namespace is the container's alone.
        network = ([f"--network-namespace-path={netns}", "--capability=CAP_NET_ADMIN"] if netns is not None
                   else ["--private-network"])
        argv = ["systemd-nspawn", "--quiet", "-D", str(root), f"--machine={machine}", "--register=no",
                "--keep-unit", "--boot", *network, "--console=read-only"]
        nspawn, started = _spawn(argv, console)
        container: Container | None = None
        try:
            container = Container(root, nspawn, _find_leader(nspawn, timeout=30), console, started, tuple(argv))
            yield container
        finally:
            if container is not None:
                _stop(container.nspawn, container.leader)
            else:
                _stop(nspawn, None)
