"""A REAL OpenSSH client killed in the middle of a ``redirect``: sshd hangs up on the shell, the redirect
rolls back like Ctrl-C, and the audit log has the command's start record and its end record.

The admin logs in with ``ssh`` (OpenSSH's client, in a pseudo-terminal driven by pexpect) to a REAL
sshd (``tests/sshd.py``) as an account whose login shell is ``appliance-shell`` and whose node is a
real one (``appliance-admin init`` on a real local database, ``process`` services, all run as that
account, as on the appliance). The deployment lock on the remote database is held by the test, so the
redirect stops its services and then waits; the client is killed there with SIGKILL.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pytest

from appliance.db import schema as S
from appliance.services import ProcessServices
from appliance.testkit.nodes import BIN, Node, Remote
from tests.sshd import appliance_user, running_sshd, sshd_unavailable_reason

_UNAVAILABLE = sshd_unavailable_reason() or (None if shutil.which("ssh") else "the OpenSSH client is missing")
pytestmark = pytest.mark.skipif(_UNAVAILABLE is not None, reason=_UNAVAILABLE or "")

WAIT = 30.0


def as_user(uid: int, gid: int, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, user=uid, group=gid, extra_groups=[], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, cwd="/", check=False)


def chown_tree(top: Path, uid: int, gid: int) -> None:
    for path in [top, *top.rglob("*")]:
        os.lchown(path, uid, gid)


def test_a_killed_ssh_client_mid_redirect_rolls_the_node_back_and_both_records_are_there(pg_primary, tmp_path):
    remote = Remote(pg_primary)
    with appliance_user(BIN / "appliance-shell") as user:
        if user.runs_shell_as != "installed entry point":
            pytest.skip(f"the test account cannot run this venv's tools ({user.runs_shell_as})")
        pw = (user.uid, os.stat(user.writable_dir).st_gid)
        node = Node(user.writable_dir, "node1", pg_primary)
        chown_tree(user.writable_dir, *pw)
        done = as_user(*pw, [str(BIN / "appliance-admin"), "--config", str(node.config_path), "init"])
        assert done.returncode == 0, done.stdout + done.stderr
        start = ("import sys\nfrom pathlib import Path\nfrom appliance.config import load_config\n"
                 "from appliance.services import ProcessServices\n"
                 "ProcessServices(load_config(Path(sys.argv[1]))).start('primary')\n")
        assert as_user(*pw, [sys.executable, "-c", start, str(node.config_path)]).returncode == 0
        assert node.running() == ["beat", "demo"]
        user.config.write_text(node.config_path.read_text())  # the login shell runs this node
        generation = os.readlink(node.state / "credentials" / "current")
        try:
            with running_sshd(tmp_path / "sshd", user.name) as sshd, \
                    pg_primary.connect(dbname=remote.dbname) as holder:
                holder.execute("SELECT pg_advisory_lock(%s)", (S.lock_key("appliance"),))
                client = pexpect.spawn(
                    "ssh", ["-tt", "-p", str(sshd.port), "-o", f"UserKnownHostsFile={sshd.known_hosts}",
                            "-o", "StrictHostKeyChecking=yes", "-o", "PubkeyAuthentication=no",
                            "-o", "GSSAPIAuthentication=no", f"{user.name}@127.0.0.1"],
                    env={"PATH": "/usr/bin:/bin", "TERM": "xterm", "HOME": str(tmp_path)},
                    encoding="utf-8", codec_errors="replace", timeout=WAIT, dimensions=(40, 200))
                try:
                    client.expect("(?i)password:")
                    client.sendline(user.password)
                    client.expect(r"node1 \$")
                    client.sendline(f"redirect --db_host 127.0.0.1 --db_port {remote.port} --db_user {remote.user} "
                                    f"--db_name {remote.dbname} --is_primary_node --yes")
                    client.expect("db_pass")
                    client.sendline(remote.password)
                    client.expect("holds the deployment lock")
                    assert node.running() == []  # stopped before the lock wait: now cut the session
                    shells = user.shell_processes()
                    assert shells
                    client.kill(signal.SIGKILL)
                finally:
                    client.close(force=True)
                user.wait_no_shell(timeout=WAIT)
            deadline = time.monotonic() + 10
            while node.running() != ["beat", "demo"] and time.monotonic() < deadline:
                time.sleep(0.1)
            assert node.running() == ["beat", "demo"]  # rolled back: the services run again, in the old role
            assert os.readlink(node.state / "credentials" / "current") == generation  # credentials untouched
            assert remote.rows("SELECT to_regclass('appliance.nodes')") == [(None,)]  # nothing deployed remotely
            audit = (node.state / "audit.log").read_text(encoding="utf-8")
            records = [r for r in map(json.loads, audit.splitlines()) if str(r["line"]).startswith("redirect")]
            assert [(r["event"], r["outcome"], r["status"]) for r in records] == [
                ("start", "started", None), ("end", "interrupted", 129)], json.dumps(records, indent=1)
            assert remote.password not in audit
            log = node.state / "shell.log"
            assert not log.exists() or "Traceback" not in log.read_text()
        finally:
            ProcessServices(node.config).stop()
    pg_primary.drop_database(remote.dbname)
    pg_primary.drop_role(remote.user)
