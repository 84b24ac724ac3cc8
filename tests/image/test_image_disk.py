"""The bootable disk (OUT/disk.img): its layout, and a UEFI boot in qemu to the serial console login.

qemu runs with TCG (``-accel tcg``; on the build machines KVM guests die with an emulation failure,
see /work/shared/design/image.md), UEFI firmware from Debian's ``ovmf``, ``-snapshot`` so the image
is never written. The serial console (ttyS0, 115200) is driven with pexpect: the ``login:`` prompt of
serial-getty, the forced first password change, the appliance shell, and what only a VM has (its own
clock, so NTP; a DHCP server, qemu's). Slow (about 1-2 minutes).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.image.conftest import TIMINGS, Image, ensure_tool
from tests.image.machine import CLEAN_ENV, run

pytestmark = pytest.mark.slow

OVMF = Path("/usr/share/ovmf/OVMF.fd")
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
ROOT_TYPE = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"  # x86-64 root (Discoverable Partitions Specification)
LOGIN_TIMEOUT_S = 300
# prompt_toolkit draws "EMS $" and moves the cursor past the trailing space instead of printing it.
PROMPT = r"EMS \$"
STEP_TIMEOUT_S = 120


def output(argv: list[str]) -> str:
    done = run(argv, env_extra={"MTOOLS_SKIP_CHECK": "1"})
    assert done.returncode == 0, done.stderr
    return done.stdout


def esp(image: Image) -> str:
    """The ESP inside disk.img, for mtools (it starts at 1 MiB)."""
    return f"{image.out / 'disk.img'}@@1M"


def test_disk_is_gpt_with_an_esp_and_the_root_partition(image):
    table = json.loads(output(["sfdisk", "--json", str(image.out / "disk.img")]))["partitiontable"]
    assert table["label"] == "gpt"
    esp, root = table["partitions"]
    assert (esp["type"], esp["start"], esp["name"]) == (ESP_TYPE, 2048, "esp")
    assert (root["type"], root["name"]) == (ROOT_TYPE, "appliance-root")
    assert root["size"] * 512 == image.ext4.stat().st_size


def test_esp_boots_the_kernel_with_the_serial_console(image):
    files = set(output(["mdir", "-i", esp(image), "-/", "-b", "::/"]).split())
    assert {"::/EFI/BOOT/BOOTX64.EFI", "::/vmlinuz", "::/initrd.img", "::/loader/loader.conf",
            "::/loader/entries/appliance.conf"} <= files
    entry = output(["mtype", "-i", esp(image), "::/loader/entries/appliance.conf"])
    assert "linux /vmlinuz" in entry and "initrd /initrd.img" in entry
    options = next(line for line in entry.splitlines() if line.startswith("options "))
    assert "root=LABEL=appliance-root" in options
    assert options.split()[-1] == "console=ttyS0,115200n8"  # the last console= is /dev/console
    loader_conf = output(["mtype", "-i", esp(image), "::/loader/loader.conf"]).splitlines()
    assert "timeout 0" in loader_conf
    assert "editor no" in loader_conf  # no kernel command line editing (init=/bin/sh) at the console


@pytest.fixture
def qemu(image: Image, tmp_path: Path) -> Iterator[object]:
    reason = ensure_tool("qemu-system-x86_64", "qemu-system-x86")
    if reason:
        pytest.skip(reason)
    if not OVMF.exists():
        run(["apt-get", "install", "-y", "-qq", "ovmf"], timeout=600)
        if not OVMF.exists():
            pytest.skip(f"no UEFI firmware at {OVMF} and `apt-get install ovmf` did not provide it")
    import pexpect

    accel = os.environ.get("APPLIANCE_QEMU_ACCEL", "tcg")
    argv = ["-accel", accel, "-cpu", "max", "-m", "1536", "-smp", "2", "-no-reboot", "-snapshot",
            "-bios", str(OVMF), "-drive", f"file={image.out / 'disk.img'},format=raw,if=virtio",
            "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0",
            "-display", "none", "-monitor", "none", "-serial", "stdio"]
    log = (tmp_path / "serial.log").open("w")
    child = pexpect.spawn("qemu-system-x86_64", argv, env=CLEAN_ENV, encoding="utf-8", codec_errors="replace",
                          timeout=STEP_TIMEOUT_S, logfile=log)
    try:
        yield child
    finally:
        child.terminate(force=True)
        log.close()


def test_uefi_boot_to_the_serial_console_login_and_the_shell(qemu):
    child = qemu
    started = time.monotonic()
    child.expect(r"EMS login: ", timeout=LOGIN_TIMEOUT_S)
    TIMINGS["qemu (TCG, UEFI) power-on to serial login prompt"] = f"{time.monotonic() - started:.1f} s"
    child.sendline("ems")
    child.expect(r"Password: ")
    child.sendline("ems")
    child.expect(r"You are required to change your password immediately")
    child.expect(r"Current password: ")
    child.sendline("ems")
    new = "Ems-" + secrets.token_urlsafe(12) + "-7q"
    child.expect(r"New password: ")
    child.sendline(new)
    child.expect(r"Retype new password: ")
    child.sendline(new)
    child.expect(PROMPT)
    TIMINGS["qemu (TCG, UEFI) power-on to the appliance shell prompt"] = f"{time.monotonic() - started:.1f} s"
    child.sendline("system get hostname")
    child.expect(r"EMS\r+\n")  # the output line (the prompt is "EMS $")
    child.expect(PROMPT)
    # A VM keeps its own time (unlike a container): the zone and the NTP servers as systemd applies them.
    child.sendline("system set timezone Europe/Paris --yes")
    child.expect(r"Time zone changed: time zone set to Europe/Paris")
    child.expect(PROMPT)
    child.sendline("system set ntp --servers 192.0.2.123,ntp.example --yes")
    child.expect(r"NTP servers set to 192.0.2.123, ntp.example; synchronisation on")
    child.expect(PROMPT)
    child.sendline("system get time --json")
    child.expect(r'"timezone": "Europe/Paris"')
    child.expect(r'"ntp": true')
    child.expect(r'"ntp_servers": \[\s*"192.0.2.123",\s*"ntp.example"\s*\]')
    child.expect(PROMPT)
    # qemu's user network offers DHCP: the NIC is configured by it.
    child.sendline("system get network")
    child.expect(r"\| up +\| [0-9a-f:]{17} \| dhcp +\| 10\.0\.2\.15/24")
    child.expect(PROMPT)
    child.sendline("exit")
    child.expect(r"EMS login: ")
