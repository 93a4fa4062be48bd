"""The self-host owner key file: an Ed25519 key encrypted at rest, or (read only, with a warning) a plaintext Solana
CLI keypair JSON. The format is told by the file's content, never by its name.

Encrypted format: PEM ``ENCRYPTED PRIVATE KEY``, a PKCS#8 ``EncryptedPrivateKeyInfo`` (RFC 5958) with PBES2
(RFC 8018): PBKDF2-HMAC-SHA256, `KDF_ITERATIONS` iterations, a 16-byte random salt, AES-256-CBC. It is what
``openssl pkcs8 -topk8 -v2 aes-256-cbc -v2prf hmacWithSHA256 -iter 600000`` writes, and ``openssl pkey -in FILE
-passin file:PASSFILE`` reads it (docs/owner-keys.md).

No hand-rolled crypto. cryptography (>= 44, 50.0.2 checked) cannot set the iteration count of a PKCS#8 file
(``PrivateFormat.PKCS8.encryption_builder()`` raises; ``BestAvailableEncryption`` uses 2048 iterations), but its
PKCS#12 writer can (``kdf_rounds`` with ``PBES.PBESv2SHA256AndAES256CBC``). So `encrypt_owner_key` lets cryptography
write a PKCS#12 holding only the key and lifts out its key bag, a ``pkcs8ShroudedKeyBag``, which RFC 7292 section
4.2.2 defines as exactly an ``EncryptedPrivateKeyInfo``; asn1crypto moves the DER, nothing more. Before a byte is
written: 1. the parameters are checked (PBES2, PBKDF2, HMAC-SHA256, the iteration count, AES-256-CBC); 2.
cryptography's own PKCS#8 loader decrypts the result with the passphrase and must give the same public key.

Errors: `KeyFileError` (an `OwnerKeyError`) names the file and the reason; never the passphrase, the key or the
seed. Decoders of untrusted bytes translate whatever they raise into it at one place each. A wrong passphrase and a
corrupt ciphertext look alike (AES-CBC has no authentication tag): both are "wrong passphrase, or the file is
corrupt". Warnings (plaintext key, loose file mode, weak iteration count) go to the ``warn`` callback.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from asn1crypto import keys as asn1_keys
from asn1crypto import pem as asn1_pem
from asn1crypto import pkcs12 as asn1_pkcs12
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.serialization import PrivateFormat, load_der_private_key, pkcs12

from parent_proxy.owner_signers import OwnerKeyError, keypair_from_json

PEM_LABEL = "ENCRYPTED PRIVATE KEY"
"""RFC 7468 section 11: the label of an ``EncryptedPrivateKeyInfo``."""
KDF_ITERATIONS = 600_000
"""PBKDF2-HMAC-SHA256 iterations for new files: the OWASP Password Storage Cheat Sheet figure for that PRF."""
MAX_KDF_ITERATIONS = 10_000_000
"""Refuse to run more than this on load, so a damaged or hostile file cannot stall the CLI for minutes."""
MAX_KEY_FILE_BYTES = 16 * 1024
"""Both formats are under 1 KiB; anything this large is not a key file (checked before reading it all)."""
MAX_PASSPHRASE_FILE_BYTES = 4096
SCRYPT_OID = "1.3.6.1.4.1.11591.4.11"
"""RFC 7914 section 7 (``openssl pkcs8 -scrypt``): not read, its memory cost is unbounded by the file's word."""

Warn = Callable[[str], None]


class KeyFileError(OwnerKeyError):
    """An owner key file or passphrase could not be read, decrypted or written. Never carries secret material."""


# -- passphrases ------------------------------------------------------------------------------------------------------


def read_passphrase_file(path: Path, warn: Warn) -> bytes:
    """The passphrase: the file's first line without its line ending (``openssl -passin file:`` reads the same)."""
    return read_secret_line(path, "passphrase file", warn)


def read_secret_line(path: Path, what: str, warn: Warn) -> bytes:
    """The first line of a small file (a regular file or a pipe) holding a secret that must not be a command-line
    argument (a passphrase, an MFA code), without its line ending; ``what`` names the file in errors and warnings."""
    data, mode = _read_small(path, MAX_PASSPHRASE_FILE_BYTES, what, pipe_too=True)
    _warn_if_loose(path, mode, what, warn)
    line = data.split(b"\n", 1)[0].removesuffix(b"\r")
    if not line:
        raise KeyFileError(f"{what} {path}: the first line is empty")
    return line


def prompt_passphrase(path: Path, *, confirm: bool, ask: Callable[[str], str]) -> bytes:
    """Ask on the terminal (``ask`` is `getpass.getpass`); with ``confirm`` (a new file), twice."""
    try:
        first = ask(f"Passphrase for {path}: ")
        if confirm and ask(f"Passphrase for {path} (again): ") != first:
            raise KeyFileError(f"key file {path}: the two passphrases differ")
    except (EOFError, KeyboardInterrupt):
        raise KeyFileError(f"key file {path}: no passphrase entered") from None
    if not first:
        raise KeyFileError(f"key file {path}: an empty passphrase is refused")
    return first.encode()


