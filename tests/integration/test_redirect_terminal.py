"""``redirect`` at the console: the REAL interactive ``appliance-shell`` of a node in a pseudo-terminal.

What an admin at the console would notice: the password question does not echo, the pre-flight summary
and the confirmation question come before anything changes, progress is printed as it happens, Ctrl-C
(at the question or during the lock wait) leaves the node as it was and the shell alive, and a password
typed on the line never comes back (``history``, Up arrow, history file, audit log). The last two
tests check that the services a console redirect (or its rollback) starts do not inherit the signals
the shell ignores for itself.

The pseudo-terminal and the screen emulator come from ``tests/e2e/conftest.py``; the node (real local
database, ``appliance-admin init``, process services) and the remote database from ``test_redirect.py``.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pexpect
import pytest

from appliance.db import schema as S
from appliance.testkit.nodes import BIN, Node, Remote
from tests.e2e.conftest import Screen, Terminal, clean_env
from tests.integration import test_redirect

# test_redirect.py's fixtures, made visible to pytest in this module (an assignment rather than an
# import, so that using them as test parameters does not read as shadowing an import).
make_node = test_redirect.make_node
remote = test_redirect.remote

WAIT = 15.0  # a 2-core machine, other suites in parallel
REDIRECT_WAIT = 30.0  # a whole redirect: stop services, lock, deploy, credentials, start, health check
ROWS, COLS = 40, 200  # wide enough that a whole redirect line fits on one screen row
PROMPT = "node1 $ "
CONFIRM = "Do you want to continue? (y/n)"


# --- helpers ------------------------------------------------------------------------------------------


@pytest.fixture
def console():
    """A factory: ``console(node)`` starts the node's interactive shell in a pseudo-terminal."""
    started: list[Terminal] = []

    def start(node: Node) -> Terminal:
        child = pexpect.spawn(
            str(BIN / "appliance-shell"),
            ["--config", str(node.config_path)],
            env=clean_env(node.dir, {"COLUMNS": str(COLS), "LINES": str(ROWS)}),
            cwd=str(node.dir),
            dimensions=(ROWS, COLS),
            encoding="utf-8",
            codec_errors="replace",
            timeout=WAIT,
        )
        child.delaybeforesend = None
        term = Terminal(child, node)  # the Terminal only keeps its second argument
        term.screen = Screen(ROWS, COLS)
        started.append(term)
        term.wait_prompt(node.name, timeout=WAIT)
        return term

    yield start
    for term in started:
        if term.child.isalive():
            term.child.kill(signal.SIGKILL)
        term.child.close(force=True)


def run(term: Terminal, line: str, timeout: float = WAIT) -> str:
    """Type ``line`` and Enter at a fresh prompt; wait for the next prompt; return what was shown."""
    term.mark()
    term.send(line + "\r")
    term.wait(lambda: term.screen.abs_row > term._mark, "the line to be accepted", WAIT)
    term.wait_prompt("node1", timeout=timeout)
    return "\n".join(term.screen.all_lines()[term._mark + 1 : term.screen.abs_row])


def redirect_line(r: Remote, *, password: str | None = None, yes: bool = False) -> str:
    line = (f"redirect --db_host 127.0.0.1 --db_port {r.port} --db_user {r.user} --db_name {r.dbname}"
            + (f" --db_pass {quote(password)}" if password is not None else "") + " --is_primary_node")
    return line + (" --yes" if yes else "")


def quote(value: str) -> str:
    """POSIX single-quoting, as the appliance shell's tokenizer reads it."""
    return "'" + value.replace("'", "'\\''") + "'"


def shown_everywhere(term: Terminal) -> str:
    """Everything the shell sent to the terminal: the emulated screen and the raw bytes."""
    return term.screen.text() + "\n" + "".join(term.raw)


def assert_untouched(node: Node, before, r: Remote) -> None:
    _origin, active = node.targets()
    assert active.local and active.role == "primary"
    assert node.targets() == before
    assert node.running() == ["beat", "demo"]
    assert r.rows("SELECT to_regclass('appliance.nodes')") == [(None,)]  # nothing deployed remotely


# Dispositions a login shell sets for itself that a service it starts must not inherit (SIG_IGN survives exec).
SHELL_ONLY = {"SIGINT", "SIGQUIT", "SIGTSTP", "SIGTTIN", "SIGTTOU"}


def ignored_signals(node: Node) -> dict[str, set[str]]:
    """For each running service: which of ``SHELL_ONLY`` its process ignores (SigIgn in /proc/PID/status)."""
    found = {}
    for pidfile in sorted((node.state / "run").glob("*.pid")):
        status = Path(f"/proc/{int(pidfile.read_text())}/status").read_text()
        mask = int(next(line for line in status.splitlines() if line.startswith("SigIgn:")).split()[1], 16)
        found[pidfile.stem] = {name for name in SHELL_ONLY if mask >> (getattr(signal, name) - 1) & 1}
    return found


