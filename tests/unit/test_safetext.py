"""The one sanitiser: every character a terminal could act on becomes a visible escape."""

import pytest

from appliance.safetext import is_safe, safe

OSC_TITLE = "\x1b]0;owned\x07"
OSC_CLIPBOARD = "\x1b]52;c;cm0gLXJmIH4=\x1b\\"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (OSC_TITLE, "\\x1b]0;owned\\x07"),
        (OSC_CLIPBOARD, "\\x1b]52;c;cm0gLXJmIH4=\\x1b\\"),
        ("row\nforged | row", "row\\x0aforged | row"),
        ("a\rb\bc\td\x00e\x7f", "a\\x0db\\x08c\\x09d\\x00e\\x7f"),
        ("\x9b31m\x9d0;x\x9c", "\\x9b31m\\x9d0;x\\x9c"),  # one-byte CSI, OSC, ST
        ("admin\u202etxt.exe", "admin\\u202etxt.exe"),  # Trojan Source
        ("\u2066\u2069\u202a\u202d", "\\u2066\\u2069\\u202a\\u202d"),  # isolates, embeddings
        ("line\u2028sep\u2029", "line\\u2028sep\\u2029"),
        ("bad \udcff\udcfe utf-8", "bad \\udcff\\udcfe utf-8"),  # invalid UTF-8 read with surrogateescape
        ("zero\u200bwidth\ufeff", "zero\\u200bwidth\\ufeff"),
        ("EMS-1 ü € 日本", "EMS-1 ü € 日本"),  # ordinary text is left alone
    ],
)
def test_unsafe_characters_become_visible_escapes(raw, shown):
    assert safe(raw) == shown
    assert is_safe(shown) and is_safe(raw) == (raw == shown)


def test_newlines_kept_only_when_asked_and_nothing_else():
    assert safe("a\nb\x1b[2J", newlines=True) == "a\nb\\x1b[2J"
    assert safe("a\r\nb", newlines=True) == "a\\x0d\nb"
    assert safe("a\nb") == "a\\x0ab"


def test_output_can_always_be_encoded():
    for text in ("\udcff", "\ud800x", "a\udfffb"):
        safe(text).encode("utf-8")  # no UnicodeEncodeError, whatever came in


def test_printable_text_takes_the_fast_path_safely():
    """safe() returns str.isprintable() text untouched without a regex: that holds only because every
    character it escapes is outside what isprintable() accepts. Checked for every one of them."""
    from appliance.safetext import unsafe_pattern

    escaped = [chr(c) for c in range(0x110000) if unsafe_pattern().match(chr(c))]
    assert len(escaped) > 2000 and not any(ch.isprintable() for ch in escaped)
    assert [ch for ch in escaped if not unsafe_pattern(newlines=True).match(ch)] == ["\n"]
