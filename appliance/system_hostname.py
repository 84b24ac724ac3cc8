"""Applying a hostname to the running system: the actions that need root.

Two callers share them: the hostname backends ``etc`` and ``hostnamectl`` of a process that runs as
root (:mod:`appliance.hostname`), and the privileged helper (:mod:`appliance.privileged.server`),
which applies a name for the unprivileged shell and agent. The helper imports this module and not
:mod:`appliance.hostname`, so the program that runs as root loads no backend, no client and nothing
else it does not need.

* :func:`set_with_hostnamectl`: systemd's tool sets the static, then the transient hostname.
* :func:`set_in_etc`: the kernel hostname, ``<root>/etc/hostname`` and the ``127.0.1.1`` line of
  ``<root>/etc/hosts``, for hosts without systemd; the kernel name is restored if the files cannot
  be written, so kernel and files stay in step.
* :func:`set_hosts_name` / :func:`hosts_with_name`: the ``127.0.1.1`` line (Debian's convention).

Names are validated by the caller (:func:`appliance.names.check_single_label`).
"""

from __future__ import annotations

from pathlib import Path

from appliance.errors import CommandFailed, PermissionDenied
from appliance.fsutil import write_atomic
from appliance.proc import run_tool


def kernel_hostname() -> str:
    import socket  # here, not at import: the file backend (sandboxes) never needs it, and start-up counts

    return socket.gethostname()


def set_with_hostnamectl(tool: Path, name: str) -> None:
    """Set the static and the transient hostname with ``hostnamectl``.

    :raises CommandFailed: hostnamectl failed or timed out.
    """
    # --static and --transient, not the pretty name. --no-ask-password: an unprivileged caller is
    # allowed by polkit (set-static-hostname, set-hostname) or refused, never prompted.
    run_tool(tool, ["--no-ask-password", "set-hostname", "--static", "--", name], timeout_s=15)
    run_tool(tool, ["--no-ask-password", "set-hostname", "--transient", "--", name], timeout_s=15)


def set_in_etc(root: Path, name: str, *, set_kernel: bool) -> None:
    """Write ``<root>/etc/hostname`` and the hosts line, after the kernel hostname if ``set_kernel``.

    :raises PermissionDenied: the kernel hostname may not be set (not root); nothing was changed.
    :raises CommandFailed: a file could not be written; the kernel hostname is back as it was.
    """
    import socket  # see kernel_hostname

    hostname_file = root / "etc" / "hostname"
    previous = socket.gethostname()
    if set_kernel:
        try:
            socket.sethostname(name)
        except PermissionError:
            raise PermissionDenied(
                "cannot set the kernel hostname: permission denied",
                hint="the etc backend needs root (CAP_SYS_ADMIN); use the hostnamectl backend",
            ) from None
    try:
        write_atomic(hostname_file, name + "\n")
        set_hosts_name(root / "etc" / "hosts", name)
    except OSError as exc:
        if set_kernel:
            socket.sethostname(previous)  # keep kernel and files in step
        where = exc.filename or hostname_file
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
