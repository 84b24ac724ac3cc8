"""A REAL OpenSSH ``sshd`` and a REAL login account whose shell is ``appliance-shell``, for tests.

What the appliance image does with ``ems`` is reproduced with a throw-away account:

* :func:`appliance_user` creates an OS user with a unique name (``useradd``), a password set with
  ``chpasswd`` (on stdin, never in argv), a root-owned home, and as login shell a small ``/bin/sh``
  wrapper that ``exec``\\ s the installed ``appliance-shell`` with this test's configuration (file
  hostname backend, file audit log, a state dir owned by the user). The wrapper is registered in
  /etc/shells (``add-shell``) for the test's duration. Everything lives in one directory under the
  system temp dir (mode 0755: pytest's ``tmp_path`` is root-only, the user could not reach it).
  Teardown, even after a failure: kill the user's processes (by pid), ``userdel``, ``remove-shell``,
  remove the directory. (If the account cannot execute the venv's interpreter -- a venv built on a
  pyenv Python under /root -- the wrapper runs Debian's python3.11 on the venv's packages instead;
  see :func:`shell_argv`.) The home holds a ``.hushlogin``, as the image must (see there).
* :class:`SshServer` runs ``/usr/sbin/sshd -D -e`` on a free 127.0.0.1 port with a temp ed25519 host
  key. Its main config is the **Debian 12 stock** ``/etc/ssh/sshd_config`` (its effective lines,
  copied below) with the test's port and host key put first and its ``Include`` pointing at a
  copy of ``image/sshd/50-appliance.conf``. The copy is the shipped file with the account name
  ``ems`` replaced by the test user's in ``AllowUsers`` and ``Match User`` -- the only change, and it
  is asserted to happen, so the tests exercise exactly what the image ships, including that the
  drop-in wins over the stock main file (``X11Forwarding yes``, ``KbdInteractiveAuthentication no``).
  PAM is the system's (``/etc/pam.d/sshd``), as on the appliance. sshd is always killed at teardown
  (its per-connection children first).
* :class:`TerminalSession` follows what a terminal shows (through the e2e :class:`Screen` emulator)
  for a paramiko pty channel or a pexpect child, and answers cursor-position requests as a real
  terminal does (the shell's prompt_toolkit asks for them).

Needs root (CI runs as root) and the Debian package ``openssh-server``; see
:func:`sshd_unavailable_reason`. Every wait is bounded by a timeout.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from tests.e2e.conftest import Screen

REPO = Path(__file__).resolve().parent.parent
DROP_IN = REPO / "image" / "sshd" / "50-appliance.conf"
SSHD = Path("/usr/sbin/sshd")
SSH_KEYGEN = "/usr/bin/ssh-keygen"
LOGIN = Path("/bin/login")
PRIVSEP_DIR = Path("/run/sshd")
APPLIANCE_ACCOUNT = "ems"  # the account name the drop-in is written for

TIMEOUT_S = 15.0  # every single wait; generous for a loaded 2-core machine
COMMAND_TIMEOUT_S = 30.0  # every subprocess we run (useradd, chpasswd, sshd -T, ...)

# Debian 12 (openssh-server 1:9.2p1-2) stock /etc/ssh/sshd_config, its non-comment lines in order;
# the Include line is replaced by the test's drop-in copy.
DEBIAN_STOCK_MAIN_CONFIG = """\
Include {drop_in}
KbdInteractiveAuthentication no
UsePAM yes
X11Forwarding yes
PrintMotd no
AcceptEnv LANG LC_*
Subsystem\tsftp\t/usr/lib/openssh/sftp-server
"""

_BIND_ERRORS = ("Bind to port", "Cannot bind any address", "Address already in use")


class SshdError(RuntimeError):
    """sshd or an account command failed; the message carries the output / the sshd log."""


def sshd_unavailable_reason() -> str | None:
    """Why the real-sshd tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root: creates an OS account and runs sshd/login (CI runs as root)"
    if not SSHD.is_file():
        return f"{SSHD} is missing: install the Debian package openssh-server (scripts/setup.sh)"
    for tool in (SSH_KEYGEN, "/usr/sbin/useradd", "/usr/sbin/userdel", "/usr/sbin/chpasswd",
                 "/usr/bin/chage", str(LOGIN)):
        if not Path(tool).is_file():
            return f"{tool} is missing"
    return None