def audit_records(node: Node) -> list[dict[str, object]]:
    path = node.state / "audit.log"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


# --- the tests ----------------------------------------------------------------------------------------


def test_password_is_asked_without_echo_then_confirmed(make_node, remote, console):
    node = make_node("node1")
    node.init()
    term = console(node)
    term.mark()
    term.send(redirect_line(remote) + "\r")
    term.wait_text("db_pass", timeout=WAIT)  # pre-flight needs the password: asked before anything else
    assert CONFIRM not in term.since_mark() and "Stopping services" not in term.since_mark()

    term.send(remote.password)
    term.settle()
    assert remote.password not in shown_everywhere(term)  # no echo while typing...
    term.send("\r")
    term.wait_text(CONFIRM, timeout=WAIT)
    assert remote.password not in shown_everywhere(term)  # ...nor after Enter
    shown = term.since_mark()
    assert "Node node1 will move from its local database to" in shown and "as primary" in shown
    assert f"127.0.0.1:{remote.port}" in shown
    assert "Stopping services" not in shown  # nothing changed before the answer
    assert node.running() == ["beat", "demo"] and node.targets()[1].local

    term.send("y\r")
    term.wait_text("is now the primary", timeout=REDIRECT_WAIT)
    term.wait_prompt("node1", timeout=WAIT)
    shown = term.since_mark()
    for step in ("INFO - Stopping services", "INFO - Deploying database schema appliance v",
                 "INFO - Registering node node1 as primary", "INFO - Starting services as primary",
                 "INFO - Healthy", "INFO - Node node1 is now the primary of cluster"):
        assert step in shown, step
    assert "error:" not in shown and "Rolled back" not in shown
    assert remote.password not in shown_everywhere(term)

    _origin, active = node.targets()
    assert active.role == "primary" and not active.local
    assert active.target.dbname == remote.dbname and active.target.password == remote.password
    assert remote.rows("SELECT name, role FROM appliance.nodes") == [("node1", "primary")]
    assert node.running() == ["beat", "demo"]

    start, record = [r for r in audit_records(node) if str(r["line"]).startswith("redirect")]
    assert (start["event"], record["event"]) == ("start", "end")
    assert record["status"] == 0 and record["mode"] == "interactive" and record["outcome"] == "finished"
    assert remote.password not in node.all_text()

    # Logging out of the console does not take the services started by the redirect with it.
    term.send("exit\r")
    assert term.wait_exit(timeout=WAIT) == 0
    assert node.running() == ["beat", "demo"]


def test_answer_no_changes_nothing(make_node, remote, console):
    node = make_node("node1")
    node.init()
    before = node.targets()
    term = console(node)
    term.mark()
    term.send(redirect_line(remote) + "\r")
    term.wait_text("db_pass", timeout=WAIT)
    term.send(remote.password + "\r")
    term.wait_text(CONFIRM, timeout=WAIT)
    term.send("n\r")
    term.wait_prompt("node1", timeout=WAIT)
    shown = term.since_mark()
    assert "not confirmed: nothing was changed" in shown
    assert "Stopping services" not in shown and "INFO -" not in shown
    assert_untouched(node, before, remote)
    assert audit_records(node)[-1]["status"] == 3

    assert run(term, "system get hostname").strip() == "node1"  # the shell goes on as before
    term.send("exit\r")
    assert term.wait_exit(timeout=WAIT) == 0
    assert node.running() == ["beat", "demo"]


def test_password_on_the_line_is_masked_everywhere(make_node, remote, console):
    """The Remote's password has a quote, a double quote, spaces, '=', a backslash, '%' and an 'ö'."""
    for char in ("'", '"', " ", "=", "\\", "ö"):
        assert char in remote.password
    node = make_node("node1")
    node.init()
    term = console(node)
    line = redirect_line(remote, password=remote.password, yes=True)
    shown = run(term, line, timeout=REDIRECT_WAIT)
    assert "is now the primary" in shown and "error:" not in shown, shown
    _origin, active = node.targets()
    assert not active.local and active.role == "primary" and active.target.password == remote.password

    masked = redirect_line(remote).replace(" --is_primary_node", " --db_pass ******** --is_primary_node --yes")
    shown = run(term, "history")
    assert masked in shown, shown
    assert remote.password not in shown and quote(remote.password) not in shown

    # Up arrow recalls what history holds: the masked line, never the secret.
    term.send("\x1b[A")
    term.wait_line(PROMPT + "history", timeout=WAIT)
    term.send("\x1b[A")
    term.wait_line(PROMPT + masked, timeout=WAIT)
    term.send("\x03")
    term.wait_prompt("node1", timeout=WAIT)

    history = (node.state / "history").read_text(encoding="utf-8")
    assert masked in history.splitlines()
    audit = (node.state / "audit.log").read_text(encoding="utf-8")
    assert [r["line"] for r in audit_records(node) if r["event"] == "end"][:2] == [masked, "history"]
    for text in (history, audit, node.all_text()):
        assert remote.password not in text and "ö\\rd" not in text and "ss=w" not in text

    # A new session starts from the masked history file, too.
    term.send("exit\r")
    assert term.wait_exit(timeout=WAIT) == 0
    again = console(node)
    again.send("\x1b[A\x1b[A\x1b[A")  # exit, history, the redirect
    again.wait_line(PROMPT + masked, timeout=WAIT)
    assert remote.password not in shown_everywhere(again)


