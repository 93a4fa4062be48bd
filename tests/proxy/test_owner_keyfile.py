"""`parent_proxy.owner_keyfile`: the encrypted owner key file (PKCS#8, PBES2 with PBKDF2-HMAC-SHA256 and AES-256-CBC),
its passphrases, plaintext Solana JSON next to it, interop with the openssl binary, and malformed files (hypothesis)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from asn1crypto import keys as asn1_keys
from asn1crypto import pem as asn1_pem
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parent_proxy.owner_keyfile import (
    KDF_ITERATIONS,
    MAX_KDF_ITERATIONS,
    KeyFileError,
    decrypt_owner_key,
    encrypt_owner_key,
    load_owner_key,
    prompt_passphrase,
    read_passphrase_file,
    read_solana_keypair,
    write_encrypted_key_file,
)
from parent_proxy.owner_signers import OwnerKeyError, write_keypair_file

PASSPHRASE = "correct horse battery staple ☃".encode()
OPENSSL = shutil.which("openssl") or ""
needs_openssl = pytest.mark.skipif(not OPENSSL, reason="the openssl binary is not installed")


def public_raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def collect() -> tuple[list[str], Callable[[str], None]]:
    warnings: list[str] = []
    return warnings, warnings.append


def quiet(_: str) -> None:
    pass


def no_passphrase() -> bytes:
    raise AssertionError("the passphrase was asked for")


def write_secret(path: Path, data: bytes, mode: int = 0o600) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)
    return path


def parameters(pem: bytes) -> tuple[object, ...]:
    _, _, der = asn1_pem.unarmor(pem)
    algorithm = asn1_keys.EncryptedPrivateKeyInfo.load(der)["encryption_algorithm"]
    return (
        algorithm["algorithm"].native,
        algorithm.kdf,
        algorithm.kdf_hmac,
        algorithm.kdf_iterations,
        len(algorithm.kdf_salt),
        algorithm["parameters"]["encryption_scheme"]["algorithm"].native,
    )


def with_iterations(pem: bytes, iterations: int) -> bytes:
    """The same file with another iteration count in its (unauthenticated) header."""
    _, _, der = asn1_pem.unarmor(pem)
    info = asn1_keys.EncryptedPrivateKeyInfo.load(der)
    kdf = info["encryption_algorithm"]["parameters"]["key_derivation_func"]["parameters"]
    kdf["iteration_count"] = iterations
    return bytes(asn1_pem.armor("ENCRYPTED PRIVATE KEY", info.dump(force=True)))


# -- format ---------------------------------------------------------------------------------------------------------


def test_round_trip_keeps_the_key_with_the_promised_parameters() -> None:
    key = Ed25519PrivateKey.generate()
    pem = encrypt_owner_key(key, PASSPHRASE)
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n")
    assert parameters(pem) == ("pbes2", "pbkdf2", "sha256", KDF_ITERATIONS, 16, "aes256_cbc")
    assert KDF_ITERATIONS >= 600_000
    warnings, warn = collect()
    back = decrypt_owner_key(pem, PASSPHRASE, source="key file k", warn=warn)
    assert public_raw(back) == public_raw(key) and warnings == []
    message = b"\xffwaiaas/policy\x00{}"
    key.public_key().verify(back.sign(message), message)
    again = encrypt_owner_key(key, PASSPHRASE)
    assert again != pem and parameters(again)[:4] == parameters(pem)[:4]  # a fresh salt and IV every time


def test_a_wrong_passphrase_is_one_opaque_error() -> None:
    pem = encrypt_owner_key(Ed25519PrivateKey.generate(), PASSPHRASE)
    with pytest.raises(KeyFileError, match=r"^key file k: wrong passphrase, or the file is corrupt$"):
        decrypt_owner_key(pem, b"correct horse battery staple", source="key file k", warn=quiet)
    with pytest.raises(KeyFileError, match="empty passphrase"):
        decrypt_owner_key(pem, b"", source="key file k", warn=quiet)


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), "RSAPrivateKey"),
        (lambda: ec.generate_private_key(ec.SECP256R1()), "ECPrivateKey"),
    ],
)
def test_another_key_type_is_refused(make: object, name: str, tmp_path: Path) -> None:
    other = make()  # type: ignore[operator]
    pem = other.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(PASSPHRASE))
    path = write_secret(tmp_path / "other.pem", pem)
    with pytest.raises(KeyFileError, match=f"^key file {path}: holds a {name}, not an Ed25519 key$"):
        load_owner_key(path, lambda: PASSPHRASE, quiet)


def test_iteration_counts_weak_warn_and_excessive_refused_before_any_kdf() -> None:
    key = Ed25519PrivateKey.generate()
    weak = encrypt_owner_key(key, PASSPHRASE, iterations=2048)
    warnings, warn = collect()
    assert public_raw(decrypt_owner_key(weak, PASSPHRASE, source="key file w", warn=warn)) == public_raw(key)
    assert warnings == [f"key file w uses only 2048 PBKDF2 iterations (new files use {KDF_ITERATIONS}); re-encrypt it"]
    for count in (MAX_KDF_ITERATIONS + 1, 2**31 - 1):
        with pytest.raises(KeyFileError, match=f"{count} PBKDF2 iterations is outside 1-{MAX_KDF_ITERATIONS}"):
            decrypt_owner_key(with_iterations(weak, count), PASSPHRASE, source="key file w", warn=quiet)
    with pytest.raises(KeyFileError, match="iteration count must be"):
        encrypt_owner_key(key, PASSPHRASE, iterations=MAX_KDF_ITERATIONS + 1)


def test_an_empty_passphrase_is_refused_on_creation_and_nothing_is_written(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="empty passphrase"):
        encrypt_owner_key(Ed25519PrivateKey.generate(), b"")
    with pytest.raises(KeyFileError, match="empty passphrase"):
        write_encrypted_key_file(tmp_path / "k.pem", Ed25519PrivateKey.generate(), b"")
    assert list(tmp_path.iterdir()) == []


def test_the_file_is_created_0600_and_never_overwritten(tmp_path: Path) -> None:
    os.umask(old := os.umask(0))  # the file mode must not depend on the umask
    try:
        path = tmp_path / "k.pem"
        key = Ed25519PrivateKey.generate()
        write_encrypted_key_file(path, key, PASSPHRASE)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    before = path.read_bytes()
    with pytest.raises(KeyFileError, match=f"^key file {path} already exists; not overwriting it$"):
        write_encrypted_key_file(path, Ed25519PrivateKey.generate(), PASSPHRASE)
    assert path.read_bytes() == before
    assert public_raw(load_owner_key(path, lambda: PASSPHRASE, quiet)) == public_raw(key)
    with pytest.raises(KeyFileError, match="cannot be created"):  # only a missing last directory is made
        write_encrypted_key_file(tmp_path / "missing" / "dir" / "k.pem", key, PASSPHRASE)
    assert not (tmp_path / "missing").exists()


# -- reading files ----------------------------------------------------------------------------------------------------


def test_the_content_decides_the_format_not_the_name(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    encrypted = write_secret(tmp_path / "owner.json", encrypt_owner_key(key, PASSPHRASE))
    plain = tmp_path / "owner.pem"
    write_keypair_file(plain, key)
    asked: list[int] = []

    def passphrase() -> bytes:
        asked.append(1)
        return PASSPHRASE

    warnings, warn = collect()
    assert public_raw(load_owner_key(encrypted, passphrase, warn)) == public_raw(key)
    assert asked == [1] and warnings == []
    assert public_raw(load_owner_key(plain, no_passphrase, warn)) == public_raw(key)
    assert warnings == [
        f"key file {plain} is a plaintext Solana keypair; encrypt it: waiaas owner encrypt-keypair {plain} --out F"
    ]
    unencrypted = write_secret(
        tmp_path / "clear.pem", key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    )
    with pytest.raises(KeyFileError, match="neither an encrypted PKCS#8 PEM"):
        load_owner_key(unencrypted, no_passphrase, quiet)


def test_file_modes_warn_for_encrypted_and_refuse_for_plaintext(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    encrypted = write_secret(tmp_path / "k.pem", encrypt_owner_key(key, PASSPHRASE), 0o640)
    warnings, warn = collect()
    assert public_raw(load_owner_key(encrypted, lambda: PASSPHRASE, warn)) == public_raw(key)
    assert warnings == [f"key file {encrypted} is accessible to group or others (mode 640); chmod 600 it"]
    plain = tmp_path / "k.json"
    write_keypair_file(plain, key)
    os.chmod(plain, 0o604)
    with pytest.raises(KeyFileError, match=r"readable by group or others \(chmod 600 it\)"):
        load_owner_key(plain, no_passphrase, quiet)


def test_unreadable_and_oversized_key_files(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match=f"^key file {tmp_path / 'absent'}: cannot be read"):
        load_owner_key(tmp_path / "absent", no_passphrase, quiet)
    with pytest.raises(KeyFileError, match=r"cannot be read \(Is a directory\)"):
        load_owner_key(tmp_path, no_passphrase, quiet)
    with pytest.raises(KeyFileError, match=r"^key file /dev/null: not a regular file$"):
        load_owner_key(Path("/dev/null"), no_passphrase, quiet)
    big = write_secret(tmp_path / "big", b"[" + b" " * 20_000 + b"]")
    with pytest.raises(KeyFileError, match="larger than 16384 bytes"):
        load_owner_key(big, no_passphrase, quiet)


def test_solana_keypairs_to_import_are_validated(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    cases = {
        "short": (list(seed), "not a JSON array of 64 bytes"),
        "big-byte": ([*seed, *public_raw(key)[:-1], 256], "not a JSON array of 64 bytes"),
        "halves": ([*seed, *public_raw(Ed25519PrivateKey.generate())], "the public half does not match"),
        "object": ({"seed": list(seed)}, "not a JSON array of 64 bytes"),
    }
    for name, (value, reason) in cases.items():
        path = write_secret(tmp_path / name, json.dumps(value).encode())
        with pytest.raises(KeyFileError, match=f"^keypair file {path}: {reason}"):
            read_solana_keypair(path, quiet)
    not_json = write_secret(tmp_path / "garbage", b"[1, 2,")
    with pytest.raises(KeyFileError, match="not JSON"):
        read_solana_keypair(not_json, quiet)
    encrypted = write_secret(tmp_path / "enc", encrypt_owner_key(key, PASSPHRASE))
    with pytest.raises(KeyFileError, match="already encrypted"):
        read_solana_keypair(encrypted, quiet)
    good = write_secret(tmp_path / "good", json.dumps([*seed, *public_raw(key)]).encode(), 0o644)
    warnings, warn = collect()
    assert public_raw(read_solana_keypair(good, warn)) == public_raw(key)
    assert warnings == [f"keypair file {good} is accessible to group or others (mode 644); chmod 600 it"]


# -- passphrases ------------------------------------------------------------------------------------------------------


def test_passphrase_files_give_their_first_line(tmp_path: Path) -> None:
    for content in (PASSPHRASE, PASSPHRASE + b"\n", PASSPHRASE + b"\r\n", PASSPHRASE + b"\nsecond line\n"):
        path = tmp_path / "pass"
        path.unlink(missing_ok=True)
        assert read_passphrase_file(write_secret(path, content), quiet) == PASSPHRASE
    for content in (b"", b"\n", b"\r\nafter an empty line"):
        path.unlink()
        with pytest.raises(KeyFileError, match=f"^passphrase file {path}: the first line is empty$"):
            read_passphrase_file(write_secret(path, content), quiet)
    with pytest.raises(KeyFileError, match=f"^passphrase file {tmp_path / 'none'}: cannot be read"):
        read_passphrase_file(tmp_path / "none", quiet)
    reader, writer = os.pipe()  # --passphrase-file <(pass show owner)
    os.write(writer, PASSPHRASE + b"\n")
    os.close(writer)
    try:
        assert read_passphrase_file(Path(f"/dev/fd/{reader}"), quiet) == PASSPHRASE
    finally:
        os.close(reader)
    with pytest.raises(KeyFileError, match=r"^passphrase file /dev/null: not a regular file$"):
        read_passphrase_file(Path("/dev/null"), quiet)
    path.unlink()
    warnings, warn = collect()
    read_passphrase_file(write_secret(path, PASSPHRASE, 0o644), warn)
    assert warnings == [f"passphrase file {path} is accessible to group or others (mode 644); chmod 600 it"]


def test_prompting_asks_twice_for_a_new_file_and_refuses_empty_or_different_answers() -> None:
    class Answers:
        """An ``ask`` giving ``values`` in turn (an exception class: raised instead); it records the prompts."""

        def __init__(self, *values: str | type[BaseException]) -> None:
            self.queue = list(values)
            self.prompts: list[str] = []

        def __call__(self, prompt: str) -> str:
            self.prompts.append(prompt)
            value = self.queue.pop(0)
            if isinstance(value, type):
                raise value
            return value

    ask = Answers("pässphrase", "pässphrase")
    assert prompt_passphrase(Path("k.pem"), confirm=True, ask=ask) == "pässphrase".encode()
    assert ask.prompts == ["Passphrase for k.pem: ", "Passphrase for k.pem (again): "]
    assert prompt_passphrase(Path("k.pem"), confirm=False, ask=Answers("x")) == b"x"
    refusals = [
        (Answers("one", "two"), True, "the two passphrases differ"),
        (Answers("", ""), True, "an empty passphrase is refused"),
        (Answers(""), False, "an empty passphrase is refused"),
        (Answers(EOFError), False, "no passphrase entered"),
        (Answers("a", KeyboardInterrupt), True, "no passphrase entered"),
    ]
    for ask, confirm, reason in refusals:
        with pytest.raises(KeyFileError, match=f"^key file k.pem: {reason}$"):
            prompt_passphrase(Path("k.pem"), confirm=confirm, ask=ask)


# -- interop with the openssl binary ---------------------------------------------------------------------------------


@needs_openssl
def test_openssl_pkey_reads_our_file_and_gives_the_same_public_key(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "owner.key"
    write_encrypted_key_file(path, key, PASSPHRASE)
    passfile = write_secret(tmp_path / "pass", PASSPHRASE + b"\n")
    answer = subprocess.run(
        [OPENSSL, "pkey", "-in", str(path), "-passin", f"file:{passfile}", "-pubout", "-outform", "DER"],
        capture_output=True,
        check=True,
    )
    assert answer.stdout == key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    wrong = write_secret(tmp_path / "wrong", b"not it\n")
    refused = subprocess.run(
        [OPENSSL, "pkey", "-in", str(path), "-passin", f"file:{wrong}", "-noout"],
        capture_output=True,
        check=False,
    )
    assert refused.returncode != 0


@needs_openssl
def test_we_read_files_openssl_makes(tmp_path: Path) -> None:
    passfile = write_secret(tmp_path / "pass", PASSPHRASE + b"\n")
    clear = tmp_path / "clear.pem"
    subprocess.run([OPENSSL, "genpkey", "-algorithm", "ed25519", "-out", str(clear)], check=True)
    key = load_pem_private_key(clear.read_bytes(), None)
    assert isinstance(key, Ed25519PrivateKey)
    strong = tmp_path / "strong.pem"
    subprocess.run(
        [OPENSSL, "pkcs8", "-topk8", "-in", str(clear), "-out", str(strong), "-passout", f"file:{passfile}",
         "-v2", "aes-256-cbc", "-v2prf", "hmacWithSHA256", "-iter", str(KDF_ITERATIONS)],
        check=True,
    )  # fmt: skip
    os.chmod(strong, 0o600)
    strong_parameters = parameters(strong.read_bytes())  # OpenSSL 3.0 uses an 8-byte salt
    assert strong_parameters[:4] + strong_parameters[5:] == ("pbes2", "pbkdf2", "sha256", KDF_ITERATIONS, "aes256_cbc")
    warnings, warn = collect()
    assert public_raw(load_owner_key(strong, lambda: PASSPHRASE, warn)) == public_raw(key)
    assert warnings == []
    default = tmp_path / "default.pem"
    subprocess.run(
        [OPENSSL, "pkcs8", "-topk8", "-in", str(clear), "-out", str(default), "-passout", f"file:{passfile}"],
        check=True,
    )
    os.chmod(default, 0o600)
    assert public_raw(load_owner_key(default, lambda: PASSPHRASE, warn)) == public_raw(key)
    assert len(warnings) == 1 and "uses only 2048 PBKDF2 iterations" in warnings[0]
    scrypt = tmp_path / "scrypt.pem"
    subprocess.run(
        [OPENSSL, "pkcs8", "-topk8", "-scrypt", "-in", str(clear), "-out", str(scrypt), "-passout", f"file:{passfile}"],
        check=True,
    )
    os.chmod(scrypt, 0o600)
    with pytest.raises(KeyFileError, match=f"^key file {scrypt}: encrypted with pbes2/scrypt; only PBES2 with PBKDF2"):
        load_owner_key(scrypt, no_passphrase, quiet)


# -- malformed files --------------------------------------------------------------------------------------------------

FUZZ_ITERATIONS = 1000
"""Fuzzed files derive their key in well under a millisecond; the format, not the KDF cost, is under test."""
FUZZ_KEY = Ed25519PrivateKey.generate()
FUZZ_PEM = encrypt_owner_key(FUZZ_KEY, PASSPHRASE, iterations=FUZZ_ITERATIONS)
_, _, FUZZ_DER = asn1_pem.unarmor(FUZZ_PEM)


def _load_fuzzed(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzzed"
    path.unlink(missing_ok=True)
    write_secret(path, data)
    try:
        key = load_owner_key(path, lambda: PASSPHRASE, lambda _: None)
    except KeyFileError:
        return
    assert isinstance(key, Ed25519PrivateKey)


def _flip(data: bytes, index: int, value: int) -> bytes:
    index %= len(data)
    return data[:index] + bytes([value]) + data[index + 1 :]


fuzz = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@fuzz
@given(st.binary(max_size=600))
def test_random_bytes_give_only_key_file_errors(tmp_path: Path, data: bytes) -> None:
    _load_fuzzed(tmp_path, data)


@fuzz
@given(st.integers(min_value=0), st.integers(min_value=0, max_value=255), st.booleans())
def test_damaged_encrypted_files_give_only_key_file_errors(tmp_path: Path, index: int, value: int, pem: bool) -> None:
    if pem:
        _load_fuzzed(tmp_path, _flip(FUZZ_PEM, index, value))
    else:
        _load_fuzzed(tmp_path, bytes(asn1_pem.armor("ENCRYPTED PRIVATE KEY", _flip(FUZZ_DER, index, value))))


@fuzz
@given(st.integers(min_value=0, max_value=len(FUZZ_DER)), st.binary(max_size=40))
def test_truncated_or_extended_encrypted_files_give_only_key_file_errors(tmp_path: Path, cut: int, tail: bytes) -> None:
    _load_fuzzed(tmp_path, bytes(asn1_pem.armor("ENCRYPTED PRIVATE KEY", FUZZ_DER[:cut] + tail)))


@fuzz
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(min_value=-300, max_value=300) | st.floats() | st.text(max_size=5),
        lambda children: st.lists(children, max_size=70),
        max_leaves=80,
    ).filter(lambda value: isinstance(value, list))
)
def test_malformed_solana_json_gives_only_key_file_errors(tmp_path: Path, value: list[object]) -> None:
    _load_fuzzed(tmp_path, json.dumps(value).encode())


def test_deeply_nested_json_is_a_key_file_error(tmp_path: Path) -> None:
    path = write_secret(tmp_path / "nested", b"[" * 10_000)
    with pytest.raises(KeyFileError, match="not JSON"):
        load_owner_key(path, no_passphrase, quiet)


def test_key_file_errors_are_owner_key_errors() -> None:
    assert issubclass(KeyFileError, OwnerKeyError)
