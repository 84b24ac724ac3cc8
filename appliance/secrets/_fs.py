"""Low-level file operations shared by the keyring and the credential store.

Everything works relative to an open directory file descriptor (``dir_fd``) so that a path component
swapped for a symlink between two calls cannot redirect a read or a write. Final components are
opened with ``O_NOFOLLOW``; files are created with ``O_CREAT | O_EXCL`` so an existing file (or a
planted symlink) is never reused.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

# Readers open directories with O_PATH: it needs only search (x) permission, so a service can
# reach its own file through the 0711 directories, and it is enough for *at() calls and fstat.
# Writers (fsync, fchmod, listing) need a real descriptor, which needs read permission.
_PATH_DIR_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO planted in place of a file must not hang the reader; fstat rejects it.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

# Errors meaning "a symlink or a non-directory sits where we expected our own object".
SYMLINK_ERRNOS = frozenset({errno.ELOOP, errno.ENOTDIR})


def open_dir(path: str, *, dir_fd: int | None = None, readable: bool = False) -> int:
    """Open a directory without following a symlink in its last component.

    ``readable=False`` gives an O_PATH descriptor (lookups and fstat only); ``readable=True`` one
    that can also be listed, fsynced and fchmodded.
    """
    return os.open(path, _READ_DIR_FLAGS if readable else _PATH_DIR_FLAGS, dir_fd=dir_fd)


def open_for_read(name: str, *, dir_fd: int) -> int:
    """Open a file for reading, refusing a symlink (``ELOOP``) and never blocking on a FIFO."""
    return os.open(name, _READ_FLAGS, dir_fd=dir_fd)


def read_limited(fd: int, limit: int) -> bytes | None:
    """Read the whole file behind ``fd``; ``None`` if it is longer than ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)


def write_new_file(dir_fd: int, name: str, data: bytes, *, mode: int, gid: int | None = None) -> None:
    """Create ``name`` (it must not exist), set owner group and mode, write ``data``, fsync.

    The file is created 0600 and its group and final mode are set on the descriptor *before* any
    byte is written, so the content is never visible under a wider mode (and the umask cannot
    interfere). On any failure the partial file is removed.
    """
    fd = os.open(name, _CREATE_FLAGS, 0o600, dir_fd=dir_fd)
    try:
        if gid is not None:
            os.fchown(fd, -1, gid)
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            # os.write may write less than asked (signals, some filesystems); loop until done.
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        unlink_quietly(name, dir_fd=dir_fd)
        raise
    os.close(fd)


def replace_symlink(dir_fd: int, link: str, target: str, tmp_name: str) -> None:
    """Atomically point symlink ``link`` at ``target``: create a temporary link, rename it over.

    rename(2) replaces the old link in one step, so a reader sees either the old or the new target.
    The caller fsyncs ``dir_fd`` afterwards to make the switch durable.
    """
    unlink_quietly(tmp_name, dir_fd=dir_fd)  # left over by a writer killed at this very step
    os.symlink(target, tmp_name, dir_fd=dir_fd)
    try:
        os.rename(tmp_name, link, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        unlink_quietly(tmp_name, dir_fd=dir_fd)
        raise


def read_link(name: str, *, dir_fd: int) -> str | None:
    """Return the target of symlink ``name``; ``None`` if it does not exist.

    Raises ``OSError(EINVAL)`` if ``name`` exists but is not a symlink.
    """
    try:
        return os.readlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return None


def unlink_quietly(name: str, *, dir_fd: int) -> None:
    """Remove ``name`` if it exists; cleanup must not mask the error that triggered it."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


def fsync_quietly(fd: int) -> None:
    """fsync on a best-effort path (rollback, cleanup), where a failure must not hide the cause."""
    try:
        os.fsync(fd)
    except OSError:
        pass


@contextmanager
def closing_fd(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def acquire_lock(dir_fd: int, name: str = ".lock") -> int:
    """Take an exclusive flock(2) on ``name`` in ``dir_fd`` (created 0600 if missing); return its fd.

    Closing the returned descriptor releases the lock. flock locks die with the process, so a
    writer killed by SIGKILL never leaves a stale lock behind.
    """
    fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd
