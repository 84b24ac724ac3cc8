import io
import json
from datetime import UTC, datetime

import pytest

from appliance.errors import UsageError
from appliance.shell.render import render, render_error, to_json
from appliance.shell.result import Result, Table

NODES = Table("nodes", ("Name", "Last Seen"), (("EMS-1 (*)", datetime(2026, 11, 22, 22, 5, 3, 874703, tzinfo=UTC)),),
              title="Node(s):")


def text_of(result: Result, as_json: bool = False) -> str:
    out = io.StringIO()
    render(result, out, as_json=as_json)
    return out.getvalue()


def test_table_text_has_title_headers_and_rows():
    text = text_of(Result(tables=(NODES,)))
    assert text.startswith("Node(s):\n")
    assert "Name" in text and "EMS-1 (*)" in text and "2026-11-22 22:05:03.874703" in text


def test_empty_table_says_none():
    assert "(none)" in text_of(Result(tables=(Table("x", ("A",), ()),)))


def test_json_is_one_document_with_snake_case_keys():
    doc = json.loads(text_of(Result(fields=(("Hardware ID", "HW-1"),), tables=(NODES,)), as_json=True))
    assert doc == {"hardware_id": "HW-1",
                   "nodes": [{"name": "EMS-1 (*)", "last_seen": "2026-11-22T22:05:03.874703+00:00"}]}


def test_json_prefers_explicit_data():
    assert to_json(Result(message="EMS", data={"hostname": "EMS"})) == {"hostname": "EMS"}


def test_fields_align_and_none_is_a_dash():
    text = text_of(Result(fields=(("Version", "1"), ("Hardware ID", None))))
    assert text == "Version     : 1\nHardware ID : -\n"


def test_error_and_hint_lines():
    err = io.StringIO()
    render_error(UsageError("bad thing", hint="do this"), err)
    assert err.getvalue() == "error: bad thing\nhint: do this\n"


def test_ctrl_c_while_printing_is_thrown_into_the_producer():
    from appliance.errors import ExitStatus
    from appliance.shell.render import render_stream
    from appliance.shell.result import Stream

    cleaned = []

    def producer():
        try:
            yield "one"
            yield "two"
        except KeyboardInterrupt:
            cleaned.append(True)
            yield "rolled back"
            raise

    class Flaky(io.StringIO):
        calls = 0

        def write(self, text):
            self.calls += 1
            if self.calls == 1:
                raise KeyboardInterrupt
            return super().write(text)

    out = Flaky()
    try:
        render_stream(Stream(producer(), lambda: ExitStatus.OK), out)
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("the interrupt must come back out")
    assert cleaned == [True] and out.getvalue() == "rolled back\n"


# --- nothing printed raw ---------------------------------------------------------------------------

HOSTILE = "EMS\x1b]0;owned\x07\x1b]52;c;cm0gLXJm\x07\nforged | row\u202e"


def test_table_cells_and_headers_are_escaped_and_a_newline_forges_no_row():
    table = Table("nodes", ("Name\x1b[31m", "Role"), ((HOSTILE, "primary"), ("EMS-2", "standby")), title="N\x07:")
    text = text_of(Result(tables=(table,)))
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert "\\x1b]0;owned\\x07" in text and "\\u202e" in text and "N\\x07:" in text
    assert len(text.splitlines()) == 1 + 2 + 2  # title, header and rule, two rows: no forged row


def test_fields_and_messages_are_escaped_messages_keep_their_own_newlines():
    text = text_of(Result(message="Line one\nnode " + HOSTILE, fields=(("Hostname", HOSTILE),)))
    assert "\x1b" not in text and "\u202e" not in text
    assert text.startswith("Line one\nnode EMS\\x1b]0;owned")


def test_errors_from_the_server_are_one_line_and_escaped():
    err = io.StringIO()
    render_error(UsageError(f"server said: {HOSTILE}", hint="retry\x1b[2J"), err, where="line 3")
    lines = err.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: line 3: server said: EMS\\x1b]0;owned")
    assert lines[1] == "hint: retry\\x1b[2J"
    assert "\x1b" not in err.getvalue()


def test_streamed_lines_from_a_child_are_escaped():
    from appliance.errors import ExitStatus
    from appliance.shell.render import render_stream
    from appliance.shell.result import Stream

    out = io.StringIO()
    render_stream(Stream(iter(["64 bytes from \x1b]2;x\x07", "\r\x1b[1Aok"]), lambda: ExitStatus.OK), out)
    assert out.getvalue() == "64 bytes from \\x1b]2;x\\x07\n\\x0d\\x1b[1Aok\n"


def test_json_escapes_every_control_character_including_del():
    text = text_of(Result(data={"name": HOSTILE + "\x7f\x9b"}), as_json=True)
    assert text.isascii() and "\x7f" not in text and "\x1b" not in text
    assert json.loads(text)["name"] == HOSTILE + "\x7f\x9b"  # the value itself is intact for programs


def test_output_gone_mid_stream_is_a_hang_up_and_the_producer_still_runs_to_its_end(monkeypatch):
    from appliance import interrupts
    from appliance.errors import ExitStatus
    from appliance.shell.render import render_stream
    from appliance.shell.result import Stream

    monkeypatch.setattr(interrupts, "_detach", lambda: None)  # not the test process's own stdout
    monkeypatch.setattr(interrupts._state, "signum", None)
    undone = []

    def producer():
        try:
            yield "step one"
            yield "step two"
        except KeyboardInterrupt:
            yield "rolling back"  # printed nowhere: the output is gone
            undone.append(True)
            raise

    class Gone(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    with pytest.raises(interrupts.HangUp):
        render_stream(Stream(producer(), lambda: ExitStatus.OK), Gone())
    assert undone == [True]
    assert interrupts.received() is not None
