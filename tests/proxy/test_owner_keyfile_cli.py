"""``waiaas owner keygen`` / ``encrypt-keypair`` and ``--keypair`` with an encrypted key file: what the owner sees,
every refusal (exit 2, the file and the reason named, no traceback, nothing written), the API accepting requests
signed through the CLI, and no secret (seed, key, passphrase; hex, base58, base64) in any output or log."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
)
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction

from parent_proxy.owner_keyfile import KeyFileError, decrypt_owner_key, write_encrypted_key_file
from parent_proxy.owner_signers import LocalOwnerSigner, write_keypair_file
from parent_proxy.sign_parts import message_hash
from policies.cli import main
from policies.orders import check_approval, check_freeze_order
from policies.signing import load_signed_policy
from tests.proxy.api_harness import Harness, running_harness
from tests.proxy.hooked_client import Borrowed
from tests.support.policies import EXAMPLE_PATH, MERCHANT, owner_public_key

PASSPHRASE = "tr0ub4dor & 3 ☃"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def secret_file(path: Path, data: bytes, mode: int = 0o600) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return path


def solana_json(key: Ed25519PrivateKey) -> bytes:
    return json.dumps(list(seed_of(key) + key.public_key().public_bytes_raw())).encode()


def seed_of(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


@pytest.fixture
def passfile(tmp_path: Path) -> Path:
    return secret_file(tmp_path / "passphrase", PASSPHRASE.encode() + b"\n")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def type_at_prompt(monkeypatch: pytest.MonkeyPatch, *answers: str) -> list[str]:
    """Make stdin a terminal and answer `getpass.getpass` prompts in order; returns the prompts asked."""
    queue, prompts = list(answers), []

    def ask(prompt: str = "") -> str:
        prompts.append(prompt)
        return queue.pop(0)

    monkeypatch.setattr("sys.stdin", Terminal())
    monkeypatch.setattr("getpass.getpass", ask)
    return prompts


# -- keygen and encrypt-keypair ---------------------------------------------------------------------------------------


def test_keygen_prints_only_the_public_key_and_the_key_signs_what_the_proxy_accepts(
    tmp_path: Path, passfile: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "owner.key"
    code, out, err = run_cli(capsys, "owner", "keygen", "--out", str(path), "--passphrase-file", str(passfile))
    assert code == 0 and err == ""
    owner = Pubkey.from_string(out.strip())
    assert out == f"{owner}\n" and stat.S_IMODE(path.stat().st_mode) == 0o600
    key = decrypt_owner_key(path.read_bytes(), PASSPHRASE.encode(), source="k", warn=print)
    assert owner_public_key(key) == owner

    base = ["owner", "--keypair", str(path), "--passphrase-file", str(passfile)]
    code, out, err = run_cli(capsys, *base, "pubkey")
    assert (code, out, err) == (0, f"{owner}\n", "")
    code, out, err = run_cli(capsys, *base, "--owner-public-key", str(owner), "sign-policy", str(EXAMPLE_PATH))
    assert code == 0 and err == ""
    assert load_signed_policy(out, owner=owner, wallet_id="demo-wallet").sequence == 1
    code, out, _ = run_cli(capsys, *base, "freeze", "--wallet", "w1", "--sequence", "4")
    assert (
        code == 0 and check_freeze_order(out.encode(), freeze=True, owner=owner, wallet_id="w1", now=time.time()) == 4
    )
    agent = Pubkey.new_unique()
    ix = transfer(TransferParams(from_pubkey=agent, to_pubkey=MERCHANT, lamports=5))
    tx = bytes(Transaction.new_unsigned(Message.new_with_blockhash([ix], agent, Hash.new_unique())))
    code, out, _ = run_cli(capsys, *base, "approve", "--wallet", "w1", "--transaction", base64.b64encode(tx).decode())
    assert code == 0
    check_approval(out.encode(), owner=owner, wallet_id="w1", message_hash=message_hash(tx), now=time.time())
    # The pin still refuses another key, before signing.
    other = str(owner_public_key(Ed25519PrivateKey.generate()))
    code, out, err = run_cli(capsys, *base, "--owner-public-key", other, "sign-policy", str(EXAMPLE_PATH))
    assert code == 2 and out == "" and "not the expected owner key" in err


def test_the_passphrase_file_may_also_come_before_the_action(
    tmp_path: Path, passfile: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "owner.key"
    code, out, _ = run_cli(capsys, "owner", "--passphrase-file", str(passfile), "keygen", "--out", str(path))
    assert code == 0
    code, again, _ = run_cli(capsys, "owner", "--keypair", str(path), "--passphrase-file", str(passfile), "pubkey")
    assert code == 0 and again == out


def test_encrypt_keypair_imports_a_solana_keypair_and_plaintext_use_warns(
    tmp_path: Path, passfile: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = Ed25519PrivateKey.generate()
    plain = tmp_path / "id.json"
    write_keypair_file(plain, key)
    code, out, err = run_cli(capsys, "owner", "--keypair", str(plain), "pubkey")
    assert code == 0 and out == f"{owner_public_key(key)}\n"
    assert err == (
        f"owner: warning: key file {plain} is a plaintext Solana keypair; encrypt it: "
        f"waiaas owner encrypt-keypair {plain} --out F\n"
    )
    encrypted = tmp_path / "owner.key"
    args = ["owner", "encrypt-keypair", str(plain), "--out", str(encrypted), "--passphrase-file", str(passfile)]
    code, out, err = run_cli(capsys, *args)
    assert (code, out, err) == (0, f"{owner_public_key(key)}\n", "")
    assert plain.read_bytes() == solana_json(key)  # left as it was
    code, out, err = run_cli(capsys, "owner", "--keypair", str(encrypted), "--passphrase-file", str(passfile), "pubkey")
    assert (code, out, err) == (0, f"{owner_public_key(key)}\n", "")


def test_a_terminal_is_asked_twice_on_creation_and_once_on_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "owner.key"
    prompts = type_at_prompt(monkeypatch, PASSPHRASE, PASSPHRASE)
    code, out, _ = run_cli(capsys, "owner", "keygen", "--out", str(path))
    assert code == 0 and prompts == [f"Passphrase for {path}: ", f"Passphrase for {path} (again): "]
    prompts = type_at_prompt(monkeypatch, PASSPHRASE)
    code, again, _ = run_cli(capsys, "owner", "--keypair", str(path), "pubkey")
    assert code == 0 and again == out and prompts == [f"Passphrase for {path}: "]
    mismatch = tmp_path / "mismatch.key"
    type_at_prompt(monkeypatch, PASSPHRASE, PASSPHRASE + " ")
    code, out, err = run_cli(capsys, "owner", "keygen", "--out", str(mismatch))
    assert (code, out) == (2, "") and err == f"owner keygen: key file {mismatch}: the two passphrases differ\n"
    assert not mismatch.exists()


# -- refusals -------------------------------------------------------------------------------------------------------


def assert_refused(result: tuple[int, str, str], *needles: str) -> None:
    code, out, err = result
    assert code == 2 and out == "", result
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)


def test_every_refusal_names_the_file_and_the_reason_and_writes_nothing(
    tmp_path: Path, passfile: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO())  # not a terminal
    good = tmp_path / "owner.key"
    write_encrypted_key_file(good, Ed25519PrivateKey.generate(), PASSPHRASE.encode())
    wrong = secret_file(tmp_path / "wrong-pass", b"not the passphrase\n")
    empty = secret_file(tmp_path / "empty-pass", b"\nsecond line\n")
    corrupt = secret_file(tmp_path / "corrupt.key", good.read_bytes().replace(b"M", b"N", 1))
    truncated = secret_file(tmp_path / "truncated.key", good.read_bytes()[:120])
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_file = secret_file(
        tmp_path / "rsa.key",
        rsa_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(PASSPHRASE.encode())),
    )
    use = ["owner", "--passphrase-file", str(passfile), "--keypair"]
    assert_refused(
        run_cli(capsys, "owner", "--keypair", str(good), "--passphrase-file", str(wrong), "pubkey"),
        f"owner pubkey: key file {good}: wrong passphrase, or the file is corrupt",
    )
    assert_refused(run_cli(capsys, *use, str(corrupt), "pubkey"), f"key file {corrupt}: ")
    assert_refused(run_cli(capsys, *use, str(truncated), "pubkey"), f"key file {truncated}: corrupt")
    assert_refused(
        run_cli(capsys, *use, str(rsa_file), "pubkey"), f"key file {rsa_file}: holds a RSA", "not an Ed25519"
    )
    missing = tmp_path / "no-such-passphrase"
    assert_refused(
        run_cli(capsys, "owner", "--keypair", str(good), "--passphrase-file", str(missing), "pubkey"),
        f"passphrase file {missing}: cannot be read (No such file or directory)",
    )
    assert_refused(
        run_cli(capsys, "owner", "--keypair", str(good), "pubkey"),
        f"key file {good}: give --passphrase-file (stdin is not a terminal",
    )
    assert_refused(
        run_cli(capsys, "owner", "--kms-key-id", "k", "--passphrase-file", str(passfile), "pubkey"),
        "--passphrase-file goes with --keypair",
    )

    before = set(tmp_path.iterdir())
    new = tmp_path / "new.key"
    assert_refused(
        run_cli(capsys, "owner", "keygen", "--out", str(new), "--passphrase-file", str(empty)),
        f"passphrase file {empty}: the first line is empty",
    )
    assert_refused(
        run_cli(capsys, "owner", "keygen", "--out", str(new), "--passphrase-file", str(missing)),
        f"passphrase file {missing}: cannot be read",
    )
    assert_refused(run_cli(capsys, "owner", "keygen", "--out", str(new)), f"key file {new}: give --passphrase-file")
    type_at_prompt(monkeypatch, "", "")
    assert_refused(
        run_cli(capsys, "owner", "keygen", "--out", str(new)), f"key file {new}: an empty passphrase is refused"
    )
    monkeypatch.setattr("sys.stdin", io.StringIO())
    kept = good.read_bytes()
    assert_refused(
        run_cli(capsys, "owner", "keygen", "--out", str(good), "--passphrase-file", str(passfile)),
        f"key file {good} already exists; not overwriting it",
    )
    assert good.read_bytes() == kept
    assert_refused(
        run_cli(
            capsys, "owner", "--keypair", str(good), "keygen", "--out", str(new), "--passphrase-file", str(passfile)
        ),
        "takes no --keypair or --kms-key-id",
    )
    forged = secret_file(
        tmp_path / "forged.json",
        json.dumps([*bytes(32), *Ed25519PrivateKey.generate().public_key().public_bytes_raw()]).encode(),
    )
    short = secret_file(tmp_path / "short.json", json.dumps(list(range(32))).encode())
    for source, reason in (
        (forged, "the public half does not match the secret half"),
        (short, "not a JSON array of 64 bytes"),
        (good, "already encrypted"),
        (missing, "cannot be read"),
    ):
        assert_refused(
            run_cli(
                capsys, "owner", "encrypt-keypair", str(source), "--out", str(new), "--passphrase-file", str(passfile)
            ),
            f"owner encrypt-keypair: keypair file {source}",
            reason,
        )
    assert set(tmp_path.iterdir()) == before | {forged, short}  # no key file was written by any refusal


def test_keygen_makes_a_missing_last_directory_0700_and_refuses_a_deeper_missing_path(
    tmp_path: Path, passfile: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review finding: `keygen --out ~/.waiaas/owner.key`, as docs/owner-keys.md shows it, exited 2 on a new machine
    ("cannot be created (No such file or directory)"). The missing last directory is made, mode 0700, whatever the
    umask; anything further missing is refused before the passphrase is asked for, and nothing is made."""
    monkeypatch.setattr("sys.stdin", io.StringIO())  # not a terminal: a passphrase prompt would be refused
    home = tmp_path / "home"
    home.mkdir()
    old_umask = os.umask(0)
    try:
        code, out, err = run_cli(
            capsys, "owner", "keygen", "--out", str(home / ".waiaas" / "owner.key"), "--passphrase-file", str(passfile)
        )
    finally:
        os.umask(old_umask)
    assert (code, err) == (0, ""), err
    assert stat.S_IMODE((home / ".waiaas").stat().st_mode) == 0o700
    assert stat.S_IMODE((home / ".waiaas" / "owner.key").stat().st_mode) == 0o600
    key = decrypt_owner_key((home / ".waiaas" / "owner.key").read_bytes(), PASSPHRASE.encode(), source="k", warn=print)
    assert out.strip() == str(owner_public_key(key))

    before = sorted(tmp_path.rglob("*"))
    deep = tmp_path / "missing" / ".waiaas" / "owner.key"
    assert_refused(
        run_cli(capsys, "owner", "keygen", "--out", str(deep)),  # no passphrase given: refused before it is asked
        f"key file {deep}: {deep.parent} is not a directory, and only a missing last directory is made",
        f"make {tmp_path / 'missing'} first",
    )
    not_a_directory = secret_file(tmp_path / "a-file", b"x")
    assert_refused(
        run_cli(capsys, "owner", "keygen", "--out", str(not_a_directory / "k"), "--passphrase-file", str(passfile)),
        f"{not_a_directory} is not a directory",
    )
    empty = secret_file(tmp_path / "empty-pass", b"\n")
    assert_refused(
        run_cli(capsys, "owner", "keygen", "--out", str(home / "new" / "owner.key"), "--passphrase-file", str(empty)),
        "the first line is empty",
    )
    assert sorted(tmp_path.rglob("*")) == sorted([*before, not_a_directory, empty])  # no directory made by a refusal


