import io
import json
from datetime import UTC, datetime

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
