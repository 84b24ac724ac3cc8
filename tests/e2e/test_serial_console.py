"""The serial-console path: ``login`` on a terminal, then the REAL appliance shell.

On the appliance, systemd's serial-getty@ttyS0 runs ``agetty``, which runs ``/bin/login -p``; login
asks for the name and the password (PAM: /etc/pam.d/login), then starts the account's login shell.
Here ``/bin/login -p`` runs as root in a pseudo-terminal (pexpect) -- everything after agetty is
the real thing -- for a throw-away account whose shell is ``appliance-shell`` (``tests/sshd.py``).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pexpect
import pytest

from tests.sshd import (
    COLS,
    LOGIN,
    ROWS,
    TIMEOUT_S,
    TerminalSession,
    new_password,
    sshd_unavailable_reason,
)

_UNAVAILABLE = sshd_unavailable_reason()
pytestmark = pytest.mark.skipif(_UNAVAILABLE is not None, reason=_UNAVAILABLE or "")


class Console:
    """``/bin/login -p`` on a pseudo-terminal, seen through the terminal emulator."""

    def __init__(self) -> None:
        # What agetty hands to login: a terminal type, nothing else of ours.
        env = {"TERM": "xterm", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
        self.child = pexpect.spawn(str(LOGIN), ["-p"], env=env, cwd="/", dimensions=(ROWS, COLS),
                                   encoding="utf-8", codec_errors="replace", timeout=TIMEOUT_S)
        self.child.delaybeforesend = None
        self.term = TerminalSession(self._read, self.child.send)

    def _read(self, timeout: float) -> str | None:
        try:
            return self.child.read_nonblocking(65536, timeout=timeout)
        except pexpect.TIMEOUT:
            return ""
        except pexpect.EOF:
            return None

    def wait_cursor_line_ends(self, text: str, timeout: float = TIMEOUT_S) -> None:
        self.term.wait(lambda: self.term.screen.cursor_line().endswith(text), f"a line ending {text!r}", timeout)

    def login(self, name: str, password: str) -> None:
        self.wait_cursor_line_ends("login: ")
        self.term.mark()
        self.term.send(name + "\r")
        self.wait_cursor_line_ends("Password: ")
        self.term.send(password + "\r")

    def exit_status(self) -> int | None:
        self.term.wait_closed()
        self.child.close()
        return self.child.exitstatus

    def close(self) -> None:
        if self.child.isalive():
            self.child.kill(signal.SIGKILL)
        self.child.close(force=True)


@pytest.fixture
def console() -> Iterator[Console]:
    con = Console()
    yield con
    con.close()


def test_login_on_the_console_reaches_the_shell_and_ctrl_d_logs_out(console, user):
    console.login(user.name, user.password)
    console.term.wait_prompt()
    assert user.password not in console.term.text()  # not echoed
    assert console.term.run("system get hostname").strip() == "EMS", console.term.debug()
    assert console.term.run("execute ping 127.0.0.1 --count 1").count("1 received") == 1
    [pid] = user.shell_processes()
    console.term.send("\x04")  # Ctrl-D on an empty line: log out
    assert console.exit_status() == 0  # login ends with the shell
    user.wait_no_shell()
    records = user.audit()
    assert [(r["line"], r["mode"], r["status"]) for r in records] == [
        ("system get hostname", "interactive", 0), ("execute ping 127.0.0.1 --count 1", "interactive", 0)]
    assert {r["user"] for r in records} == {user.name}
    assert all(str(r["origin"]).startswith("tty:/dev/pts/") for r in records), records
    assert pid not in user.processes()


def test_a_wrong_password_is_refused_and_login_asks_again(console, user):
    console.login(user.name, user.password + "x")
    console.term.wait_text("Login incorrect")
    assert not user.shell_processes() and user.audit() == []
    console.login(user.name, user.password)  # the same login asks again; the right one works
    console.term.wait_prompt()
    assert console.term.run("system get hostname").strip() == "EMS", console.term.debug()
    console.term.send("exit\r")
    assert console.exit_status() == 0


def test_an_expired_password_is_changed_on_the_console_before_the_shell(console, user):
    user.expire_password()
    new = new_password()
    console.login(user.name, user.password)
    console.term.wait_text("You are required to change your password immediately")
    for prompt, answer in (("Current password: ", user.password), ("New password: ", new),
                           ("Retype new password: ", new)):
        console.wait_cursor_line_ends(prompt)
        assert not user.shell_processes()  # no shell before the change is done
        console.term.send(answer + "\r")
    console.term.wait_prompt()
    assert user.last_change_day() > 0
    assert new not in console.term.text() and user.password not in console.term.text()
    assert console.term.run("system get hostname").strip() == "EMS", console.term.debug()
    console.term.send("\x04")
    assert console.exit_status() == 0
