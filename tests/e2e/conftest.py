"""End-to-end fixtures: the REAL ``appliance-shell`` run as a separate process.

Every test gets its own configuration file and state dir under ``tmp_path`` (file hostname backend,
file audit log), a clean environment, and helpers to run ``-c`` / batch mode or to drive the
interactive shell in a pseudo-terminal with pexpect. The pseudo-terminal output goes through a small
terminal emulator (:class:`Screen`), so tests can assert what a person would *see* on the screen
(prompt_toolkit draws trailing blanks with cursor moves, not with spaces).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pexpect
import pytest

if TYPE_CHECKING:
    from tests.sshd import ApplianceUser

TIMEOUT_S = 10.0  # generous: a 2-core machine, other suites may run in parallel
ROWS, COLS = 40, 120


@pytest.fixture(scope="session")
def shell_exe() -> Path:
    """The installed entry point, next to the interpreter running the tests (the venv's bin/)."""
    exe = Path(sys.executable).parent / "appliance-shell"
    assert exe.is_file() and os.access(exe, os.X_OK), f"{exe} is not installed (pip install -e .)"
    return exe


def clean_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(home),
        "USER": "admin",
        "LANG": "C.UTF-8",
        "TERM": "xterm",
        "COLUMNS": str(COLS),
        "LINES": str(ROWS),
        "PROMPT_TOOLKIT_NO_CPR": "1",
        "PAGER": "cat",
    }
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class Ran:
    status: int
    stdout: str
    stderr: str


class Appliance:
    """One test's appliance: a config file, a state dir, and ways to run the shell against them."""

    def __init__(self, exe: Path, root: Path) -> None:
        self.exe = exe
        self.root = root
        self.state_dir = root / "state"
        self.home = root / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.config = root / "appliance.toml"
        self.write_config()

    # --- configuration ----------------------------------------------------------------------------

    def write_config(self, extra: str = "", *, shell: str = "") -> Path:
        """(Re)write the test config; ``shell`` lines go into ``[shell]``, ``extra`` is appended."""
        self.config.write_text(
            f'[paths]\nstate_dir = "{self.state_dir}"\n\n'
            f'[hostname]\nbackend = "file"\n\n'
            f'[audit]\ntarget = "file"\n\n'
            f"[shell]\n{shell}\n\n{extra}\n",
            encoding="utf-8",
        )
        return self.config

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return clean_env(self.home, extra)

    # --- running ----------------------------------------------------------------------------------

    def run(
        self,
        args: Sequence[str],
        *,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        wrapper: Sequence[str] = (),
        config: bool = True,
        timeout: float = 20.0,
    ) -> Ran:
        """Run the shell with ``args`` (``--config`` prepended unless ``config=False``).

        Standard input is /dev/null unless ``stdin`` is given: never a terminal, never inherited.
        """
        argv = [*wrapper, str(self.exe), *(["--config", str(self.config)] if config else []), *args]
        done = subprocess.run(
            argv,
            input=stdin,
            stdin=subprocess.DEVNULL if stdin is None else None,
            capture_output=True,
            env=self.env(env),
            cwd=self.root,
            timeout=timeout,
            check=False,
        )
        return Ran(
            done.returncode,
            done.stdout.decode("utf-8", errors="replace"),
            done.stderr.decode("utf-8", errors="replace"),
        )

    def c(self, line: str, **kwargs: Any) -> Ran:
        """``appliance-shell -c LINE`` (how sshd runs ``ssh ems@vm 'LINE'``)."""
        return self.run(["-c", line], **kwargs)

    def batch(self, text: str | bytes, **kwargs: Any) -> Ran:
        """Commands on standard input (a pipe, not a terminal)."""
        data = text.encode("utf-8") if isinstance(text, str) else text
        return self.run([], stdin=data, **kwargs)

    # --- state ------------------------------------------------------------------------------------

    @property
    def audit_path(self) -> Path:
        return self.state_dir / "audit.log"

    def audit(self) -> list[dict[str, object]]:
        """The audit records (JSON lines), oldest first; [] if nothing was audited yet."""
        if not self.audit_path.exists():
            return []
        return [json.loads(line) for line in self.audit_path.read_text(encoding="utf-8").splitlines()]

    @property
    def hostname_path(self) -> Path:
        return self.state_dir / "hostname"

    def stored_hostname(self) -> str | None:
        """What the file backend holds (None: never set, the default "EMS" applies)."""
        if not self.hostname_path.exists():
            return None
        return self.hostname_path.read_text(encoding="utf-8").strip()

    @property
    def history_path(self) -> Path:
        return self.state_dir / "history"



@pytest.fixture
def user(shell_exe: Path) -> Iterator[ApplianceUser]:
    """A real OS account whose login shell is appliance-shell (for the SSH and serial-console tests)."""
    from tests.sshd import appliance_user

    with appliance_user(shell_exe) as account:
        yield account

