"""The real ``appliance-shell`` process in its non-interactive modes, as sshd or a script runs it.

``-c``, ``$SSH_ORIGINAL_COMMAND``, batch on standard input, file-transfer refusal, hostile input,
the audit log and configuration errors. Every call has a timeout and standard input that is never a
terminal.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

CANARY = "CANARY"


def assert_refused(appliance, ran, *, message: str | None = None) -> None:
    """Status 2, an ``error:`` line on stderr, nothing on stdout, one refused audit record."""
    assert ran.status == 2, ran
    assert ran.stdout == "", ran
    assert ran.stderr.startswith("error: "), ran
    if message is not None:
        assert message in ran.stderr.splitlines()[0], ran
    assert "Traceback" not in ran.stderr
    records = appliance.audit()
    assert len(records) == 1, records
    assert records[0]["accepted"] is False
    assert records[0]["status"] == 2


def assert_nothing_executed(appliance) -> None:
    assert not (appliance.root / CANARY).exists(), "a shell ran the injected command"
    assert not (appliance.home / CANARY).exists(), "a shell ran the injected command"
    assert appliance.stored_hostname() is None, "the hostname was changed"


# --- -c: one command, its exit status -------------------------------------------------------------


def test_get_then_set_hostname(appliance):
    ran = appliance.c("system get hostname")
    assert (ran.status, ran.stdout, ran.stderr) == (0, "EMS\n", "")

    ran = appliance.c("system set hostname EMS-1 --yes")
    assert ran.status == 0, ran
    assert "EMS-1" in ran.stdout
    assert appliance.stored_hostname() == "EMS-1"

    ran = appliance.c("system get hostname")
    assert (ran.status, ran.stdout) == (0, "EMS-1\n")


def test_config_from_environment_variable(appliance):
    ran = appliance.run(["-c", "system get hostname"], config=False,
                        env={"APPLIANCE_CONFIG": str(appliance.config)})
    assert (ran.status, ran.stdout) == (0, "EMS\n"), ran
    assert len(appliance.audit()) == 1  # the state dir of that config was used


def test_unknown_command_is_usage_error_with_hint(appliance):
    ran = appliance.c("sytem get hostname")
    assert ran.status == 2
    assert ran.stdout == ""
    lines = ran.stderr.splitlines()
    assert lines[0].startswith("error: ")
    assert "sytem" in lines[0]
    assert any(line.startswith("hint: did you mean") and "system" in line for line in lines[1:]), lines


def test_confirmation_without_terminal_refuses_at_once(appliance):
    started = time.monotonic()
    ran = appliance.c("system set hostname X1", timeout=10)
    assert time.monotonic() - started < 5
    assert ran.status == 3, ran
    assert ran.stderr.startswith("error: ")
    assert "--yes" in ran.stderr
    assert appliance.stored_hostname() is None


def test_confirmation_is_never_read_from_a_pipe(appliance):
    # A 'y' on a pipe is not an answer: only a terminal can confirm.
    ran = appliance.run(["-c", "system set hostname X1"], stdin=b"y\n", timeout=10)
    assert ran.status == 3, ran
    assert appliance.stored_hostname() is None


def test_ping_loopback_succeeds(appliance):
    ran = appliance.c("execute ping 127.0.0.1 --count 1")
    assert ran.status == 0, ran
    assert "bytes from 127.0.0.1" in ran.stdout
    assert "1 packets transmitted, 1 received" in ran.stdout


@pytest.fixture(scope="module")
def netns_wrapper():
    """``unshare --net``: a fresh network namespace whose loopback interface is down."""
    try:
        probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, timeout=10, check=False)
    except FileNotFoundError:
        pytest.skip("unshare is not installed")
    if probe.returncode != 0:
        pytest.skip(f"unshare --net is not permitted here: {probe.stderr.decode().strip()}")
    return ["unshare", "--net"]


def test_ping_without_reply_fails_with_status_1(appliance, netns_wrapper):
    ran = appliance.c("execute ping 127.0.0.1 --count 1 --timeout 1", wrapper=netns_wrapper)
    assert ran.status == 1, ran
    assert "bytes from" not in ran.stdout
    # ping's own complaint is the shell's one error line, without ping's program path.
    assert ran.stderr == "error: ping failed: connect: Network is unreachable\n", ran
    assert appliance.audit()[-1]["status"] == 1
    assert appliance.audit()[-1]["accepted"] is True


def test_json_status_is_one_document(appliance):
    ran = appliance.c("system get status --json")
    assert ran.status == 0, ran
    doc = json.loads(ran.stdout)  # the whole of stdout is one JSON document
    assert {"version", "hostname", "hardware_id", "uptime_s"} <= set(doc)
    assert doc["hostname"] == "EMS"
    assert isinstance(doc["uptime_s"], int)
    assert doc["version"]
    assert doc["hardware_id"]


# --- sshd: SSH_ORIGINAL_COMMAND and file transfers ------------------------------------------------


def test_ssh_original_command_runs_without_c(appliance):
    ran = appliance.run([], env={"SSH_ORIGINAL_COMMAND": "system get hostname"})
    assert (ran.status, ran.stdout, ran.stderr) == (0, "EMS\n", "")
    [record] = appliance.audit()
    assert record["mode"] == "command"
    assert record["line"] == "system get hostname"


@pytest.mark.parametrize(
    "request_line",
    ["/usr/lib/openssh/sftp-server", "scp -t /tmp", "internal-sftp", "rsync --server -e.Lsfx . /tmp"],
)
def test_file_transfer_refused_silently(appliance, request_line):
    for ran in (
        appliance.c(request_line),
        appliance.run([], env={"SSH_ORIGINAL_COMMAND": request_line}),
    ):
        assert ran.status != 0
        assert ran.stdout == ""
        assert ran.stderr == ""
    assert not (appliance.root / "tmp").exists()


# --- batch: commands on standard input ------------------------------------------------------------


def test_batch_runs_each_line_without_prompt(appliance):
    script = (
        "# set the name, then read it back\n"
        "\n"
        "system get hostname\n"
        "   \n"
        "   # an indented comment\n"
        "system set hostname EMS-2 --yes\n"
        "system get hostname\n"
    )
    ran = appliance.batch(script)
    assert ran.status == 0, ran
    assert ran.stdout.splitlines() == ["EMS", "Hostname changed from EMS to EMS-2.", "EMS-2"]
    assert "$ " not in ran.stdout and "$ " not in ran.stderr
    assert ran.stderr == ""
    records = appliance.audit()
    assert [(r["event"], r["line"]) for r in records] == [
        ("end", "system get hostname"), ("start", "system set hostname EMS-2 --yes"),
        ("end", "system set hostname EMS-2 --yes"), ("end", "system get hostname")]
    assert {r["mode"] for r in records} == {"batch"}


@pytest.mark.parametrize(
    ("failing", "status"),
    [
        ("execute ping 127.0.0.1 --count 0", 2),  # usage error
        ("system set hostname EMS-3", 3),  # needs confirmation, no terminal
    ],
)
def test_batch_stops_at_first_failure(appliance, failing, status):
    ran = appliance.batch(f"system get hostname\n{failing}\nsystem set hostname ZZZ --yes\n")
    assert ran.status == status, ran
    assert ran.stdout == "EMS\n"
    assert appliance.stored_hostname() is None  # the line after the failure never ran
    assert [r["line"] for r in appliance.audit()] == ["system get hostname", failing]
    assert ran.stderr.startswith("error: line 2: ")  # the failing line is named


def test_batch_crlf_line_endings_accepted(appliance):
    ran = appliance.batch(b"system set hostname EMS-4 --yes\r\nsystem get hostname\r\n")
    assert ran.status == 0, ran
    assert ran.stdout.splitlines()[-1] == "EMS-4"


@pytest.mark.parametrize(
    "line",
    [b"system get hostname\x00", b"system get hostname\rsystem set hostname PWNED --yes", b"\x1b[2J"],
    ids=["nul", "bare-cr", "escape"],
)
def test_batch_control_characters_refused(appliance, line):
    ran = appliance.batch(line + b"\nsystem set hostname ZZZ --yes\n")
    assert_refused(appliance, ran, message="control character")
    assert_nothing_executed(appliance)


# --- hostile input --------------------------------------------------------------------------------

HOSTILE = [
    ("execute ping 127.0.0.1; touch CANARY", "';' is not allowed"),
    ("system get hostname;system set hostname PWNED --yes", "';' is not allowed"),
    ("execute ping 127.0.0.1 && touch CANARY", "'&' is not allowed"),
    ("execute ping 127.0.0.1 & touch CANARY", "'&' is not allowed"),
    ("execute ping 127.0.0.1 || touch CANARY", "'|' is not allowed"),
    ("execute ping $(touch CANARY)", "'$' is not allowed"),
    ("execute ping `touch CANARY`", "'`' is not allowed"),
    ("execute ping 127.0.0.1 | cat", "'|' is not allowed"),
    ("execute ping 127.0.0.1 > CANARY", "'>' is not allowed"),
    ("execute ping 127.0.0.1 >> CANARY", "'>' is not allowed"),
    ("execute ping 127.0.0.1 < /etc/passwd", "'<' is not allowed"),
    ("execute ping *", "'*' is not allowed"),
    ("execute ping 127.0.0.?", "'?' is not allowed"),
    ("execute ping 127.0.0.[1]", "'[' is not allowed"),
    ("execute ping ~", "'~' is not allowed"),
    ("execute ping ~root", "'~' is not allowed"),
    ("execute ping ${HOME}", "'$' is not allowed"),
    ("execute ping $HOME", "'$' is not allowed"),
    ("execute ping {a,b}", "'{' is not allowed"),
    ("(touch CANARY)", "'(' is not allowed"),
    ("execute ping 127.0.0.1\ntouch CANARY", "control character U+000A"),
    ("system get hostname\nsystem set hostname PWNED --yes", "control character U+000A"),
    ("execute ping 127.0.0.1\rtouch CANARY", "control character U+000D"),
    ("system\tget hostname", "control character U+0009"),
    ("\x1b[31m", "control character U+001B"),
    ("system get hostname\x7f", "control character U+007F"),
    ("system get hostname\x9b31m", "control character U+009B"),  # C1 CSI
    ("execute ping -f 127.0.0.1", "unknown option '-f'"),
    ("execute ping '-f'", "host must be"),
    ("execute ping -- -f", "unknown option '--'"),
    ("execute ping '127.0.0.1 -f'", "host must be"),
    ("execute ping 127.0.0.1 --count -1", "--count"),
    ("execute ping 127.0.0.1 --count 0", "--count"),
    ("execute ping 127.0.0.1 --count 101", "--count"),
    ("execute ping 127.0.0.1 --count 1e9", "--count"),
    ("execute ping 127.0.0.1 --count ' 1'", "--count"),
    ("execute ping 127.0.0.1 --timeout 31", "--timeout"),
    ("execute ping 127.0.0.1 --cou 1", "unknown option '--cou'"),
    ("execute ping 127.0.0.1 --count 1 --count 2", "given twice"),
    ("systеm get hostname", "non-ASCII"),  # Cyrillic е (U+0435)
    ("system gеt hostname", "non-ASCII"),
    ("sys get hostname", "unknown command 'sys'"),  # command words are never abbreviated
    ("execute ping " + "a" * 4987, "too long"),
    ("execute ping '127.0.0.1", "unterminated single quote"),
    ('execute ping "127.0.0.1', "unterminated double quote"),
    ("execute ping 127.0.0.1 \\", "ends with a backslash"),
    ("system set hostname 'a;b' --yes", "hostname must be 1-63 letters"),
    ("system set hostname 'x$(touch CANARY)' --yes", "hostname must be 1-63 letters"),
    ("execute ping '127.0.0.1; touch CANARY'", "host must be"),
    ("system set hostname PWNED --yes extra", "unexpected word 'extra'"),
]


@pytest.mark.parametrize(("line", "message"), HOSTILE, ids=[repr(line)[:40] for line, _ in HOSTILE])
def test_hostile_input_refused_and_nothing_runs(appliance, line, message):
    ran = appliance.c(line)
    assert_refused(appliance, ran, message=message)
    assert_nothing_executed(appliance)
    # The error never echoes a control character, and the audit record holds it escaped.
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", ran.stderr)
    assert not re.search(r"[\x00-\x1f\x7f-\x9f]", appliance.audit_path.read_text(encoding="utf-8").rstrip("\n"))


def test_quoted_metacharacters_are_plain_text_for_the_validator(appliance):
    ran = appliance.c("system set hostname 'a;b' --yes")
    assert ran.status == 2
    first = ran.stderr.splitlines()[0]
    assert "not allowed outside quotes" not in first  # not the tokenizer...
    assert first.startswith("error: hostname must be 1-63 letters")  # ...the hostname validator
    assert "usage: <HOSTNAME>" in ran.stderr
    assert appliance.stored_hostname() is None


def test_flag_forms_accepted(appliance):
    ran = appliance.c("execute ping 127.0.0.1 --count=2 --timeout=1")
    assert ran.status == 0, ran
    assert "2 packets transmitted" in ran.stdout

    ran = appliance.c("execute ping 127.0.0.1 --count 1 --timeout 1")
    assert ran.status == 0, ran
    assert "1 packets transmitted" in ran.stdout

    # flags may come before the positional, and a quoted value is a value
    ran = appliance.c("execute ping --count '1' --timeout 1 127.0.0.1")
    assert ran.status == 0, ran
    assert [r["accepted"] for r in appliance.audit()] == [True, True, True]


def test_flag_with_quoted_inline_value_is_a_flag(appliance):
    ran = appliance.c("execute ping 127.0.0.1 --count='1' --timeout=\"1\"")
    assert ran.status == 0, ran
    assert "1 packets transmitted" in ran.stdout


def test_error_never_echoes_a_quoted_secret_value(appliance):
    ran = appliance.c("system set hostname EMS-1 --db_pass='s3cr;t'")
    assert ran.status == 2
    assert "s3cr;t" not in ran.stderr, ran.stderr
    assert "s3cr" not in appliance.audit_path.read_text(encoding="utf-8")


def test_quoted_value_with_escapes_is_one_word(appliance):
    ran = appliance.c("system set hostname 'EMS-'\"5\" --yes")
    assert ran.status == 0, ran
    assert appliance.stored_hostname() == "EMS-5"


# --- audit ----------------------------------------------------------------------------------------


def test_audit_records_every_line(appliance):
    appliance.c("system get hostname")
    appliance.c("sytem get hostname")
    appliance.batch("system get hostname\nexecute ping 127.0.0.1 --count 1\n")
    appliance.c("system get hostname", env={"SSH_CLIENT": "10.1.2.3 5555 22"})
    records = appliance.audit()
    assert [(r["line"], r["mode"], r["status"], r["accepted"]) for r in records] == [
        ("system get hostname", "command", 0, True),
        ("sytem get hostname", "command", 2, False),
        ("system get hostname", "batch", 0, True),
        ("execute ping 127.0.0.1 --count 1", "batch", 0, True),
        ("system get hostname", "command", 0, True),
    ]
    for record in records:
        assert record["user"] == "admin"
        assert isinstance(record["duration_ms"], int) and record["duration_ms"] >= 0
        assert record["time"]
    assert [r["origin"] for r in records] == ["local"] * 4 + ["ssh:10.1.2.3"]
    assert stat.S_IMODE(appliance.audit_path.stat().st_mode) == 0o600


# --- configuration errors -------------------------------------------------------------------------


def assert_config_error(ran, *names: str) -> None:
    assert ran.status != 0
    assert ran.stdout == ""
    lines = ran.stderr.splitlines()
    assert lines and lines[0].startswith("error: "), ran
    assert len([line for line in lines if line.startswith("error: ")]) == 1
    assert all(line.startswith(("error: ", "hint: ")) for line in lines), ran  # no traceback
    for name in names:
        assert name in lines[0], (name, lines[0])


def test_missing_config_file(appliance):
    missing = appliance.root / "nowhere" / "appliance.toml"
    assert_config_error(appliance.run(["--config", str(missing), "-c", "system get hostname"],
                                      config=False), str(missing))
    assert_config_error(appliance.run(["-c", "system get hostname"], config=False,
                                      env={"APPLIANCE_CONFIG": str(missing)}), str(missing))


@pytest.mark.parametrize(
    ("extra", "names"),
    [
        ("[shell]\nidle_timeout = 5\n", ("shell.idle_timeout",)),
        ('[shell]\nidle_timeout_s = "soon"\n', ("shell.idle_timeout_s",)),
        ("[shell]\nidle_timeout_s = -1\n", ("shell.idle_timeout_s",)),
        ('[hostname]\nbackend = "bash"\n', ("hostname.backend",)),
        ('[tools]\nping = "ping"\n', ("tools.ping",)),
        ("[nosuch]\nx = 1\n", ("[nosuch]",)),
        ("[shell\n", ("not valid TOML",)),
    ],
)
def test_invalid_config_names_file_and_key(appliance, extra, names):
    config = appliance.root / "bad.toml"
    config.write_text(f'[paths]\nstate_dir = "{appliance.state_dir}"\n{extra}', encoding="utf-8")
    ran = appliance.run(["--config", str(config), "-c", "system get hostname"], config=False)
    assert_config_error(ran, str(config), *names)
    assert not appliance.audit_path.exists()


def _blocked_writing_stdout(pid: int) -> bool:
    try:
        wchan = Path(f"/proc/{pid}/wchan").read_text()
        syscall = Path(f"/proc/{pid}/syscall").read_text().split()
    except OSError:
        return False
    # The main thread sleeps in write(2) on a pipe; on x86-64 the syscall file also says write(1, ...).
    return "pipe_write" in wchan or (syscall[:2] == ["1", "0x1"] and os.uname().machine == "x86_64")


def test_interrupt_while_output_is_written_keeps_the_summary(appliance):
    """Ctrl-C (SIGINT) must stop ping and keep its statistics, wherever the shell happens to be.

    To hit "writing output" reliably, stdout is a pipe that is already full: the shell's
    first write blocks, SIGINT arrives during that write, then the pipe is drained.
    """
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    os.set_blocking(write_end, False)
    filler = 0
    with contextlib.suppress(BlockingIOError):
        while True:
            filler += os.write(write_end, b"#" * 256)
    os.set_blocking(write_end, True)
    proc = subprocess.Popen(
        [str(appliance.exe), "--config", str(appliance.config), "-c", "execute ping 127.0.0.1 --count 5"],
        stdin=subprocess.DEVNULL, stdout=write_end, stderr=subprocess.PIPE, env=appliance.env(),
        cwd=appliance.root,
    )
    os.close(write_end)
    try:
        # Wait until the shell is blocked writing ping's first line to the full pipe (ping is running).
        deadline = time.monotonic() + 10
        while not _blocked_writing_stdout(proc.pid):
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.skip("could not see the shell blocked on its stdout (/proc/PID/wchan)")
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        chunks = []
        while chunk := os.read(read_end, 65536):
            chunks.append(chunk)
        proc.wait(timeout=15)
    finally:
        os.close(read_end)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()
    out = b"".join(chunks)[filler:].decode()
    assert "packets transmitted" in out, (proc.returncode, out)
