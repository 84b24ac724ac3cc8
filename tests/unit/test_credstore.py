"""Tests of appliance.secrets: round trips, the file format, every read-failure kind, keys, rotation.

All tests use real files in a temporary directory; nothing is mocked. Fault injection (ENOSPC) is in
test_credstore_faults.py, the SIGKILL crash test and concurrent readers in test_credstore_crash.py.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import os
import pickle
import shutil
import stat
import tempfile
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.errors import ApplianceError, NotConfigured, PermissionDenied, UsageError
from appliance.secrets import (
    FORMAT_VERSION,
    Credential,
    CredentialCorrupt,
    CredentialError,
    CredentialErrorKind,
    CredentialMissing,
    CredentialPermissionError,
    CredentialStore,
    CredentialTampered,
    InvalidCredentialError,
    Keyring,
    MasterKey,
    UnknownKeyError,
    UnsupportedFormatError,
    WrongKeyError,
    fileformat,
)
from appliance.secrets.keyring import key_id_of

Kind = CredentialErrorKind
NAMES = ("agent", "shell", "webapp")
MARKER = "S3cr3tMarker"  # every secret value contains it, so one substring check finds any leak
# Quotes, spaces, '=', backslash, '%', a leading '-', non-ASCII, a newline and a NUL.
NASTY = f"-{MARKER} 'q\" = \\ %s ü€😀\n\x00"
IS_ROOT = os.geteuid() == 0


def make_creds(tag: str = "v1", names: tuple[str, ...] = NAMES) -> dict[str, dict[str, Any]]:
    return {
        name: {
            "hosts": ["db1.example", "10.0.0.2", "::1"],
            "ports": [5432, 6432, 5433],
            "user": f"{name}_user",
            "password": f"{NASTY}-{name}-{tag}",
            "database": "ems",
            "options": {"sslmode": "require", "token": f"{MARKER}-tok-{tag}"},
        }
        for name in names
    }


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert MARKER not in text
        assert "S3cr3t" not in text


def check_error(exc: BaseException) -> None:
    """No secret in the message, repr, hint or full traceback text (chained exceptions included)."""
    full = "".join(traceback.format_exception(exc))
    hint = exc.hint if isinstance(exc, ApplianceError) else ""
    assert_no_secret(str(exc), repr(exc), full, hint or "")


def expect(fn: Callable[[], object], cls: type[CredentialError], kind: CredentialErrorKind) -> CredentialError:
    with pytest.raises(cls) as info:
        fn()
    exc = info.value
    assert exc.kind is kind
    check_error(exc)
    return exc


def cred_path(store: CredentialStore, name: str) -> Path:
    return Path(store.root) / "current" / f"{name}.cred"


def split_file(path: Path) -> tuple[bytes, dict[str, Any], bytes]:
    magic, header, body, tail = path.read_bytes().split(b"\n")
    assert tail == b""
    return magic + b"\n", json.loads(header), body


def rewrite(path: Path, data: bytes) -> None:
    """Change a file's content in place (same inode, owner and mode)."""
    with open(path, "r+b") as f:
        f.truncate(0)
        f.write(data)


def edit_header(path: Path, **changes: Any) -> None:
    magic, header, body = split_file(path)
    header.update(changes)
    rewrite(path, magic + json.dumps(header, sort_keys=True, separators=(",", ":")).encode() + b"\n" + body + b"\n")


def generations(store: CredentialStore) -> list[str]:
    return sorted(e for e in os.listdir(store.root) if e.startswith(".gen-"))


@pytest.fixture
def keyring(tmp_path: Path) -> Keyring:
    ring = Keyring(tmp_path / "keys")
    ring.create()
    return ring


@pytest.fixture
def store(tmp_path: Path, keyring: Keyring) -> CredentialStore:
    return CredentialStore(tmp_path / "creds", keyring)


@pytest.fixture
def written(store: CredentialStore) -> CredentialStore:
    store.write_set(make_creds())
    return store


# -- round trips ------------------------------------------------------------------------------


def test_round_trip(store: CredentialStore) -> None:
    creds = make_creds()
    set_id = store.write_set(creds)
    assert store.names() == list(NAMES)
    for name in NAMES:
        got = store.read(name)
        assert isinstance(got, Credential) and isinstance(got, Mapping)
        assert got == creds[name]
        assert got.to_dict() == creds[name] and got.name == name
        assert got["password"] == creds[name]["password"]  # byte for byte, NASTY included
    assert store.read_all() == creds
    assert generations(store) == [f".gen-{set_id}"]


