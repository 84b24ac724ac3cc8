"""The payload holder :class:`Credential` and the rules for credential names.

A credential is a named JSON object (``dict`` of ``str`` to JSON values: host list, port list,
user, password, database...). The DB layer maps it to its own types. The holder is a read-only
``Mapping`` whose ``repr()``/``str()`` show the field *names* only, so logging a credential, putting
it in an f-string or seeing it in a traceback's locals never reveals a value.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from appliance.secrets.errors import InvalidCredentialError

# Names become file names: a leading alphanumeric excludes ".", ".." and hidden files (the store's
# own bookkeeping entries all start with a dot); no "/" so a name can never leave its directory.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

# "One small file per service": a payload far beyond a few hundred bytes is a caller bug.
MAX_PAYLOAD_BYTES = 64 * 1024


def validate_name(name: object) -> str:
    """Return ``name`` if it is a valid credential name, else raise :class:`InvalidCredentialError`."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        shown = repr(name) if isinstance(name, str) and len(name) <= 80 else f"<{type(name).__name__}>"
        raise InvalidCredentialError(
            f"invalid credential name {shown}",
            hint="use 1-64 characters: letters, digits, '_', '.', '-', starting with a letter or digit",
        )
    return name


def encode_payload(name: str, fields: Mapping[str, Any]) -> bytes:
    """Serialise ``fields`` as canonical UTF-8 JSON; raise :class:`InvalidCredentialError` if impossible.

    The error never quotes a value: only the credential name, a field name and a type name.
    """
    if not isinstance(fields, Mapping):
        raise InvalidCredentialError(
            f"payload must be a mapping of field names to JSON values, not {type(fields).__name__}",
            name=name,
        )
    for key in fields:
        if not isinstance(key, str):
            raise InvalidCredentialError(f"field names must be strings, not {type(key).__name__}", name=name)
    problem: str | None = None
    try:
        encoded = json.dumps(
            dict(fields), ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":")
        ).encode("utf-8")
    except (TypeError, ValueError) as exc:
        # The exception text is not reused: json/UTF-8 errors can quote part of the offending value.
        problem = "not serialisable" if isinstance(exc, TypeError) else "not representable"
    if problem is not None:
        raise InvalidCredentialError(
            f"payload is {problem} as JSON (only str, int, float, bool, None, lists and objects; "
            "no NaN, no lone surrogates)",
            name=name,
        )
    if len(encoded) > MAX_PAYLOAD_BYTES:
        raise InvalidCredentialError(
            f"payload is {len(encoded)} bytes, more than the {MAX_PAYLOAD_BYTES} allowed", name=name
        )
    return encoded


def decode_payload(data: bytes) -> dict[str, Any] | None:
    """Parse a decrypted payload; ``None`` if it is not a JSON object.

    Returns instead of raising so that no exception object (a ``JSONDecodeError`` keeps the whole
    document in ``.doc``) that holds plaintext can end up chained into a traceback.
    """
    try:
        value = json.loads(data)
    except ValueError:
        value = None
    return value if isinstance(value, dict) else None


class Credential(Mapping[str, Any]):
    """A named credential payload: a read-only mapping whose repr never shows a value.

    Build one with ``Credential(name, {"hosts": [...], "password": ...})``; the fields are
    validated and normalised through JSON (tuples become lists), so what a read returns compares
    equal to what was written. ``to_dict()`` gives the caller a mutable deep copy.
    """

    __slots__ = ("_data", "_name")

    def __init__(self, name: str, fields: Mapping[str, Any]) -> None:
        validate_name(name)
        decoded = decode_payload(encode_payload(name, fields))
        if decoded is None:  # pragma: no cover - encode_payload accepted a mapping, so it is an object
            raise InvalidCredentialError("payload is not a JSON object", name=name)
        self._name = name
        self._data: dict[str, Any] = decoded

    @classmethod
    def _trusted(cls, name: str, data: dict[str, Any]) -> Credential:
        """Wrap data that was just decoded from JSON (the read path), without re-validating it."""
        obj = cls.__new__(cls)
        obj._name = name
        obj._data = data
        return obj

    @property
    def name(self) -> str:
        return self._name

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def to_dict(self) -> dict[str, Any]:
        """A deep copy of the fields, for the caller to map onto its own types."""
        return copy.deepcopy(self._data)

    def encode(self) -> bytes:
        """The canonical JSON encoding that is encrypted into the file."""
        return encode_payload(self._name, self._data)

    def __repr__(self) -> str:
        return f"Credential(name={self._name!r}, fields={sorted(self._data)!r}, values=<hidden>)"

    __str__ = __repr__
