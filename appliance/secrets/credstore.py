"""Encrypted credential files, written as one atomic set: :class:`CredentialStore`.

Layout of a store directory (the root is created 0711, owner = the writer)::

    <root>/current                    symlink -> ".gen-<set id>": the live credential set
    <root>/.gen-<set id>/             one generation (mode 0711): one file per credential
    <root>/.gen-<set id>/<name>.cred  mode 0600, or 0640 with the consuming service's group
    <root>/.lock                      flock(2) target serialising writers

Each ``<name>.cred`` is in the format of :mod:`appliance.secrets.fileformat` (AES-256-GCM, per-file
HKDF key, authenticated header naming version, algorithm, key id, credential name and set id).
Consumers outside Python can read ``<root>/current/<name>.cred``.

Writing a set (the Kubernetes AtomicWriter scheme, see ``pkg/volume/util/atomic_writer.go``):

1. Validate and serialise every payload; nothing touches the disk if one is invalid.
2. Take the writer lock; remove generations left behind by a writer that crashed.
3. ``mkdir .gen-<new id>`` (0700 while being filled, so nobody can open a half-written set).
4. Create each file with ``O_CREAT|O_EXCL|O_NOFOLLOW`` 0600, set its group and final mode on the
   descriptor *before* writing content, write, fsync; then fsync the generation directory.
5. Read every file back and compare it with what was meant to be written (bytes, mode, group).
6. Point ``current`` at the new generation: a new symlink renamed over the old one (rename(2) is
   atomic), then fsync the root so the switch is durable.
7. Last step: read back and decrypt the whole set through ``current``, exactly as a reader would.
   If it fails, ``current`` is switched back to the previous generation.
8. Remove the previous generations (best effort; a leftover is removed by the next write).

A crash (SIGKILL, power loss) or an error (ENOSPC, EIO) at any point therefore leaves ``current``
pointing at either the complete old set or the complete new set. On error the old set is restored
and :class:`CredentialWriteError` is raised.

Reading resolves ``current`` once, opens the generation directory and then each file relative to
it (``O_NOFOLLOW``), checks file type, owner and mode, parses the header, looks the key id up in the
keyring and decrypts. A file must also carry the set id of the generation it sits in, so a file
copied in from another generation is refused. If a concurrent writer replaces the set (and removes
the old generation, or retires its key) while a reader is in the middle of it, the reader starts
again from the new ``current``. A read never falls back to defaults or plaintext.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from appliance.secrets import _fs, fileformat
from appliance.secrets.credential import NAME_PATTERN, Credential, decode_payload, validate_name
from appliance.secrets.errors import (
    CredentialCorrupt,
    CredentialError,
    CredentialIOError,
    CredentialMissing,
    CredentialPermissionError,
    CredentialTampered,
    CredentialWriteError,
    InvalidCredentialError,
    UnknownKeyError,
    safe_token,
)
from appliance.secrets.keyring import Keyring, MasterKey

log = logging.getLogger(__name__)

T = TypeVar("T")

CURRENT = "current"
SUFFIX = ".cred"
_GEN = re.compile(r"\.gen-([0-9a-f]{16})")
_TMP_LINK = f".{CURRENT}.tmp"
_DIR_MODE = 0o711  # others may traverse to open their own (group-readable) file, not list names
_READ_ATTEMPTS = 10  # a reader only retries when a writer replaced the set under it


@dataclass(frozen=True)
class _Planned:
    """One file of a set about to be written (the credential's repr masks its values)."""

    cred: Credential
    mode: int
    gid: int | None

    @property
    def filename(self) -> str:
        return self.cred.name + SUFFIX


@dataclass(frozen=True)
class _Snapshot:
    """One resolved generation: everything a read looks at comes from here."""

    gen_fd: int
    gen: str
    set_id: str
    path: str


class CredentialStore:
    """A directory of encrypted credential files, one per consuming service, replaced as a set.

    :param root: the store directory (created by the first write; its parent must exist).
    :param keyring: where the master keys live.
    :param expected_uid: the owner every file and directory must have (default: this process's
        euid). A service reading files written by root passes ``0``.
    :param allowed_gids: if given, a group-readable (0640) file is accepted only if its group is one
        of these. By default any group is accepted: only the verified owner (or root) can have set it.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        keyring: Keyring,
        *,
        expected_uid: int | None = None,
        allowed_gids: Collection[int] | None = None,
    ) -> None:
        self._root = os.path.abspath(os.fspath(root))
        self._keyring = keyring
        self._uid = os.geteuid() if expected_uid is None else expected_uid
        self._allowed_gids = None if allowed_gids is None else frozenset(allowed_gids)

    @property
    def root(self) -> str:
        return self._root

    @property
    def keyring(self) -> Keyring:
        return self._keyring

    def __repr__(self) -> str:
        return f"CredentialStore({self._root!r}, {self._keyring!r})"

    # -- reading ---------------------------------------------------------------------------------

    def read(self, name: str) -> Credential:
        """Read and decrypt credential ``name`` from the current set.

        :raises CredentialError: one subclass per failure kind (see :mod:`appliance.secrets.errors`).
        """
        validate_name(name)
        return self._with_snapshot(lambda snap: self._load(snap, name)[0])

    def read_all(self) -> dict[str, Credential]:
        """Read every credential of the current set, all from the same generation."""
        return self._with_snapshot(self._load_all, whole_set=True)

    def names(self) -> list[str]:
        """Names in the current set, sorted; ``[]`` if no set was ever written."""
        try:
            with self._open_root(create=False) as root_fd:
                if self._resolve(root_fd) is None:
                    return []
        except CredentialMissing:  # the store directory does not exist yet
            return []
        return self._with_snapshot(self._list, whole_set=True)

    # -- writing ---------------------------------------------------------------------------------

    def write_set(
        self,
        creds: Mapping[str, Mapping[str, Any]],
        *,
        group_gid: int | None = None,
        groups: Mapping[str, int] | None = None,
    ) -> str:
        """Replace the whole credential set atomically; return the new set id.

        :param creds: credential name -> JSON object (a ``dict`` or a :class:`Credential`).
        :param group_gid: make *every* file 0640 with this group (services running as other users).
        :param groups: per-credential group (0640), overriding ``group_gid``; others stay 0600.
        :raises InvalidCredentialError: bad input; nothing was written.
        :raises CredentialWriteError: the write failed; the previous set is still the live one.
        """
        plan = _plan(creds, group_gid, groups)
        with self._open_root(create=True) as root_fd, self._locked(root_fd):
            # The key is loaded under the lock: a concurrent rotation may just have retired it.
            key = self._keyring.load_current()
            return self._write_locked(root_fd, plan, key)

    def rotate_key(self) -> MasterKey:
        """Create a new master key, re-encrypt the whole set under it, then retire the old key(s).

        Steps: add the new key (not current yet) -> write the set under it (atomic, verified) ->
        make it current -> retire every other key. Until the last step the old key and the old set
        stay valid; if the set write fails the new key is removed again.

        :returns: the new current key.
        """
        with self._open_root(create=True) as root_fd, self._locked(root_fd):
            self._keyring.load_current()  # fail early (and clearly) if there is no key to rotate
            old_gen = self._resolve(root_fd)
            plan = self._plan_from_live(root_fd) if old_gen is not None else []
            new_key = self._keyring.add()
            try:
                if plan:
                    self._write_locked(root_fd, plan, new_key)
            except BaseException:
                # Remove the unused new key, unless a failed rollback left the new set live.
                if self._resolve_quietly(root_fd) == old_gen:
                    try:
                        self._keyring.retire(new_key.key_id)
                    except CredentialError:
                        log.warning("could not remove unused key %s after a failed rotation", new_key.key_id)
                raise
            self._keyring.set_current(new_key.key_id)
            failed: list[str] = []
            for kid in self._keyring.key_ids():
                if kid != new_key.key_id:
                    try:
                        self._keyring.retire(kid)
                    except CredentialError:
                        failed.append(kid)
            if failed:
                raise CredentialWriteError(
                    f"credentials were re-encrypted under key {new_key.key_id}, but old key(s) "
                    f"{', '.join(failed)} could not be removed",
                    path=self._keyring.directory,
                    hint="remove the old key files by hand or run the rotation again",
                )
            log.info("rotated master key to %s for %s (%d credentials)", new_key.key_id, self._root, len(plan))
            return new_key

    # -- read internals --------------------------------------------------------------------------

    def _with_snapshot(self, fn: Callable[[_Snapshot], T], *, whole_set: bool = False) -> T:
        """Run ``fn`` on the current generation, starting again if a writer replaced it meanwhile.

        A writer removes the previous generation only *after* switching ``current`` away from it.
        So a reader that fails to find a file or key of its generation retries if ``current`` moved;
        and with ``whole_set`` (listing several files), a result is only returned if ``current``
        still points to the same generation afterwards: then no file of it can have been removed
        yet, and the listing was complete.
        """
        attempt = 0
        while True:
            attempt += 1
            with self._open_root(create=False) as root_fd:
                gen = self._resolve(root_fd)
                if gen is None:
                    raise CredentialMissing(
                        "no credential set has been written", path=os.path.join(self._root, CURRENT)
                    )
                try:
                    with self._snapshot(root_fd, gen) as snap:
                        result = fn(snap)
                except (CredentialMissing, UnknownKeyError):
                    if attempt >= _READ_ATTEMPTS or self._resolve_quietly(root_fd) == gen:
                        raise
                    log.debug("credential set %s replaced during a read; retrying", gen)
                    continue
                if not whole_set or self._resolve_quietly(root_fd) == gen:
                    return result
                if attempt >= _READ_ATTEMPTS:
                    raise CredentialIOError(
                        f"the credential set changed {attempt} times during the read", path=self._root
                    )
                log.debug("credential set %s replaced during a read; retrying", gen)

    @contextmanager
    def _snapshot(self, root_fd: int, gen: str) -> Iterator[_Snapshot]:
        path = os.path.join(self._root, gen)
        try:
            gen_fd = _fs.open_dir(gen, dir_fd=root_fd)
        except FileNotFoundError:
            raise CredentialMissing("the current credential set directory is missing", path=path) from None
        except OSError as exc:
            raise self._open_error(exc, None, path, "credential set directory") from None
        with _fs.closing_fd(gen_fd):
            self._check_dir(os.fstat(gen_fd), path)
            match = _GEN.fullmatch(gen)
            assert match is not None  # _resolve only returns matching names
            yield _Snapshot(gen_fd=gen_fd, gen=gen, set_id=match.group(1), path=path)

    def _load_all(self, snap: _Snapshot) -> dict[str, Credential]:
        names = self._list(snap)
        if not names:  # a written set is never empty (write_set refuses that)
            raise CredentialMissing("the current credential set is empty", path=snap.path)
        return {name: self._load(snap, name)[0] for name in names}

    def _list(self, snap: _Snapshot) -> list[str]:
        try:
            list_fd = _fs.open_dir(".", dir_fd=snap.gen_fd, readable=True)
            with _fs.closing_fd(list_fd):
                entries = os.listdir(list_fd)
        except OSError as exc:
            raise self._open_error(exc, None, snap.path, "credential set directory") from None
        return sorted(
            entry[: -len(SUFFIX)]
            for entry in entries
            if entry.endswith(SUFFIX) and NAME_PATTERN.fullmatch(entry[: -len(SUFFIX)])
        )

    def _load(self, snap: _Snapshot, name: str) -> tuple[Credential, os.stat_result]:
        """Read, check and decrypt one file of ``snap``."""
        filename = name + SUFFIX
        path = os.path.join(snap.path, filename)
        data, st = self._read_checked(snap.gen_fd, filename, name, path)
        sealed = fileformat.parse(data, name=name, path=path)
        header = sealed.header
        if header.name != name:
            raise CredentialTampered(
                f"the file holds credential {safe_token(header.name)!r} (renamed or swapped)",
                name=name,
                path=path,
            )
        key = self._keyring.get(header.key_id, credential=name)
        authentic, cred = _unseal(key, name, sealed)
        if not authentic:
            raise CredentialTampered(
                f"authentication failed under key {header.key_id}: the file was modified",
                name=name,
                path=path,
            )
        if cred is None:
            raise CredentialCorrupt("the decrypted payload is not a JSON object", name=name, path=path)
        if header.set_id != snap.set_id:
            raise CredentialTampered(
                f"the file belongs to credential set {header.set_id}, not to the current set "
                f"{snap.set_id} (copied from another generation)",
                name=name,
                path=path,
            )
        return cred, st

    def _read_checked(self, dir_fd: int, filename: str, name: str, path: str) -> tuple[bytes, os.stat_result]:
        try:
            fd = _fs.open_for_read(filename, dir_fd=dir_fd)
        except FileNotFoundError:
            raise CredentialMissing("the credential file does not exist", name=name, path=path) from None
        except OSError as exc:
            raise self._open_error(exc, name, path, "credential file") from None
        with _fs.closing_fd(fd):
            st = os.fstat(fd)
            self._check_file(st, name, path)
            try:
                data = _fs.read_limited(fd, fileformat.MAX_FILE_SIZE)
            except OSError as exc:
                raise CredentialIOError(f"cannot read the file: {exc.strerror}", name=name, path=path) from exc
        if data is None:
            raise CredentialCorrupt(f"the file is larger than {fileformat.MAX_FILE_SIZE} bytes", name=name, path=path)
        return data, st

    def _check_file(self, st: os.stat_result, name: str, path: str) -> None:
        if not stat.S_ISREG(st.st_mode):
            raise CredentialPermissionError("not a regular file", name=name, path=path)
        if st.st_uid != self._uid:
            raise CredentialPermissionError(
                f"the file is owned by uid {st.st_uid}, expected uid {self._uid}", name=name, path=path
            )
        mode = stat.S_IMODE(st.st_mode)
        if mode & ~0o640:
            raise CredentialPermissionError(
                f"the file has mode {mode:04o}, more open than 0640 (0600, or 0640 for a service group)",
                name=name,
                path=path,
            )
        if mode & 0o040 and self._allowed_gids is not None and st.st_gid not in self._allowed_gids:
            raise CredentialPermissionError(
                f"the file is readable by group {st.st_gid}, which is not allowed", name=name, path=path
            )

    def _check_dir(self, st: os.stat_result, path: str) -> None:
        if st.st_uid != self._uid:
            raise CredentialPermissionError(
                f"the directory is owned by uid {st.st_uid}, expected uid {self._uid}", path=path
            )
        if stat.S_IMODE(st.st_mode) & 0o022:
            raise CredentialPermissionError(
                f"the directory has mode {stat.S_IMODE(st.st_mode):04o}: writable by group or others",
                path=path,
            )

    @staticmethod
    def _open_error(exc: OSError, name: str | None, path: str, what: str) -> CredentialError:
        if exc.errno in _fs.SYMLINK_ERRNOS:
            return CredentialPermissionError(f"the {what} is a symlink or of the wrong type", name=name, path=path)
        if exc.errno in (errno.EACCES, errno.EPERM):
            return CredentialPermissionError(f"the {what} cannot be opened: permission denied", name=name, path=path)
        return CredentialIOError(f"cannot open the {what}: {exc.strerror}", name=name, path=path)

    @contextmanager
    def _open_root(self, *, create: bool) -> Iterator[int]:
        if create:
            try:
                os.mkdir(self._root, 0o700)
            except FileExistsError:
                pass
            except OSError as exc:
                raise CredentialWriteError(
                    f"cannot create the credential directory: {exc.strerror}", path=self._root
                ) from exc
            else:
                try:
                    fd = _fs.open_dir(self._root, readable=True)
                    with _fs.closing_fd(fd):
                        os.fchmod(fd, _DIR_MODE)  # still empty: widening it exposes nothing
                except OSError as exc:
                    raise CredentialWriteError(
                        f"cannot set up the credential directory: {exc.strerror}", path=self._root
                    ) from exc
        try:
            root_fd = _fs.open_dir(self._root, readable=create)  # writers fsync and list the root
        except FileNotFoundError:
            raise CredentialMissing("no credential set has been written", path=self._root) from None
        except OSError as exc:
            raise self._open_error(exc, None, self._root, "credential directory") from None
        with _fs.closing_fd(root_fd):
            self._check_dir(os.fstat(root_fd), self._root)
            yield root_fd

    def _resolve(self, root_fd: int) -> str | None:
        """The generation ``current`` points to; ``None`` if no set was written yet."""
        path = os.path.join(self._root, CURRENT)
        try:
            target = _fs.read_link(CURRENT, dir_fd=root_fd)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise CredentialCorrupt(f"{CURRENT!r} is not a symlink", path=path) from None
            raise CredentialIOError(f"cannot read {CURRENT!r}: {exc.strerror}", path=path) from exc
        if target is not None and not _GEN.fullmatch(target):
            raise CredentialCorrupt(f"{CURRENT!r} does not point to a credential set", path=path)
        return target

    def _resolve_quietly(self, root_fd: int) -> str | None:
        try:
            return self._resolve(root_fd)
        except CredentialError:
            return None

    # -- write internals -------------------------------------------------------------------------

    @contextmanager
    def _locked(self, root_fd: int) -> Iterator[None]:
        try:
            lock_fd = _fs.acquire_lock(root_fd)
        except OSError as exc:
            raise CredentialWriteError(
                f"cannot lock the credential directory: {exc.strerror}", path=self._root
            ) from exc
        try:
            yield
        finally:
            os.close(lock_fd)

    def _plan_from_live(self, root_fd: int) -> list[_Planned]:
        """The live set as a write plan that keeps each file's mode and group (for rotation)."""
        gen = self._resolve(root_fd)
        if gen is None:
            return []
        plan: list[_Planned] = []
        with self._snapshot(root_fd, gen) as snap:
            for name in self._list(snap):
                cred, st = self._load(snap, name)
                group_readable = bool(st.st_mode & stat.S_IRGRP)
                plan.append(_Planned(cred, 0o640 if group_readable else 0o600, st.st_gid if group_readable else None))
        return plan

    def _write_locked(self, root_fd: int, plan: list[_Planned], key: MasterKey) -> str:
        old = self._resolve_quietly(root_fd)  # an unreadable `current` is simply replaced
        self._remove_generations(root_fd, keep=old)  # leftovers of writers that crashed
        set_id = secrets.token_hex(8)
        gen = f".gen-{set_id}"
        created = int(time.time())
        # Encrypt everything before touching the disk: an encryption problem leaves no trace.
        images = {
            p.cred.name: fileformat.seal(key, p.cred.name, p.cred.encode(), set_id=set_id, created=created)
            for p in plan
        }
        switched = False
        try:
            # 0700 while being filled: no other user can open a file of an incomplete set.
            os.mkdir(gen, 0o700, dir_fd=root_fd)
            gen_fd = _fs.open_dir(gen, dir_fd=root_fd, readable=True)
            with _fs.closing_fd(gen_fd):
                for p in plan:
                    _fs.write_new_file(gen_fd, p.filename, images[p.cred.name], mode=p.mode, gid=p.gid)
                os.fchmod(gen_fd, _DIR_MODE)
                os.fsync(gen_fd)  # the files' directory entries must be durable before the switch
                self._verify_staged(gen_fd, gen, plan, images)
            _fs.replace_symlink(root_fd, CURRENT, gen, _TMP_LINK)
            switched = True
            os.fsync(root_fd)  # make the switch itself durable
            self._verify_live(root_fd, gen, plan)
        except BaseException as exc:
            restored = self._abandon(root_fd, gen, old, switched)
            state = (
                "the previous credential set is unchanged"
                if restored
                else "the new credential set could not be switched back and is in use"
            )
            if isinstance(exc, OSError):
                reason = exc.strerror or str(exc)
                hint = None
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    hint = f"free disk space on the file system of {self._root}, then write again"
                raise CredentialWriteError(
                    f"cannot write the credential set: {reason}; {state}", path=self._root, hint=hint
                ) from exc
            if isinstance(exc, CredentialError):
                raise CredentialWriteError(
                    f"the new credential set failed verification ({exc.message}); {state}", path=self._root
                ) from exc
            raise
        self._remove_generations(root_fd, keep=gen)
        log.info(
            "wrote credential set %s (%s) under key %s in %s",
            set_id,
            ", ".join(sorted(images)),
            key.key_id,
            self._root,
        )
        return set_id

    def _verify_staged(self, gen_fd: int, gen: str, plan: list[_Planned], images: dict[str, bytes]) -> None:
        """Check that the disk holds exactly what was meant: names, bytes, modes and groups."""
        path = os.path.join(self._root, gen)
        if sorted(os.listdir(gen_fd)) != sorted(p.filename for p in plan):
            raise CredentialCorrupt("the new set directory holds unexpected files", path=path)
        for p in plan:
            file_path = os.path.join(path, p.filename)
            data, st = self._read_checked(gen_fd, p.filename, p.cred.name, file_path)
            if data != images[p.cred.name]:
                raise CredentialCorrupt("read-back differs from what was written", name=p.cred.name, path=file_path)
            if stat.S_IMODE(st.st_mode) != p.mode or (p.gid is not None and st.st_gid != p.gid):
                raise CredentialPermissionError(
                    f"the file has mode {stat.S_IMODE(st.st_mode):04o} and group {st.st_gid}, "
                    f"expected {p.mode:04o}" + (f" and group {p.gid}" if p.gid is not None else ""),
                    name=p.cred.name,
                    path=file_path,
                )

    def _verify_live(self, root_fd: int, gen: str, plan: list[_Planned]) -> None:
        """Read back and decrypt the whole set through ``current``, as a reader would."""
        if self._resolve(root_fd) != gen:
            raise CredentialCorrupt(f"{CURRENT!r} does not point to the new set", path=self._root)
        with self._snapshot(root_fd, gen) as snap:
            names = self._list(snap)
            if names != sorted(p.cred.name for p in plan):
                raise CredentialCorrupt("the new set does not hold the expected credentials", path=snap.path)
            for p in plan:
                cred, _ = self._load(snap, p.cred.name)
                if cred != p.cred:
                    raise CredentialCorrupt(
                        "decrypted content differs from what was written", name=p.cred.name, path=snap.path
                    )

    def _abandon(self, root_fd: int, gen: str, old: str | None, switched: bool) -> bool:
        """Undo a failed write. Returns True if the previous set is (again) the live one."""
        restored = True
        if switched:
            try:
                if old is None:
                    os.unlink(CURRENT, dir_fd=root_fd)
                else:
                    _fs.replace_symlink(root_fd, CURRENT, old, _TMP_LINK)
            except OSError:
                log.exception("could not switch %s back to the previous credential set", self._root)
            _fs.fsync_quietly(root_fd)
            restored = self._resolve_quietly(root_fd) == old
        if self._resolve_quietly(root_fd) != gen:  # never delete the set that is live
            shutil.rmtree(gen, dir_fd=root_fd, ignore_errors=True)
            _fs.unlink_quietly(_TMP_LINK, dir_fd=root_fd)
        return restored

    def _remove_generations(self, root_fd: int, *, keep: str | None) -> None:
        """Remove every generation but ``keep``, and stray temporary links (best effort)."""
        try:
            entries = os.listdir(root_fd)
        except OSError:
            log.warning("cannot list %s to remove old credential sets", self._root, exc_info=True)
            return
        removed = False
        for entry in entries:
            if _GEN.fullmatch(entry) and entry != keep:
                shutil.rmtree(entry, dir_fd=root_fd, onerror=self._log_cleanup_error)
                removed = True
            elif entry == _TMP_LINK:
                _fs.unlink_quietly(entry, dir_fd=root_fd)
                removed = True
        if removed:
            # Not needed for correctness (a resurrected old generation is removed next time), but
            # it keeps a power loss from bringing back stale ciphertext.
            _fs.fsync_quietly(root_fd)

    def _log_cleanup_error(self, func: Callable[..., Any], path: str, exc_info: Any) -> None:
        log.warning("cannot remove old credential data %s in %s (%s)", path, self._root, exc_info[1])


def _unseal(key: MasterKey, name: str, sealed: fileformat.Sealed) -> tuple[bool, Credential | None]:
    """Decrypt and parse; the plaintext lives only in this frame, so no traceback can show it."""
    plaintext = fileformat.unseal(key, name, sealed)
    if plaintext is None:
        return False, None
    payload = decode_payload(plaintext)
    return True, None if payload is None else Credential._trusted(name, payload)


def _plan(
    creds: Mapping[str, Mapping[str, Any]], group_gid: int | None, groups: Mapping[str, int] | None
) -> list[_Planned]:
    if not isinstance(creds, Mapping) or not creds:
        raise InvalidCredentialError("a credential set must be a non-empty mapping of name -> fields")
    for given in ([group_gid] if group_gid is not None else []) + list((groups or {}).values()):
        if not isinstance(given, int) or isinstance(given, bool) or given < 0:
            raise InvalidCredentialError(f"invalid group id {safe_token(given)}")
    unknown = sorted(set(groups or {}) - set(creds))
    if unknown:
        raise InvalidCredentialError(
            f"group given for credential(s) not in the set: {', '.join(safe_token(n) for n in unknown)}"
        )
    plan: list[_Planned] = []
    for name, fields in creds.items():
        validate_name(name)
        cred = fields if isinstance(fields, Credential) and fields.name == name else Credential(name, fields)
        gid: int | None = (groups or {}).get(name)
        if gid is None:
            gid = group_gid
        plan.append(_Planned(cred, 0o600 if gid is None else 0o640, gid))
    return plan