def test_second_write_replaces_the_whole_set(store: CredentialStore) -> None:
    store.write_set(make_creds("v1"))
    store.write_set(make_creds("v2", names=("agent", "reports")))
    assert store.names() == ["agent", "reports"]
    assert store.read_all() == make_creds("v2", names=("agent", "reports"))
    expect(lambda: store.read("shell"), CredentialMissing, Kind.MISSING)
    assert len(generations(store)) == 1


@pytest.mark.parametrize(
    "password",
    [
        NASTY,
        'it\'s "quoted"',
        "a b  c",
        "k=v;x=y",
        "back\\slash\\",
        "ünïcødé€日本",
        "100%",
        "-leading-dash",
        "\t\r\n",
        "'; DROP ROLE x; --",
        "",
    ],
)
def test_special_passwords_round_trip(store: CredentialStore, password: str) -> None:
    store.write_set({"agent": {"password": password, "user": "u"}})
    got = store.read("agent")["password"]
    assert got == password and got.encode("utf-8") == password.encode("utf-8")


@settings(max_examples=150, deadline=None)
@given(
    password=st.text(alphabet=st.characters(codec="utf-8"), max_size=200),
    extra=st.dictionaries(
        st.text(max_size=10),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
            max_leaves=8,
        ),
        max_size=4,
    ),
)
def test_format_round_trips_any_json_payload(password: str, extra: dict[str, Any]) -> None:
    key = MasterKey.generate()
    payload = {**extra, "password": password}
    cred = Credential("agent", payload)
    image = fileformat.seal(key, "agent", cred.encode(), set_id="0" * 16, created=1)
    sealed = fileformat.parse(image, name="agent", path=None)
    plain = fileformat.unseal(key, "agent", sealed)
    assert plain is not None and json.loads(plain) == payload


def test_credential_normalises_through_json() -> None:
    cred = Credential("agent", {"hosts": ("a", "b"), "port": 5432})
    assert cred["hosts"] == ["a", "b"]
    copy = cred.to_dict()
    copy["hosts"].append("c")
    assert cred["hosts"] == ["a", "b"]  # to_dict is a deep copy


# -- file format and layout -------------------------------------------------------------------


def test_file_format_and_layout(tmp_path: Path, written: CredentialStore, keyring: Keyring) -> None:
    root = Path(written.root)
    assert stat.S_IMODE(root.stat().st_mode) == 0o711
    current = root / "current"
    assert current.is_symlink() and os.readlink(current).startswith(".gen-")
    gen = root / os.readlink(current)
    assert stat.S_IMODE(gen.lstat().st_mode) == 0o711
    assert sorted(os.listdir(gen)) == [f"{n}.cred" for n in NAMES]
    kid = keyring.load_current().key_id
    for name in NAMES:
        path = gen / f"{name}.cred"
        st_ = path.lstat()
        assert stat.S_ISREG(st_.st_mode) and stat.S_IMODE(st_.st_mode) == 0o600
        assert st_.st_uid == os.geteuid()
        data = path.read_bytes()
        assert len(data) < 1024  # "one small file"
        assert_no_secret(data.decode("ascii"))  # the file is ASCII and shows no value
        magic, header, body = split_file(path)
        assert magic == b"APPLIANCE-CREDENTIAL\n"
        assert header["v"] == FORMAT_VERSION == 1
        assert header["alg"] == "AES-256-GCM" and header["kdf"] == "HKDF-SHA256"
        assert header["kid"] == kid and header["name"] == name
        assert header["set"] == os.readlink(current)[len(".gen-") :]
        assert len(base64.b64decode(header["nonce"])) == 12 and len(base64.b64decode(header["salt"])) == 16


