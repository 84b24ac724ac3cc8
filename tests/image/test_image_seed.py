"""A cloud-init NoCloud seed skips the console's first login: the seed's password, or its SSH key, logs
in over SSH from the first boot on, and the public initial password never does.

Each test boots its own container (``systemd-nspawn``, see :mod:`tests.image.machine`) with a seed
directory (``/var/lib/cloud/seed/nocloud/``, the container's stand-in for a ``cidata`` volume)
placed in the overlay's upper layer before the first boot.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paramiko
import pytest

from tests.image.conftest import TIMINGS, Image, ensure_tool
from tests.image.machine import Container, booted

pytestmark = pytest.mark.slow

BOOT_TIMEOUT_S = 240.0
SSH_TIMEOUT_S = 30.0


@contextmanager
def seeded(image: Image, work: Path, user_data: str) -> Iterator[Container]:
    reason = ensure_tool("systemd-nspawn", "systemd-container")
    if reason:
        pytest.skip(reason)
    seed = work / "upper" / "var/lib/cloud/seed/nocloud"
    seed.mkdir(parents=True)
    (seed / "meta-data").write_text(f"instance-id: appliance-test-{secrets.token_hex(4)}\n")
    (seed / "user-data").write_text(user_data)
    with booted(image.rootfs, work, "appliance-seed") as node:
        took = node.wait_for("sshd active after cloud-init",
                             lambda: node.systemctl("is-active", "ssh").stdout.strip() == "active"
                             and node.systemctl("is-active", "cloud-final").stdout.strip() == "active",
                             BOOT_TIMEOUT_S)
        TIMINGS["boot with a cloud-init seed to sshd and cloud-final active"] = f"{took:.1f} s"
        yield node


def transport(node: Container) -> paramiko.Transport:
    t = paramiko.Transport(node.connect(22))
    t.start_client(timeout=SSH_TIMEOUT_S)
    return t


def run_line(t: paramiko.Transport, line: str) -> tuple[int, str]:
    chan = t.open_session(timeout=SSH_TIMEOUT_S)
    chan.settimeout(SSH_TIMEOUT_S)
    chan.exec_command(line)
    out = chan.makefile("rb").read().decode()
    return chan.recv_exit_status(), out


def refused(node: Container, password: str) -> bool:
    t = transport(node)
    try:
        t.auth_password("ems", password)
    except paramiko.AuthenticationException:
        return True
    finally:
        t.close()
    return False


def test_a_seed_password_logs_in_over_ssh(image, tmp_path):
    password = "Seed-" + secrets.token_urlsafe(12) + "-4k"
    user_data = ("#cloud-config\nchpasswd:\n  expire: false\n  users:\n"
                 f"    - {{name: ems, password: \"{password}\", type: text}}\n")
    with seeded(image, tmp_path, user_data) as node:
        assert refused(node, "ems")
        t = transport(node)
        try:
            t.auth_password("ems", password)
            assert t.is_authenticated()
            assert run_line(t, "system get hostname") == (0, "EMS\n")
        finally:
            t.close()
        # Nothing else of the image became cloud-init's: no default user, no sudo rule.
        assert node.run(["id", "debian"]).returncode != 0
        assert not (node.root / "etc/sudoers.d").exists() or not list((node.root / "etc/sudoers.d").iterdir())


def test_a_seed_key_logs_in_and_the_initial_password_is_locked(image, tmp_path):
    key = paramiko.RSAKey.generate(2048)
    user_data = ("#cloud-config\nusers:\n  - name: ems\n    ssh_authorized_keys:\n"
                 f"      - ssh-rsa {key.get_base64()} test@seed\n")
    with seeded(image, tmp_path, user_data) as node:
        node.wait_for("appliance-seed done",
                      lambda: node.show("appliance-seed.service", "Result")["Result"] == "success"
                      and "ems logs in with the seed's SSH keys" in node.journal("-u", "appliance-seed"), 60)
        assert refused(node, "ems")
        t = transport(node)
        try:
            t.auth_publickey("ems", key)
            assert t.is_authenticated()
            assert run_line(t, "system get hostname") == (0, "EMS\n")
        finally:
            t.close()
        assert node.run(["passwd", "-S", "ems"]).stdout.split()[1] == "L"
