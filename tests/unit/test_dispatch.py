import io
import json
import logging

import pytest

from appliance.clock import FakeClock
from appliance.config import Config, with_state_dir
from appliance.errors import ExitStatus
from appliance.shell.context import Context
from appliance.shell.dispatch import CONFIRM_QUESTION, Dispatcher
from appliance.shell.env import Env
from appliance.shell.result import Result
from appliance.shell.spec import CommandSpec, Param, Preview, Registry
from appliance.shell.types import Secret
from tests.unit.fakes import SPECS

SECRET = "hunter2 'x'=ü"
calls: list[dict] = []


def record(ctx, args):
    calls.append(dict(args))
    return Result(message="done")


def crash(ctx, args):
    raise RuntimeError(f"boom with {args['db_pass']}")


def interrupted(ctx, args):
    raise KeyboardInterrupt


REG = Registry([
    *SPECS,
    CommandSpec(("do",), "change", record, params=(Param("db_pass", "pw", Secret(), ask=True),),
                changes_state=True, confirm=True),
    CommandSpec(("crash",), "bug", crash, params=(Param("db_pass", "pw", Secret()),)),
    CommandSpec(("slow",), "interrupted", interrupted),
])


@pytest.fixture
def make(tmp_path):
    def build(stdin: str = "", tty: bool = False, mode: str = "command"):
        env = Env(stdin=io.StringIO(stdin), stdout=io.StringIO(), stderr=io.StringIO(), environ={"USER": "ems"},
                  clock=FakeClock(), stdin_isatty=tty, stdout_isatty=tty,
                  getpass=lambda prompt, timeout, limit: SECRET)
        config = with_state_dir(Config(), tmp_path)
        config = type(config)(**{**config.__dict__, "audit": type(config.audit)(target="file")})
        calls.clear()
        return Dispatcher(Context(config, env, REG, interactive=mode == "interactive"), mode), env
    return build


def audit_records(tmp_path):
    return [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]


def test_confirmation_yes_runs_the_command(make):
    d, env = make(stdin="y\n", tty=True)
    assert d.run_line("do --db_pass x") == ExitStatus.OK
    assert CONFIRM_QUESTION in env.stdout.getvalue() and calls == [{"db_pass": "x", "yes": False}]


@pytest.mark.parametrize("answer", ["n\n", "\n", "maybe\n", ""])
def test_confirmation_anything_but_yes_refuses(make, answer):
    d, env = make(stdin=answer, tty=True)
    assert d.run_line("do --db_pass x") == ExitStatus.NOT_CONFIRMED
    assert calls == [] and "nothing was changed" in env.stderr.getvalue()


def test_no_terminal_and_no_yes_refuses_without_reading_stdin(make):
    d, env = make(stdin="y\n", tty=False)
    assert d.run_line("do --db_pass x") == ExitStatus.NOT_CONFIRMED
    assert calls == [] and env.stdin.read() == "y\n"
    assert "hint: add --yes" in env.stderr.getvalue()


def test_yes_skips_the_question(make):
    d, env = make(tty=True)
    assert d.run_line("do --db_pass x --yes") == ExitStatus.OK
    assert CONFIRM_QUESTION not in env.stdout.getvalue()


def test_missing_secret_is_asked_for_on_a_terminal(make, tmp_path):
    d, env = make(tty=True)
    assert d.run_line("do --yes") == ExitStatus.OK
    assert calls[0]["db_pass"] == SECRET


def test_missing_secret_without_terminal_is_a_usage_error(make):
    d, env = make(tty=False)
    assert d.run_line("do --yes") == ExitStatus.USAGE
    assert "--db_pass - " in env.stderr.getvalue()


def test_dash_reads_the_secret_from_stdin(make):
    d, env = make(stdin=SECRET + "\n", tty=False)
    assert d.run_line("do --db_pass - --yes") == ExitStatus.OK
    assert calls[0]["db_pass"] == SECRET


def test_dash_in_batch_mode_is_refused(make):
    d, env = make(stdin="other command\n", mode="batch")
    assert d.run_line("do --db_pass - --yes") == ExitStatus.USAGE


def test_audit_record_is_masked_and_complete(make, tmp_path):
    d, env = make(tty=False)
    d.run_line(f"do --db_pass '{SECRET.replace(chr(39), '')}' --yes")
    d.run_line("nonsense --db_pass hunter2")
    start, first, second = audit_records(tmp_path)
    assert (start["event"], start["outcome"], start["status"]) == ("start", "started", None)
    assert start["line"] == first["line"]
    assert first["line"] == "do --db_pass ******** --yes" and first["accepted"] and first["status"] == 0
    assert first["user"] == "ems" and first["mode"] == "command" and "duration_ms" in first
    assert second["accepted"] is False and second["status"] == 2
    assert "hunter2" not in (tmp_path / "audit.log").read_text()


def test_internal_error_is_one_line_and_the_log_has_no_secret(make, tmp_path):
    d, env = make()
    try:
        assert d.run_line("crash --db_pass hunter2") == ExitStatus.FAILED
    finally:
        for handler in list(logging.getLogger().handlers):
            if getattr(handler, "_appliance", False):
                handler.close()
                logging.getLogger().removeHandler(handler)
    assert env.stderr.getvalue().startswith("error: internal error")
    assert "Traceback" not in env.stderr.getvalue()
    log = (tmp_path / "shell.log").read_text()
    assert "RuntimeError" in log and "hunter2" not in log and "********" in log


