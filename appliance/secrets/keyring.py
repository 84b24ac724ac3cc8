"""Master keys: :class:`MasterKey` (32 random bytes) and :class:`Keyring` (a directory of them).

Layout of a keyring directory (mode 0700, or 0750 with a group)::

    <dir>/<kid>.key     32 raw random bytes, mode 0600 (0640 with a group), owner = the writer
    <dir>/current       symlink -> "<kid>.key": the key new files are encrypted with
    <dir>/.lock         flock(2) target serialising writers of the keyring

The key id ``kid`` is the first 16 hex digits of SHA-256 over a domain tag and the key: it names the
key in file headers without revealing it, and lets a reader prove that a key file still holds the
key its name claims (a mismatch is a "wrong key", not "tampered credential").

Normally the directory holds one key; during :meth:`CredentialStore.rotate_key` it briefly holds the
previous one too (and after a crash in the middle of a rotation, possibly an unused new one, which
the next rotation removes). A keyring serves a single credential store: rotation retires every key
but the new one.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from appliance.secrets import _fs
from appliance.secrets.errors import (
    CredentialCorrupt,
    CredentialIOError,
    CredentialMissing,
    CredentialPermissionError,
    CredentialWriteError,
    InvalidCredentialError,
    UnknownKeyError,
    WrongKeyError,
)

log = logging.getLogger(__name__)

KEY_SIZE = 32
KEY_ID_PATTERN = re.compile(r"[0-9a-f]{16}")
_KEY_ID_TAG = b"appliance/secrets/key-id/v1\x00"
_KEY_FILE = re.compile(r"([0-9a-f]{16})\.key")
CURRENT = "current"


def key_id_of(key: bytes) -> str:
    """The public id of a key: a truncated, domain-separated SHA-256 (64 bits, not the key)."""
    return hashlib.sha256(_KEY_ID_TAG + key).hexdigest()[:16]


class MasterKey:
    """A 256-bit master key. ``repr()`` shows the key id only; the bytes are never exposed."""

    __slots__ = ("_key", "_key_id")

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) != KEY_SIZE:
            raise ValueError(f"a master key is exactly {KEY_SIZE} bytes")
        self._key = key
        self._key_id = key_id_of(key)

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(secrets.token_bytes(KEY_SIZE))

    @property
    def key_id(self) -> str:
        return self._key_id

    def derive(self, *, salt: bytes, info: bytes, length: int = 32) -> bytes:
        """Derive a subkey with HKDF-SHA256 (the master key is random, so HKDF is the right KDF)."""
        return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(self._key)

    def _raw(self) -> bytes:
        # Only the keyring writes the bytes to disk; nothing else needs them.
        return self._key

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MasterKey):
            return NotImplemented
        return secrets.compare_digest(self._key, other._key)

    def __hash__(self) -> int:
        return hash(self._key_id)

    def __repr__(self) -> str:
        return f"MasterKey(key_id={self._key_id!r})"

    __str__ = __repr__


class Keyring:
    """A directory of master keys with a ``current`` pointer.

    :param directory: the keyring directory (created by :meth:`create` if missing; its parent must exist).
    :param expected_uid: the owner every key file and the directory must have (default: the euid).
    :param group_gid: if set, new key files are 0640 and the directory 0750 with this group, so that
        services running as other users in that group can decrypt their own credential files (the
        directory's group and mode are set when :meth:`create` or :meth:`add` creates it).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        expected_uid: int | None = None,
        group_gid: int | None = None,
    ) -> None:
        self._dir = os.path.abspath(os.fspath(directory))
        self._uid = os.geteuid() if expected_uid is None else expected_uid
        if group_gid is not None and group_gid < 0:
            raise InvalidCredentialError(f"invalid group id {group_gid}")
        self._gid = group_gid

    @property
    def directory(self) -> str:
        return self._dir

    def __repr__(self) -> str:
        return f"Keyring({self._dir!r})"

    # -- reading ---------------------------------------------------------------------------------

    def load_current(self) -> MasterKey:
        """The key new files are encrypted with; :class:`CredentialMissing` if none was created."""
        with self._open_dir() as dir_fd:
            kid = self._current_id(dir_fd)
            if kid is None:
                raise CredentialMissing(
                    "no master key has been created",
                    path=self._path(CURRENT),
                    hint="create the master key first (Keyring.create)",
                )
            return self._load(dir_fd, kid, credential=None)

    def get(self, key_id: str, *, credential: str | None = None) -> MasterKey:
        """The key with id ``key_id``.

        :raises UnknownKeyError: no such key in the keyring.
        :raises WrongKeyError: the key file exists but does not hold the key its name claims.
        :param credential: the credential being read, used in error messages only.
        """
        if not KEY_ID_PATTERN.fullmatch(key_id):
            raise UnknownKeyError("malformed key id", name=credential, path=self._dir)
        try:
            with self._open_dir() as dir_fd:
                return self._load(dir_fd, key_id, credential=credential)
        except CredentialMissing:
            raise UnknownKeyError(
                f"key {key_id} is not in the keyring", name=credential, path=self._path(f"{key_id}.key")
            ) from None

    def key_ids(self) -> list[str]:
        """Ids of all keys present (current first, then sorted)."""
        with self._open_dir(write=True) as dir_fd:
            current = self._current_id(dir_fd)
            found = sorted(m.group(1) for n in os.listdir(dir_fd) if (m := _KEY_FILE.fullmatch(n)))
        return sorted(found, key=lambda kid: kid != current)

    # -- writing ---------------------------------------------------------------------------------

    def create(self, *, force: bool = False) -> MasterKey:
        """Create the master key and make it current; return it.

        Idempotent: if a current key exists (and is intact) it is returned unchanged. With
        ``force=True`` a new key becomes current; the previous one stays in the keyring so files
        encrypted under it remain readable until :meth:`CredentialStore.rotate_key` re-encrypts
        them and retires it.
        """
        with self._open_dir(create=True) as dir_fd, self._locked(dir_fd):
            kid = self._current_id(dir_fd)
            if kid is not None and not force:
                return self._load(dir_fd, kid, credential=None)
            key = self._add(dir_fd)
            self._set_current(dir_fd, key.key_id)
            log.info("created master key %s in %s", key.key_id, self._dir)
            return key

    def add(self) -> MasterKey:
        """Store a new random key *without* making it current (the first step of a rotation)."""
        with self._open_dir(create=True) as dir_fd, self._locked(dir_fd):
            return self._add(dir_fd)

    def set_current(self, key_id: str) -> None:
        """Make the (existing, intact) key ``key_id`` the current one, atomically."""
        with self._open_dir(write=True) as dir_fd, self._locked(dir_fd):
            self._load(dir_fd, key_id, credential=None)
            self._set_current(dir_fd, key_id)

    def retire(self, key_id: str) -> None:
        """Delete key ``key_id``. Refuses the current key. Deleting an absent key is a no-op."""
        if not KEY_ID_PATTERN.fullmatch(key_id):
            raise InvalidCredentialError("malformed key id")
        with self._open_dir(write=True) as dir_fd, self._locked(dir_fd):
            if self._current_id(dir_fd) == key_id:
                raise InvalidCredentialError(f"key {key_id} is the current key and cannot be retired", path=self._dir)
            try:
                os.unlink(f"{key_id}.key", dir_fd=dir_fd)
            except FileNotFoundError:
                return
            except OSError as exc:
                raise CredentialWriteError(
                    f"cannot remove key {key_id}: {exc.strerror}", path=self._path(f"{key_id}.key")
                ) from exc
            _fs.fsync_quietly(dir_fd)
            log.info("retired master key %s from %s", key_id, self._dir)

    # -- internals -------------------------------------------------------------------------------

    def _path(self, name: str) -> str:
        return os.path.join(self._dir, name)

    @contextmanager
    def _open_dir(self, *, create: bool = False, write: bool = False) -> Iterator[int]:
        """Open and check the keyring directory; ``write`` for a descriptor that can fsync and list."""
        if create:
            try:
                os.mkdir(self._dir, 0o700)
            except FileExistsError:
                pass
            except OSError as exc:
                raise CredentialWriteError(
                    f"cannot create the keyring directory: {exc.strerror}", path=self._dir
                ) from exc
            else:
                self._init_dir()
        try:
            fd = _fs.open_dir(self._dir, readable=create or write)
        except FileNotFoundError:
            raise CredentialMissing(
                "the keyring directory does not exist",
                path=self._dir,
                hint="create the master key first (Keyring.create)",
            ) from None
        except OSError as exc:
            if exc.errno in _fs.SYMLINK_ERRNOS:
                raise CredentialPermissionError(
                    "the keyring path is a symlink or not a directory", path=self._dir
                ) from None
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise CredentialPermissionError(
                    "the keyring directory cannot be opened: permission denied", path=self._dir
                ) from None
            raise CredentialIOError(f"cannot open the keyring: {exc.strerror}", path=self._dir) from exc
        with _fs.closing_fd(fd):
            st = os.fstat(fd)
            if st.st_uid != self._uid:
                raise CredentialPermissionError(
                    f"keyring directory is owned by uid {st.st_uid}, expected {self._uid}", path=self._dir
                )
            if stat.S_IMODE(st.st_mode) & 0o027:
                raise CredentialPermissionError(
                    f"keyring directory has mode {stat.S_IMODE(st.st_mode):04o}, "
                    "group-writable or open to others (at most 0750)",
                    path=self._dir,
                )
            yield fd

    def _init_dir(self) -> None:
        # The directory was just created 0700 and is empty: widening it to 0750 for the key group
        # exposes nothing yet.
        if self._gid is None:
            return
        fd = _fs.open_dir(self._dir, readable=True)
        with _fs.closing_fd(fd):
            os.fchown(fd, -1, self._gid)
            os.fchmod(fd, 0o750)

    @contextmanager
    def _locked(self, dir_fd: int) -> Iterator[None]:
        try:
            lock_fd = _fs.acquire_lock(dir_fd)
        except OSError as exc:
            raise CredentialWriteError(f"cannot lock the keyring: {exc.strerror}", path=self._dir) from exc
        try:
            yield
        finally:
            os.close(lock_fd)

    def _current_id(self, dir_fd: int) -> str | None:
        try:
            target = _fs.read_link(CURRENT, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise CredentialCorrupt("'current' is not a symlink", path=self._path(CURRENT)) from None
            raise CredentialIOError(f"cannot read: {exc.strerror}", path=self._path(CURRENT)) from exc
        if target is None:
            return None
        match = _KEY_FILE.fullmatch(target)
        if match is None:
            raise CredentialCorrupt("'current' does not point to a key file of this keyring", path=self._path(CURRENT))
        return match.group(1)

    def _load(self, dir_fd: int, key_id: str, *, credential: str | None) -> MasterKey:
        name = f"{key_id}.key"
        path = self._path(name)
        try:
            fd = _fs.open_for_read(name, dir_fd=dir_fd)
        except FileNotFoundError:
            raise UnknownKeyError(f"key {key_id} is not in the keyring", name=credential, path=path) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise CredentialPermissionError("key file is a symlink", name=credential, path=path) from None
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise CredentialPermissionError(
                    "key file cannot be opened: permission denied", name=credential, path=path
                ) from None
            raise CredentialIOError(f"cannot open key file: {exc.strerror}", name=credential, path=path) from exc
        with _fs.closing_fd(fd):
            st = os.fstat(fd)
            _check_key_stat(st, self._uid, name=credential, path=path)
            try:
                data = _fs.read_limited(fd, KEY_SIZE)
            except OSError as exc:
                raise CredentialIOError(f"cannot read key file: {exc.strerror}", name=credential, path=path) from exc
        if data is None or len(data) != KEY_SIZE or key_id_of(data) != key_id:
            # The name promises a key whose digest is key_id; anything else means the file was
            # replaced, edited or truncated. Decrypting with it could only produce a misleading
            # "tampered" error, so say what is actually wrong.
            raise WrongKeyError(
                f"key file {name} does not hold key {key_id} (its content changed)",
                name=credential,
                path=path,
            )
        return MasterKey(data)

    def _add(self, dir_fd: int) -> MasterKey:
        key = MasterKey.generate()
        final = f"{key.key_id}.key"
        tmp = f".tmp-{secrets.token_hex(8)}.key"
        mode = 0o600 if self._gid is None else 0o640
        try:
            # Written under a temporary name and renamed, so "<kid>.key" only ever appears complete.
            _fs.write_new_file(dir_fd, tmp, key._raw(), mode=mode, gid=self._gid)
            os.rename(tmp, final, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            os.fsync(dir_fd)
        except OSError as exc:
            _fs.unlink_quietly(tmp, dir_fd=dir_fd)
            raise CredentialWriteError(f"cannot store a new master key: {exc.strerror}", path=self._dir) from exc
        return key

    def _set_current(self, dir_fd: int, key_id: str) -> None:
        try:
            _fs.replace_symlink(dir_fd, CURRENT, f"{key_id}.key", f".{CURRENT}.tmp")
            os.fsync(dir_fd)
        except OSError as exc:
            raise CredentialWriteError(
                f"cannot make key {key_id} current: {exc.strerror}", path=self._path(CURRENT)
            ) from exc


def _check_key_stat(st: os.stat_result, uid: int, *, name: str | None, path: str) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise CredentialPermissionError("key file is not a regular file", name=name, path=path)
    if st.st_uid != uid:
        raise CredentialPermissionError(f"key file is owned by uid {st.st_uid}, expected {uid}", name=name, path=path)
    mode = stat.S_IMODE(st.st_mode)
    if mode & ~0o640:
        raise CredentialPermissionError(
            f"key file has mode {mode:04o}, more open than 0640 (0600 unless shared with a group)",
            name=name,
            path=path,
        )
