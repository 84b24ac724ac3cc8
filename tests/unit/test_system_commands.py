import io
import socket
from dataclasses import replace

import pytest

from appliance.clock import FakeClock
from appliance.config import Config, HostnameConfig, with_state_dir
from appliance.errors import ExitStatus
from appliance.hostname import EtcBackend
from appliance.identity import format_duration, hardware_id
from appliance.shell.context import Context
from appliance.shell.dispatch import Dispatcher
from appliance.shell.env import Env
from appliance.system_hostname import hosts_with_name
from commands import build_registry


def shell(config: Config) -> tuple[Dispatcher, Env]:
    env = Env(stdin=io.StringIO(), stdout=io.StringIO(), stderr=io.StringIO(), environ={}, clock=FakeClock(),
              stdin_isatty=False, stdout_isatty=False)
    config = replace(config, audit=replace(config.audit, target="file"))
    return Dispatcher(Context(config, env, build_registry()), "command"), env


def test_file_backend_set_and_get(tmp_path):
    d, env = shell(with_state_dir(replace(Config(), hostname=HostnameConfig(backend="file")), tmp_path))
    assert d.run_line("system get hostname") == 0 and env.stdout.getvalue() == "EMS\n"
    assert d.run_line("system set hostname EMS-1 --yes") == 0
    assert "Hostname changed from EMS to EMS-1." in env.stdout.getvalue()
    assert (tmp_path / "hostname").read_text() == "EMS-1\n"


@pytest.mark.parametrize("name", ["-x", "x-", "a.b", "1234", "a" * 64, "localhost", "'a;b'"])
def test_invalid_hostnames_are_refused_before_anything_changes(tmp_path, name):
    d, env = shell(with_state_dir(replace(Config(), hostname=HostnameConfig(backend="file")), tmp_path))
    assert d.run_line(f"system set hostname {name} --yes") == ExitStatus.USAGE
    assert not (tmp_path / "hostname").exists()
    assert "<HOSTNAME>" in env.stderr.getvalue()  # refused by the parser or the validator, not the tokenizer


def test_etc_backend_writes_hostname_and_hosts_under_its_root(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\told\n::1\tlocalhost\n")
    backend = EtcBackend(root, set_kernel=False)
    before = socket.gethostname()
    backend.set("EMS-7")
    assert (root / "etc" / "hostname").read_text() == "EMS-7\n"
    assert (root / "etc" / "hosts").read_text() == "127.0.0.1\tlocalhost\n127.0.1.1\tEMS-7\n::1\tlocalhost\n"
    assert backend.get() == "EMS-7" and socket.gethostname() == before


def test_hosts_line_added_after_localhost_when_absent():
    assert hosts_with_name("127.0.0.1 localhost\n::1 localhost\n", "n1") == (
        "127.0.0.1 localhost\n127.0.1.1\tn1\n::1 localhost\n")
    assert hosts_with_name("# 127.0.1.1 comment\n", "n1").endswith("127.0.1.1\tn1\n")


def test_status_fields_and_json(tmp_path):
    d, env = shell(with_state_dir(replace(Config(), hostname=HostnameConfig(backend="file")), tmp_path))
    (tmp_path / "hardware-id").write_text("HW-TEST\n")
    assert d.run_line("system get status") == 0
    text = env.stdout.getvalue()
    for label in ("Version", "Hostname", "Hardware ID", "Uptime"):
        assert label in text
    assert "HW-TEST" in text


def test_hardware_id_is_derived_stably_without_showing_the_source(tmp_path):
    source = tmp_path / "uuid"
    source.write_text("4C4C4544-0042-3010-8052-B4C04F4E3332\n")
    first = hardware_id(tmp_path / "state", (source,))
    assert first == hardware_id(tmp_path / "state", (source,)) and first.startswith("HW-")
    assert "4C4C4544" not in first
    assert hardware_id(tmp_path / "state", (tmp_path / "absent",)) == "unknown"


def test_format_duration():
    assert format_duration(59) == "00:00:59"
    assert format_duration(93784) == "1 day, 02:03:04"
    assert format_duration(2 * 86400) == "2 days, 00:00:00"


def test_history_is_interactive_only(tmp_path):
    d, env = shell(with_state_dir(Config(), tmp_path))
    assert d.run_line("history") == ExitStatus.USAGE


def test_help_for_one_command(tmp_path):
    d, env = shell(with_state_dir(Config(), tmp_path))
    assert d.run_line("help execute ping") == 0
    assert "usage: execute ping <HOST>" in env.stdout.getvalue()
    assert d.run_line("help nope") == ExitStatus.USAGE


def test_the_question_says_what_will_change(tmp_path):
    d, env = shell(with_state_dir(replace(Config(), hostname=HostnameConfig(backend="file")), tmp_path))
    env.stdin, env.stdin_isatty = io.StringIO("n\n"), True
    assert d.run_line("system set hostname EMS-9") == ExitStatus.NOT_CONFIRMED
    assert env.stdout.getvalue() == "Hostname: EMS -> EMS-9\nDo you want to continue? (y/n) "
    assert not (tmp_path / "hostname").exists()


def test_rotate_key_names_the_key_it_replaces(tmp_path):
    from appliance import credentials

    config = with_state_dir(Config(), tmp_path)
    credentials.backend_for(config).initialise()
    old = credentials.backend_for(config).key_id()
    d, env = shell(config)
    env.stdin, env.stdin_isatty = io.StringIO("n\n"), True
    assert d.run_line("system rotate-key") == ExitStatus.NOT_CONFIRMED
    assert env.stdout.getvalue().startswith(f"Master key: {old} -> a new key")
