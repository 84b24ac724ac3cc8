"""The REAL interactive shell in a pseudo-terminal, driven key by key as a person would.

What is asserted is what the screen shows (through the small emulator in conftest), plus the state
the shell leaves behind (hostname file, history file, audit log).
"""

from __future__ import annotations

import os
import re
import signal
import time

SECRET = "hunter2"


def audit_lines(appliance) -> list[str]:
    """The audited lines, one per command (a state-changing command also has a start record)."""
    return [r["line"] for r in appliance.audit() if r["event"] == "end"]


def test_startup_prompt_and_help(terminal, appliance):
    term = terminal()
    assert "Appliance shell." in term.screen.text()
    shown = term.run("help")
    for command in ("system get hostname", "system set hostname", "system get status", "execute ping",
                    "history", "exit"):
        assert re.search(rf"^\s+{command}\s+\S", shown, re.MULTILINE), (command, shown)
    [record] = appliance.audit()
    assert (record["line"], record["mode"], record["status"]) == ("help", "interactive", 0)
    assert record["origin"].startswith("tty:/dev/pts/")


def test_tab_completes_command_words(terminal, appliance):
    term = terminal()
    term.send("sys\t")
    term.wait_line("EMS $ system ")
    assert term.run("get hostname").strip() == "EMS"

    term.send("system s\t")
    term.wait_line("EMS $ system set ")
    term.run("hostname EMS-5 --yes", hostname="EMS-5")
    assert audit_lines(appliance) == ["system get hostname", "system set hostname EMS-5 --yes"]
    assert appliance.stored_hostname() == "EMS-5"


def test_tab_completes_flags(terminal, appliance):
    term = terminal()
    term.send("execute ping 127.0.0.1 --c\t")
    term.wait_line("EMS $ execute ping 127.0.0.1 --count ")
    shown = term.run("1")
    assert "1 packets transmitted, 1 received" in shown
    assert audit_lines(appliance) == ["execute ping 127.0.0.1 --count 1"]


def test_question_mark_shows_next_words_and_keeps_the_line(terminal, appliance):
    term = terminal()
    term.mark()
    term.send("system ?")
    term.wait_text("change a setting")
    term.wait_line("EMS $ system ")  # the line is drawn again as it was, without the '?'
    help_lines = term.since_mark()
    assert re.search(r"^\s+get\s+show a setting or the status$", help_lines, re.MULTILINE), help_lines
    assert re.search(r"^\s+set\s+change a setting$", help_lines, re.MULTILINE), help_lines
    assert term.run("get hostname").strip() == "EMS"
    assert audit_lines(appliance) == ["system get hostname"]  # '?' itself ran nothing


def test_question_mark_inside_quotes_is_literal(terminal, appliance):
    term = terminal()
    term.mark()
    term.send("system set hostname 'a?b")
    term.wait_line("EMS $ system set hostname 'a?b")
    term.settle()
    assert "change a setting" not in term.since_mark()  # no help was printed
    shown = term.run("' --yes")
    assert "error: hostname must be" in shown
    assert audit_lines(appliance) == ["system set hostname 'a?b' --yes"]
    assert appliance.stored_hostname() is None


def test_confirmation_answered_no_changes_nothing(terminal, appliance):
    term = terminal()
    term.mark()
    term.send("system set hostname EMS-9\r")
    term.wait_text("Do you want to continue? (y/n)")
    term.send("n\r")
    term.wait_prompt("EMS")
    assert "not confirmed" in term.since_mark()
    assert appliance.stored_hostname() is None
    assert appliance.audit()[-1]["status"] == 3
    assert term.run("system get hostname").strip() == "EMS"


def test_confirmation_answered_yes_changes_hostname_and_prompt(terminal, appliance):
    term = terminal()
    term.mark()
    term.send("system set hostname EMS-9\r")
    term.wait_text("Do you want to continue? (y/n)")
    term.send("y\r")
    term.wait_prompt("EMS-9")  # the very next prompt carries the new name
    assert "Hostname changed from EMS to EMS-9." in term.since_mark()
    assert appliance.stored_hostname() == "EMS-9"
    assert appliance.audit()[-1]["status"] == 0
    assert term.run("system get hostname", hostname="EMS-9").strip() == "EMS-9"


def test_ctrl_c_at_prompt_clears_the_line(terminal, appliance):
    term = terminal()
    term.send("system set hostname EMS-7 --yes")
    term.wait_line("EMS $ system set hostname EMS-7 --yes")
    term.send("\x03")
    term.wait_prompt()
    assert term.run("system get hostname").strip() == "EMS"
    assert appliance.stored_hostname() is None
    assert audit_lines(appliance) == ["system get hostname"]


