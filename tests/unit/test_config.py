from pathlib import Path

import pytest

from appliance.config import (
    Config,
    config_path,
    default_config_text,
    load_config,
    parse_config,
    section_keys,
)
from appliance.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "appliance.toml"
    path.write_text(text)
    return path


def test_packaged_default_file_loads_to_the_built_in_defaults(tmp_path):
    config = load_config(write(tmp_path, default_config_text()))
    assert config == Config(source=config.source)


def test_packaged_default_file_documents_every_key():
    text = default_config_text()
    for section, keys in section_keys().items():
        assert f"[{section}]" in text
        for key in keys:
            documented = f"\n{key} = " in text or f"[[{section}.{key}]]" in text
            assert documented, f"{section}.{key} is missing from the default file"


def test_relative_paths_resolve_against_the_file(tmp_path):
    config = load_config(write(tmp_path, '[paths]\nstate_dir = "state"\n'))
    assert config.paths.state_dir == tmp_path.resolve() / "state"
    assert config.paths.history == tmp_path.resolve() / "state" / "history"
    assert config.paths.audit == tmp_path.resolve() / "state" / "audit.log"


def test_config_is_frozen(tmp_path):
    config = load_config(write(tmp_path, ""))
    with pytest.raises(AttributeError):
        config.shell.idle_timeout_s = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[shell]\nidle_timeout_s = -1\n", "shell.idle_timeout_s must be from 0 to 86400"),
        ('[shell]\nidle_timeout_s = "10"\n', "shell.idle_timeout_s must be a whole number"),
        ('[hostname]\nbackend = "magic"\n', "hostname.backend must be one of"),
        ('[credentials]\nbackend = "vault"\n', "credentials.backend must be one of"),
        ("[shell]\ncolour = 1\n", "unknown key shell.colour"),
        ("[nope]\n", "unknown section [nope]"),
        ('[tools]\nping = "ping"\n', "tools.ping must be an absolute path"),
        ('[shell]\nprompt = "{user} $ "\n', "shell.prompt may only use the placeholder {hostname}"),
        ("[shell\n", "not valid TOML"),
    ],
)
def test_errors_name_the_file_and_the_key(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in info.value.message and expected in info.value.message


def test_process_services_are_typed(tmp_path):
    config = load_config(write(tmp_path, '[services]\nbackend = "process"\n'
                               '[[services.process]]\nname = "demo"\ncommand = ["/bin/sleep", "60"]\n'))
    (service,) = config.services.process
    assert service.name == "demo" and service.command == ("/bin/sleep", "60") and service.roles == ("primary",)
    with pytest.raises(ConfigError, match=r"services.process \[0\].command must be a list"):
        load_config(write(tmp_path, '[[services.process]]\nname = "demo"\ncommand = ["sleep"]\n'))


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_config(tmp_path / "absent.toml")


def test_config_path_precedence():
    assert config_path("/a.toml", {"APPLIANCE_CONFIG": "/b.toml"}) == Path("/a.toml")
    assert config_path(None, {"APPLIANCE_CONFIG": "/b.toml"}) == Path("/b.toml")
    assert config_path(None, {}) == Path("/etc/appliance/appliance.toml")


def test_parse_config_without_a_file():
    assert parse_config({}, None, Path("/")).shell.idle_timeout_s == 900


def test_ha_section_is_typed_and_checked_against_the_interval(tmp_path):
    config = load_config(write(tmp_path, "[ha]\nkeepalive_interval_s = 4\nstatement_timeout_s = 1.5\n"))
    assert (config.ha.keepalive_interval_s, config.ha.statement_timeout_s) == (4, 1.5)
    for text, expected in (
        ("[ha]\nkeepalive_interval_s = 0\n", "ha.keepalive_interval_s must be from 1 to 30"),
        ("[ha]\nstatement_timeout_s = 9\n", "ha.statement_timeout_s must be from 0 to 5"),
        # A renewal slower than I/2 must count as failed: both values are named in one line.
        ("[ha]\nkeepalive_interval_s = 2\nstatement_timeout_s = 1.5\n",
         "ha.statement_timeout_s must be at most half of the keepalive interval (2 s / 2 = 1 s), got 1.5 s "
         "(ha.keepalive_interval_s = 2)"),
    ):
        path = write(tmp_path, text)
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert expected in info.value.message and "\n" not in info.value.message