def test_keyboard_interrupt_is_status_130(make):
    d, env = make()
    assert d.run_line("slow") == ExitStatus.INTERRUPTED


def test_json_output(make):
    d, env = make()
    assert d.run_line("ha get nodes --json") == ExitStatus.OK
    assert json.loads(env.stdout.getvalue())["nodes"][1] == {"name": "EMS-2", "role": "standby"}


def test_blank_and_comment_lines_do_nothing_and_are_not_audited(make, tmp_path):
    d, env = make()
    assert d.run_line("   ") == ExitStatus.OK and d.run_line("# hi") == ExitStatus.OK
    assert not (tmp_path / "audit.log").exists()


# --- bounded input, masked history, interruptions, batch ------------------------------------------


def test_an_overlong_line_is_refused_before_masking_and_audited_as_length_and_prefix(make, tmp_path):
    d, env = make()
    line = "do --db_pass SEKRIT " + "x" * 200_000
    assert d.run_line(line) == ExitStatus.USAGE
    assert "too long (200020 characters, at most 4096)" in env.stderr.getvalue()
    [record] = audit_records(tmp_path)
    assert record["length"] == 200_020 and record["accepted"] is False and record["outcome"] == "refused"
    assert record["line"].startswith("do --db_pass ********") and len(record["line"]) <= 300
    assert "SEKRIT" not in (tmp_path / "audit.log").read_text()


def test_a_recalled_line_with_a_masked_secret_says_to_type_it_again(make):
    d, env = make(tty=True)
    for line in ("do --db_pass ******** --yes", "do --db_pass=******** --yes"):
        assert d.run_line(line) == ExitStatus.USAGE
    text = env.stderr.getvalue()
    assert "the value of --db_pass was masked (********)" in text and "type the secret again" in text
    assert "leave --db_pass out to be asked for it" in text
    assert "not allowed outside quotes" not in text and calls == []


def test_a_state_changing_command_is_audited_when_it_starts_and_when_it_ends(make, tmp_path):
    d, env = make()
    d.run_line("do --db_pass x --yes")
    d.run_line("ha get nodes")
    records = audit_records(tmp_path)
    assert [(r["event"], r["outcome"], r["status"]) for r in records] == [
        ("start", "started", None), ("end", "finished", 0), ("end", "finished", 0)]


def hang_up(ctx, args):
    from appliance.interrupts import HangUp

    raise HangUp(1)


def test_a_hang_up_during_a_command_is_audited_as_interrupted_and_ends_the_session(make, tmp_path, monkeypatch):
    from appliance import interrupts

    monkeypatch.setattr(interrupts._state, "signum", 1)  # what the SIGHUP handler records before raising
    reg = Registry([CommandSpec(("cut",), "cut short", hang_up, changes_state=True)])
    d, env = make()
    d = Dispatcher(Context(d.ctx.config, env, reg, interactive=True), "interactive")
    assert d.run_line("cut") == ExitStatus.HANGUP
    assert d.ctx.logout
    start, end = audit_records(tmp_path)
    assert (start["event"], end["event"], end["outcome"], end["status"]) == ("start", "end", "interrupted", 129)


def test_a_secret_on_standard_input_is_read_with_a_bound(make):
    d, env = make(stdin="y" * 5000 + "\nnext line\n")
    assert d.run_line("do --db_pass - --yes") == ExitStatus.USAGE
    assert "too long (5000 characters, at most 1024)" in env.stderr.getvalue()
    assert env.stdin.read() == "next line\n" and calls == []


def test_the_password_question_times_out_like_the_prompt(make):
    d, env = make(tty=True, mode="interactive")
    asked = []
    env.getpass = lambda prompt, timeout, limit: asked.append((timeout, limit))  # None: nothing typed in time
    assert d.run_line("do --yes") == ExitStatus.NOT_CONFIRMED
    assert asked == [(float(d.ctx.config.shell.idle_timeout_s), 1024)]
    assert "no answer within" in env.stderr.getvalue() and d.ctx.logout and calls == []


def test_an_old_to_new_preview_is_shown_above_the_question_only(make):
    def preview(ctx, args):
        return Preview("Setting: old -> new", with_question=True)

    reg = Registry([CommandSpec(("chg",), "change", record, changes_state=True, confirm=True, preflight=preview)])
    for stdin, tty, line, shown in (("y\n", True, "chg", True), ("", True, "chg --yes", False),
                                    ("", False, "chg", False)):
        d, env = make(stdin=stdin, tty=tty)
        d = Dispatcher(Context(d.ctx.config, env, reg), "command")
        d.run_line(line)
        assert ("Setting: old -> new" in env.stdout.getvalue()) == shown, line


def test_batch_names_the_failing_line_and_stops_there(make):
    from appliance.shell.main import run_batch

    d, env = make(stdin="ha get nodes\n\n# note\nnonsense\nha get nodes\n", mode="batch")
    assert run_batch(d) == ExitStatus.USAGE
    assert env.stderr.getvalue().startswith("error: line 4: unknown command 'nonsense'")
    assert env.stdout.getvalue().count("EMS-1") == 1  # line 5 never ran


def test_batch_refuses_an_overlong_line_without_holding_it(make, tmp_path):
    from appliance.shell.main import run_batch

    d, env = make(stdin="x" * 1_000_000 + "\nha get nodes\n", mode="batch")
    assert run_batch(d) == ExitStatus.USAGE
    assert "error: line 1: the command line is too long (1000000 characters" in env.stderr.getvalue()
    assert audit_records(tmp_path)[0]["length"] == 1_000_000