def test_ctrl_c_stops_a_running_ping_and_keeps_its_summary(terminal, appliance):
    term = terminal()
    term.mark()
    term.send("execute ping 127.0.0.1 --count 50\r")
    term.wait_text("icmp_seq=2 ")
    # Press Ctrl-C between two replies, as a person would (the moment a line is being written is
    # covered by test_process_modes.py::test_interrupt_while_output_is_written_keeps_the_summary).
    time.sleep(0.3)
    pressed = time.monotonic()
    term.send("\x03")
    term.wait_text("packets transmitted", timeout=5)
    stopped_after = time.monotonic() - pressed
    term.wait_prompt()
    summary = re.search(r"(\d+) packets transmitted", term.since_mark())
    assert summary and int(summary.group(1)) < 50, term.since_mark()
    assert stopped_after < 2.5, stopped_after
    assert term.run("system get hostname").strip() == "EMS"  # the shell carries on
    assert audit_lines(appliance) == ["execute ping 127.0.0.1 --count 50", "system get hostname"]


def test_ctrl_d_on_empty_line_exits_0(terminal):
    term = terminal()
    term.send("\x04")
    assert term.wait_exit() == 0


def test_exit_command_exits_0(terminal, appliance):
    term = terminal()
    term.send("exit\r")
    assert term.wait_exit() == 0
    assert audit_lines(appliance) == ["exit"]


def test_history_never_holds_secrets(terminal, appliance):
    term = terminal()
    shown = term.run(f"system set hostname --db_pass {SECRET}")
    assert "error: " in shown and SECRET not in shown
    term.run(f"system set hostname EMS-8 --api-token={SECRET} --yes")

    shown = term.run("history")
    assert "system set hostname --db_pass ********" in shown
    assert "system set hostname EMS-8 --api-token=******** --yes" in shown
    assert SECRET not in shown

    # Up arrow recalls what history holds: the masked line, never the secret.
    term.send("\x1b[A")
    term.wait_line("EMS $ history")
    term.send("\x1b[A")
    term.wait_line("EMS $ system set hostname EMS-8 --api-token=******** --yes")
    term.send("\x1b[A")
    term.wait_line("EMS $ system set hostname --db_pass ********")
    term.send("\x03")
    term.wait_prompt()

    history = appliance.history_path.read_text(encoding="utf-8")
    assert "--db_pass ********" in history
    assert SECRET not in history
    assert SECRET not in appliance.audit_path.read_text(encoding="utf-8")
    assert "system set hostname --db_pass ********" in audit_lines(appliance)
    assert appliance.stored_hostname() is None

    # A new session starts from the masked history file, too.
    term.send("exit\r")
    term.wait_exit()
    again = terminal()
    again.send("\x1b[A\x1b[A")
    again.wait_line("EMS $ history")


def test_idle_session_is_logged_out(terminal, appliance):
    appliance.write_config(shell="idle_timeout_s = 2")
    started = time.monotonic()
    term = terminal()
    term.mark()
    term.wait_text("idle", timeout=10)
    status = term.wait_exit()
    elapsed = time.monotonic() - started
    assert status == 0
    assert 1.5 <= elapsed < 8, elapsed
    assert "logged out" in term.since_mark()


def test_ctrl_z_does_not_suspend(terminal, appliance):
    term = terminal()
    # At the prompt: the key, and the signal itself.
    term.send("\x1a")
    os.kill(term.child.pid, signal.SIGTSTP)
    time.sleep(0.3)
    assert term.state() != "T"
    term.send("\x03")
    term.wait_prompt()
    # While a command runs (the terminal is in cooked mode: Ctrl-Z is SIGTSTP to the foreground group).
    term.mark()
    term.send("execute ping 127.0.0.1 --count 2\r")
    term.wait_text("icmp_seq=1 ")
    term.send("\x1a")
    term.wait_text("2 packets transmitted")
    term.wait_prompt()
    assert term.state() != "T"
    assert term.run("system get hostname").strip() == "EMS"


def test_idle_session_at_confirmation_question_is_logged_out(terminal, appliance):
    appliance.write_config(shell="idle_timeout_s = 1")
    term = terminal()
    term.send("system set hostname EMS-9\r")
    term.wait_text("Do you want to continue? (y/n)")
    try:
        term.wait_exit(timeout=4)  # an idle session must end, whatever it was waiting for
    finally:
        assert appliance.stored_hostname() is None