def test_per_file_keys_differ(store: CredentialStore, keyring: Keyring) -> None:
    same = {"user": "u", "password": f"{MARKER}-same"}
    store.write_set({"agent": same, "shell": same})
    key = keyring.load_current()

    def file_key(name: str) -> bytes:
        _, header, _ = split_file(cred_path(store, name))
        salt = base64.b64decode(header["salt"])
        return key.derive(salt=salt, info=b"appliance/secrets/v1/aes-256-gcm\x00" + name.encode())

    first = {name: file_key(name) for name in ("agent", "shell")}
    assert first["agent"] != first["shell"]
    bodies = {name: split_file(cred_path(store, name))[2] for name in ("agent", "shell")}
    assert bodies["agent"] != bodies["shell"]
    # Rewriting the same credential under the same master key still gives a fresh key and nonce.
    store.write_set({"agent": same, "shell": same})
    assert file_key("agent") != first["agent"]
    # And the derivation really is what decrypts the file (the test derives the same key).
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    magic, header, body = split_file(cred_path(store, "agent"))
    aad = magic + json.dumps(header, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    plain = AESGCM(file_key("agent")).decrypt(base64.b64decode(header["nonce"]), base64.b64decode(body), aad)
    assert json.loads(plain) == same


def test_modes_are_set_at_creation_whatever_the_umask(store: CredentialStore) -> None:
    gid = 4242
    for umask in (0o077, 0o000, 0o027):
        old = os.umask(umask)
        try:
            store.write_set(make_creds(), groups={"webapp": gid})
        finally:
            os.umask(old)
        for name in NAMES:
            st_ = cred_path(store, name).stat()
            expected = 0o640 if name == "webapp" else 0o600
            assert stat.S_IMODE(st_.st_mode) == expected, (umask, name)
        assert cred_path(store, "webapp").stat().st_gid == gid
        assert store.read_all() == make_creds()


def test_group_for_the_whole_set(store: CredentialStore) -> None:
    store.write_set(make_creds(), group_gid=4242, groups={"agent": 4343})
    gids = {n: cred_path(store, n).stat().st_gid for n in NAMES}
    assert gids == {"agent": 4343, "shell": 4242, "webapp": 4242}
    assert all(stat.S_IMODE(cred_path(store, n).stat().st_mode) == 0o640 for n in NAMES)
    assert store.read_all() == make_creds()


# -- tampering --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"created": 12345},
        {"set": "0123456789abcdef"},
        {"salt": base64.b64encode(b"\x01" * 16).decode()},
        {"nonce": base64.b64encode(b"\x02" * 12).decode()},
    ],
)
def test_header_tampering(written: CredentialStore, changes: dict[str, Any]) -> None:
    edit_header(cred_path(written, "agent"), **changes)
    expect(lambda: written.read("agent"), CredentialTampered, Kind.TAMPERED)
    assert written.read("shell") == make_creds()["shell"]  # the others are unaffected


def test_header_key_id_changed_to_another_real_key(written: CredentialStore, keyring: Keyring) -> None:
    other = keyring.add()
    edit_header(cred_path(written, "agent"), kid=other.key_id)
    exc = expect(lambda: written.read("agent"), CredentialTampered, Kind.TAMPERED)
    assert other.key_id in str(exc)


def test_header_json_key_order_is_authenticated(written: CredentialStore) -> None:
    path = cred_path(written, "agent")
    magic, header, body = split_file(path)
    reordered = json.dumps(dict(reversed(list(header.items()))), separators=(",", ":")).encode()
    rewrite(path, magic + reordered + b"\n" + body + b"\n")
    expect(lambda: written.read("agent"), CredentialTampered, Kind.TAMPERED)


@pytest.mark.parametrize("position", [0, 1, 40, -17, -16, -1])
def test_body_bit_flip(written: CredentialStore, position: int) -> None:
    path = cred_path(written, "agent")
    magic, header, body = split_file(path)
    raw = bytearray(base64.b64decode(body))
    raw[position] ^= 0x01
    rewrite(path, path.read_bytes().replace(body, base64.b64encode(bytes(raw))))
    expect(lambda: written.read("agent"), CredentialTampered, Kind.TAMPERED)


def test_renamed_file_is_tampered(written: CredentialStore) -> None:
    gen = cred_path(written, "agent").parent
    os.replace(gen / "agent.cred", gen / "webapp.cred")
    exc = expect(lambda: written.read("webapp"), CredentialTampered, Kind.TAMPERED)
    assert "'agent'" in str(exc) and "renamed or swapped" in str(exc)
    expect(lambda: written.read("agent"), CredentialMissing, Kind.MISSING)


def test_renamed_file_with_edited_header_name_is_tampered(written: CredentialStore) -> None:
    gen = cred_path(written, "agent").parent
    os.replace(gen / "agent.cred", gen / "webapp.cred")
    edit_header(gen / "webapp.cred", name="webapp")
    exc = expect(lambda: written.read("webapp"), CredentialTampered, Kind.TAMPERED)
    assert "authentication failed" in str(exc)


def test_swapped_files_are_tampered(written: CredentialStore) -> None:
    gen = cred_path(written, "agent").parent
    os.rename(gen / "agent.cred", gen / "tmp")
    os.rename(gen / "shell.cred", gen / "agent.cred")
    os.rename(gen / "tmp", gen / "shell.cred")
    expect(lambda: written.read("agent"), CredentialTampered, Kind.TAMPERED)
    expect(lambda: written.read("shell"), CredentialTampered, Kind.TAMPERED)
    expect(written.read_all, CredentialTampered, Kind.TAMPERED)


def test_file_from_an_older_set_is_refused(store: CredentialStore) -> None:
    store.write_set(make_creds("v1"))
    old = cred_path(store, "agent").read_bytes()
    store.write_set(make_creds("v2"))
    rewrite(cred_path(store, "agent"), old)  # valid file, same key, same name: a replay
    exc = expect(lambda: store.read("agent"), CredentialTampered, Kind.TAMPERED)
    assert "another generation" in str(exc)


def test_file_copied_from_another_appliance(tmp_path: Path, written: CredentialStore) -> None:
    other_ring = Keyring(tmp_path / "other-keys")
    other_ring.create()
    other = CredentialStore(tmp_path / "other-creds", other_ring)
    other.write_set(make_creds("foreign"))
    rewrite(cred_path(written, "agent"), cred_path(other, "agent").read_bytes())
    expect(lambda: written.read("agent"), UnknownKeyError, Kind.UNKNOWN_KEY)


# -- corrupt and unsupported files ------------------------------------------------------------


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: b"",
        lambda d: d[:10],
        lambda d: d[:-30],
        lambda d: d[:-1],
        lambda d: b"X" + d[1:],
        lambda d: d + b"more\n",
        lambda d: d.replace(b'"v":1', b'"v":"1"'),
        lambda d: d.replace(b'{"alg"', b'["alg"'),
        lambda d: d.replace(b'"kid":"', b'"kid":"zz'),
        lambda d: d.replace(b'"name":"agent"', b'"name":"../etc"'),
        lambda d: d.replace(b'"set":"', b'"set":"x'),
        lambda d: d.replace(b'"created":', b'"created":-'),
        lambda d: d.replace(b',"v":1', b',"v":1,"extra":2'),
        lambda d: d.replace(b'"nonce":"', b'"nonce":"AAAA'),
        lambda d: d.replace(b'"salt":"', b'"salt":"!'),
        lambda d: d.rsplit(b"\n", 2)[0] + b"\n!!notbase64!!\n",
        lambda d: d.rsplit(b"\n", 2)[0] + b"\nAAAA\n",
        lambda d: d.replace(b"APPLIANCE-CREDENTIAL\n", b"APPLIANCE-CREDENTIAL\n\xff\xfe"),
    ],
)
def test_corrupt_files(written: CredentialStore, mangle: Callable[[bytes], bytes]) -> None:
    path = cred_path(written, "agent")
    rewrite(path, mangle(path.read_bytes()))
    expect(lambda: written.read("agent"), CredentialCorrupt, Kind.CORRUPT)


def test_oversized_file_is_corrupt(written: CredentialStore) -> None:
    rewrite(cred_path(written, "agent"), b"A" * (fileformat.MAX_FILE_SIZE + 1))
    exc = expect(lambda: written.read("agent"), CredentialCorrupt, Kind.CORRUPT)
    assert "larger than" in str(exc)


@pytest.mark.parametrize(
    ("changes", "text"),
    [({"v": 2}, "format version 2"), ({"alg": "AES-128-CBC"}, "AES-128-CBC"), ({"kdf": "scrypt"}, "scrypt")],
)
def test_unsupported_version_or_algorithm(written: CredentialStore, changes: dict[str, Any], text: str) -> None:
    edit_header(cred_path(written, "agent"), **changes)
    exc = expect(lambda: written.read("agent"), UnsupportedFormatError, Kind.UNSUPPORTED_VERSION)
    assert text in str(exc)


def test_header_text_is_not_echoed_verbatim(written: CredentialStore) -> None:
    edit_header(cred_path(written, "agent"), v=1, alg="\x1b[31mevil " + MARKER)
    exc = expect(lambda: written.read("agent"), UnsupportedFormatError, Kind.UNSUPPORTED_VERSION)
    assert "\x1b" not in str(exc)


# -- keys -------------------------------------------------------------------------------------


def test_unknown_key_id(tmp_path: Path, written: CredentialStore) -> None:
    other_ring = Keyring(tmp_path / "other-keys")
    other_ring.create()
    reader = CredentialStore(written.root, other_ring)
    exc = expect(lambda: reader.read("agent"), UnknownKeyError, Kind.UNKNOWN_KEY)
    assert written.keyring.load_current().key_id in str(exc)
    assert isinstance(exc, NotConfigured)


def test_deleted_key_file_is_unknown_key(written: CredentialStore, keyring: Keyring) -> None:
    kid = keyring.load_current().key_id
    os.unlink(Path(keyring.directory) / f"{kid}.key")
    exc = expect(lambda: written.read("agent"), UnknownKeyError, Kind.UNKNOWN_KEY)
    assert kid in str(exc)


@pytest.mark.parametrize(
    "content", [os.urandom(32), os.urandom(31), os.urandom(33), b""], ids=["replaced", "short", "long", "empty"]
)
def test_wrong_key(written: CredentialStore, keyring: Keyring, content: bytes) -> None:
    kid = keyring.load_current().key_id
    rewrite(Path(keyring.directory) / f"{kid}.key", content)
    exc = expect(lambda: written.read("agent"), WrongKeyError, Kind.WRONG_KEY)
    assert kid in str(exc) and "content changed" in str(exc)
    expect(keyring.load_current, WrongKeyError, Kind.WRONG_KEY)


def test_key_creation_is_idempotent(tmp_path: Path) -> None:
    ring = Keyring(tmp_path / "keys")
    first = ring.create()
    key_file = Path(ring.directory) / f"{first.key_id}.key"
    before = key_file.stat()
    assert ring.create() == first
    assert ring.create().key_id == first.key_id
    after = key_file.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert ring.key_ids() == [first.key_id]
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(ring.directory).stat().st_mode) == 0o700
    data = key_file.read_bytes()
    assert len(data) == 32 and key_id_of(data) == first.key_id
    assert first.key_id not in data.hex()  # the id is a digest, not a prefix of the key
    assert ring.load_current() == first == ring.get(first.key_id)


def test_forced_key_creation_keeps_old_files_readable(written: CredentialStore, keyring: Keyring) -> None:
    old = keyring.load_current()
    new = keyring.create(force=True)
    assert new != old and keyring.load_current() == new
    assert set(keyring.key_ids()) == {old.key_id, new.key_id}
    assert written.read_all() == make_creds()  # still under the old key
    written.write_set(make_creds("v2"))
    assert split_file(cred_path(written, "agent"))[1]["kid"] == new.key_id


def test_load_current_without_key(tmp_path: Path) -> None:
    ring = Keyring(tmp_path / "keys")
    exc = expect(ring.load_current, CredentialMissing, Kind.MISSING)
    assert "no master key" in str(exc) or "does not exist" in str(exc)
    store = CredentialStore(tmp_path / "creds", ring)
    expect(lambda: store.write_set(make_creds()), CredentialMissing, Kind.MISSING)


def test_key_file_permissions(written: CredentialStore, keyring: Keyring) -> None:
    kid = keyring.load_current().key_id
    key_file = Path(keyring.directory) / f"{kid}.key"
    os.chmod(key_file, 0o644)
    expect(lambda: written.read("agent"), CredentialPermissionError, Kind.BAD_PERMISSIONS)
    os.chmod(key_file, 0o600)
    elsewhere = Path(keyring.directory).parent / "stolen.key"
    os.rename(key_file, elsewhere)
    os.symlink(elsewhere, key_file)
    expect(lambda: written.read("agent"), CredentialPermissionError, Kind.BAD_PERMISSIONS)
    os.unlink(key_file)
    os.rename(elsewhere, key_file)
    os.chmod(keyring.directory, 0o777)
    expect(keyring.load_current, CredentialPermissionError, Kind.BAD_PERMISSIONS)
    os.chmod(keyring.directory, 0o700)
    assert written.read("agent") == make_creds()["agent"]


def test_master_key_never_shows_its_bytes() -> None:
    raw = os.urandom(32)
    key = MasterKey(raw)
    for text in (repr(key), str(key), f"{key}", f"{key!r}"):
        assert raw.hex() not in text and key.key_id in text
    with pytest.raises(ValueError) as info:
        MasterKey(b"\x01" * 31)
    assert "\\x01" not in str(info.value)


# -- rotation ---------------------------------------------------------------------------------


def test_rotation(tmp_path: Path, written: CredentialStore, keyring: Keyring) -> None:
    old = keyring.load_current()
    backup = tmp_path / "backup"
    shutil.copytree(written.root, backup, symlinks=True)
    new = written.rotate_key()
    assert new != old and keyring.load_current() == new
    assert keyring.key_ids() == [new.key_id]  # the old key is gone
    assert written.read_all() == make_creds()
    assert {split_file(cred_path(written, n))[1]["kid"] for n in NAMES} == {new.key_id}
    assert len(generations(written)) == 1
    # The old set (kept aside) is unreadable now that its key was retired.
    old_copy = CredentialStore(backup, keyring)
    exc = expect(lambda: old_copy.read("agent"), UnknownKeyError, Kind.UNKNOWN_KEY)
    assert old.key_id in str(exc)
    # Rotating again works and retires the second key too.
    newer = written.rotate_key()
    assert len({old.key_id, new.key_id, newer.key_id}) == 3
    assert keyring.key_ids() == [newer.key_id]
    assert written.read_all() == make_creds()


