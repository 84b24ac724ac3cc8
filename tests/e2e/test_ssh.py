"""SSH into the REAL appliance shell, through a REAL OpenSSH sshd configured with the image's drop-in.

Each test gets a throw-away OS account whose login shell is ``appliance-shell`` and its own sshd
(Debian's stock main config + ``image/sshd/50-appliance.conf``, see ``tests/sshd.py``). The client is
paramiko, used as an admin (pty, prompt) or a script (``exec_command``, exit status) would; the
host key is pinned (``RejectPolicy`` + a known_hosts written by the fixture).

What is checked is what the client gets (output, exit status, refusals), what sshd logs, and what
the account's processes and the appliance state show afterwards (audit log, hostname file, the
environment of the running shell, canary files).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from tests.sshd import (
    TIMEOUT_S,
    ApplianceUser,
    SshServer,
    TerminalSession,
    appliance_user,
    cmdline,
    drain,
    environ_of,
    exec_command,
    new_password,
    running_sshd,
    sshd_unavailable_reason,
)

_UNAVAILABLE = sshd_unavailable_reason()
pytestmark = pytest.mark.skipif(_UNAVAILABLE is not None, reason=_UNAVAILABLE or "")


@pytest.fixture
def sshd(user: ApplianceUser, tmp_path: Path) -> Iterator[SshServer]:
    with running_sshd(tmp_path / "sshd", user.name) as server:
        yield server


@pytest.fixture
def clients() -> Iterator[list[paramiko.SSHClient | paramiko.Transport]]:
    """Every client a test opens is closed at the end, whatever happened."""
    opened: list[paramiko.SSHClient | paramiko.Transport] = []
    yield opened
    for client in opened:
        client.close()


@pytest.fixture
def ssh(sshd: SshServer, user: ApplianceUser, clients: list) -> paramiko.SSHClient:
    """A logged-in client (password authentication), as a script would open it."""
    client = sshd.connect(user.name, user.password)
    clients.append(client)
    return client


def open_terminal(transport: paramiko.Transport) -> tuple[paramiko.Channel, TerminalSession]:
    chan = transport.open_session(timeout=TIMEOUT_S)
    chan.get_pty(term="xterm", width=120, height=40)
    chan.invoke_shell()
    return chan, TerminalSession.over_channel(chan)


def audit_lines(user: ApplianceUser) -> list[tuple[object, ...]]:
    return [(r["line"], r["status"], r["accepted"]) for r in user.audit()]


# --- the configuration as sshd reads it -------------------------------------------------------------


def test_drop_in_is_valid_and_wins_over_the_stock_main_config(user, tmp_path):
    """`sshd -t` accepts the drop-in after Debian's stock main file, and `sshd -T` shows every setting
    in force for the appliance account AND for any other account (the restrictions are global)."""
    server = SshServer.for_user(tmp_path / "sshd", user.name)
    server.check_config()
    expected = {
        "permitrootlogin": "no", "usepam": "yes", "kbdinteractiveauthentication": "yes",
        "passwordauthentication": "yes", "permitemptypasswords": "no", "maxauthtries": "3",
        "logingracetime": "30", "disableforwarding": "yes", "allowtcpforwarding": "no",
        "allowstreamlocalforwarding": "no", "allowagentforwarding": "no",
        "x11forwarding": "no",  # the stock main file says yes: the drop-in must win
        "permittunnel": "no", "gatewayports": "no", "permituserenvironment": "no", "permituserrc": "no",
        "printmotd": "no", "printlastlog": "no", "clientaliveinterval": "60", "clientalivecountmax": "3",
        "permittty": "yes", "loglevel": "VERBOSE",
    }
    for account in (user.name, "someoneelse"):
        effective = server.effective(account)
        got = {key: effective.get(key, ["<absent>"])[0] for key in expected}
        assert got == expected, account
        assert effective["allowusers"] == [user.name]
        # sftp must go through the login shell: an external server, never sshd's in-process one.
        assert effective["subsystem"] == ["sftp /usr/lib/openssh/sftp-server"]
        assert "forcecommand" not in effective or effective["forcecommand"] == ["none"]
        assert effective["acceptenv"] == ["LANG", "LC_*"]


# --- an admin at a terminal -----------------------------------------------------------------------


def test_interactive_login_reaches_the_prompt_runs_a_command_and_exit_ends_it(sshd, user, ssh):
    chan, term = open_terminal(ssh.get_transport())
    term.wait_prompt()
    assert "Last login" not in term.text()  # PrintLastLog no
    assert term.run("system get hostname").strip() == "EMS", term.debug()
    term.send("exit\r")
    term.wait_closed()
    assert chan.status_event.wait(TIMEOUT_S) and chan.exit_status == 0
    user.wait_no_shell()
    records = user.audit()
    assert [(r["line"], r["mode"], r["status"]) for r in records] == [
        ("system get hostname", "interactive", 0), ("exit", "interactive", 0)]
    assert {(r["user"], r["origin"]) for r in records} == {(user.name, "ssh:127.0.0.1")}
    log = sshd.log()
    assert f"Accepted password for {user.name}" in log
    assert "Starting session: shell on pts/" in log


def test_a_dropped_connection_ends_the_shell(sshd, user, ssh):
    """No orphaned shells: closing the TCP connection under an idle prompt ends the shell (SIGHUP)."""
    _chan, term = open_terminal(ssh.get_transport())
    term.wait_prompt()
    assert user.shell_processes()
    ssh.get_transport().sock.close()  # vanish without a goodbye
    ssh.close()
    user.wait_no_shell()


# --- a script: one command per connection or session ----------------------------------------------


def test_commands_exit_with_the_commands_status(sshd, user, ssh):
    ran = exec_command(ssh, "system get hostname")
    assert (ran.status, ran.stdout, ran.stderr) == (0, "EMS\n", "")

    ran = exec_command(ssh, "no such command")
    assert ran.status == 2 and ran.stdout == ""
    assert ran.stderr.startswith("error: ")

    started = time.monotonic()
    ran = exec_command(ssh, "system set hostname X", timeout=TIMEOUT_S)  # no terminal to ask on
    assert time.monotonic() - started < TIMEOUT_S
    assert (ran.status, ran.stdout) == (3, "")
    assert "--yes" in ran.stderr
    assert user.stored_hostname() is None

    ran = exec_command(ssh, "execute ping 127.0.0.1 --count 1")
    assert ran.status == 0, ran
    assert "1 packets transmitted, 1 received" in ran.stdout

    ran = exec_command(ssh, "system set hostname EMS-2 --yes")
    assert ran.status == 0, ran
    assert exec_command(ssh, "system get hostname").stdout == "EMS-2\n"
    assert user.stored_hostname() == "EMS-2"
    assert [(r["line"], r["status"], r["origin"], r["user"]) for r in user.audit() if r["event"] == "end"] == [
        (line, status, "ssh:127.0.0.1", user.name) for line, status in (
            ("system get hostname", 0), ("no such command", 2), ("system set hostname X", 3),
            ("execute ping 127.0.0.1 --count 1", 0), ("system set hostname EMS-2 --yes", 0),
            ("system get hostname", 0))]


def test_a_command_with_a_terminal_asks_before_changing(sshd, user, ssh):
    """`ssh -t ems@vm 'system set hostname EMS-7'`: a terminal is there, so the shell asks."""
    chan = ssh.get_transport().open_session(timeout=TIMEOUT_S)
    chan.get_pty(term="xterm", width=120, height=40)
    chan.exec_command("system set hostname EMS-7")
    term = TerminalSession.over_channel(chan)
    term.wait_text("Do you want to continue? (y/n)")
    assert user.stored_hostname() is None  # nothing changed before the answer
    term.send("y\r")
    term.wait_closed()
    assert chan.status_event.wait(TIMEOUT_S) and chan.exit_status == 0
    assert user.stored_hostname() == "EMS-7"


def test_commands_on_stdin_without_a_terminal_run_as_a_batch(sshd, user, ssh):
    """`printf '...' | ssh ems@vm` (no command, no terminal): one command per line, stop at the first
    failure with its status."""
    chan = ssh.get_transport().open_session(timeout=TIMEOUT_S)
    chan.invoke_shell()
    chan.sendall(b"system get hostname\n# a comment\n\nsystem set hostname EMS-8 --yes\n"
                 b"no such command\nsystem set hostname EMS-9 --yes\n")
    chan.shutdown_write()
    ran = drain(chan)
    assert ran.status == 2, ran
    assert ran.stdout.splitlines()[0] == "EMS"
    assert ran.stderr.startswith("error: ")
    assert user.stored_hostname() == "EMS-8"  # the line after the failure never ran
    assert [(r["line"], r["mode"]) for r in user.audit() if r["event"] == "end"] == [
        ("system get hostname", "batch"), ("system set hostname EMS-8 --yes", "batch"),
        ("no such command", "batch")]
    assert ran.stderr.startswith("error: line 5: ")  # the failing line is named (comments and blanks count)


def test_client_locale_variables_do_not_break_the_shell(sshd, ssh):
    """LANG/LC_* are the only variables a client may set (stock AcceptEnv): odd values are harmless."""
    for env in ({"LC_ALL": "POSIX"}, {"LANG": "de_DE.ISO-8859-1"}, {"LC_ALL": "xx_YY.bogus"}):
        chan = ssh.get_transport().open_session(timeout=TIMEOUT_S)
        for name, value in env.items():
            chan.set_environment_variable(name, value)
        chan.exec_command("system get hostname")
        ran = drain(chan)
        assert (ran.status, ran.stdout, ran.stderr) == (0, "EMS\n", ""), env


def test_hostile_command_strings_are_refused_and_nothing_runs(sshd, user, ssh):
    canary = user.writable_dir / "canary"  # the account could create it, if anything ran
    hostile = [
        "system get hostname; bash",
        f"system get hostname; touch {canary}",
        f"system get hostname && touch {canary}",
        f"system get hostname | tee {canary}",
        f"system get hostname > {canary}",
        f"$(touch {canary})",
        f"system set hostname $(touch {canary}) --yes",
        f"`touch {canary}`",
        f"system get hostname\ntouch {canary}",
        f"system get hostname & touch {canary}",
    ]
    for line in hostile:
        ran = exec_command(ssh, line)
        assert ran.status == 2, (line, ran)
        assert ran.stdout == "", (line, ran)  # not even the harmless first part ran
        assert ran.stderr.startswith("error: "), (line, ran)
        assert not canary.exists(), line
    assert user.stored_hostname() is None
    records = user.audit()
    assert len(records) == len(hostile)
    assert all(r["accepted"] is False and r["status"] == 2 for r in records), records


# --- who may log in ---------------------------------------------------------------------------------


def test_a_wrong_password_is_refused(sshd, user, clients):
    with pytest.raises(paramiko.AuthenticationException):
        clients.append(sshd.connect(user.name, user.password + "x"))
    sshd.wait_log(f"Failed password for {user.name}")
    assert user.audit() == []


def test_other_accounts_are_refused_even_with_the_right_password(sshd, shell_exe, clients):
    with appliance_user(shell_exe, prefix="othr") as other:
        with pytest.raises(paramiko.AuthenticationException):
            clients.append(sshd.connect(other.name, other.password))
        sshd.wait_log(f"User {other.name} from 127.0.0.1 not allowed because not listed in AllowUsers")
        assert other.audit() == []


# --- no forwarding, no tunnels, no file transfer -----------------------------------------------------


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A local TCP service a forwarded channel could reach (nothing may ever connect to it)."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        sock.settimeout(0.5)
        yield sock


def assert_nobody_connected(sock: socket.socket) -> None:
    with pytest.raises(TimeoutError):
        conn, _ = sock.accept()
        conn.close()


def test_local_port_forwarding_is_refused(sshd, ssh, listener):
    target = listener.getsockname()
    with pytest.raises(paramiko.ChannelException) as refused:
        ssh.get_transport().open_channel("direct-tcpip", target, ("127.0.0.1", 40000), timeout=TIMEOUT_S)
    assert refused.value.code == paramiko.common.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
    assert_nobody_connected(listener)
    sshd.wait_log("refused local port forward")


def test_remote_port_forwarding_is_refused(sshd, ssh):
    transport = ssh.get_transport()
    with pytest.raises(paramiko.SSHException, match="TCP forwarding request denied"):
        transport.request_port_forward("127.0.0.1", 0)
    with pytest.raises(paramiko.SSHException, match="TCP forwarding request denied"):
        transport.request_port_forward("", 0)  # every address (GatewayPorts)
    assert exec_command(ssh, "system get hostname").status == 0  # the connection itself is fine


def test_x11_forwarding_is_refused(sshd, ssh):
    chan = ssh.get_transport().open_session(timeout=TIMEOUT_S)
    with pytest.raises(paramiko.SSHException):
        chan.request_x11(single_connection=True)  # sshd answers failure; paramiko closes the channel
    assert exec_command(ssh, "system get hostname").status == 0


def test_agent_forwarding_and_client_environment_do_not_reach_the_shell(sshd, user, ssh):
    """Ask for agent forwarding and send hostile environment variables, then look at the environment
    of the running shell (we are root: /proc/PID/environ): no agent socket, none of the variables;
    LANG (the stock AcceptEnv) does arrive, which proves the requests were delivered."""
    transport = ssh.get_transport()
    chan = transport.open_session(timeout=TIMEOUT_S)
    agent_handler = paramiko.agent.AgentRequestHandler(chan)  # asks the server for agent forwarding
    hostile = {
        "SSH_ORIGINAL_COMMAND": "system set hostname PWNED --yes",  # the shell honours it without -c
        "PYTHONPATH": str(user.writable_dir),
        "PYTHONSTARTUP": str(user.writable_dir / "x.py"),
        "LD_PRELOAD": str(user.writable_dir / "x.so"),
        "BASH_ENV": str(user.writable_dir / "x.sh"),
    }
    for name, value in {**hostile, "LANG": "C.UTF-8"}.items():
        chan.set_environment_variable(name, value)
    chan.get_pty(term="xterm", width=120, height=40)
    chan.invoke_shell()
    term = TerminalSession.over_channel(chan)
    term.wait_prompt()
    [pid] = user.shell_processes()
    env = environ_of(pid)
    assert env["USER"] == user.name and env["SSH_CONNECTION"].startswith("127.0.0.1 ")
    assert env.get("LANG") == "C.UTF-8"
    assert "SSH_AUTH_SOCK" not in env
    assert "DISPLAY" not in env
    assert not set(hostile) & set(env), env
    assert not [p for p in Path("/tmp").glob("ssh-*") if p.stat().st_uid == user.uid]  # no agent dir
    assert term.run("system get hostname").strip() == "EMS", term.debug()  # SSH_ORIGINAL_COMMAND did not run
    assert user.stored_hostname() is None
    agent_handler.close()


def test_sftp_is_refused_silently(sshd, user, ssh):
    with pytest.raises((paramiko.SSHException, EOFError, OSError)):
        ssh.open_sftp()
    chan = ssh.get_transport().open_session(timeout=TIMEOUT_S)
    chan.invoke_subsystem("sftp")
    ran = drain(chan)
    assert (ran.status, ran.stdout, ran.stderr) == (1, "", "")  # text would break the client
    sshd.wait_log(f"Starting session: subsystem 'sftp' for {user.name}")
    assert audit_lines(user)[-1] == ("/usr/lib/openssh/sftp-server", 1, False)


def test_scp_is_refused_without_output(sshd, user, ssh):
    for line in ("scp -t /tmp", f"scp -t {user.writable_dir}", "scp -f /etc/passwd", "rsync --server -e.Lsfx . /tmp"):
        ran = exec_command(ssh, line)
        assert ran.status not in (0, None), (line, ran)
        assert (ran.stdout, ran.stderr) == ("", ""), (line, ran)
    assert list(user.writable_dir.iterdir()) == []
    assert all(not accepted for _line, _status, accepted in audit_lines(user))


def test_forwarding_probes_detect_forwarding_where_it_is_allowed(user, tmp_path, clients, listener):
    """Control: against an sshd WITHOUT the appliance drop-in (stock Debian settings) the same probes
    succeed -- so the refusals above come from the drop-in, not from a broken probe."""
    permissive = "AllowUsers ems\nMatch User ems\n    PermitTTY yes\n"
    with running_sshd(tmp_path / "control", user.name, permissive) as server:
        client = server.connect(user.name, user.password)
        clients.append(client)
        transport = client.get_transport()
        chan = transport.open_channel("direct-tcpip", listener.getsockname(), ("127.0.0.1", 40000),
                                      timeout=TIMEOUT_S)
        conn, _ = listener.accept()
        conn.close()
        chan.close()
        assert transport.request_port_forward("127.0.0.1", 0) > 0
        session = transport.open_session(timeout=TIMEOUT_S)
        agent_handler = paramiko.agent.AgentRequestHandler(session)
        session.get_pty(term="xterm", width=120, height=40)
        session.invoke_shell()
        TerminalSession.over_channel(session).wait_prompt()
        [pid] = user.shell_processes()
        assert "SSH_AUTH_SOCK" in environ_of(pid)
        agent_handler.close()


# --- first login: the password must be changed ------------------------------------------------------


def change_expired_password(transport: paramiko.Transport, user: ApplianceUser, new: str) -> list[str]:
    """keyboard-interactive through PAM: answer what is asked; return the prompts seen."""
    prompts: list[str] = []
    answers = {"current password": user.password, "new password": new, "retype new password": new}

    def handler(_title: str, _instructions: str, fields: list[tuple[str, bool]]) -> list[str]:
        replies = []
        for prompt, echo in fields:
            assert not echo, prompt  # secrets are never echoed
            prompts.append(prompt)
            last = prompt.strip().splitlines()[-1].rstrip(": ").lower()
            replies.append(user.password if last == "password" else answers[last])
        return replies

    transport.auth_interactive(user.name, handler)
    return prompts


def test_expired_password_is_changed_at_login_then_the_shell_runs(sshd, user, clients):
    user.expire_password()
    assert user.last_change_day() == 0
    old, new = user.password, new_password()

    transport = sshd.transport()
    clients.append(transport)
    prompts = change_expired_password(transport, user, new)
    assert prompts[0] == "Password: "
    assert "You are required to change your password immediately" in prompts[1]
    assert [p.strip().splitlines()[-1] for p in prompts[1:]] == [
        "Current password:", "New password:", "Retype new password:"]
    assert transport.is_authenticated()
    assert user.last_change_day() > 0  # changed, no longer expired
    # The same connection continues into the shell, no terminal needed.
    chan = transport.open_session(timeout=TIMEOUT_S)
    chan.exec_command("system get hostname")
    ran = drain(chan)
    assert (ran.status, ran.stdout, ran.stderr) == (0, "EMS\n", "")
    transport.close()
    user.password = new

    # The next login uses the new password; the old one is refused.
    clients.append(client := sshd.connect(user.name, new))
    assert exec_command(client, "system get hostname").status == 0
    with pytest.raises(paramiko.AuthenticationException):
        clients.append(sshd.connect(user.name, old))


@pytest.fixture
def ssh_expired(sshd: SshServer, user: ApplianceUser, clients: list) -> paramiko.SSHClient:
    user.expire_password()
    client = sshd.connect(user.name, user.password)  # password auth succeeds: the expiry comes later
    clients.append(client)
    return client


def test_expired_password_never_reaches_the_shell_with_plain_password_auth(sshd, user, ssh_expired):
    """A script with plain password auth on an expired account: sshd refuses the command session."""
    ran = exec_command(ssh_expired, "system set hostname EMS-9 --yes")
    assert ran.status == 1
    assert "Password change required but no TTY available" in ran.stderr
    assert ran.stdout == ""
    assert user.audit() == [] and user.stored_hostname() is None
    assert user.last_change_day() == 0


def test_expired_password_with_a_terminal_and_password_auth_runs_passwd_then_disconnects(
        sshd, user, ssh_expired):
    """The other path (a client that insists on "password" auth): sshd runs passwd(1) on the terminal,
    never the shell, and ends the session; the next login uses the new password."""
    new = new_password()
    chan, term = open_terminal(ssh_expired.get_transport())
    term.wait_text("Current password:")
    assert "You must change your password now and login again!" in term.text()
    term.send(user.password + "\r")
    term.wait_text("New password:")
    term.send(new + "\r")
    term.wait_text("Retype new password:")
    term.send(new + "\r")
    term.wait_text("password updated successfully")
    term.wait_closed()
    assert user.audit() == []  # the shell never ran
    assert user.last_change_day() > 0
    user.password = new
    client = sshd.connect(user.name, new)
    try:
        assert exec_command(client, "system get hostname").stdout == "EMS\n"
    finally:
        client.close()


@pytest.mark.parametrize("pty", [True, False], ids=["terminal", "no-terminal"])
def test_a_connection_dropped_during_a_command_ends_it_and_it_is_audited_as_interrupted(sshd, user, ssh, pty):
    """sshd hangs up on the shell (SIGHUP, or the output it writes to goes nowhere): the command stops, its
    child with it, and the audit says so (no more "died with 129 and no record")."""
    chan = ssh.get_transport().open_session(timeout=TIMEOUT_S)
    if pty:
        chan.get_pty(term="xterm", width=120, height=40)
    chan.exec_command("execute ping 127.0.0.1 --count 60")
    deadline = time.monotonic() + TIMEOUT_S
    seen = b""
    while b"bytes from" not in seen and time.monotonic() < deadline:
        if chan.recv_ready():
            seen += chan.recv(4096)
        time.sleep(0.02)
    assert b"bytes from" in seen
    ssh.get_transport().sock.close()  # vanish without a goodbye
    ssh.close()
    user.wait_no_shell()
    deadline = time.monotonic() + TIMEOUT_S
    while not [r for r in user.audit() if r["line"].startswith("execute ping")] and time.monotonic() < deadline:
        time.sleep(0.05)
    [record] = [r for r in user.audit() if r["line"].startswith("execute ping")]
    assert (record["outcome"], record["status"]) == ("interrupted", 129), record
    assert not [pid for pid in user.processes() if "ping" in " ".join(cmdline(pid))]  # the child went too
