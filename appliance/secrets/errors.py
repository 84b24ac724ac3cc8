"""Errors of the credential store: one class per failure kind, all under :class:`CredentialError`.

Every failure a reader or writer can meet has its own class *and* a :class:`CredentialErrorKind`, so
callers can branch on either (``except CredentialTampered`` or ``err.kind is Kind.TAMPERED``). Each
class also derives from the matching base of :mod:`appliance.errors` (a missing file is
:class:`~appliance.errors.NotConfigured`, a bad mode is :class:`~appliance.errors.PermissionDenied`, ...),
so the shell maps them to messages and exit statuses like any other user-facing error.

Messages are built only from credential names, key ids, paths and errno texts: never from a payload
value, a key, or bytes read from a file. Strings taken from a file header are only echoed when they
match a strict pattern (see :func:`safe_token`).
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Any, ClassVar

from appliance.errors import ApplianceError, NotConfigured, PermissionDenied, UsageError


class CredentialErrorKind(Enum):
    """What went wrong, independent of the exception class (stable strings, usable in logs)."""

    MISSING = "missing"  # no such file / no credential set / no master key
    BAD_PERMISSIONS = "bad-permissions"  # symlink, not a regular file, wrong owner, mode too open
    CORRUPT = "corrupt"  # header or body cannot be parsed
    TAMPERED = "tampered"  # authentication failed under the right, intact key
    UNKNOWN_KEY = "unknown-key"  # the header names a key id the keyring does not hold
    WRONG_KEY = "wrong-key"  # the key file named by the key id does not hold that key any more
    UNSUPPORTED_VERSION = "unsupported-version"  # format version or algorithm this code cannot read
    INVALID_INPUT = "invalid-input"  # bad name, non-JSON payload, bad gid: nothing was written
    WRITE_FAILED = "write-failed"  # a write did not complete; the previous set is still in place
    IO_ERROR = "io-error"  # an unexpected operating-system error while reading


_SAFE = re.compile(r"[A-Za-z0-9_.:+-]{1,64}")


def safe_token(value: object) -> str:
    """Return ``value`` for a message if it is a short plain token read from a header, else ``'?'``.

    Header fields are attacker-controlled text; echoing them verbatim could inject terminal escapes
    or arbitrary text into logs.
    """
    if isinstance(value, bool):
        return "?"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and _SAFE.fullmatch(value):
        return value
    return "?"


class CredentialError(ApplianceError):
    """Base of every credential-store error.

    :param detail: what failed and why, without the credential name or path (those are added).
    :param name: the credential concerned, or ``None`` for store- or keyring-wide errors.
    :param path: the file or directory concerned, if any.
    :param hint: what the user can do; each subclass has a default.
    """

    kind: ClassVar[CredentialErrorKind]
    default_hint: ClassVar[str | None] = None

    def __init__(
        self,
        detail: str,
        *,
        name: str | None = None,
        path: str | None = None,
        hint: str | None = None,
    ) -> None:
        subject = f"credential {name!r}" if name is not None else "credential store"
        message = f"{subject}: {detail}"
        if path is not None:
            message += f" ({path})"
        super().__init__(message, hint if hint is not None else self.default_hint)
        self.detail = detail
        self.name = name
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception's default pickling replays ``args`` positionally, which does not fit the
        # keyword-only signature; rebuild from the fields instead (multiprocessing, logging queues).
        return (_rebuild, (type(self), self.detail, self.name, self.path, self.hint))


def _rebuild(
    cls: type[CredentialError], detail: str, name: str | None, path: str | None, hint: str | None
) -> CredentialError:
    return cls(detail, name=name, path=path, hint=hint)


class CredentialMissing(CredentialError, NotConfigured):
    """The credential file, the credential set or the master key does not exist."""

    kind = CredentialErrorKind.MISSING
    default_hint = "write the credentials again (for example by re-running redirect)"


class CredentialPermissionError(CredentialError, PermissionDenied):
    """A symlink or non-regular file is in place of a credential, or its owner or mode is wrong."""

    kind = CredentialErrorKind.BAD_PERMISSIONS
    default_hint = "check who changed the file; rewrite the credentials rather than fixing modes by hand"


class CredentialCorrupt(CredentialError):
    """The file cannot be parsed: bad magic, bad header, bad encoding, truncated."""

    kind = CredentialErrorKind.CORRUPT
    default_hint = "rewrite the credentials (for example by re-running redirect)"


class CredentialTampered(CredentialError):
    """Authentication failed although the key is the right, intact one: the file was altered,
    renamed, swapped with another credential's file or copied from another set."""

    kind = CredentialErrorKind.TAMPERED
    default_hint = "treat this as a security incident; rewrite the credentials (re-run redirect)"


class UnknownKeyError(CredentialError, NotConfigured):
    """The file names a key id that the keyring does not hold (deleted, retired or foreign)."""

    kind = CredentialErrorKind.UNKNOWN_KEY
    default_hint = "restore the key file, or rewrite the credentials under the current key (re-run redirect)"


class WrongKeyError(CredentialError, NotConfigured):
    """The key file for the file's key id exists but no longer holds that key (replaced, edited,
    truncated): its content does not hash to its key id."""

    kind = CredentialErrorKind.WRONG_KEY
    default_hint = "restore the original key file from backup, or rewrite the credentials (re-run redirect)"


class UnsupportedFormatError(CredentialError):
    """The file uses a format version or algorithm this code cannot read."""

    kind = CredentialErrorKind.UNSUPPORTED_VERSION
    default_hint = "the file was written by another software version; rewrite it with this one"


class InvalidCredentialError(CredentialError, UsageError):
    """The caller passed an invalid name, payload or group: nothing was written."""

    kind = CredentialErrorKind.INVALID_INPUT
    default_hint = "nothing was written; correct the input and try again"


class CredentialWriteError(CredentialError):
    """A write did not complete. The previous credential set (and key) are still the valid ones,
    unless the message says otherwise."""

    kind = CredentialErrorKind.WRITE_FAILED
    default_hint = "fix the cause (for example free disk space) and write the credentials again"


class CredentialIOError(CredentialError):
    """An unexpected operating-system error while reading."""

    kind = CredentialErrorKind.IO_ERROR
    default_hint = "check the disk and the system log"
