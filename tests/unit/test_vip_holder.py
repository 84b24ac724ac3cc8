"""The VIP holder's rules over a fake kernel (pure logic); the frames it sends, byte by byte.

The real thing (addresses in network namespaces, a frozen agent, a client that follows) is tested in
``tests/integration/test_vip_netns.py``.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from appliance.config import parse_config
from appliance.ha.fence import FileFence
from appliance.ha.vip import Holder, describe_vip, write_wanted
from appliance.net.addresses import Interface, parse_vip
from appliance.net.announce import garp_frame, na_message

MAC = bytes.fromhex("020000000001")


class Kernel:
    def __init__(self) -> None:
        self.addresses: dict[str, int] = {}
        self.calls: list[tuple[str, str, int | None]] = []
        self.announced = 0
        self.fail_add = False

    def replace(self, vip: Interface, device: str, lifetime_s: int) -> None:
        if self.fail_add:
            raise OSError(1, "Operation not permitted")
        self.addresses[str(vip)] = lifetime_s
        self.calls.append(("replace", str(vip), lifetime_s))

    def delete(self, vip: Interface, device: str) -> bool:
        self.calls.append(("delete", str(vip), None))
        return self.addresses.pop(str(vip), None) is not None

    def announce(self, vip: Interface, device: str) -> None:
        self.announced += 1


class Mono:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def setup(tmp_path: Path):
    config = parse_config({"paths": {"state_dir": str(tmp_path)}, "vip": {"interface": "eth0"}}, None, tmp_path)
    config.paths.run_dir.mkdir(parents=True)
    kernel, mono = Kernel(), Mono()
    return config, FileFence(config.fence_file), kernel, mono, Holder(config, kernel, monotonic=mono)


def test_holds_while_the_fence_is_open_and_deletes_at_the_deadline(setup) -> None:
    config, fence, kernel, mono, holder = setup
    write_wanted(config, "192.0.2.10/24")
    fence.grant(mono.now + 1.5, 4)
    assert holder.step() is not None
    assert kernel.addresses == {"192.0.2.10/24": 1}  # whole seconds of the trust window left
    assert kernel.announced == 1
    mono.now += 0.5
    fence.grant(mono.now + 1.5, 4)  # a renewal: the lifetime is refreshed
    holder.step()
    assert kernel.calls[-1] == ("replace", "192.0.2.10/24", 1)
    mono.now += 1.2
    wait = holder.step()  # the deadline is 0.3 s away: sleep exactly to it
    assert wait is not None and wait <= 0.3
    mono.now += 0.3
    assert holder.step() is None  # deadline reached: gone, and the holder exits
    assert kernel.addresses == {}
    status = json.loads((config.paths.run_dir / "vip-status.json").read_text())
    assert status["held"] is None


def test_a_revoked_fence_releases_at_once(setup) -> None:
    config, fence, kernel, mono, holder = setup
    write_wanted(config, "2001:db8::10/64")
    fence.grant(mono.now + 3.0, 9)
    holder.step()
    assert kernel.addresses == {"2001:db8::10/64": 3}
    fence.revoke()
    assert holder.step() is None and kernel.addresses == {}


def test_the_kernel_lifetime_is_refreshed_before_it_runs_out(setup) -> None:
    config, fence, kernel, mono, holder = setup
    write_wanted(config, "192.0.2.10/24")
    fence.grant(mono.now + 1.9, 4)
    holder.step()
    mono.now += 0.8  # no renewal yet, but the 1 s lifetime ends in 0.2 s while the fence is open for 1.1 s
    holder.step()
    assert kernel.calls[-1] == ("replace", "192.0.2.10/24", 1)


def test_a_changed_or_removed_vip_moves_or_goes(setup) -> None:
    config, fence, kernel, mono, holder = setup
    write_wanted(config, "192.0.2.10/24")
    fence.grant(mono.now + 5, 1)
    holder.step()
    write_wanted(config, "192.0.2.20/24")
    holder.step()
    assert kernel.addresses == {"192.0.2.20/24": 5}
    write_wanted(config, None)
    assert holder.step() is not None  # still primary: it keeps running, holding nothing
    assert kernel.addresses == {}


def test_announces_in_a_burst_then_periodically(setup) -> None:
    config, fence, kernel, mono, holder = setup
    write_wanted(config, "192.0.2.10/24")
    for _ in range(200):  # 10 s in 50 ms steps, renewed all along
        fence.grant(mono.now + 1.5, 2)
        holder.step()
        mono.now += 0.05
    assert kernel.announced == 6  # the burst: 0, 0.1, 0.3, 1, 2 and 5 s after adding (refresh: 60 s)


def test_a_failing_kernel_is_retried_and_reported(setup) -> None:
    config, fence, kernel, mono, holder = setup
    write_wanted(config, "192.0.2.10/24")
    fence.grant(mono.now + 5, 3)
    kernel.fail_add = True
    holder.step()
    assert kernel.addresses == {} and "Operation not permitted" in (holder.error or "")
    kernel.fail_add = False
    mono.now += 0.5
    holder.step()
    assert kernel.addresses == {}  # retried after RETRY_S, not in a tight loop
    mono.now += 0.6
    holder.step()
    assert kernel.addresses == {"192.0.2.10/24": 3}


def test_describe_for_ha_get_status(setup) -> None:
    config, fence, kernel, mono, holder = setup
    assert describe_vip(config, None) == "none"
    write_wanted(config, "192.0.2.10/24")
    fence.grant(mono.now + 5, 3)
    holder.step()
    assert describe_vip(config, "192.0.2.10/24") == "192.0.2.10/24: held by this node on eth0 (epoch 3)"
    holder.release("test")
    assert describe_vip(config, "192.0.2.10/24") == "192.0.2.10/24: not held by this node"


@pytest.mark.parametrize("text", ["192.0.2.10", "192.0.2.0/24", "192.0.2.255/24", "127.0.0.1/8", "224.0.0.5/4",
                                  "fe80::1/64", "::/0", "x/24"])
def test_bad_vips_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_vip(text)


def test_gratuitous_arp_frame() -> None:
    frame = garp_frame(MAC, ipaddress.IPv4Address("192.0.2.10"))
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == MAC and frame[12:14] == b"\x08\x06"
    arp = frame[14:]
    assert arp[:8] == bytes.fromhex("0001080006040001")  # Ethernet, IPv4, 6, 4, request
    assert arp[8:14] == MAC and arp[14:18] == bytes([192, 0, 2, 10])  # sender = us
    assert arp[18:24] == b"\0" * 6 and arp[24:28] == bytes([192, 0, 2, 10])  # target IP = the same address
    reply = garp_frame(MAC, ipaddress.IPv4Address("192.0.2.10"), reply=True)[14:]
    assert reply[6:8] == b"\x00\x02" and reply[18:24] == b"\xff" * 6


def test_unsolicited_neighbour_advertisement() -> None:
    message = na_message(MAC, ipaddress.IPv6Address("2001:db8::10"))
    assert message[0] == 136 and message[1] == 0  # type, code (checksum: the kernel's)
    assert message[4] & 0x20 and not message[4] & 0xC0  # Override set; Router and Solicited clear
    assert message[8:24] == ipaddress.IPv6Address("2001:db8::10").packed
    assert message[24:26] == b"\x02\x01" and message[26:32] == MAC  # target link-layer address option