def test_rotation_keeps_modes_and_groups(store: CredentialStore) -> None:
    store.write_set(make_creds(), groups={"webapp": 4242})
    store.rotate_key()
    assert stat.S_IMODE(cred_path(store, "webapp").stat().st_mode) == 0o640
    assert cred_path(store, "webapp").stat().st_gid == 4242
    assert stat.S_IMODE(cred_path(store, "agent").stat().st_mode) == 0o600


def test_rotation_cleans_up_keys_left_by_an_interrupted_rotation(written: CredentialStore, keyring: Keyring) -> None:
    keyring.add()  # as if a rotation had been killed after creating its key
    new = written.rotate_key()
    assert keyring.key_ids() == [new.key_id]


def test_rotation_without_a_set_just_replaces_the_key(store: CredentialStore, keyring: Keyring) -> None:
    old = keyring.load_current()
    new = store.rotate_key()
    assert new != old and keyring.key_ids() == [new.key_id]
    assert store.names() == []


def test_rotation_refuses_a_damaged_set_and_changes_nothing(written: CredentialStore, keyring: Keyring) -> None:
    old = keyring.load_current()
    edit_header(cred_path(written, "shell"), created=1)
    expect(written.rotate_key, CredentialTampered, Kind.TAMPERED)
    assert keyring.key_ids() == [old.key_id]
    assert written.read("agent") == make_creds()["agent"]


def test_retire_refuses_the_current_key(keyring: Keyring) -> None:
    expect(lambda: keyring.retire(keyring.load_current().key_id), InvalidCredentialError, Kind.INVALID_INPUT)


# -- missing, symlinks, modes, owners ---------------------------------------------------------


def test_missing(tmp_path: Path, keyring: Keyring, written: CredentialStore) -> None:
    empty = CredentialStore(tmp_path / "nothing-here", keyring)
    assert empty.names() == []
    expect(lambda: empty.read("agent"), CredentialMissing, Kind.MISSING)
    expect(empty.read_all, CredentialMissing, Kind.MISSING)
    exc = expect(lambda: written.read("reports"), CredentialMissing, Kind.MISSING)
    assert exc.name == "reports" and exc.path is not None and exc.path.endswith("reports.cred")
    os.unlink(cred_path(written, "agent"))
    expect(lambda: written.read("agent"), CredentialMissing, Kind.MISSING)
    assert written.names() == ["shell", "webapp"]


def test_symlink_in_place_of_a_file(tmp_path: Path, written: CredentialStore) -> None:
    path = cred_path(written, "agent")
    outside = tmp_path / "outside.cred"
    outside.write_bytes(path.read_bytes())
    os.chmod(outside, 0o600)
    path.unlink()
    os.symlink(outside, path)
    exc = expect(lambda: written.read("agent"), CredentialPermissionError, Kind.BAD_PERMISSIONS)
    assert "symlink" in str(exc)
    assert isinstance(exc, PermissionDenied)
    # A relative symlink to a sibling is refused as well.
    path.unlink()
    os.symlink("shell.cred", path)
    expect(lambda: written.read("agent"), CredentialPermissionError, Kind.BAD_PERMISSIONS)


def test_fifo_or_directory_in_place_of_a_file(written: CredentialStore) -> None:
    path = cred_path(written, "agent")
    path.unlink()
    os.mkfifo(path, 0o600)  # must not hang the reader
    exc = expect(lambda: written.read("agent"), CredentialPermissionError, Kind.BAD_PERMISSIONS)
    assert "regular file" in str(exc)
    path.unlink()
    path.mkdir(0o700)
    expect(lambda: written.read("agent"), CredentialPermissionError, Kind.BAD_PERMISSIONS)


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o660, 0o620, 0o700, 0o4600, 0o601])
def test_modes_too_open_are_refused(written: CredentialStore, mode: int) -> None:
    os.chmod(cred_path(written, "agent"), mode)
    exc = expect(lambda: written.read("agent"), CredentialPermissionError, Kind.BAD_PERMISSIONS)
    assert f"{mode:04o}" in str(exc)


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o400, 0o440])
def test_modes_accepted(written: CredentialStore, mode: int) -> None:
    os.chmod(cred_path(written, "agent"), mode)
    assert written.read("agent") == make_creds()["agent"]


def test_allowed_gids_restrict_group_readable_files(written: CredentialStore, keyring: Keyring) -> None:
    os.chmod(cred_path(written, "agent"), 0o640)
    os.chown(cred_path(written, "agent"), -1, 4242)
    strict = CredentialStore(written.root, keyring, allowed_gids=[4343])
    exc = expect(lambda: strict.read("agent"), CredentialPermissionError, Kind.BAD_PERMISSIONS)
    assert "4242" in str(exc)
    assert strict.read("shell") == make_creds()["shell"]  # 0600 needs no allowed group
    assert CredentialStore(written.root, keyring, allowed_gids=[4242]).read("agent") == make_creds()["agent"]


