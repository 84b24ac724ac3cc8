"""The REPL's input parser: a bracketed paste is kept to a bound, however it arrives."""

from prompt_toolkit.keys import Keys

from appliance.shell.paste import END, START, BoundedParser


def feed(chunks: list[str], limit: int = 10) -> tuple[list[tuple[object, str]], BoundedParser]:
    got: list[tuple[object, str]] = []
    parser = BoundedParser(lambda key: got.append((key.key, key.data)), limit)
    for chunk in chunks:
        parser.feed(chunk)
    parser.flush()
    return got, parser


def test_a_short_paste_arrives_whole_and_typed_keys_around_it_as_keys():
    got, parser = feed(["ab" + START + "x y\nz" + END + "c"])
    assert [data for _key, data in got] == ["a", "b", "x y\nz", "c"]
    assert got[2][0] == Keys.BracketedPaste
    assert parser.last_paste_length == 5


def test_a_huge_paste_is_never_held_whole_and_its_real_length_is_known():
    chunk = "q" * 65536
    got, parser = feed([START] + [chunk] * 1600 + [END])  # 100 MiB, in pieces as a terminal sends it
    [(key, data)] = got
    assert key == Keys.BracketedPaste and data == "q" * 11  # the bound plus one: "too long" is visible
    assert parser.last_paste_length == 65536 * 1600


def test_marks_split_across_reads_are_found():
    text = "ab" + START + "hello" + END + "z"
    for cut in range(len(text)):
        got, _ = feed([text[:cut], text[cut:]])
        assert [data for _key, data in got] == ["a", "b", "hello", "z"], cut


def test_a_lone_escape_is_not_held_back_for_ever():
    got, _ = feed(["\x1b"])
    assert [key for key, _data in got] == [Keys.Escape]
