import pytest

from appliance.shell.types import (
    PORT,
    Choice,
    Host,
    HostList,
    HostName,
    Identifier,
    Integer,
    IpAddress,
    PortList,
    Secret,
)


@pytest.mark.parametrize("text", ["10.0.0.1", "::1", "fe80::1", "2001:db8::2"])
def test_ip_addresses(text):
    assert IpAddress().parse(text) == text


@pytest.mark.parametrize("text", ["10.0.0.256", "1.2.3", "-1.2.3.4", "host", ""])
def test_bad_ip_addresses(text):
    with pytest.raises(ValueError):
        IpAddress().parse(text)


@pytest.mark.parametrize("text", ["db1", "db-1.example.com", "1db.example", "EMS-1", "a" * 63, "x.y."])
def test_host_names(text):
    assert Host().parse(text) == text


@pytest.mark.parametrize(
    "text",
    ["-f", "--help", "a_b", "a..b", "-a.b", "a-.b", "a" * 64, "1.2.3.999", "999", "a b", "", "é.com", "a/b"],
)
def test_bad_hosts(text):
    with pytest.raises(ValueError):
        Host().parse(text)


@pytest.mark.parametrize("text", ["EMS-1", "node2", "a", "9lives", "x" * 63])
def test_single_label_hostnames(text):
    assert HostName().parse(text) == text


@pytest.mark.parametrize("text", ["-ems", "ems-", "ems.local", "12345", "x" * 64, "localhost", "a_b", ""])
def test_bad_single_label_hostnames(text):
    with pytest.raises(ValueError):
        HostName().parse(text)


def test_integer_bounds_and_format():
    count = Integer(1, 100)
    assert count.parse("1") == 1 and count.parse("100") == 100
    for bad in ("0", "101", "-1", "1e3", "0x10", " 5", "5.0", "", "99999999999"):
        with pytest.raises(ValueError):
            count.parse(bad)


def test_ports():
    assert PORT.parse("5432") == 5432
    for bad in ("0", "65536", "http"):
        with pytest.raises(ValueError):
            PORT.parse(bad)
    assert PortList().parse("5432,5433") == (5432, 5433)


def test_host_list():
    assert HostList().parse("10.0.0.1,db2") == ("10.0.0.1", "db2")
    assert HostList().parse("db,db") == ("db", "db")  # same host, different ports: checked with the ports
    for bad in ("10.0.0.1,,db2", "-x", ",".join(["h"] * 9)):
        with pytest.raises(ValueError):
            HostList().parse(bad)
    with pytest.raises(ValueError, match="without them"):
        Host().parse("[::1]")


def test_choice_and_identifier_and_secret():
    assert Choice(("a", "b")).parse("a") == "a"
    assert Choice(("a", "b")).choices() == ("a", "b")
    with pytest.raises(ValueError):
        Choice(("a", "b")).parse("c")
    assert Identifier().parse("ems_db") == "ems_db"
    for bad in ("1db", "a-b", "a;drop", ""):
        with pytest.raises(ValueError):
            Identifier().parse(bad)
    assert Secret().secret and Secret().parse("p w='\"ü") == "p w='\"ü"


def test_error_messages_never_echo_the_value():
    with pytest.raises(ValueError) as info:
        Secret(max_len=3).parse("hunter2")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("text", ["fe80::1%eth0", "fe80::1%1", "fe80::1%br-lan.10", "fe80::1%en_0"])
def test_ipv6_zone_ids_that_name_an_interface(text):
    assert Host().parse(text) == text and IpAddress().parse(text) == text


@pytest.mark.parametrize("text", ["fe80::1%-c", "fe80::1%--count", "fe80::1%a$b", "fe80::1%0123456789abcdef",
                                  "fe80::1%.", "fe80::1%..", "fe80::1%eth 0"])
def test_ipv6_zone_ids_that_could_not_name_an_interface_are_refused(text):
    with pytest.raises(ValueError):
        Host().parse(text)


def test_node_names_and_ca_files():
    from appliance.shell.types import CaFile, NodeName

    assert NodeName().parse("EMS-2") == "EMS-2" and NodeName().parse("ems2.example.com") == "ems2.example.com"
    for bad in ("-x", "a_b", "ems.", "x" * 64, "a\x1bb"):
        with pytest.raises(ValueError):
            NodeName().parse(bad)
    assert CaFile().parse("/etc/ssl/ca.pem") == "/etc/ssl/ca.pem" and CaFile().parse("system") == "system"
    for bad in ("ca.pem", "./ca.pem", "/a b", "/a,b", "SYSTEM"):
        with pytest.raises(ValueError):
            CaFile().parse(bad)


def test_a_node_name_read_from_the_registry_is_checked_again():
    from appliance.names import node_name_from_db

    node_id = "0f8fad5b-d9cb-469f-a165-70867728950e"
    assert node_name_from_db("EMS-1", node_id) == "EMS-1"
    for bad in ("EMS\x1b]0;owned\x07", "a\nforged | row", None, 7, ""):
        assert node_name_from_db(bad, node_id) == "(invalid name, node 0f8fad5b)"