@pytest.mark.skipif(not IS_ROOT, reason="changing a file's owner to another uid needs root")
def test_wrong_owner_is_refused(written: CredentialStore, keyring: Keyring) -> None:
    os.chown(cred_path(written, "agent"), 12345, -1)
    exc = expect(lambda: written.read("agent"), CredentialPermissionError, Kind.BAD_PERMISSIONS)
    assert "uid 12345" in str(exc)
    # A reader expecting another owner refuses the whole store (directories are checked too).
    other = CredentialStore(written.root, keyring, expected_uid=12345)
    expect(lambda: other.read("shell"), CredentialPermissionError, Kind.BAD_PERMISSIONS)
    os.chown(Path(keyring.directory) / f"{keyring.load_current().key_id}.key", 12345, -1)
    expect(lambda: written.read("shell"), CredentialPermissionError, Kind.BAD_PERMISSIONS)


def test_writable_directories_are_refused(written: CredentialStore) -> None:
    os.chmod(written.root, 0o777)
    expect(lambda: written.read("agent"), CredentialPermissionError, Kind.BAD_PERMISSIONS)
    expect(lambda: written.write_set(make_creds()), CredentialPermissionError, Kind.BAD_PERMISSIONS)
    os.chmod(written.root, 0o711)
    os.chmod(cred_path(written, "agent").parent, 0o773)
    expect(lambda: written.read("agent"), CredentialPermissionError, Kind.BAD_PERMISSIONS)


def test_damaged_current_pointer(tmp_path: Path, written: CredentialStore) -> None:
    current = Path(written.root) / "current"
    target = os.readlink(current)
    current.unlink()
    os.symlink(str(tmp_path), current)  # points outside the store
    expect(lambda: written.read("agent"), CredentialCorrupt, Kind.CORRUPT)
    current.unlink()
    current.write_text("garbage")
    expect(lambda: written.read("agent"), CredentialCorrupt, Kind.CORRUPT)
    current.unlink()
    # The generation directory replaced by a symlink to a copy of itself.
    gen = Path(written.root) / target
    shutil.copytree(gen, tmp_path / "copy")
    os.rename(gen, tmp_path / "moved")
    os.symlink(tmp_path / "copy", gen)
    os.symlink(target, current)
    expect(lambda: written.read("agent"), CredentialPermissionError, Kind.BAD_PERMISSIONS)
    # A write repairs all of this.
    gen.unlink()
    written.write_set(make_creds("v2"))
    assert written.read_all() == make_creds("v2")


# -- invalid input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("creds", "kwargs"),
    [
        ({}, {}),
        ({"../etc": {"password": MARKER}}, {}),
        ({"a/b": {"password": MARKER}}, {}),
        ({".hidden": {"password": MARKER}}, {}),
        ({"": {"password": MARKER}}, {}),
        ({"x" * 65: {"password": MARKER}}, {}),
        ({"agent": {"password": MARKER, "blob": b"raw-" + MARKER.encode()}}, {}),
        ({"agent": {"password": MARKER, "set": {MARKER}}}, {}),
        ({"agent": {"password": MARKER, "ratio": float("nan")}}, {}),
        ({"agent": {"password": f"\ud800{MARKER}"}}, {}),
        ({"agent": {1: MARKER}}, {}),
        ({"agent": [MARKER]}, {}),
        ({"agent": {"password": MARKER, "big": "x" * 70000}}, {}),
        ({"agent": {"password": MARKER}}, {"group_gid": -1}),
        ({"agent": {"password": MARKER}}, {"groups": {"agent": True}}),
        ({"agent": {"password": MARKER}}, {"groups": {"webapp": 42}}),
    ],
)
def test_invalid_input_writes_nothing(written: CredentialStore, creds: Any, kwargs: dict[str, Any]) -> None:
    before = generations(written)
    exc = expect(lambda: written.write_set(creds, **kwargs), InvalidCredentialError, Kind.INVALID_INPUT)
    assert isinstance(exc, UsageError)
    assert generations(written) == before
    assert written.read_all() == make_creds()


def test_invalid_names_on_read(written: CredentialStore) -> None:
    for name in ("../agent", "agent/x", ".lock", ""):
        expect(functools.partial(written.read, name), InvalidCredentialError, Kind.INVALID_INPUT)


# -- no secret anywhere -----------------------------------------------------------------------


