"""Root writes the key and the credential set as the agent's user (``as_owner``): real files, real ids.

The agent's user is ``appliance-agent`` on the appliance; here ``nobody`` stands in for it (creating a
user on the test machine is not ours to do). Skipped unless run as root, which CI is.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance import credentials
from appliance.config import Config, CredentialsConfig, PathsConfig
from appliance.credentials.owner import as_owner
from appliance.secrets import CredentialError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (it changes the effective uid)")


@pytest.fixture
def base() -> Iterator[Path]:
    """A directory the other user can reach (pytest's tmp_path sits under a 0700 directory)."""
    path = Path(tempfile.mkdtemp(prefix="credowner-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _config(base: Path) -> Config:
    agent = base / "agent"  # like /var/lib/appliance-agent: not there before the first write
    return Config(paths=PathsConfig(state_dir=base / "state"),
                  credentials=CredentialsConfig(dir=agent / "credentials", key_dir=agent / "key"))


def test_root_writes_the_set_as_the_agent_user_who_alone_can_read_it(base: Path) -> None:
    tmp_path = base
    config = _config(tmp_path)
    nobody = pwd.getpwnam("nobody")
    with as_owner(config, "nobody") as owner:
        backend = credentials.backend_for(config)
        backend.initialise()
        backend.write_set({"origin": {"password": "s3cret-value"}, "agent": {"password": "s3cret-value"}})
    assert owner == "nobody" and os.geteuid() == 0 and os.getegid() == 0  # back to root
    owners = {p.stat().st_uid for p in (tmp_path / "agent").rglob("*")} | {(tmp_path / "agent").stat().st_uid}
    assert owners == {nobody.pw_uid}
    assert (tmp_path / "agent").stat().st_mode & 0o777 == 0o700
    with pytest.raises(CredentialError, match="owned by uid"):  # root itself is refused: not the owner
        credentials.backend_for(config).read_set()
    probe = ("import sys\nfrom pathlib import Path\nfrom appliance.credentials.file import FileCredentialBackend\n"
             f"b = FileCredentialBackend(Path({str(config.credentials_dir)!r}), Path({str(config.key_dir)!r}))\n"
             "print(b.read_set()['agent']['password'] == 's3cret-value')")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False,
                          user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[], cwd="/")
    assert done.stdout.strip() == "True", done.stderr


def test_without_that_user_or_without_root_nothing_changes(tmp_path: Path) -> None:
    config = _config(tmp_path)
    with as_owner(config, "no-such-user-here") as owner:
        assert owner is None and os.geteuid() == 0
    assert not (tmp_path / "agent").exists()
