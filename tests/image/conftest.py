"""The appliance image, built once per test session by ``image/build.sh`` (slow: about 1.5 min).

``APPLIANCE_IMAGE_OUT=DIR`` builds into DIR and keeps it; if DIR already holds a finished build
(``build.env`` and ``rootfs/``), it is reused as it is (for iterating on the tests; rebuild by
removing DIR). Without it the build goes to pytest's temporary directory and is removed at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD_SH = REPO / "image" / "build.sh"
BUILD_TIMEOUT_S = 1800
APT_TIMEOUT_S = 600

# Durations shown at the end of the run (build, boot to ready, ...).
TIMINGS: dict[str, str] = {}


@dataclass(frozen=True)
class Image:
    out: Path
    rootfs: Path
    ext4: Path
    env: dict[str, str]


def ensure_tool(program: str, package: str) -> str | None:
    """None if ``program`` is there (installed with apt-get if needed), else why not."""
    if shutil.which(program):
        return None
    if not shutil.which("apt-get"):
        return f"{program} is missing and there is no apt-get to install {package}"
    done = subprocess.run(["apt-get", "install", "-y", "-qq", package], capture_output=True, text=True,
                          timeout=APT_TIMEOUT_S, check=False, stdin=subprocess.DEVNULL)
    if done.returncode != 0 or not shutil.which(program):
        return f"{program} is missing and `apt-get install {package}` failed: {done.stderr.strip()[-300:]}"
    return None


def unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "the image build needs root (mmdebstrap --mode=root, chroot, mke2fs -d)"
    if not Path("/etc/apt/sources.list.d/debian.sources").exists() and not os.environ.get("IMAGE_APT_SOURCES"):
        return "no Debian sources file (/etc/apt/sources.list.d/debian.sources or $IMAGE_APT_SOURCES)"
    return ensure_tool("mmdebstrap", "mmdebstrap")


def read_env(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key: value for key, value in pairs}


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Image]:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    keep = os.environ.get("APPLIANCE_IMAGE_OUT")
    out = Path(keep) if keep else tmp_path_factory.mktemp("image")
    if not ((out / "build.env").exists() and (out / "rootfs" / "etc").is_dir()):
        started = time.monotonic()
        done = subprocess.run([str(BUILD_SH), str(out)], capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
                              check=False, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            pytest.fail(f"image/build.sh failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        TIMINGS["image build (image/build.sh)"] = f"{time.monotonic() - started:.1f} s"
    env = read_env(out / "build.env")
    TIMINGS["build phases"] = (f"wheels {env.get('WHEELS_S')} s, rootfs {env.get('ROOTFS_S')} s, "
                               f"ext4 {env.get('EXT4_S')} s; rootfs {env.get('ROOTFS_MB')} MB")
    yield Image(out, out / "rootfs", out / "rootfs.ext4", env)
    if not keep:
        subprocess.run(["rm", "-rf", "--one-file-system", str(out)], check=False, timeout=300)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TIMINGS:
        terminalreporter.section("appliance image timings")
        for what, value in TIMINGS.items():
            terminalreporter.write_line(f"{what}: {value}")
