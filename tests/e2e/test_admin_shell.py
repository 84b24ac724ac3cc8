"""The administration commands through the REAL shell process: the ``get`` commands' JSON on a node
without systemd (a sandbox), the network checks against loopback, binary output refused on a terminal,
following a log until Ctrl-C, and Tab completing time zones."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import tarfile
import threading
from collections.abc import Iterator

import dns.message
import dns.rrset
import pytest

from appliance.errors import CommandFailed
from appliance.ops.netdiag import lookup


@pytest.mark.parametrize(("line", "keys"), [
    ("system get network --json", {"interfaces", "gateways", "dns_servers", "dns_source", "pending", "notes"}),
    ("system get time --json", {"local_time", "utc_time", "timezone", "ntp", "synchronized", "ntp_servers"}),
    ("system get info --json", {"version", "os", "kernel", "cpus", "memory_total_mb", "disks", "load", "uptime_s",
                                "agent_uptime_s"}),
    ("system get sessions --json", {"sessions"}),
    ("service get status --json", {"services"}),
])
def test_get_commands_print_one_json_document_without_systemd(appliance, line, keys):
    done = appliance.c(line)
    assert (done.status, done.stderr) == (0, "")
    assert keys <= set(json.loads(done.stdout))


def test_service_status_names_what_it_cannot_know(appliance):
    services = {s["name"]: s for s in json.loads(appliance.c("service get status --json").stdout)["services"]}
    assert services["agent"]["state"] == "stopped" and services["ssh"]["state"] == "not managed here"


def test_traceroute_to_loopback(appliance):
    done = appliance.c("execute traceroute 127.0.0.1 --max_hops 3")
    assert done.status == 0, done.stderr
    assert done.stdout.startswith("traceroute to 127.0.0.1 (127.0.0.1), 3 hops max")
    assert " 1  127.0.0.1 " in done.stdout


def test_nslookup_through_the_system_resolver(appliance):
    done = appliance.c("execute nslookup localhost")
    assert done.status == 0, done.stderr
    assert "Server: system resolver" in done.stdout and "127.0.0.1" in done.stdout
    done = appliance.c("execute nslookup 127.0.0.1 --json")
    assert done.status == 2  # not a get: no --json
    done = appliance.c("execute nslookup name-that-does-not-exist.invalid")
    assert done.status == 1 and done.stderr.startswith("error: name-that-does-not-exist.invalid does not resolve")


@pytest.fixture
def dns_server() -> Iterator[int]:
    """A DNS server on 127.0.0.1 (UDP, a free port) that knows one name: db.example -> 192.0.2.77."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(data)
            reply = dns.message.make_response(query)
            question = query.question[0]
            if question.name.to_text() == "db.example." and question.rdtype == 1:
                reply.answer.append(dns.rrset.from_text("db.example.", 60, "IN", "A", "192.0.2.77"))
            elif question.name.to_text() != "db.example.":
                reply.set_rcode(3)  # NXDOMAIN
            sock.sendto(reply.to_wire(), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    stop.set()
    thread.join(5)
    sock.close()


def test_nslookup_asks_the_server_given(dns_server):
    # --server takes an address and asks on DNS's port 53, which a test cannot bind; the core is asked
    # on the test server's port instead.
    found = lookup("db.example", "127.0.0.1", 3, port=dns_server)
    assert [(a.kind, a.value) for a in found.answers] == [("A", "192.0.2.77")] and found.server == "127.0.0.1"
    with pytest.raises(CommandFailed, match=r"nope\.example does not exist \(NXDOMAIN from 127\.0\.0\.1\)"):
        lookup("nope.example", "127.0.0.1", 3, port=dns_server)


def test_nslookup_to_a_silent_server_times_out_with_a_hint(appliance):
    done = appliance.c("execute nslookup db.example --server 127.0.0.1 --timeout 1")
    assert done.status == 1
    assert "no answer from the DNS server 127.0.0.1 within 1 s" in done.stderr and "hint: " in done.stderr


def test_tcp_check_open_and_closed(appliance):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        done = appliance.c(f"execute tcp-check 127.0.0.1 {port}")
        assert done.status == 0, done.stderr
        assert "| open " in done.stdout
    done = appliance.c(f"execute tcp-check localhost {port} --timeout 2")
    assert done.status == 1 and "refused" in done.stdout


def test_the_bundle_streams_without_a_terminal_even_on_a_node_that_is_not_initialised(appliance):
    done = appliance.run(["-c", "execute diagnostic --output -"])
    assert done.status == 0, done.stderr
    raw = subprocess.run([str(appliance.exe), "--config", str(appliance.config), "-c",
                          "execute diagnostic --output -"], capture_output=True, env=appliance.env(),
                         stdin=subprocess.DEVNULL, timeout=60, check=False).stdout
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
        names = {m.name.split("/", 1)[1] for m in tar.getmembers()}
        readme = tar.extractfile(next(m for m in tar.getmembers() if m.name.endswith("README.txt")))
        assert readme is not None
        text = readme.read().decode()
    assert {"README.txt", "versions.json", "system/network.json", "logs/audit.log"} <= names
    assert "ha/nodes.json: " in text and "not initialised" in text  # said, not failed


def test_binary_output_is_refused_on_a_terminal(terminal, appliance):
    term = terminal()
    shown = term.run("execute diagnostic --output -")
    assert "error: --output - writes the archive to standard output, which is a terminal here" in shown
    shown = term.run("execute backup --output -")
    assert "error: --output - writes the dump to standard output, which is a terminal here" in shown
    assert not (appliance.state_dir / "support").exists()


def test_following_a_log_stops_on_ctrl_c(terminal, appliance):
    term = terminal()
    term.run("system get hostname")
    term.mark()
    term.send("execute log show audit --follow\r")
    term.wait_text('"system get hostname"')
    appliance.c("system get time")  # another session: its record appears while following
    term.wait_text("origin=local mode=command")
    term.send("\x03")
    term.wait_prompt()
    records = appliance.audit()
    assert records[-1]["line"] == "execute log show audit --follow" and records[-1]["status"] == 0


def test_tab_completes_time_zones(terminal, appliance):
    term = terminal()
    term.send("system set timezone Europe/Par\t")
    term.wait_line("EMS $ system set timezone Europe/Paris ")
    term.send("\x03")
    term.wait_prompt()
