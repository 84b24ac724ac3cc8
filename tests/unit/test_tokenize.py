import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.errors import UsageError
from appliance.shell.tokenize import MAX_LINE, is_comment, scan_words, split_words


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


@pytest.mark.parametrize(
    ("char", "says"),
    [("\udcff", "invalid UTF-8 (byte 0xFF) at position 4"), ("\u202e", "U+202E at position 4"),
     ("\u2028", "U+2028"), ("\u2066", "U+2066"), ("\ufeff", "U+FEFF"), ("\u200b", "U+200B")],
)
def test_invalid_utf8_bidi_controls_and_separators_refused_by_position(char, says):
    with pytest.raises(UsageError) as info:
        split_words(f"abc{char}def")
    assert says in info.value.message
    assert char not in info.value.message and char not in (info.value.hint or "")


@given(st.text(alphabet=st.sampled_from(list("ab -'\"\\=\u00a0é")), max_size=40))
def test_scan_words_cuts_exactly_where_the_parser_does(line):
    """The masker's words are the parser's: same text, same quoting, same spans, for every line the
    parser accepts; and any line at all can be scanned."""
    scanned = scan_words(line)
    try:
        parsed = split_words(line)
    except UsageError:
        return
    assert scanned == parsed
    for word in scanned:  # a span is exactly its word: scanned alone, it gives the same word back
        alone = scan_words(line[word.start : word.end])
        assert [(w.text, w.quoted, w.end) for w in alone] == [(word.text, word.quoted, word.end - word.start)]


def test_scan_words_never_refuses():
    words = scan_words("a;b $(x) 'open \x1b[2J")
    assert [w.text for w in words] == ["a;b", "$(x)", "open \x1b[2J"]