# -- encrypted PKCS#8 -------------------------------------------------------------------------------------------------


def encrypt_owner_key(key: Ed25519PrivateKey, passphrase: bytes, *, iterations: int = KDF_ITERATIONS) -> bytes:
    """The PEM of ``key`` encrypted under ``passphrase`` (see the module docstring for how and what is checked)."""
    if not passphrase:
        raise KeyFileError("an empty passphrase is refused")
    if not 1 <= iterations <= MAX_KDF_ITERATIONS:
        raise KeyFileError(f"the iteration count must be 1-{MAX_KDF_ITERATIONS}")
    encryption = (
        PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(iterations)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(SHA256())
        .build(passphrase)
    )
    pfx = asn1_pkcs12.Pfx.load(pkcs12.serialize_key_and_certificates(None, key, None, None, encryption))
    bags = [
        bag
        for content in pfx.authenticated_safe
        if content["content_type"].native == "data"
        for bag in asn1_pkcs12.SafeContents.load(content["content"].native)
        if bag["bag_id"].native == "pkcs8_shrouded_key_bag"
    ]
    if len(bags) != 1:
        raise KeyFileError("the installed cryptography wrote an unexpected PKCS#12 layout (no single key bag)")
    der = bags[0]["bag_value"].untag().dump(force=True)
    # 1. The parameters are the ones promised (a library that ignored kdf_rounds would be caught here).
    algorithm = asn1_keys.EncryptedPrivateKeyInfo.load(der)["encryption_algorithm"]
    promised = ("pbes2", "pbkdf2", "sha256", iterations, "aes256_cbc")
    written = (
        algorithm["algorithm"].native,
        algorithm.kdf,
        algorithm.kdf_hmac,
        algorithm.kdf_iterations,
        algorithm["parameters"]["encryption_scheme"]["algorithm"].native,
    )
    if written != promised:
        raise KeyFileError(f"the installed cryptography wrote {written}, not {promised}")
    # 2. The standard PKCS#8 loader gives the same key back.
    back = load_der_private_key(der, passphrase)
    if not isinstance(back, Ed25519PrivateKey) or back.public_key() != key.public_key():
        raise KeyFileError("the encrypted key does not decrypt to the same key")
    pem: bytes = asn1_pem.armor(PEM_LABEL, der)
    return pem


def decrypt_owner_key(pem: bytes, passphrase: bytes, *, source: str, warn: Warn) -> Ed25519PrivateKey:
    """The Ed25519 key in an encrypted PKCS#8 PEM. ``source`` names the file in errors and warnings."""
    return _decrypt(*_checked_header(pem, source), passphrase, source=source, warn=warn)


def _checked_header(pem: bytes, source: str) -> tuple[bytes, int]:
    """The DER and its iteration count, once the unencrypted header passes (before any passphrase is asked for)."""
    try:
        label, _, der = asn1_pem.unarmor(pem)
        algorithm = asn1_keys.EncryptedPrivateKeyInfo.load(der, strict=True)["encryption_algorithm"]
        scheme, kdf = algorithm["algorithm"].native, algorithm.kdf
        iterations = algorithm.kdf_iterations if (scheme, kdf) == ("pbes2", "pbkdf2") else 0
    except Exception:  # asn1crypto raises ValueError, TypeError, KeyError, ...; the file is simply not well formed
        raise KeyFileError(f"{source}: corrupt (not a well-formed encrypted PKCS#8 PEM)") from None
    if label != PEM_LABEL:
        raise KeyFileError(f"{source}: a PEM {label!r}, not {PEM_LABEL!r}")
    if (scheme, kdf) != ("pbes2", "pbkdf2"):
        kdf = {SCRYPT_OID: "scrypt"}.get(kdf, kdf)
        raise KeyFileError(f"{source}: encrypted with {scheme}/{kdf}; only PBES2 with PBKDF2 is read")
    if not 1 <= iterations <= MAX_KDF_ITERATIONS:
        raise KeyFileError(f"{source}: {iterations} PBKDF2 iterations is outside 1-{MAX_KDF_ITERATIONS}")
    return der, iterations


def _decrypt(der: bytes, iterations: int, passphrase: bytes, *, source: str, warn: Warn) -> Ed25519PrivateKey:
    if not passphrase:
        raise KeyFileError(f"{source}: an empty passphrase is refused")
    try:
        key = load_der_private_key(der, passphrase)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyFileError(f"{source}: wrong passphrase, or the file is corrupt") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{source}: holds a {type(key).__name__.removeprefix('_')}, not an Ed25519 key")
    if iterations < KDF_ITERATIONS:
        warn(f"{source} uses only {iterations} PBKDF2 iterations (new files use {KDF_ITERATIONS}); re-encrypt it")
    return key


# -- files -------------------------------------------------------------------------------------------------------------