def test_no_secret_in_repr_str_or_logs(
    written: CredentialStore, keyring: Keyring, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="appliance.secrets")
    written.write_set(make_creds("v2"))
    cred = written.read("agent")
    everything = written.read_all()
    written.rotate_key()
    texts = [
        repr(cred),
        str(cred),
        f"{cred}",
        f"{cred!r}",
        repr(everything),
        str(everything),
        repr(written),
        repr(keyring),
        repr(keyring.load_current()),
        repr(Credential("x", {"password": MARKER})),
        caplog.text,
        *(r.getMessage() for r in caplog.records),
    ]
    assert_no_secret(*texts)
    assert "password" in repr(cred) and "hidden" in repr(cred)  # field names stay visible
    assert any("wrote credential set" in r.getMessage() for r in caplog.records)


def test_error_classes() -> None:
    pairs: list[tuple[type[CredentialError], CredentialErrorKind, type[ApplianceError]]] = [
        (CredentialMissing, Kind.MISSING, NotConfigured),
        (CredentialPermissionError, Kind.BAD_PERMISSIONS, PermissionDenied),
        (CredentialCorrupt, Kind.CORRUPT, ApplianceError),
        (CredentialTampered, Kind.TAMPERED, ApplianceError),
        (UnknownKeyError, Kind.UNKNOWN_KEY, NotConfigured),
        (WrongKeyError, Kind.WRONG_KEY, NotConfigured),
        (UnsupportedFormatError, Kind.UNSUPPORTED_VERSION, ApplianceError),
        (InvalidCredentialError, Kind.INVALID_INPUT, UsageError),
    ]
    messages = set()
    for cls, kind, base in pairs:
        exc = cls("it broke", name="agent", path="/x/agent.cred")
        assert exc.kind is kind and isinstance(exc, base) and isinstance(exc, CredentialError)
        assert str(exc) == "credential 'agent': it broke (/x/agent.cred)"
        assert exc.hint  # every kind tells the user what to do, except invalid input
        copy = pickle.loads(pickle.dumps(exc))
        assert type(copy) is cls and str(copy) == str(exc) and copy.hint == exc.hint
        messages.add(exc.hint)
    assert len(messages) >= 6  # distinct advice per kind


# -- another user reading its group-readable file ---------------------------------------------


@pytest.mark.skipif(not IS_ROOT, reason="switching to another user needs root")
def test_service_user_reads_only_its_group_readable_file() -> None:
    """A real process running as another user (forked, then setuid) reads its 0640 file only."""
    gid, uid = 4242, 65534
    base = Path(tempfile.mkdtemp(prefix="credstore-"))  # not under pytest's 0700 tmp dir
    try:
        os.chmod(base, 0o711)
        shared_ring = Keyring(base / "keys", group_gid=gid)
        shared_ring.create()
        CredentialStore(base / "creds", shared_ring).write_set(make_creds(), groups={"webapp": gid})
        private_ring = Keyring(base / "keys2")  # default: key readable by root only
        private_ring.create()
        CredentialStore(base / "creds2", private_ring).write_set(make_creds(), groups={"webapp": gid})
        assert stat.S_IMODE((base / "keys").stat().st_mode) == 0o750

        def outcome(fn: Callable[[], object]) -> str:
            try:
                fn()
            except CredentialError as exc:
                return exc.kind.value
            return "ok"

        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            result: dict[str, str] = {}
            try:
                os.close(rfd)
                os.setgroups([])
                os.setgid(gid)
                os.setuid(uid)
                ring = Keyring(base / "keys", expected_uid=0)
                reader = CredentialStore(base / "creds", ring, expected_uid=0, allowed_gids=[gid])
                result["webapp"] = outcome(
                    lambda: reader.read("webapp")["password"] == make_creds()["webapp"]["password"] or 1 / 0
                )
                result["agent"] = outcome(lambda: reader.read("agent"))
                result["names"] = outcome(reader.names)
                ring2 = Keyring(base / "keys2", expected_uid=0)
                result["private"] = outcome(
                    lambda: CredentialStore(base / "creds2", ring2, expected_uid=0).read("webapp")
                )
            except BaseException as exc:
                result["error"] = repr(exc)
            os.write(wfd, json.dumps(result).encode())
            os._exit(0)
        os.close(wfd)
        with os.fdopen(rfd, "rb") as pipe:
            data = pipe.read()
        os.waitpid(pid, 0)
        assert json.loads(data) == {
            "webapp": "ok",
            "agent": "bad-permissions",  # 0600 root: EACCES
            "names": "bad-permissions",  # directories are 0711: no listing for others
            "private": "bad-permissions",  # the ciphertext is readable but the key is not
        }
    finally:
        shutil.rmtree(base)