def _run(argv: list[str], *, stdin: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    done = subprocess.run(argv, input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
                          capture_output=True, timeout=COMMAND_TIMEOUT_S, check=False)
    if check and done.returncode != 0:
        raise SshdError(f"{argv[0]} failed with status {done.returncode}: "
                        f"{done.stderr.decode(errors='replace').strip()}")
    return done


def _tool(*candidates: str) -> str | None:
    return next((c for c in candidates if Path(c).is_file()), None)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (it may be taken before use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# ---------------------------------------------------------------------------------------------------
# processes


def _proc_uid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _pids() -> list[int]:
    """Live processes (zombies excluded: they are gone, only not reaped yet)."""
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit() and _alive(int(entry))]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return False
    return data[data.rindex(b")") + 2 :].split()[0] not in (b"Z", b"X")


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return int(data[data.rindex(b")") + 2 :].split()[1])


def descendants(pid: int) -> list[int]:
    """All live descendants of ``pid`` (children first level first)."""
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parents = set(frontier)
        frontier = [p for p in _pids() if _ppid(p) in parents and p not in found]
        found.extend(frontier)
    return found


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def environ_of(pid: int) -> dict[str, str]:
    """The initial environment of a process (we are root: any process)."""
    with open(f"/proc/{pid}/environ", "rb") as f:
        items = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    return dict(item.split("=", 1) for item in items if "=" in item)


def _kill_pids(pids: list[int], sig: signal.Signals = signal.SIGKILL) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


# ---------------------------------------------------------------------------------------------------
# the login account


@dataclass
class ApplianceUser:
    """A throw-away login account whose shell is the real ``appliance-shell`` (see module doc)."""

    name: str
    password: str
    uid: int
    root: Path
    home: Path
    state_dir: Path
    config: Path
    login_shell: Path
    writable_dir: Path  # a directory the user may write to (canary files go here)
    runs_shell_as: str  # see shell_argv()

    def set_password(self, password: str) -> None:
        """``chpasswd`` with ``name:password`` on stdin (never in argv)."""
        _run(["/usr/sbin/chpasswd"], stdin=f"{self.name}:{password}\n".encode())
        self.password = password

    def expire_password(self) -> None:
        """``chage -d 0``: the password must be changed at the next login (the image's first boot)."""
        _run(["/usr/bin/chage", "-d", "0", self.name])

    def last_change_day(self) -> int:
        """Field 3 of /etc/shadow: days since the epoch of the last change (0 = must change)."""
        for line in Path("/etc/shadow").read_text(encoding="utf-8").splitlines():
            fields = line.split(":")
            if fields[0] == self.name:
                return int(fields[2] or -1)
        raise SshdError(f"{self.name} is not in /etc/shadow")

    def audit(self) -> list[dict[str, object]]:
        path = self.state_dir / "audit.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]

    def stored_hostname(self) -> str | None:
        path = self.state_dir / "hostname"
        return path.read_text(encoding="utf-8").strip() if path.exists() else None

    def processes(self) -> list[int]:
        return [pid for pid in _pids() if _proc_uid(pid) == self.uid]

    def shell_processes(self) -> list[int]:
        """The user's running ``appliance-shell`` processes (those started with this test's config)."""
        return [pid for pid in self.processes() if str(self.config) in cmdline(pid)]

    def wait_no_shell(self, timeout: float = TIMEOUT_S) -> None:
        """Wait until no ``appliance-shell`` of this user is left (a session really ended)."""
        deadline = time.monotonic() + timeout
        while self.shell_processes():
            if time.monotonic() > deadline:
                raise AssertionError(f"appliance-shell of {self.name} still running: {self.shell_processes()}")
            time.sleep(0.05)


def shell_argv(shell_exe: Path, uid: int, gid: int) -> tuple[list[str], str]:
    """How the account runs the installed shell, and why (for the report of a failing test).

    The installed entry point (``.venv/bin/appliance-shell``) is used when the account can execute
    the venv's interpreter. A venv built on an interpreter the account cannot reach (pyenv under
    /root, mode 0700, as on some build machines) gets Debian's own ``python3.11`` -- the image's
    interpreter -- with the venv's site-packages added, running the same ``main()``.
    """
    try:
        probe = subprocess.run([str(shell_exe), "--version"], user=uid, group=gid, extra_groups=[],
                               env={"PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL, capture_output=True,
                               timeout=COMMAND_TIMEOUT_S, check=False, cwd="/")
        problem = probe.stderr.decode(errors="replace").strip() if probe.returncode else ""
    except OSError as exc:
        problem = str(exc)
    if not problem:
        return [str(shell_exe)], "installed entry point"
    system_python = Path("/usr/bin/python3.11")
    if not system_python.is_file():
        raise SshdError(f"the test account cannot run {shell_exe} ({problem}) and {system_python} is missing")
    site_dirs = sorted({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")})
    bootstrap = ("import site, sys\n"
                 f"for d in {site_dirs!r}: site.addsitedir(d)\n"
                 "sys.argv[0] = 'appliance-shell'\n"
                 "from appliance.shell.main import main\n"
                 "main()\n")
    return [str(system_python), "-I", "-c", bootstrap], f"{system_python} + the venv's site-packages"


def _write_wrapper(path: Path, argv: list[str], config: Path) -> None:
    # sshd runs it as "<wrapper>" (interactive) or "<wrapper> -c LINE"; the kernel starts
    # "/bin/sh <wrapper> -c LINE", so sh only runs this file and "$@" is passed on untouched.
    path.write_text(
        "#!/bin/sh\n"
        "# Test login shell: the real appliance-shell with this test's configuration.\n"
        f"exec {shlex.join(argv)} --config {shlex.quote(str(config))} \"$@\"\n",
        encoding="utf-8",
    )
    path.chmod(0o755)


def _write_config(config: Path, state_dir: Path) -> None:
    config.write_text(
        f'[paths]\nstate_dir = "{state_dir}"\n\n'
        '[hostname]\nbackend = "file"\n\n'
        '[audit]\ntarget = "file"\n',
        encoding="utf-8",
    )
    config.chmod(0o644)


def new_password() -> str:
    """A password pam_unix's "obscure" checks accept (long, mixed, not a palindrome)."""
    return f"Ap-{secrets.token_hex(6)}-{secrets.token_urlsafe(6)}".replace("_", "x")


@contextlib.contextmanager
def appliance_user(shell_exe: Path, prefix: str = "emst", hushlogin: bool = True) -> Iterator[ApplianceUser]:
    """Create the account (see module doc); remove it and all its files afterwards, even on failure."""
    name = f"{prefix}{secrets.token_hex(4)}"
    root = Path(tempfile.mkdtemp(prefix=f"appliance-ssh-{name}-"))
    root.chmod(0o755)
    home, state_dir, writable = root / "home", root / "state", root / "writable"
    config, wrapper = root / "appliance.toml", root / "appliance-login"
    home.mkdir(mode=0o755)  # root-owned, as on the image: the user cannot plant ~/.ssh or dotfiles
    if hushlogin:
        # sshd prints PAM's login messages (pam_motd: /etc/motd, /run/motd.dynamic) on stdout of every
        # session without a command -- also `printf 'cmd\n' | ssh ems@vm`, where they would corrupt
        # the output. ~/.hushlogin turns that off (sshd check_quietlogin); the image ships it.
        (home / ".hushlogin").touch(mode=0o644)
    _write_config(config, state_dir)
    wrapper.write_text("#!/bin/sh\nexit 1\n", encoding="utf-8")  # replaced once the account exists
    wrapper.chmod(0o755)
    created = registered = False
    try:
        _run(["/usr/sbin/useradd", "--no-create-home", "--home-dir", str(home), "--shell", str(wrapper),
              "--user-group", "--comment", "appliance ssh test", name])
        created = True
        add_shell = _tool("/usr/sbin/add-shell")
        if add_shell:
            _run([add_shell, str(wrapper)])
        else:
            with open("/etc/shells", "a", encoding="utf-8") as f:
                f.write(f"{wrapper}\n")
        registered = True
        pw = pwd.getpwnam(name)
        argv, how = shell_argv(shell_exe, pw.pw_uid, pw.pw_gid)
        _write_wrapper(wrapper, argv, config)
        for directory in (state_dir, writable):
            directory.mkdir(mode=0o700)
            os.chown(directory, pw.pw_uid, pw.pw_gid)
        user = ApplianceUser(name, "", pw.pw_uid, root, home, state_dir, config, wrapper, writable, how)
        user.set_password(new_password())
        yield user
    finally:
        errors: list[str] = []
        if created:
            with contextlib.suppress(KeyError):
                uid = pwd.getpwnam(name).pw_uid
                for _ in range(50):  # kill by pid, until none is left (a session may be forking)
                    pids = [pid for pid in _pids() if _proc_uid(pid) == uid]
                    if not pids:
                        break
                    _kill_pids(pids)
                    time.sleep(0.05)
                # sshd's forwarded-agent directories (only when forwarding was allowed: the control test)
                for leftover in Path(tempfile.gettempdir()).glob("ssh-*"):
                    with contextlib.suppress(OSError):
                        if leftover.lstat().st_uid == uid:
                            shutil.rmtree(leftover, ignore_errors=True)
            for _ in range(5):  # userdel fails while /etc/passwd is locked by a concurrent tool
                done = _run(["/usr/sbin/userdel", name], check=False)
                if done.returncode in (0, 6):  # 6: no such user
                    break
                time.sleep(0.2)
            else:
                errors.append(f"userdel {name}: {done.stderr.decode(errors='replace').strip()}")
            with contextlib.suppress(FileNotFoundError):
                Path(f"/var/mail/{name}").unlink()
        if registered:
            remove_shell = _tool("/usr/sbin/remove-shell")
            if remove_shell:
                _run([remove_shell, str(wrapper)], check=False)
            else:
                lines = Path("/etc/shells").read_text(encoding="utf-8").splitlines(keepends=True)
                Path("/etc/shells").write_text("".join(x for x in lines if x.strip() != str(wrapper)),
                                               encoding="utf-8")
        shutil.rmtree(root, ignore_errors=True)
        if errors:
            raise SshdError("; ".join(errors))


# ---------------------------------------------------------------------------------------------------
# sshd


def adapt_drop_in(text: str, user: str) -> str:
    """The shipped drop-in with ``ems`` replaced by ``user`` in ``AllowUsers`` and ``Match User``."""
    pattern = re.compile(rf"^(\s*(?:AllowUsers|Match\s+User)\s+){APPLIANCE_ACCOUNT}\s*$", re.MULTILINE)
    adapted, count = pattern.subn(lambda m: m.group(1) + user, text)
    if count != 2:
        raise SshdError(f"{DROP_IN}: expected one 'AllowUsers {APPLIANCE_ACCOUNT}' and one "
                        f"'Match User {APPLIANCE_ACCOUNT}' line, replaced {count}")
    return adapted


@dataclass
class SshServer:
    """One ``sshd -D -e`` on 127.0.0.1 for one account (see module doc)."""

    workdir: Path
    drop_in_text: str
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    host_key: Path = field(init=False)
    known_hosts: Path = field(init=False)
    main_config: Path = field(init=False)
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host_key = self.workdir / "ssh_host_ed25519_key"
        self.known_hosts = self.workdir / "known_hosts"
        self.main_config = self.workdir / "sshd_config"
        self.log_path = self.workdir / "sshd.log"
        _run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "appliance-test", "-f", str(self.host_key)])
        (self.workdir / "50-appliance.conf").write_text(self.drop_in_text, encoding="utf-8")

    @classmethod
    def for_user(cls, workdir: Path, user: str, drop_in_text: str | None = None) -> SshServer:
        text = drop_in_text if drop_in_text is not None else DROP_IN.read_text(encoding="utf-8")
        return cls(workdir, adapt_drop_in(text, user))

    def _write_main_config(self) -> None:
        # sshd (even -t/-T) refuses to run without its privilege separation directory; on a booted
        # Debian systemd-tmpfiles creates it, on a build machine nobody does. It stays (it is empty).
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        # First value wins in sshd_config: the test's own settings go before the stock lines.
        self.main_config.write_text(
            "# Test sshd: the port and host key of this test, then Debian 12's stock main file.\n"
            + (f"Port {self.port}\n" if self.port else "")  # no port yet: only `sshd -t/-T`
            + "ListenAddress 127.0.0.1\n"
            f"HostKey {self.host_key}\n"
            "PidFile none\n"
            + DEBIAN_STOCK_MAIN_CONFIG.format(drop_in=self.workdir / "50-appliance.conf"),
            encoding="utf-8",
        )

    def check_config(self) -> None:
        """``sshd -t``: the configuration (drop-in included) is valid."""
        self._write_main_config()
        done = _run([str(SSHD), "-t", "-f", str(self.main_config)], check=False)
        if done.returncode != 0:
            raise SshdError(f"sshd -t: {done.stderr.decode(errors='replace').strip()}")

    def effective(self, user: str, addr: str = "127.0.0.1") -> dict[str, list[str]]:
        """``sshd -T -C user=...``: the settings sshd would apply to ``user`` (keyword -> values)."""
        self._write_main_config()
        done = _run([str(SSHD), "-T", "-f", str(self.main_config), "-C", f"user={user},host=localhost,addr={addr}"])
        settings: dict[str, list[str]] = {}
        for line in done.stdout.decode().splitlines():
            key, _, value = line.partition(" ")
            settings.setdefault(key.lower(), []).append(value)
        return settings

    def start(self) -> None:
        last = ""
        for _attempt in range(5):
            self.port = free_port()
            self._write_main_config()
            log = open(self.log_path, "ab")
            try:
                self.proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(self.main_config)],
                                             stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            finally:
                log.close()
            if self._wait_ready():
                self.write_known_hosts()
                return
            last = self.log()
            self.stop()
            if not any(err in last for err in _BIND_ERRORS):
                break
        raise SshdError(f"sshd did not start\n{last}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.settimeout(2)
                    if s.recv(64).startswith(b"SSH-2.0-"):
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def write_known_hosts(self) -> None:
        key_type, key_b64 = self.host_key.with_suffix(".pub").read_text().split()[:2]
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {key_type} {key_b64}\n", encoding="utf-8")

    def stop(self) -> None:
        """Stop sshd: the per-connection processes first (by pid: SIGTERM, so they remove their agent
        sockets and utmp entries; SIGKILL after 3 s), then the listener."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            children = descendants(self.proc.pid)
            _kill_pids(children, signal.SIGTERM)
            deadline = time.monotonic() + 3
            while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
                time.sleep(0.02)
            _kill_pids([pid for pid in children if _alive(pid)])
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, text: str, timeout: float = TIMEOUT_S) -> str:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if time.monotonic() > deadline:
                raise AssertionError(f"sshd never logged {text!r}\n--- sshd log ---\n{self.log()}")
            time.sleep(0.05)
        return self.log()

    # --- clients ----------------------------------------------------------------------------------

    def connect(self, username: str, password: str) -> paramiko.SSHClient:
        """A paramiko client, host key pinned (RejectPolicy + our known_hosts), password auth only."""
        client = paramiko.SSHClient()
        client.load_host_keys(str(self.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect("127.0.0.1", port=self.port, username=username, password=password,
                           timeout=TIMEOUT_S, banner_timeout=TIMEOUT_S, auth_timeout=TIMEOUT_S,
                           channel_timeout=TIMEOUT_S, look_for_keys=False, allow_agent=False)
        except BaseException:
            client.close()
            raise
        return client

    def transport(self) -> paramiko.Transport:
        """A bare, unauthenticated transport with the host key checked (for keyboard-interactive)."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT_S)
        transport = paramiko.Transport(sock)
        transport.banner_timeout = transport.auth_timeout = TIMEOUT_S
        try:
            transport.start_client(timeout=TIMEOUT_S)
            key = transport.get_remote_server_key()
            pinned = paramiko.HostKeys(str(self.known_hosts)).lookup(f"[127.0.0.1]:{self.port}")
            if pinned is None or pinned.get(key.get_name()) != key:
                raise paramiko.SSHException("host key does not match the pinned test key")
        except BaseException:
            transport.close()
            raise
        return transport


@contextlib.contextmanager
def running_sshd(workdir: Path, user: str, drop_in_text: str | None = None) -> Iterator[SshServer]:
    server = SshServer.for_user(workdir, user, drop_in_text)
    try:
        server.start()
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------------
# running commands over SSH


@dataclass(frozen=True)
class Ran:
    status: int | None  # None: the server sent no exit status
    stdout: str
    stderr: str


def exec_command(client: paramiko.SSHClient, line: str, timeout: float = TIMEOUT_S) -> Ran:
    """``ssh user@host 'LINE'``: no pty, stdin closed at once; bounded by ``timeout``."""
    transport = client.get_transport()
    assert transport is not None
    chan = transport.open_session(timeout=timeout)
    try:
        chan.settimeout(timeout)
        chan.exec_command(line)
        chan.shutdown_write()
        return drain(chan, timeout)
    finally:
        chan.close()


def drain(chan: paramiko.Channel, timeout: float = TIMEOUT_S) -> Ran:
    """Read a channel's stdout and stderr until the server closes it; then its exit status."""
    out, err = bytearray(), bytearray()
    deadline = time.monotonic() + timeout
    while True:
        busy = False
        if chan.recv_ready():
            out += chan.recv(65536)
            busy = True
        if chan.recv_stderr_ready():
            err += chan.recv_stderr(65536)
            busy = True
        if not busy and (chan.closed or (chan.eof_received and chan.exit_status_ready())):
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"no end of the command after {timeout} s; stdout={bytes(out)!r} "
                                 f"stderr={bytes(err)!r}")
        if not busy:
            time.sleep(0.01)
    status = chan.exit_status if chan.status_event.wait(timeout=2) else None
    return Ran(None if status == -1 else status, out.decode(errors="replace"), err.decode(errors="replace"))


# ---------------------------------------------------------------------------------------------------
# a terminal on top of a pty channel or a pexpect child

ROWS, COLS = 40, 120
_CPR_REQUEST = "\x1b[6n"


class TerminalSession:
    """What a person sees on a terminal: output goes through :class:`Screen`; keys are sent raw.

    ``read(timeout)`` returns new text ('' when nothing came) or None at end of file.
    """

    def __init__(self, read: Callable[[float], str | None], write: Callable[[str], None]) -> None:
        self._read, self._write = read, write
        self.screen = Screen(ROWS, COLS)
        self.raw: list[str] = []
        self.closed = False
        self._mark = 0

    @classmethod
    def over_channel(cls, chan: paramiko.Channel) -> TerminalSession:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

        def read(timeout: float) -> str | None:
            chan.settimeout(timeout)
            try:
                data = chan.recv(65536)
            except TimeoutError:
                return ""
            except OSError:
                return None
            return decoder.decode(data) if data else None

        return cls(read, lambda text: chan.sendall(text.encode()))

    def pump(self, wait_s: float) -> None:
        data = self._read(wait_s)
        if data is None:
            self.closed = True
            return
        if not data:
            return
        self.raw.append(data)
        self.screen.feed(data)
        for _ in range(data.count(_CPR_REQUEST)):  # a real terminal answers with the cursor position
            self._write(f"\x1b[{self.screen.row + 1};{self.screen.col + 1}R")

    def wait(self, predicate: Callable[[], bool], what: str, timeout: float = TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.closed:
                raise AssertionError(f"the session ended while waiting for {what}\n{self.debug()}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{self.debug()}")
            self.pump(min(left, 0.2))

    def wait_closed(self, timeout: float = TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"the session did not end within {timeout} s\n{self.dump()}")
            self.pump(min(left, 0.2))

    def dump(self) -> str:
        lines = self.screen.all_lines()
        last = len(self.screen.scrollback) + self.screen.row
        shown = "\n".join(f"| {line}" for line in lines[max(0, last - 30) : last + 2])
        return f"--- screen (cursor row {self.screen.row} col {self.screen.col}) ---\n{shown}"

    def debug(self) -> str:
        """The screen and the last raw bytes received, for assertion messages."""
        return f"{self.dump()}\n--- raw tail ---\n{''.join(self.raw)[-2000:]!r}"

    def mark(self) -> None:
        self._mark = self.screen.abs_row

    def since_mark(self) -> str:
        return "\n".join(self.screen.all_lines()[self._mark :])

    def text(self) -> str:
        return self.screen.text()

    def wait_text(self, text: str, timeout: float = TIMEOUT_S) -> None:
        self.wait(lambda: text in self.since_mark(), repr(text), timeout)

    def wait_prompt(self, hostname: str = "EMS", timeout: float = TIMEOUT_S) -> None:
        prompt = f"{hostname} $ "
        self.wait(lambda: self.screen.cursor_line() == prompt and self.screen.col == len(prompt),
                  f"the prompt {prompt!r}", timeout)

    def send(self, keys: str) -> None:
        self._write(keys)

    def run(self, line: str, hostname: str = "EMS") -> str:
        """Type ``line`` + Enter at a fresh prompt, wait for the next prompt, return the lines between.

        Done means: the typed line stands on the prompt's row, and a fresh prompt is drawn on a later
        row. Merely "the cursor left the row" is not enough: once the terminal has answered the cursor
        position request, prompt_toolkit may redraw by printing newlines down to the bottom of the
        screen and moving back up -- before it has even read the keys.
        """
        self.mark()
        start = self._mark
        prompt = f"{hostname} $ "
        self.send(line + "\r")
        self.wait(
            lambda: self.screen.abs_row > start
            and line in self.screen.all_lines()[start]
            and self.screen.cursor_line() == prompt
            and self.screen.col == len(prompt),
            f"{line!r} to run and the prompt {prompt!r} to come back",
        )
        return "\n".join(self.screen.all_lines()[start + 1 : self.screen.abs_row])
