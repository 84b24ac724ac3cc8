"""Reading and setting the node's hostname through the backend chosen in the config.

* ``hostnamectl``: systemd's tool (static and transient hostname), the caller being root.
* ``helper``: the appliance image, where the shell runs as the unprivileged login user: the
  privileged helper (:mod:`appliance.privhelper`, through ``sudo -n``) checks the name again, applies
  it with ``hostnamectl`` and keeps the ``127.0.1.1`` line of ``/etc/hosts`` in step.
* ``etc``: ``<root>/etc/hostname`` and the ``127.0.1.1`` line of ``<root>/etc/hosts``, plus the kernel
  hostname; for hosts without systemd.
* ``file``: a file in the state dir; sandboxes and tests, where the machine's name must not change.

Names are validated by the caller (:func:`appliance.names.check_single_label`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from appliance.config import Config
from appliance.errors import CommandFailed, PermissionDenied
from appliance.fsutil import read_first_word, write_atomic
from appliance.proc import run_tool


class HostnameBackend(ABC):
    @abstractmethod
    def get(self) -> str:
        """The current hostname."""

    @abstractmethod
    def set(self, name: str) -> None:
        """Apply ``name`` (already validated)."""


def kernel_hostname() -> str:
    import socket  # here, not at import: the file backend (sandboxes) never needs it, and start-up counts

    return socket.gethostname()


class FileBackend(HostnameBackend):
    def __init__(self, state_dir: Path, default: str) -> None:
        self.path = state_dir / "hostname"
        self.default = default

    def get(self) -> str:
        return read_first_word(self.path) or self.default

    def set(self, name: str) -> None:
        try:
            write_atomic(self.path, name + "\n")
        except PermissionError:
            raise PermissionDenied(f"cannot write {self.path}: permission denied") from None


class EtcBackend(HostnameBackend):
    def __init__(self, root: Path, set_kernel: bool) -> None:
        self.hostname_file = root / "etc" / "hostname"
        self.hosts_file = root / "etc" / "hosts"
        self.set_kernel = set_kernel

    def get(self) -> str:
        return read_first_word(self.hostname_file) or kernel_hostname()

    def set(self, name: str) -> None:
        import socket

        previous = socket.gethostname()
        if self.set_kernel:
            try:
                socket.sethostname(name)
            except PermissionError:
                raise PermissionDenied(
                    "cannot set the kernel hostname: permission denied",
                    hint="the etc backend needs root (CAP_SYS_ADMIN); use the hostnamectl backend",
                ) from None
        try:
            write_atomic(self.hostname_file, name + "\n")
            set_hosts_name(self.hosts_file, name)
        except OSError as exc:
            if self.set_kernel:
                socket.sethostname(previous)  # keep kernel and files in step
            where = exc.filename or self.hostname_file
            raise CommandFailed(f"cannot write {where}: {exc.strerror}") from None


def set_hosts_name(hosts_file: Path, name: str) -> None:
    """Rewrite ``hosts_file`` atomically so that its ``127.0.1.1`` line names ``name``.

    :raises OSError: it cannot be read or written.
    """
    try:
        hosts = hosts_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        hosts = "127.0.0.1\tlocalhost\n"
    write_atomic(hosts_file, hosts_with_name(hosts, name))


def hosts_with_name(hosts: str, name: str) -> str:
    """``hosts`` with its ``127.0.1.1`` line naming ``name`` (Debian's convention), added if absent."""
    lines = hosts.splitlines()
    entry = f"127.0.1.1\t{name}"
    for index, line in enumerate(lines):
        fields = line.split("#", 1)[0].split()
        if fields and fields[0] == "127.0.1.1":
            lines[index] = entry
            break
    else:
        at = next((i + 1 for i, line in enumerate(lines) if line.split()[:1] == ["127.0.0.1"]), len(lines))
        lines.insert(at, entry)
    return "\n".join(lines) + "\n"


class HostnamectlBackend(HostnameBackend):
    def __init__(self, tool: Path) -> None:
        self.tool = tool

    def get(self) -> str:
        return kernel_hostname()

    def set(self, name: str) -> None:
        # --static only: the pretty name is left alone, and the transient name follows the static one.
        run_tool(self.tool, ["set-hostname", "--static", "--", name], timeout_s=15)
        run_tool(self.tool, ["set-hostname", "--transient", "--", name], timeout_s=15)


class HelperBackend(HostnameBackend):
    """Through the privileged helper (``sudo -n <privhelper> set-hostname NAME``)."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def get(self) -> str:
        return kernel_hostname()

    def set(self, name: str) -> None:
        from appliance.privhelper import call_helper

        call_helper(self.config, ["set-hostname", name], timeout_s=60)


def backend_for(config: Config) -> HostnameBackend:
    choice = config.hostname.backend
    if choice == "file":
        return FileBackend(config.paths.state_dir, config.node.default_hostname)
    if choice == "etc":
        return EtcBackend(config.hostname.etc_root, config.hostname.set_kernel)
    if choice == "helper":
        return HelperBackend(config)
    return HostnamectlBackend(config.tools.hostnamectl)
