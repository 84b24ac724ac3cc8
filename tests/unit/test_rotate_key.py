"""`system rotate-key` through the dispatcher, on a real credential store in a temp dir."""

import io
from dataclasses import replace

from appliance.clock import FakeClock
from appliance.config import AuditConfig, Config, with_state_dir
from appliance.db.target import DbTarget
from appliance.node import ActiveTarget, read_targets, write_targets
from appliance.secrets import Keyring
from appliance.shell.context import Context
from appliance.shell.dispatch import Dispatcher
from appliance.shell.env import Env
from commands import build_registry


def test_rotate_key_keeps_the_credentials_readable_under_a_new_key(tmp_path):
    config = replace(with_state_dir(Config(), tmp_path), audit=AuditConfig(target="file"))
    Keyring(config.key_dir).create()
    local = ActiveTarget(DbTarget(("/run/pg",), (5432,), "app", "s3cret 'x'", "appliance"), "appliance",
                         "c1", "primary", local=True)
    write_targets(config, local, local)
    before_key = Keyring(config.key_dir).load_current().key_id
    env = Env(stdin=io.StringIO(), stdout=io.StringIO(), stderr=io.StringIO(), environ={}, clock=FakeClock(),
              stdin_isatty=False, stdout_isatty=False)
    dispatcher = Dispatcher(Context(config, env, build_registry()), "command")
    assert dispatcher.run_line("system rotate-key") == 3  # changes state: needs --yes without a terminal
    assert dispatcher.run_line("system rotate-key --yes") == 0, env.stderr.getvalue()
    after_key = Keyring(config.key_dir).load_current().key_id
    assert after_key != before_key and Keyring(config.key_dir).key_ids() == [after_key]
    assert f"{before_key} -> {after_key}" in env.stdout.getvalue()
    assert read_targets(config) == (local, local)
