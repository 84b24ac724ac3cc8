"""Bounded terminal input for the REPL: a pasted text is never held whole.

prompt_toolkit's VT100 parser keeps a bracketed paste in one growing string until its end mark arrives
and searches the whole string for that mark after every chunk: a 100 MB paste costs 100 MB (several
times over) and quadratic time. :class:`BoundedParser` takes the paste out of its hands: it finds the
start and end marks itself, keeps at most ``limit + 1`` characters of what lies between, counts the
rest, and hands the paste on as one ``BracketedPaste`` key press with the real length recorded in
:attr:`BoundedParser.last_paste_length`. Everything else goes to prompt_toolkit's parser unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

from prompt_toolkit.input.vt100_parser import Vt100Parser
from prompt_toolkit.key_binding.key_processor import KeyPress
from prompt_toolkit.keys import Keys

START, END = "\x1b[200~", "\x1b[201~"


def _partial_mark(data: str, mark: str) -> int:
    """How many characters at the end of ``data`` could be the start of ``mark`` (split across reads)."""
    for size in range(min(len(mark) - 1, len(data)), 0, -1):
        if data.endswith(mark[:size]):
            return size
    return 0


class BoundedParser(Vt100Parser):
    """A :class:`Vt100Parser` whose bracketed pastes are bounded to ``limit + 1`` characters."""

    def __init__(self, feed_key_callback: Callable[[KeyPress], None], limit: int) -> None:
        super().__init__(feed_key_callback)
        self.limit = limit
        self.last_paste_length = 0
        self._pasting = False
        self._kept: list[str] = []
        self._kept_size = 0
        self._length = 0
        self._held = ""  # the end of the last chunk, when it may be the start of a mark

    def feed(self, data: str) -> None:
        data, self._held = self._held + data, ""
        while data:
            mark = END if self._pasting else START
            at = data.find(mark)
            if at < 0:
                hold = _partial_mark(data, mark)
                self._pass(data[: len(data) - hold])
                self._held = data[len(data) - hold :]
                return
            self._pass(data[:at])
            data = data[at + len(mark) :]
            if self._pasting:
                self._end_paste()
            else:
                self._pasting, self._kept, self._kept_size, self._length = True, [], 0, 0

    def flush(self) -> None:
        # A lone ESC (the Escape key) may be held back as the possible start of a paste mark.
        if self._held and not self._pasting:
            held, self._held = self._held, ""
            super().feed(held)
        super().flush()

    def _pass(self, data: str) -> None:
        if not data:
            return
        if not self._pasting:
            super().feed(data)
            return
        self._length += len(data)
        room = self.limit + 1 - self._kept_size
        if room > 0:
            self._kept.append(data[:room])
            self._kept_size += min(room, len(data))

    def _end_paste(self) -> None:
        self._pasting = False
        self.last_paste_length = self._length
        text, self._kept = "".join(self._kept), []
        self.feed_key_callback(KeyPress(Keys.BracketedPaste, text))
