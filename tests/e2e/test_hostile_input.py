"""Hostile input to the REAL shell, in ``-c``, batch and interactive modes: refused cleanly, every time.

Cleanly means: no traceback, no fragment of a secret in the audit log or the history, no control
character sent back to the terminal, memory bounded whatever the length of a line, and the shell
alive (interactive) or exiting with the README's status (``-c``, batch).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

SEKRIT = "SEKRIT"
MiB = 1 << 20


def no_trace_of(appliance, *texts: str) -> None:
    """Nothing in what the shell left behind (audit, history) holds any of ``texts`` or a raw control."""
    for path in (appliance.audit_path, appliance.history_path):
        if path.exists():
            stored = path.read_text(encoding="utf-8")
            for text in texts:
                assert text not in stored, (path.name, stored)
            assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]", stored)


def assert_clean(ran, *secrets: str) -> None:
    shown = ran.stdout + ran.stderr
    assert "Traceback" not in shown and "Unhandled exception" not in shown, shown
    assert "\x1b" not in shown and "\x07" not in shown and "\u202e" not in shown, shown
    for secret in secrets:
        assert secret not in shown, shown


# --- -c and batch -----------------------------------------------------------------------------------

HOSTILE_LINES = [
    # a secret typed so that an older masker kept part of it
    ("redirect --db_host h --db_user u --db_pass top\u00a0SEKRIT --is_primary_node --yes", (1,)),
    ("redirect --db_host h --db_user u --db_pass -- SEKRIT --is_primary_node --yes", (2,)),
    ("redirect --db_host h --db_user u --db-pass\\ SEKRIT --is_primary_node --yes", (2,)),
    ("redirect --db_host h --db_user u --db_pass top SEKRIT --is_primary_node --yes", (2,)),
    ("redirect --db_host h --db_user u '--db_pass' SEKRIT --is_primary_node", (2,)),
    # terminal escapes, bidi controls, separators and invalid UTF-8 in values and command words
    ("system set hostname 'EMS\x1b]0;owned\x07' --yes", (2,)),
    ("system set hostname EMS\x1b]52;c;cm0gLXJmIH4=\x07 --yes", (2,)),
    ("system set hostname 'abc\u202etxt' --yes", (2,)),
    ("system get hostname\u2028system set hostname PWNED --yes", (2,)),
    ("system get hostname\udcff\udcfe", (2,)),
    ("execute ping fe80::1%-c --count 1", (2,)),
    ("execute ping 127.0.0.1 --count 500", (2,)),
]


@pytest.mark.parametrize(("line", "statuses"), HOSTILE_LINES)
def test_hostile_lines_are_refused_cleanly_with_c_and_in_a_batch(appliance, line, statuses):
    ran = appliance.c(line)
    assert ran.status in statuses, ran
    assert_clean(ran, SEKRIT)
    ran = appliance.batch(line.encode("utf-8", "surrogateescape") + b"\nsystem get hostname\n")
    assert ran.status in statuses, ran
    assert_clean(ran, SEKRIT)
    assert ran.stderr.startswith("error: line 1: "), ran
    no_trace_of(appliance, SEKRIT)  # escaped, the hostile text itself may stay: audit keeps what was typed
    assert appliance.stored_hostname() is None
    assert [r["status"] for r in appliance.audit()] == [statuses[0]] * 2


def test_errors_name_the_parameter_and_invalid_utf8_by_its_byte(appliance):
    ran = appliance.c("execute ping 127.0.0.1 --count 500")
    assert ran.stderr.splitlines()[0] == "error: --count must be from 1 to 100, got 500"
    ran = appliance.c("system get hostname\udcff")
    assert ran.stderr.splitlines()[0] == "error: invalid UTF-8 (byte 0xFF) at position 20"


def max_rss_kib(argv: list[str], feed, env: dict[str, str], workdir) -> tuple[int, int, str]:
    """Run ``argv`` under a small parent that reports its peak RSS; ``feed(pipe)`` writes its stdin.

    Returns the peak RSS in KiB, the exit status and the standard error.
    """
    probe = ("import resource, subprocess, sys\n"
             "done = subprocess.run(sys.argv[1:])\n"
             "sys.stderr.write('MAXRSS=%d\\n' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
             "sys.exit(done.returncode)\n")
    with open(workdir / "out", "wb") as out, open(workdir / "err", "wb") as err:
        proc = subprocess.Popen([sys.executable, "-c", probe, *argv], stdin=subprocess.PIPE, stdout=out,
                                stderr=err, env=env)
        assert proc.stdin is not None
        try:
            feed(proc.stdin)
        except BrokenPipeError:
            pass
        finally:
            proc.stdin.close()
        status = proc.wait(timeout=120)
    text = (workdir / "err").read_text(errors="replace")
    return int(re.findall(r"MAXRSS=(\d+)", text)[-1]), status, text


def test_a_100_mb_line_in_a_batch_stays_under_100_mb_and_only_its_length_is_audited(appliance):
    size = 100 * MiB

    def feed(pipe):
        pipe.write(b"redirect --db_pass SEKRIT " + b"A" * (MiB - 26))
        for _ in range(99):
            pipe.write(b"A" * MiB)
        pipe.write(b"\nsystem get hostname\n")

    rss, status, stderr = max_rss_kib([str(appliance.exe), "--config", str(appliance.config)], feed,
                                      appliance.env(), appliance.root)
    assert status == 2, stderr
    assert rss < 100 * 1024, f"peak RSS {rss} KiB"
    first = stderr.splitlines()[0]
    assert first == f"error: line 1: the command line is too long ({size} characters, at most 4096); nothing was run"
    [record] = appliance.audit()
    assert record["length"] == size and record["accepted"] is False and len(record["line"]) <= 300
    assert record["line"].startswith("redirect --db_pass ********")
    assert appliance.audit_path.stat().st_size < 2048
    no_trace_of(appliance, SEKRIT)


def test_an_overlong_c_line_is_refused_before_masking(appliance):
    line = "redirect --db_host h --db_pass SEKRIT --db_user " + "u" * 100_000
    ran = appliance.c(line)
    assert ran.status == 2 and "too long (100048 characters, at most 4096)" in ran.stderr
    [record] = appliance.audit()
    assert record["length"] == 100_048 and "********" in record["line"]
    no_trace_of(appliance, SEKRIT)


# --- interactive ------------------------------------------------------------------------------------

PASTE_START, PASTE_END = "\x1b[200~", "\x1b[201~"


def test_a_pasted_escape_sequence_before_question_mark_is_shown_not_obeyed(terminal, appliance):
    term = terminal()
    term.mark()
    term.send(PASTE_START + "system \x1b]2;PWNED\x07" + PASTE_END)
    term.settle()
    term.send("?")
    term.wait_text("? system \\x1b]2;PWNED\\x07")
    raw = "".join(term.raw)
    assert "\x1b]2;PWNED" not in raw  # the title was never set
    term.send("\x03")
    term.wait_prompt()


def test_a_refused_line_with_a_line_separator_stays_one_history_entry(terminal, appliance):
    term = terminal()
    term.run("system get hostname\u2028system set hostname PWNED --yes")
    term.run("system get hostname")
    term.send("exit\r")
    term.wait_exit()
    stored = appliance.history_path.read_text(encoding="utf-8")
    assert stored.split("\n") == ["system get hostname\\u2028system set hostname PWNED --yes",
                                  "system get hostname", "exit", ""]
    again = terminal()
    lines = again.run("history").splitlines()
    assert lines == ["1  system get hostname\\u2028system set hostname PWNED --yes", "2  system get hostname",
                     "3  exit", "4  history"], lines
    assert appliance.stored_hostname() is None


def test_invalid_utf8_typed_at_the_prompt_is_refused_without_a_traceback(terminal, appliance):
    term = terminal()
    term.mark()
    os.write(term.child.child_fd, b"system get hostname\xff\xfe\r")  # bytes a UTF-8 terminal never sends
    term.wait_text("invalid UTF-8")
    term.wait_prompt()
    shown = term.since_mark()
    assert "error: invalid UTF-8 (byte 0xFF) at position 20" in shown, shown
    assert "Traceback" not in "".join(term.raw) and "Unhandled exception" not in "".join(term.raw)
    assert term.run("system get hostname").strip() == "EMS"
    assert "\\udcff\\udcfe" in appliance.history_path.read_text(encoding="utf-8")


def test_a_huge_paste_is_refused_whole_and_the_shell_goes_on(terminal, appliance):
    term = terminal()
    term.mark()
    term.send(PASTE_START + "redirect --db_pass SEKRIT " + "A" * 300_000 + PASTE_END)
    term.wait_text("the command line is too long (300026 characters, at most 4096)", timeout=30)
    term.wait_prompt(timeout=30)
    assert term.run("system get hostname").strip() == "EMS"
    record = appliance.audit()[0]
    assert record["length"] == 300_026 and record["accepted"] is False
    no_trace_of(appliance, SEKRIT)


def test_keys_typed_past_the_longest_line_make_it_refused_at_enter(terminal, appliance):
    term = terminal()
    term.mark()
    term.send("x" * 5000 + "\r")
    term.wait_text("the command line is too long (5000 characters, at most 4096)", timeout=30)
    term.wait_prompt(timeout=30)
    assert appliance.audit()[0]["length"] == 5000


def test_a_recalled_line_whose_secret_was_masked_asks_for_the_secret_again(terminal, appliance):
    term = terminal()
    shown = term.run(f"redirect --db_host h --db_user u --db_pass {SEKRIT} --is_primary_node --yes")
    assert "error:" in shown
    term.mark()
    term.send("\x1b[A")
    term.wait_line("EMS $ redirect --db_host h --db_user u --db_pass ******** --is_primary_node --yes")
    term.send("\r")
    term.wait_prompt()
    shown = term.since_mark()
    assert "the value of --db_pass was masked (********) when this line was stored" in shown, shown
    assert "not allowed outside quotes" not in shown
    no_trace_of(appliance, SEKRIT)


def test_the_password_question_has_the_prompts_idle_timeout(terminal, appliance):
    appliance.write_config(shell="idle_timeout_s = 2")
    term = terminal()
    term.mark()
    term.send("redirect --db_host h --db_user u --is_primary_node\r")
    term.wait_text("db_pass (not shown):")
    started = time.monotonic()
    term.wait_text("no answer within 2 s: nothing was changed", timeout=10)
    assert term.wait_exit(timeout=10) == 0
    assert time.monotonic() - started < 8
    assert appliance.audit()[-1]["outcome"] == "refused"


def test_tab_offers_the_node_names_the_agent_last_saw_after_switchover_to(terminal, appliance):
    appliance.state_dir.mkdir(parents=True, exist_ok=True)
    (appliance.state_dir / "agent-status.json").write_text(json.dumps({"nodes": ["EMS", "node2"]}))
    term = terminal()
    term.send("ha switchover --to n\t")
    term.wait_line("EMS $ ha switchover --to node2 ")
    term.send("\x03")
    term.wait_prompt()


# --- interruptions --------------------------------------------------------------------------------


def test_ctrl_c_stops_a_ping_with_status_130(terminal, appliance):
    term = terminal()
    term.mark()
    term.send("execute ping 127.0.0.1 --count 30\r")
    term.wait_text("bytes from 127.0.0.1")
    term.send("\x03")
    term.wait_prompt()
    assert "packets transmitted" in term.since_mark()
    record = appliance.audit()[-1]
    assert (record["status"], record["outcome"]) == (130, "interrupted")


def test_ctrl_c_with_c_on_a_terminal_exits_130(terminal, appliance):
    import pexpect

    child = pexpect.spawn(str(appliance.exe), ["--config", str(appliance.config), "-c",
                                               "execute ping 127.0.0.1 --count 30"],
                          env=appliance.env(), encoding="utf-8", timeout=15)
    child.expect("bytes from")
    child.sendcontrol("c")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130
    assert appliance.audit()[-1]["status"] == 130


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGHUP, 129), (signal.SIGTERM, 143)])
def test_a_hang_up_or_sigterm_during_a_command_is_audited_and_leaves_no_child(terminal, appliance, sig, status):
    term = terminal()
    term.send("execute ping 127.0.0.1 --count 30\r")
    term.wait_text("bytes from 127.0.0.1")
    children = [int(p) for p in open(f"/proc/{term.child.pid}/task/{term.child.pid}/children").read().split()]
    assert children
    os.kill(term.child.pid, sig)
    assert term.wait_exit() == status
    record = appliance.audit()[-1]
    assert (record["line"], record["status"], record["outcome"]) == (
        "execute ping 127.0.0.1 --count 30", status, "interrupted")
    deadline = time.monotonic() + 5
    while any(os.path.exists(f"/proc/{pid}") for pid in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(os.path.exists(f"/proc/{pid}") for pid in children)  # ping was stopped too


def test_sigterm_at_the_prompt_ends_the_session_quietly(terminal, appliance):
    term = terminal()
    os.kill(term.child.pid, signal.SIGTERM)
    assert term.wait_exit() == 143
    raw = "".join(term.raw)
    assert "Traceback" not in raw and "Unhandled exception" not in raw, raw


def test_the_line_being_typed_shows_pasted_controls_as_escapes(terminal, appliance):
    """prompt_toolkit draws the input line itself; a pasted bidi override or C1 control must not reach
    the terminal through that drawing either, and the cursor stays where the characters are."""
    term = terminal()
    term.send(PASTE_START + "system set hostname a\u202eb\x9b31mc" + PASTE_END)
    term.wait_line("EMS $ system set hostname a\\u202eb\\x9b31mc")
    raw = "".join(term.raw)
    assert "\u202e" not in raw and "\x9b" not in raw
    term.send("\x1b[D\x1b[D\x1b[DX")  # three characters left of the end: before the "1"
    term.wait_line("EMS $ system set hostname a\\u202eb\\x9b3X1mc")
    term.send("\r")
    term.wait_text("control character U+202E at position 22 is not allowed")
    term.wait_prompt()