@pytest.fixture
def appliance(shell_exe: Path, tmp_path: Path) -> Appliance:
    return Appliance(shell_exe, tmp_path)


# --- a minimal terminal emulator ------------------------------------------------------------------

_CSI = re.compile(r"\x1b\[([0-9;?<=>]*)([ -/]*)([@-~])")
_OSC = re.compile(r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")


class Screen:
    """Just enough of an xterm to follow prompt_toolkit and plain output.

    Handles printable text, CR/LF/BS/TAB, cursor moves (A B C D E F G H d), erase (J K) and the
    autowrap mode; ignores colours, other modes and OSC strings. Lines that scroll off the top are
    kept in ``scrollback`` so nothing printed is lost to a test.
    """

    def __init__(self, rows: int = ROWS, cols: int = COLS) -> None:
        self.rows, self.cols = rows, cols
        self.lines = [[" "] * cols for _ in range(rows)]
        self.scrollback: list[str] = []
        self.row = self.col = 0
        self.autowrap = True
        self._pending = ""

    # text views
    def line_text(self, row: int) -> str:
        return "".join(self.lines[row]).rstrip()

    def cursor_line(self) -> str:
        """The cursor's line up to the cursor at least (so a prompt's trailing blank counts)."""
        text = "".join(self.lines[self.row])
        return text[: max(len(text.rstrip()), self.col)]

    def all_lines(self) -> list[str]:
        return [*self.scrollback, *(self.line_text(r) for r in range(self.rows))]

    def text(self) -> str:
        return "\n".join(self.all_lines())

    @property
    def abs_row(self) -> int:
        return len(self.scrollback) + self.row

    # input
    def feed(self, data: str) -> None:
        data = self._pending + data
        self._pending = ""
        i, n = 0, len(data)
        while i < n:
            ch = data[i]
            if ch == "\x1b":
                if i + 1 >= n:
                    self._pending = data[i:]
                    return
                if data[i + 1] == "[":
                    match = _CSI.match(data, i)
                    if match is None:
                        if re.fullmatch(r"\x1b\[[0-9;?<=>]*[ -/]*", data[i:]):
                            self._pending = data[i:]  # split across reads
                            return
                        i += 2
                        continue
                    self._csi(match.group(1), match.group(3))
                    i = match.end()
                    continue
                if data[i + 1] == "]":
                    match = _OSC.match(data, i)
                    if match is None:
                        self._pending = data[i:]
                        return
                    i = match.end()
                    continue
                i += 2  # ESC 7, ESC =, ...: nothing that moves text
                continue
            if ch == "\r":
                self.col = 0
            elif ch == "\n":
                self._linefeed()
            elif ch == "\b":
                self.col = max(0, self.col - 1)
            elif ch == "\t":
                self.col = min(self.cols - 1, (self.col // 8 + 1) * 8)
            elif ch >= " " and ch != "\x7f":
                self._put(ch)
            i += 1

    def _put(self, ch: str) -> None:
        if self.col >= self.cols:
            if self.autowrap:
                self.col = 0
                self._linefeed()
            else:
                self.col = self.cols - 1
        self.lines[self.row][self.col] = ch
        self.col += 1

    def _linefeed(self) -> None:
        if self.row == self.rows - 1:
            self.scrollback.append(self.line_text(0))
            del self.lines[0]
            self.lines.append([" "] * self.cols)
        else:
            self.row += 1

    def _csi(self, params: str, final: str) -> None:
        private = params.startswith("?")
        nums = [int(p) if p.isdigit() else 0 for p in params.lstrip("?<=>").split(";")] if params else []
        first = nums[0] if nums else 0
        count = first or 1
        if private:
            if final in "hl" and 7 in nums:
                self.autowrap = final == "h"
            return
        if final == "A":
            self.row = max(0, self.row - count)
        elif final == "B":
            self.row = min(self.rows - 1, self.row + count)
        elif final == "C":
            self.col = min(self.cols - 1 if self.col < self.cols else self.cols, self.col + count)
        elif final == "D":
            self.col = max(0, min(self.col, self.cols - 1) - count)
        elif final == "E":
            self.row, self.col = min(self.rows - 1, self.row + count), 0
        elif final == "F":
            self.row, self.col = max(0, self.row - count), 0
        elif final == "G":
            self.col = min(self.cols - 1, count - 1)
        elif final == "d":
            self.row = min(self.rows - 1, count - 1)
        elif final in "Hf":
            row = nums[0] if nums else 1
            col = nums[1] if len(nums) > 1 else 1
            self.row = min(self.rows - 1, max(row, 1) - 1)
            self.col = min(self.cols - 1, max(col, 1) - 1)
        elif final == "J":
            if first == 0:
                self.lines[self.row][self.col :] = [" "] * (self.cols - self.col)
                for r in range(self.row + 1, self.rows):
                    self.lines[r] = [" "] * self.cols
            elif first == 1:
                for r in range(self.row):
                    self.lines[r] = [" "] * self.cols
                self.lines[self.row][: self.col + 1] = [" "] * (self.col + 1)
            else:
                self.lines = [[" "] * self.cols for _ in range(self.rows)]
        elif final == "K":
            if first == 0:
                self.lines[self.row][self.col :] = [" "] * (self.cols - self.col)
            elif first == 1:
                self.lines[self.row][: self.col + 1] = [" "] * (self.col + 1)
            else:
                self.lines[self.row] = [" "] * self.cols
        # m (colours), h/l (modes), n, r, ...: no effect on the text


class Terminal:
    """The shell in a pseudo-terminal, seen through a :class:`Screen`."""

    def __init__(self, child: pexpect.spawn, appliance: Appliance) -> None:
        self.child = child
        self.appliance = appliance
        self.screen = Screen()
        self.raw: list[str] = []
        self.exited = False
        self._mark = 0

    # reading
    def _pump(self, wait_s: float) -> None:
        try:
            data = self.child.read_nonblocking(65536, timeout=wait_s)
        except pexpect.TIMEOUT:
            return
        except pexpect.EOF:
            self.exited = True
            return
        self.raw.append(data)
        self.screen.feed(data)

    def wait(self, predicate: Callable[[], bool], what: str, timeout: float = TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.exited:
                raise AssertionError(f"the shell exited while waiting for {what}\n{self.dump()}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{self.dump()}")
            self._pump(min(left, 0.2))

    def settle(self, quiet_s: float = 0.3) -> None:
        """Read until nothing new arrives for ``quiet_s`` (redraws after a key are finished)."""
        before = -1
        while before != len(self.raw) and not self.exited:
            before = len(self.raw)
            self._pump(quiet_s)

    def dump(self) -> str:
        lines = self.screen.all_lines()
        last = len(self.screen.scrollback) + self.screen.row
        shown = "\n".join(f"| {line}" for line in lines[max(0, last - 30) : last + 2])
        return f"--- screen (cursor row {self.screen.row} col {self.screen.col}) ---\n{shown}"

    # what is on the screen
    def mark(self) -> None:
        """Later ``wait_text`` calls only look at lines from the cursor's line onwards."""
        self._mark = self.screen.abs_row

    def since_mark(self) -> str:
        return "\n".join(self.screen.all_lines()[self._mark :])

    def wait_text(self, text: str, timeout: float = TIMEOUT_S) -> None:
        self.wait(lambda: text in self.since_mark(), repr(text), timeout)

    def wait_line(self, expected: str, timeout: float = TIMEOUT_S) -> None:
        """Wait until the cursor's line reads exactly ``expected`` (prompt included)."""
        self.wait(lambda: self.screen.cursor_line() == expected,
                  f"the cursor line to read {expected!r}", timeout)

    def wait_prompt(self, hostname: str = "EMS", timeout: float = TIMEOUT_S) -> None:
        """Wait for a fresh, empty prompt ``HOSTNAME $ `` with the cursor right after it."""
        prompt = f"{hostname} $ "
        self.wait(
            lambda: self.screen.cursor_line() == prompt and self.screen.col == len(prompt),
            f"the prompt {prompt!r}",
            timeout,
        )

    # typing
    def send(self, keys: str) -> None:
        self.child.send(keys)

    def run(self, line: str, hostname: str = "EMS") -> str:
        """Type ``line`` and Enter at a fresh prompt; wait for the next prompt; return what was shown."""
        self.mark()
        self.send(line + "\r")
        self.wait(lambda: self.screen.abs_row > self._mark, "the line to be accepted")
        self.wait_prompt(hostname)
        lines = self.screen.all_lines()[self._mark + 1 : self.screen.abs_row]
        return "\n".join(lines)

    def wait_exit(self, timeout: float = TIMEOUT_S) -> int | None:
        self.wait(lambda: self.exited, "the shell to exit", timeout)
        self.child.close()
        return self.child.exitstatus

    def state(self) -> str:
        """The process state letter from /proc (R, S, T = stopped, ...)."""
        stat = Path(f"/proc/{self.child.pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0]


@pytest.fixture
def terminal(appliance: Appliance) -> Iterator[Callable[..., Terminal]]:
    """A factory: ``terminal()`` starts the shell in a pseudo-terminal (40x120) and waits for the prompt."""
    started: list[Terminal] = []

    def start(env: Mapping[str, str] | None = None, wait_prompt: bool = True) -> Terminal:
        child = pexpect.spawn(
            str(appliance.exe),
            ["--config", str(appliance.config)],
            env=appliance.env(env),
            cwd=str(appliance.root),
            dimensions=(ROWS, COLS),
            encoding="utf-8",
            codec_errors="replace",
            timeout=TIMEOUT_S,
        )
        child.delaybeforesend = None
        term = Terminal(child, appliance)
        started.append(term)
        if wait_prompt:
            term.wait_prompt()
        return term

    yield start
    for term in started:
        if term.child.isalive():
            term.child.kill(signal.SIGKILL)
        term.child.close(force=True)
