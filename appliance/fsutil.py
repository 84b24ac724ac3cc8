"""Small file helpers every part of the product shares: atomic replacement and one-word files.

State files (the hostname file, pid files, the fence, the agent's status, the history, a sandbox's
manifest) are replaced atomically so a reader never sees half a file, whatever crashes when. Nothing
here knows what the files mean.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace ``path`` with ``text`` atomically (temp file in the same dir, fsync, rename)."""
    import tempfile  # here, not at import: it pulls in shutil and random, which the shell's start-up never needs

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_first_word(path: Path) -> str | None:
    """The first whitespace-separated word of a small UTF-8 file; None if it is missing, unreadable or blank."""
    try:
        words = path.read_text(encoding="utf-8").split()
    except (OSError, UnicodeDecodeError):
        return None
    return words[0] if words else None