def test_a_group_readable_encrypted_key_warns_and_still_works(
    tmp_path: Path, passfile: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "owner.key"
    write_encrypted_key_file(path, Ed25519PrivateKey.generate(), PASSPHRASE.encode())
    path.chmod(0o644)
    code, out, err = run_cli(capsys, "owner", "--keypair", str(path), "--passphrase-file", str(passfile), "pubkey")
    assert code == 0 and out.strip()
    assert err == f"owner: warning: key file {path} is accessible to group or others (mode 644); chmod 600 it\n"


# -- the API accepts what the CLI signs with an encrypted key ---------------------------------------------------------


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    yield from running_harness(tmp_path)


def test_owner_requests_signed_through_the_cli_with_an_encrypted_key_are_accepted(
    harness: Harness,
    tmp_path: Path,
    passfile: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("httpx.Client", lambda **_: Borrowed(harness.client))  # `owner call` makes one per call
    key_file = tmp_path / "owner.key"
    write_encrypted_key_file(key_file, harness.owner, PASSPHRASE.encode())
    owner = ["owner", "--keypair", str(key_file), "--passphrase-file", str(passfile)]
    call = [*owner, "call", "--url", "http://testserver"]

    body = tmp_path / "wallet.json"
    body.write_text(json.dumps({"wallet_id": "demo-wallet", "owner_public_key": str(harness.owner_pub)}))
    code, out, err = run_cli(capsys, *call, "POST", "/v1/wallets", "--body", str(body))
    assert code == 0 and err == "" and json.loads(out)["wallet_id"] == "demo-wallet", out
    code, out, _ = run_cli(capsys, *owner, "sign-policy", str(EXAMPLE_PATH))
    assert code == 0
    body.write_text(json.dumps({"envelope": json.loads(out)}))
    code, out, err = run_cli(capsys, *call, "PUT", "/v1/wallets/demo-wallet/policy", "--body", str(body))
    assert code == 0 and err == "", out
    code, out, _ = run_cli(capsys, *call, "POST", "/v1/wallets/demo-wallet/tokens")
    assert code == 0 and json.loads(out)["token"]

    stranger = tmp_path / "stranger.key"
    write_encrypted_key_file(stranger, Ed25519PrivateKey.generate(), PASSPHRASE.encode())
    code, out, _ = run_cli(
        capsys, "owner", "--keypair", str(stranger), "--passphrase-file", str(passfile), "call",
        "--url", "http://testserver", "POST", "/v1/wallets/demo-wallet/tokens",
    )  # fmt: skip
    assert code == 1 and json.loads(out)["error"]["code"] == "owner_signature_invalid"


# -- no secret anywhere ---------------------------------------------------------------------------------------------


def secret_forms(key: Ed25519PrivateKey) -> set[str]:
    seed = seed_of(key)
    keypair = seed + key.public_key().public_bytes_raw()
    forms = {str(Keypair.from_bytes(keypair)), str(Pubkey.from_bytes(seed)), json.dumps(list(keypair))}
    forms |= {str(list(seed))[1:-1], json.dumps(list(seed))[1:-1]}
    for raw in (seed, keypair):
        forms |= {raw.hex(), raw.hex().upper()}
        forms |= {base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode().rstrip("=")}
        forms.add(base64.b64encode(raw).decode().rstrip("="))
    return forms


def test_no_secret_reaches_stdout_stderr_logs_or_error_messages(
    tmp_path: Path, passfile: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []

    def run(*argv: str) -> int:
        code, out, err = run_cli(capsys, *argv)
        seen.extend((out, err))
        return code

    generated = tmp_path / "generated.key"
    assert run("owner", "keygen", "--out", str(generated), "--passphrase-file", str(passfile)) == 0
    imported_key = Ed25519PrivateKey.generate()
    plain = tmp_path / "id.json"
    write_keypair_file(plain, imported_key)
    imported = tmp_path / "imported.key"
    type_at_prompt(monkeypatch, PASSPHRASE, PASSPHRASE)
    assert run("owner", "encrypt-keypair", str(plain), "--out", str(imported)) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO())
    wrong = secret_file(tmp_path / "wrong", b"almost " + PASSPHRASE.encode())
    for path in (generated, imported, plain):
        with_pass = ["owner", "--keypair", str(path), "--passphrase-file", str(passfile)]
        assert run(*with_pass, "pubkey") == 0
        assert run(*with_pass, "sign-policy", str(EXAMPLE_PATH)) == 0
        assert run(*with_pass, "freeze", "--wallet", "w1", "--sequence", "1") == 0
        assert run("owner", "--keypair", str(path), "--passphrase-file", str(wrong), "pubkey") in (0, 2)
        assert run(*with_pass, "--owner-public-key", str(Pubkey.new_unique()), "pubkey") == 2
    assert run("owner", "keygen", "--out", str(generated), "--passphrase-file", str(passfile)) == 2
    assert run("owner", "encrypt-keypair", str(plain), "--out", str(imported), "--passphrase-file", str(passfile)) == 2
    plain.chmod(0o644)
    assert run("owner", "--keypair", str(plain), "pubkey") == 2
    messages: list[str] = []
    for attempt, refusal in (
        (
            lambda: decrypt_owner_key(generated.read_bytes(), b"wrong", source="k", warn=messages.append),
            "k: wrong passphrase, or the file is corrupt",
        ),
        (lambda: write_encrypted_key_file(generated, imported_key, PASSPHRASE.encode()), "already exists"),
    ):
        with pytest.raises(KeyFileError, match=refusal) as caught:
            attempt()
        messages.extend((str(caught.value), repr(caught.value), repr(caught.value.__cause__)))

    generated_key = decrypt_owner_key(generated.read_bytes(), PASSPHRASE.encode(), source="k", warn=print)
    secrets = {PASSPHRASE, PASSPHRASE.encode().hex(), base64.b64encode(PASSPHRASE.encode()).decode()}
    secrets |= secret_forms(generated_key) | secret_forms(imported_key)
    text = "\n".join([*seen, caplog.text, *messages])
    assert "signature" in text and "wrong passphrase" in text  # the outputs were captured
    leaked = sorted(secret for secret in secrets if secret in text)
    assert leaked == []
    for path in (generated, imported):
        stored = path.read_bytes()
        assert not any(secret.encode() in stored for secret in secrets)
        assert seed_of(generated_key) not in stored and seed_of(imported_key) not in stored
        assert PASSPHRASE.encode() not in stored
    assert "LocalOwnerSigner(" in repr(LocalOwnerSigner(generated_key))
    assert not any(secret in repr(LocalOwnerSigner(generated_key)) for secret in secrets)