def _read_small(path: Path, limit: int, what: str, *, pipe_too: bool = False) -> tuple[bytes, int]:
    """A small file's bytes and mode, both from one open file (no swap between the check and the read). A regular
    file only (a device could be endless), or with ``pipe_too`` also a pipe (``--passphrase-file <(pass show x)``)."""
    try:
        with path.open("rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            if not (stat.S_ISREG(mode) or (pipe_too and stat.S_ISFIFO(mode))):
                raise KeyFileError(f"{what} {path}: not a regular file")
            data = handle.read(limit + 1)
    except OSError as exc:
        raise KeyFileError(f"{what} {path}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    if len(data) > limit:
        raise KeyFileError(f"{what} {path}: larger than {limit} bytes")
    return data, mode


def _warn_if_loose(path: Path, mode: int, what: str, warn: Warn) -> None:
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        warn(f"{what} {path} is accessible to group or others (mode {stat.S_IMODE(mode):o}); chmod 600 it")


def _is_encrypted_pem(data: bytes) -> bool:
    return data.lstrip().startswith(b"-----BEGIN " + PEM_LABEL.encode() + b"-----")


def _is_json_array(data: bytes) -> bool:
    return data.lstrip().startswith(b"[")


def load_owner_key(path: Path, passphrase: Callable[[], bytes], warn: Warn) -> Ed25519PrivateKey:
    """The owner key in ``path``: an encrypted PKCS#8 PEM (``passphrase()`` is called, only then) or a plaintext
    Solana keypair JSON (refused unless mode 0600, as before; a warning recommends ``encrypt-keypair``)."""
    data, mode = _read_small(path, MAX_KEY_FILE_BYTES, "key file")
    if _is_encrypted_pem(data):
        _warn_if_loose(path, mode, "key file", warn)
        source = f"key file {path}"
        der, iterations = _checked_header(data, source)
        return _decrypt(der, iterations, passphrase(), source=source, warn=warn)
    if _is_json_array(data):
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(f"key file {path} is readable by group or others (chmod 600 it)")
        key = _solana_key(data, path)
        warn(f"key file {path} is a plaintext Solana keypair; encrypt it: waiaas owner encrypt-keypair {path} --out F")
        return key
    raise KeyFileError(f"key file {path}: neither an encrypted PKCS#8 PEM ({PEM_LABEL}) nor a Solana keypair JSON")


def read_solana_keypair(path: Path, warn: Warn) -> Ed25519PrivateKey:
    """A plaintext Solana CLI keypair JSON to import (64 bytes; the public half must match the secret half)."""
    data, mode = _read_small(path, MAX_KEY_FILE_BYTES, "keypair file")
    _warn_if_loose(path, mode, "keypair file", warn)
    if _is_encrypted_pem(data):
        raise KeyFileError(f"keypair file {path} is already encrypted")
    return _solana_key(data, path)


def _solana_key(data: bytes, path: Path) -> Ed25519PrivateKey:
    try:
        return keypair_from_json(data)
    except OwnerKeyError as exc:  # its messages never hold key material
        raise KeyFileError(f"keypair file {path}: {exc}") from None


def check_new_key_path(path: Path) -> None:
    """Refuse, before a passphrase is asked for, a new key file that exists or whose directory cannot be had: the
    directory must exist, or be missing as the last component only (`write_encrypted_key_file` makes it, 0700)."""
    if path.exists() or path.is_symlink():  # checked again, atomically, when the file is created
        raise KeyFileError(f"key file {path} already exists; not overwriting it")
    parent = path.parent
    if not parent.is_dir() and (parent.exists() or parent.is_symlink() or not parent.parent.is_dir()):
        raise KeyFileError(
            f"key file {path}: {parent} is not a directory, and only a missing last directory is made "
            f"(make {parent.parent} first)"
        )


def _make_missing_directory(directory: Path) -> bool:
    """Make ``directory`` (its parent must exist) with mode 0700 if it is missing; True if it was made here."""
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        return False
    except OSError as exc:
        raise KeyFileError(f"directory {directory}: cannot be created ({exc.strerror or type(exc).__name__})") from None
    return True


def write_encrypted_key_file(path: Path, key: Ed25519PrivateKey, passphrase: bytes) -> None:
    """Encrypt, then create ``path`` with mode 0600; an existing file is never replaced. A missing last directory of
    ``path`` is made with mode 0700 (``~/.waiaas`` on a new machine; a missing directory above it is refused, as a
    mistyped path more likely than not). Nothing is written when encryption or its checks fail; a failed write
    removes the partial file, and the directory if it was made here."""
    pem = encrypt_owner_key(key, passphrase)
    made = _make_missing_directory(path.parent)
    try:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise KeyFileError(f"key file {path} already exists; not overwriting it") from None
        except OSError as exc:
            raise KeyFileError(f"key file {path}: cannot be created ({exc.strerror or type(exc).__name__})") from None
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            path.unlink(missing_ok=True)
            raise KeyFileError(f"key file {path}: write failed ({exc.strerror or type(exc).__name__})") from None
    except KeyFileError:
        if made:
            os.rmdir(path.parent)
        raise
