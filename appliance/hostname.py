"""Reading and setting the node's hostname through the backend chosen in the config.

* ``hostnamectl``: systemd's tool (static and transient hostname), the caller being root.
* ``helper``: the appliance image, where the shell runs as the unprivileged login user:
  ``hostnamectl`` as that user (polkit allows it the hostname actions), then the privileged helper
  (:mod:`appliance.privileged`, over its socket) checks the name again and keeps the ``127.0.1.1``
  line of ``/etc/hosts`` in step (a root-owned file: no D-Bus service writes it).
* ``etc``: ``<root>/etc/hostname`` and the ``127.0.1.1`` line of ``<root>/etc/hosts``, plus the kernel
  hostname; for hosts without systemd.
* ``file``: a file in the state dir; sandboxes and tests, where the machine's name must not change.

This module owns the choice of backend; what a root process does to the running system lives in
:mod:`appliance.system_hostname`, which the privileged helper shares. Names are validated by the
caller (:func:`appliance.names.check_single_label`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from appliance.config import Config
from appliance.errors import ApplianceError, CommandFailed, PermissionDenied
from appliance.fsutil import read_first_word, write_atomic
from appliance.privileged.client import call_helper
from appliance.system_hostname import kernel_hostname, set_in_etc, set_with_hostnamectl


class HostnameBackend(ABC):
    @abstractmethod
    def get(self) -> str:
        """The current hostname."""

    @abstractmethod
    def set(self, name: str) -> None:
        """Apply ``name`` (already validated)."""


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
        self.root = root
        self.hostname_file = root / "etc" / "hostname"
        self.set_kernel = set_kernel

    def get(self) -> str:
        return read_first_word(self.hostname_file) or kernel_hostname()

    def set(self, name: str) -> None:
        set_in_etc(self.root, name, set_kernel=self.set_kernel)


class HostnamectlBackend(HostnameBackend):
    def __init__(self, tool: Path) -> None:
        self.tool = tool

    def get(self) -> str:
        return kernel_hostname()

    def set(self, name: str) -> None:
        set_with_hostnamectl(self.tool, name)


class HelperBackend(HostnameBackend):
    """hostnamectl under polkit, then ``privhelper hosts-name NAME`` for ``/etc/hosts``."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def get(self) -> str:
        return kernel_hostname()

    def set(self, name: str) -> None:
        set_with_hostnamectl(self.config.tools.hostnamectl, name)
        try:
            call_helper(self.config, ["hosts-name", name], timeout_s=60)
        except ApplianceError as exc:
            raise CommandFailed(f"hostname set to {name}, but /etc/hosts was not updated: {exc.message}",
                                hint=exc.hint) from None


def backend_for(config: Config) -> HostnameBackend:
    choice = config.hostname.backend
    if choice == "file":
        return FileBackend(config.paths.state_dir, config.node.default_hostname)
    if choice == "etc":
        return EtcBackend(config.hostname.etc_root, config.hostname.set_kernel)
    if choice == "helper":
        return HelperBackend(config)
    return HostnamectlBackend(config.tools.hostnamectl)
