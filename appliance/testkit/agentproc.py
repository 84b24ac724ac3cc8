"""One ``appliance-agent`` process with its control socket, for tests and benches of the socket path.

Started as a real process of this venv with a clean environment, its log in a file; ``stop`` sends
SIGTERM and waits (then SIGKILL), so nothing is left running.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def add_control_socket(config_path: Path, socket_path: Path, *, users: tuple[str, ...] = ("ems", "root"),
                       timeout_s: float | None = None) -> None:
    """Append an ``[agent]`` section to a node's configuration file."""
    text = f'\n[agent]\ncontrol_socket = "{socket_path}"\ncontrol_users = {list(users)!r}\n'.replace("'", '"')
    if timeout_s is not None:
        text += f"request_timeout_s = {timeout_s}\n"
    with config_path.open("a", encoding="utf-8") as out:
        out.write(text)


class AgentProcess:
    def __init__(self, config_path: Path, socket_path: Path, log: Path) -> None:
        self.socket_path = socket_path
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen([str(BIN / "appliance-agent"), "--config", str(config_path)],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
                                         env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
        deadline = time.monotonic() + 20
        while not socket_path.is_socket():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the agent did not open {socket_path}: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.02)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
