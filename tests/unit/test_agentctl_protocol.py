"""The control socket's wire rules (pure), and one real round trip over a path too long for ``sun_path``."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from appliance.agentctl.client import AgentClient
from appliance.agentctl.protocol import LineReader, ProtocolError, check_request, decode, encode, exit_status
from appliance.agentctl.runner import Runner, error_answer
from appliance.agentctl.server import ControlServer, allowed_uids
from appliance.clock import SystemClock
from appliance.config import AgentConfig, Config
from appliance.errors import ExitStatus
from appliance.shell.context import Context
from appliance.shell.result import Result
from appliance.shell.spec import Args, CommandSpec, Param, Registry
from appliance.shell.types import Secret
from commands import build_registry


def test_lines_are_split_across_reads_and_a_long_one_is_refused() -> None:
    reader = LineReader(10)
    assert reader.feed(b'{"a"') == []
    assert reader.feed(b':1}\n{"b":2}\n{') == [b'{"a":1}', b'{"b":2}']
    with pytest.raises(ProtocolError, match="longer than 10 bytes"):
        reader.feed(b"x" * 20)


def test_a_request_is_checked_field_by_field() -> None:
    ok = {"v": 1, "verb": "run", "words": [["ha", False], ["get", False]], "secrets": {"db_pass": "x"}}
    assert check_request(ok) == ("run", [("ha", False), ("get", False)], {"db_pass": "x"}, None)
    for bad, why in ((dict(ok, v=2), "protocol version 2"), (dict(ok, verb="exec"), "unknown verb"),
                     (dict(ok, words=["ha"]), "words must be"), (dict(ok, secrets={"a": 1}), "secrets must"),
                     (dict(ok, words=[["w", False]] * 65), "at most 64"), (dict(ok, token="t" * 65), "token")):
        with pytest.raises(ProtocolError, match=why):
            check_request(bad)
    assert decode(encode({"out": "é"})) == {"out": "é"}
    assert exit_status(4) is ExitStatus.AGENT_DOWN and exit_status(77) is ExitStatus.FAILED


def test_root_and_this_user_are_always_allowed_and_unknown_names_are_skipped() -> None:
    assert {0, os.geteuid()} <= allowed_uids(("no-such-user-here",))
    assert 65534 in allowed_uids(("nobody",))


def test_a_socket_path_longer_than_sun_path_still_works() -> None:
    base = Path(tempfile.mkdtemp(prefix="ctl-"))
    try:
        deep = base / ("d" * 60) / ("e" * 60)
        deep.mkdir(parents=True)
        path = deep / "control.sock"
        assert len(str(path)) > 108
        config = Config(agent=AgentConfig(control_socket=path, request_timeout_s=5))
        server = ControlServer(lambda: config.agent, Runner(build_registry(), lambda: config, SystemClock()))
        server.start()
        try:
            assert AgentClient(config).hello()["pid"] == os.getpid()
            assert path.is_socket() and path.stat().st_mode & 0o777 == 0o666
        finally:
            server.close()
        assert not path.exists()  # removed on close
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _boom(ctx: Context, args: Args) -> Result:
    raise RuntimeError(f"a bug that puts {args['pw']} in its message")


def test_a_bug_in_a_served_command_is_one_line_for_the_shell_and_a_masked_traceback_in_the_log(caplog) -> None:
    registry = Registry([CommandSpec(("boom",), "fails", _boom, params=(Param("pw", "a secret", Secret()),),
                                     via_agent=True)])
    runner = Runner(registry, lambda: Config(), SystemClock())
    assert runner.command_name([("boom", False), ("--pw", False), ("Hunter-2-x", False)]) == "boom"
    try:
        list(runner.run(0, [("boom", False)], {"pw": "Hunter-2-x"}, None, lambda: False))
    except RuntimeError as exc:
        answer = error_answer(exc, {"pw": "Hunter-2-x"}, "boom")
    assert answer["error"].startswith("internal error") and answer["status"] == 1
    assert "Hunter-2-x" not in caplog.text and "a bug that puts ******** in its message" in caplog.text
