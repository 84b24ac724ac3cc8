from appliance.shell.help import candidates, command_help, completions, context_help, help_text
from tests.unit.fakes import registry


def texts(line: str) -> list[str]:
    return [c.text for c in completions(registry(), line)[0]]


def test_top_level_completion():
    assert texts("") == ["ha", "redirect"]
    assert texts("h") == ["ha"]
    assert texts("ha ") == ["get", "set"]
    assert texts("ha g") == ["get"]


def test_flag_completion_in_both_spellings_and_without_repeats():
    assert texts("redirect --db") == ["--db_host", "--db_port", "--db_pass"]
    assert texts("redirect --db-h") == ["--db_host"]
    assert "--db_host" not in texts("redirect --db_host h ")
    assert texts("redirect --is") == ["--is_primary_node", "--is_secondary_node"]


def test_choice_values_complete_after_their_flag_and_positionally():
    assert texts("ha set mode ") == ["auto", "manual", "--yes"]
    assert texts("ha set mode m") == ["manual"]
    found, _ = candidates(registry(), "redirect --db_host h --db_port ")
    assert [c.text for c in found] == ["<PORT[,PORT...]>"]  # shown by ?, never inserted by Tab
    assert texts("redirect --db_host h --db_port ") == []


def test_unknown_word_stops_completion():
    assert texts("nope ") == []


def test_context_help_lists_what_may_come_next_with_summaries():
    text = context_help(registry(), "ha ")
    assert "get" in text and "show HA state" in text and "set" in text


def test_context_help_shows_enter_when_command_is_complete():
    assert "<Enter>" in context_help(registry(), "ha get nodes ")
    assert "<Enter>" not in context_help(registry(), "redirect --db_host h ")
    assert "<Enter>" in context_help(registry(), "redirect --db_host h --is_primary_node ")


def test_context_help_on_nonsense():
    assert "no match" in context_help(registry(), "zzz ")


def test_help_lists_all_commands_and_details_one():
    text = help_text(registry())
    assert "ha get nodes" in text and "redirect" in text
    detail = command_help(registry().find(("redirect",)).command)
    assert "usage: redirect --db_host" in detail and "exactly one of: --is_primary_node" in detail
    assert "Do you want to continue? (y/n)" in detail
    assert "ha set mode" in help_text(registry(), ("ha",)) and "ha get nodes" in help_text(registry(), ("ha",))


def test_help_shows_a_tuple_default_as_the_user_would_type_it():
    text = command_help(registry().find(("redirect",)).command)
    assert "default 5432" in text and "(5432,)" not in text


def test_node_names_are_offered_after_switchover_to_from_the_agents_status_file(tmp_path):
    """Tab after ``ha switchover --to``: the names the agent last wrote, read only when asked; nothing
    without a configuration (start-up), nothing from a broken file, never an invalid name."""
    import json

    from appliance.config import Config, with_state_dir
    from commands import build_registry

    real = build_registry()
    config = with_state_dir(Config(), tmp_path)
    status = tmp_path / "agent-status.json"
    line = "ha switchover --to "
    assert completions(real, line, config)[0] == []  # no agent has written anything yet
    status.write_text(json.dumps({"nodes": ["EMS-2", "EMS-1", "bad\x1b]0;x\x07", 7]}))
    assert [c.text for c in completions(real, line, config)[0]] == ["EMS-1", "EMS-2"]
    assert [c.text for c in completions(real, line + "EMS-2"[:4], config)[0]] == ["EMS-1", "EMS-2"]
    assert [c.text for c in completions(real, "ha switchover --to E", config)[0]] == ["EMS-1", "EMS-2"]
    assert "EMS-1" in context_help(real, line, config)
    assert completions(real, line)[0] == []  # without a configuration: nothing looked up
    status.write_text("{not json")
    assert completions(real, line, config)[0] == []
