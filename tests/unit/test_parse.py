import pytest

from appliance.errors import UsageError
from appliance.shell.parse import parse_words
from appliance.shell.spec import CommandSpec, Param, Registry
from appliance.shell.tokenize import split_words
from tests.unit.fakes import echo, registry


def parse(line: str):
    return parse_words(registry(), split_words(line))


def error(line: str) -> UsageError:
    with pytest.raises(UsageError) as info:
        parse(line)
    return info.value


def test_command_words_and_typed_flags():
    inv = parse("redirect --db_host 10.0.0.1,db2 --db-port 5432,5433 --is_primary_node --yes")
    assert inv.spec.name == "redirect"
    assert inv.args["db_host"] == ("10.0.0.1", "db2")
    assert inv.args["db_port"] == (5432, 5433)
    assert inv.args["is_primary_node"] is True and inv.args["is_secondary_node"] is False
    assert inv.args["retries"] == 1  # default
    assert inv.args["db_pass"] is None  # to be asked for
    assert inv.args.given == {"db_host", "db_port", "is_primary_node", "yes"}


def test_equals_form_and_dash_spelling():
    inv = parse("redirect --db-host=h1 --retries=3 --is-secondary-node")
    assert inv.args["db_host"] == ("h1",) and inv.args["retries"] == 3 and inv.args["is_secondary_node"]


def test_secret_value_may_start_with_dashes():
    assert parse("redirect --db_host h --db_pass --x-- --is_primary_node").args["db_pass"] == "--x--"


def test_unknown_command_suggests_nearest():
    err = error("redriect --db_host h")
    assert err.message == "unknown command 'redriect'" and err.hint == "did you mean 'redirect'?"


def test_unknown_subword_names_the_group():
    err = error("ha gte nodes")
    assert "unknown word 'gte' after 'ha'" in err.message and err.hint == "did you mean 'ha get'?"


def test_incomplete_command_lists_next_words():
    err = error("ha")
    assert err.message == "incomplete command 'ha'" and err.hint == "next: get, set"


def test_abbreviated_command_words_are_not_accepted():
    assert "unknown" in error("ha g nodes").message


def test_flag_prefix_is_an_error_with_the_full_spelling_suggested():
    err = error("redirect --db_h h --is_primary_node")
    assert err.message == "unknown option '--db_h' for 'redirect'" and "--db_host" in (err.hint or "")


def test_single_dash_options_are_refused():
    assert "unknown option '-f'" in error("ha get nodes -f").message


def test_value_validation_names_the_flag_not_the_value():
    err = error("redirect --db_host h --retries 9 --is_primary_node")
    assert err.message == "--retries must be from 0 to 5, got 9"
    err = error("redirect --db_host h --db_pass '' --is_primary_node")
    assert err.message.startswith("--db_pass")


def test_missing_required_and_value():
    assert error("redirect --is_primary_node").message == "'redirect' needs --db_host"
    assert error("redirect --db_host").message == "--db_host needs a value"


def test_one_of_exactly_one():
    assert "exactly one of --is_primary_node or --is_secondary_node" in error("redirect --db_host h").message
    assert "exactly one" in error("redirect --db_host h --is_primary_node --is_secondary_node").message


def test_repeated_flag_and_switch_with_value():
    assert "given twice" in error("redirect --db_host a --db_host b --is_primary_node").message
    assert "takes no value" in error("redirect --db_host a --is_primary_node=1").message


def test_positional_choice_and_extra_words():
    assert parse("ha set mode auto").args["mode"] == "auto"
    assert "must be one of: auto, manual" in error("ha set mode sometimes").message
    assert "unexpected word 'extra'" in error("ha get nodes extra").message


def test_json_added_to_get_commands_and_yes_to_confirmed_ones():
    assert parse("ha get nodes --json").args["json"] is True
    assert "unknown option '--json'" in error("ha set mode auto --json").message
    assert parse("ha set mode auto --yes").args["yes"] is True


def test_non_ascii_command_word_refused():
    err = error("hа get nodes")  # Cyrillic a
    assert "non-ASCII" in err.message


def test_quoted_command_word_is_not_a_command():
    assert "unknown command" in error("'ha' get nodes").message


def test_empty_line():
    assert error("").message == "no command given"


def test_many_positional_collects_words():
    reg = Registry([CommandSpec(("help",), "help", echo, params=(
        Param("command", "words", __import__("appliance.shell.types", fromlist=["Text"]).Text(),
              flag=False, many=True),))])
    inv = parse_words(reg, split_words("help ha get nodes"))
    assert inv.args["command"] == ("ha", "get", "nodes")


def test_registry_rejects_bad_declarations():
    with pytest.raises(ValueError, match="twice"):
        Registry([CommandSpec(("a",), "x", echo), CommandSpec(("a",), "y", echo)])
    with pytest.raises(ValueError, match="no summary"):
        Registry([CommandSpec(("a",), "", echo)])
    with pytest.raises(ValueError, match="one_of"):
        Registry([CommandSpec(("a",), "x", echo, one_of=(("nope",),))])


@pytest.mark.parametrize("line", [
    "redirect --db_host h --db-pass\\ SEKRIT --is_primary_node",  # an escaped space glues the value on
    "redirect --db_host h --db_pass top SEKRIT --is_primary_node",  # a value with a space, unquoted
    "redirect --db_host h --db_pass=top SEKRIT --is_primary_node",
])
def test_a_refused_secret_is_never_echoed_in_the_error(line):
    err = error(line)
    assert "SEKRIT" not in err.message + (err.hint or ""), err.message
    assert "--db_pass" in err.message


def test_fortios_habits_get_the_matching_command():
    reg = registry()
    err = error("get ha nodes")
    assert err.message == "unknown command 'get'" and err.hint == "did you mean: ha get nodes"
    err = error("show ha nodes --json")  # there is no show: the matching get
    assert err.hint == "did you mean: ha get nodes --json"
    assert error("set ha mode auto").hint == "did you mean: ha set mode auto"
    assert error("show nothing here").hint == "type 'help' to list the commands"
    assert reg.find(("get",)) is None
