import pytest

from appliance.errors import UsageError
from appliance.shell.tokenize import MAX_LINE, is_comment, split_words


def texts(line: str) -> list[str]:
    return [w.text for w in split_words(line)]


def test_plain_words_split_on_spaces():
    assert texts("  system   get hostname ") == ["system", "get", "hostname"]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("a 'b c'", ["a", "b c"]),
        ('a "b c"', ["a", "b c"]),
        ("a 'it'\"'\"'s'", ["a", "it's"]),
        ('a "x\\"y"', ["a", 'x"y']),
        ('a "x\\ny"', ["a", "x\\ny"]),  # backslash kept before an ordinary character in double quotes
        ("a b\\ c", ["a", "b c"]),
        ("a ''", ["a", ""]),
        ("--db_pass='p=w;$x'", ["--db_pass=p=w;$x"]),
    ],
)
def test_posix_quoting(line, expected):
    assert texts(line) == expected


@pytest.mark.parametrize("char", list(";&|<>$`(){}[]*?~"))
def test_metacharacters_refused_outside_quotes(char):
    with pytest.raises(UsageError) as info:
        split_words(f"execute ping 1.1.1.1{char}x")
    assert "not allowed outside quotes" in info.value.message
    assert info.value.hint


@pytest.mark.parametrize("char", list(";&|<>$`(){}[]*?~#"))
def test_metacharacters_are_plain_text_inside_quotes(char):
    assert texts(f"a 'x{char}y' \"x{char}y\"") == ["a", f"x{char}y", f"x{char}y"]


def test_hash_at_word_start_is_refused_but_inside_a_word_is_text():
    with pytest.raises(UsageError):
        split_words("a #b")
    assert texts("a b#c") == ["a", "b#c"]


@pytest.mark.parametrize("char", ["\n", "\r", "\t", "\x00", "\x1b", "\x7f", "\x85", "\x9b"])
def test_control_characters_refused_even_inside_quotes(char):
    with pytest.raises(UsageError) as info:
        split_words(f"a 'x{char}y'")
    assert f"U+{ord(char):04X}" in info.value.message


def test_overlong_line_refused():
    with pytest.raises(UsageError, match="too long"):
        split_words("a" * (MAX_LINE + 1))


@pytest.mark.parametrize("line", ["a 'b", 'a "b', "a b\\"])
def test_unterminated_quotes_refused_but_tolerated_when_partial(line):
    with pytest.raises(UsageError):
        split_words(line)
    assert split_words(line, partial=True)[0].text == "a"


def test_quoted_flag_is_marked_quoted():
    words = split_words("x '--count' --yes")
    assert [w.quoted for w in words] == [False, True, False]


def test_comments():
    assert is_comment("  # note")
    assert not is_comment("system get hostname # note")