def test_ctrl_c_at_the_password_question(make_node, remote, console):
    node = make_node("node1")
    node.init()
    before = node.targets()
    term = console(node)
    term.mark()
    term.send(redirect_line(remote) + "\r")
    term.wait_text("db_pass", timeout=WAIT)
    term.send("half-typ")
    term.settle()
    term.send("\x03")
    term.wait_prompt("node1", timeout=WAIT)
    shown = term.since_mark()
    assert "interrupted" in shown
    assert CONFIRM not in shown and "INFO -" not in shown and "Traceback" not in shown
    assert "half-typ" not in shown_everywhere(term)
    assert_untouched(node, before, remote)
    assert audit_records(node)[-1]["status"] == 130

    # The shell survives, and the terminal is usable: a question after it still reads an answer.
    assert run(term, "system get hostname").strip() == "node1"
    term.mark()
    term.send("system set hostname node9\r")
    term.wait_text(CONFIRM, timeout=WAIT)
    term.send("n\r")
    term.wait_prompt("node1", timeout=WAIT)
    assert "not confirmed" in term.since_mark()
    term.send("exit\r")
    assert term.wait_exit(timeout=WAIT) == 0


def test_ctrl_c_while_waiting_for_the_lock_rolls_back(make_node, remote, console, pg_primary):
    node = make_node("node1")
    node.init()
    before = node.targets()
    term = console(node)
    with pg_primary.connect(dbname=remote.dbname) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (S.lock_key("appliance"),))
        term.mark()
        term.send(redirect_line(remote) + "\r")
        term.wait_text("db_pass", timeout=WAIT)
        term.send(remote.password + "\r")
        term.wait_text(CONFIRM, timeout=WAIT)
        term.send("y\r")
        term.wait_text("holds the deployment lock", timeout=WAIT)
        term.wait_text("waiting", timeout=WAIT)
        assert node.running() == []  # the services were stopped before the lock wait
        term.send("\x03")
        term.wait_text("Rolled back", timeout=WAIT)
        term.wait_prompt("node1", timeout=WAIT)
    shown = term.since_mark()
    assert "ERROR - Failed while updating the database: interrupted (Ctrl-C)" in shown
    assert "INFO - Rolled back: started the services again as primary" in shown
    assert "interrupted" in shown.split("Rolled back", 1)[1]
    assert "is now the primary" not in shown and "Traceback" not in shown
    assert_untouched(node, before, remote)
    assert audit_records(node)[-1]["status"] == 130
    assert remote.password not in shown_everywhere(term)

    assert run(term, "system get hostname").strip() == "node1"
    term.send("exit\r")
    assert term.wait_exit(timeout=WAIT) == 0
    assert node.running() == ["beat", "demo"]



def test_services_started_at_the_console_do_not_inherit_the_shells_ignored_signals(make_node, remote, console):
    node = make_node("node1")
    node.init()
    assert ignored_signals(node) == {"beat": set(), "demo": set()}
    term = console(node)
    shown = run(term, redirect_line(remote, password=remote.password, yes=True), timeout=REDIRECT_WAIT)
    assert "is now the primary" in shown, shown
    term.send("exit\r")
    assert term.wait_exit(timeout=WAIT) == 0
    assert ignored_signals(node) == {"beat": set(), "demo": set()}


def test_services_restarted_by_a_rollback_do_not_ignore_ctrl_c(make_node, remote, console, pg_primary):
    node = make_node("node1")
    node.init()
    term = console(node)
    with pg_primary.connect(dbname=remote.dbname) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (S.lock_key("appliance"),))
        term.mark()
        term.send(redirect_line(remote, password=remote.password, yes=True) + "\r")
        term.wait_text("waiting", timeout=WAIT)
        term.send("\x03")
        term.wait_text("Rolled back", timeout=WAIT)
        term.wait_prompt("node1", timeout=WAIT)
    assert node.running() == ["beat", "demo"]
    assert {name: "SIGINT" in sigs for name, sigs in ignored_signals(node).items()} == {"beat": False, "demo": False}
