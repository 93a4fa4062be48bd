"""Start-up settings, ``python -m enclave_app``, the per-boot ledger, receipts and the benchmark's last line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave_app.__main__ import main
from enclave_app.errors import ReceiptError, SettingsError, StateError
from enclave_app.ledger import ARCHIVE_BUCKET_SECONDS, ARCHIVE_SECONDS, COMPACT_AFTER, MAX_LEDGER_ENTRIES, Ledger
from enclave_app.protocol import EnclaveState
from enclave_app.receipts import Receipt, SessionKey, verify_receipt
from enclave_app.settings import load_settings
from enclave_app.transport import UnixAddress, VsockAddress
from policies.decision import Reservation
from tests.enclave.startup_env import enclave_env, served_status

KEY_ARN = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def test_settings_for_self_host(tmp_path: Path) -> None:
    settings = load_settings(enclave_env(tmp_path))
    assert settings.listen == UnixAddress(f"{tmp_path}/enclave.sock") and settings.sealer == "local"
    assert "secret" not in repr(settings)


def test_settings_for_nitro(tmp_path: Path) -> None:
    root = tmp_path / "root.pem"
    root.write_text("pem")
    env = enclave_env(
        tmp_path,
        LISTEN="vsock:4294967295:5005",
        NSM="device",
        ALLOW_UNSAFE_NSM="false",
        ATTESTATION_ROOT=str(root),
        SEALER="kms",
        LOCAL_SECRET_FILE=None,
        KMS_KEY_ID=KEY_ARN,
        KMS_REGION="eu-west-1",
        KMS_PROXY="vsock:3:8000",
        MAX_CONNECTIONS="8",
    )
    settings = load_settings(env)
    assert settings.kms_proxy == VsockAddress(3, 8000) and settings.max_connections == 8
    assert settings.attestation_root == root


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"LISTEN": None}, "WAIAAS_ENCLAVE_LISTEN is required"),
        ({"LISTEN": "http://x"}, "WAIAAS_ENCLAVE_LISTEN is not a valid address"),
        ({"NSM": "fake"}, "WAIAAS_ENCLAVE_NSM must be one of: device, unsafe-development, none$"),
        ({"NSM": "None", "ALLOW_UNSAFE_NSM": "false"}, "WAIAAS_ENCLAVE_NSM must be one of"),
        ({"ALLOW_UNSAFE_NSM": "yes"}, r"ALLOW_UNSAFE_NSM must be true or false \(any letter case\)"),
        ({"ALLOW_UNSAFE_NSM": "1"}, "must be true or false"),
        ({"ALLOW_UNSAFE_NSM": "False"}, "must be 'true' exactly when WAIAAS_ENCLAVE_NSM is unsafe-development"),
        ({"ALLOW_UNSAFE_NSM": None}, "WAIAAS_ENCLAVE_ALLOW_UNSAFE_NSM is required"),
        ({"ALLOW_UNSAFE_NSM": "false"}, "must be 'true' exactly when WAIAAS_ENCLAVE_NSM is unsafe-development"),
        ({"NSM": "device", "ALLOW_UNSAFE_NSM": "false"}, "WAIAAS_ENCLAVE_ATTESTATION_ROOT is required"),
        ({"ATTESTATION_ROOT": "/etc/hostname"}, "ATTESTATION_ROOT must not be set with the unsafe-development"),
        ({"SEALER": None}, "WAIAAS_ENCLAVE_SEALER is required"),
        ({"LOCAL_SECRET_FILE": "relative"}, "must be an absolute path to an existing file"),
        ({"KMS_REGION": "eu-west-1"}, "KMS_REGION must not be set with the local sealer"),
        ({"SEALER": "kms", "LOCAL_SECRET_FILE": None}, "WAIAAS_ENCLAVE_KMS_KEY_ID is required"),
        ({"SEALER": "kms", "KMS_KEY_ID": KEY_ARN, "KMS_REGION": "eu-west-1"}, "LOCAL_SECRET_FILE must not be set"),
        (
            {"SEALER": "kms", "LOCAL_SECRET_FILE": None, "KMS_KEY_ID": "k", "KMS_REGION": "Frankfurt"},
            "KMS_REGION is malformed",
        ),
        (
            {
                "SEALER": "kms",
                "LOCAL_SECRET_FILE": None,
                "KMS_KEY_ID": KEY_ARN,
                "KMS_REGION": "eu-west-1",
                "KMS_PROXY": "tcp:127.0.0.1:8000",
            },
            "KMS_PROXY must be a vsock address",
        ),
        *[
            (
                {"SEALER": "kms", "LOCAL_SECRET_FILE": None, "KMS_KEY_ID": key, "KMS_REGION": "eu-west-1"},
                "KMS_KEY_ID must be a full KMS key ARN",
            )
            for key in (
                "alias/waiaas-seal",
                "1234abcd-12ab-34cd-56ef-1234567890ab",
                "arn:aws:kms:eu-west-1:1:key/x",
                "arn:aws:kms:eu-west-1:111122223333:alias/waiaas-seal",
            )
        ],
        (
            {"SEALER": "kms", "LOCAL_SECRET_FILE": None, "KMS_KEY_ID": KEY_ARN, "KMS_REGION": "us-east-1"},
            "KMS_KEY_ID names a key outside WAIAAS_ENCLAVE_KMS_REGION",
        ),
        ({"MAX_CONNECTIONS": "0"}, "MAX_CONNECTIONS must be an integer in 1..1024"),
        ({"MAX_CONNECTIONS": "many"}, "MAX_CONNECTIONS must be an integer in 1..1024"),
    ],
)
def test_bad_settings_stop_start_up(tmp_path: Path, changes: dict[str, str | None], match: str) -> None:
    with pytest.raises(SettingsError, match=match):
        load_settings(enclave_env(tmp_path, **changes))


def test_main_reports_configuration_errors_without_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([], env=enclave_env(tmp_path, SEALER="hsm-of-doom")) == 2
    err = capsys.readouterr().err
    assert err.startswith("waiaas-enclave: configuration error: WAIAAS_ENCLAVE_SEALER must be one of")
    assert "hsm-of-doom" not in err


def test_serve_from_settings_over_a_unix_socket(tmp_path: Path) -> None:
    assert served_status(enclave_env(tmp_path)).state is EnclaveState.BOOTING


def test_ledger_windows_slide_and_never_go_back() -> None:
    ledger = Ledger()
    ledger.record(1000.0, denied=False, signed=(Reservation("SOL", 5),))
    ledger.record(1030.0, denied=True, signed=(Reservation("SOL", 7), Reservation("M", 1)))
    assert ledger.spent("SOL", 60, 1040.0) == 12 and ledger.spent("SOL", 20, 1040.0) == 7
    ledger.record(1045.0, denied=False, signed=(Reservation("SOL", 1),))
    assert ledger.spent("SOL", 60, 1050.0) == 13  # a view created earlier sees later records
    assert ledger.count(ledger.requests, 60, 1050.0) == 3 and ledger.count(ledger.denials, 60, 1050.0) == 1
    # The clock steps back: nothing already counted is forgotten.
    assert ledger.spent("SOL", 60, 900.0) == 13
    assert ledger.spent("SOL", 60, 1095.0) == 1  # 1000 and 1030 slid out
    ledger.prune(2000.0, 60)
    assert ledger.count(ledger.requests, 3600, 2000.0) == 0


def test_ledger_refuses_when_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("enclave_app.ledger.MAX_LEDGER_ENTRIES", 2)
    ledger = Ledger()
    ledger.record(1.0, denied=True, signed=())
    with pytest.raises(StateError, match="per-boot counters are full"):
        ledger.check_room(1)


def test_ledger_is_full_at_its_documented_bound() -> None:
    # docs/enclave.md: 100 000 entries per wallet. Exactly that many fit; one more is refused.
    assert MAX_LEDGER_ENTRIES == 100_000
    ledger = Ledger()
    for _ in range(99_998):
        ledger.record(1.0, denied=False, signed=())
    ledger.record(1.0, denied=True, signed=())  # a request and a denial
    assert ledger.held == 100_000
    ledger.check_room(0)
    with pytest.raises(StateError, match="per-boot counters are full"):
        ledger.check_room(1)


def test_pruned_request_times_are_dropped_from_memory_and_counts_stay_exact() -> None:
    ledger = Ledger()
    second = 0

    def record_until(end: int) -> None:
        nonlocal second
        while second <= end:
            ledger.record(float(second), denied=second % 2 == 0, signed=())
            second += 1

    # Exactly COMPACT_AFTER times expired: kept in memory (compacting is for more than that, over half the list).
    record_until(COMPACT_AFTER - 1 + 60)
    ledger.prune(COMPACT_AFTER - 1 + 60.0, 60)
    assert ledger.requests.head == COMPACT_AFTER and len(ledger.requests.times) == COMPACT_AFTER + 60
    assert len(ledger.requests) == 60 and ledger.count(ledger.requests, 3600, COMPACT_AFTER - 1 + 60.0) == 60
    # One more expired (and over half the list): the list is cut to what is left, and every count stays exact.
    end = 2 * COMPACT_AFTER - 1 + 60
    record_until(end)
    ledger.prune(float(end), 60)
    assert ledger.requests.head == 0 and len(ledger.requests.times) == len(ledger.requests) == 60
    assert ledger.count(ledger.requests, 60, float(end)) == 60 and ledger.count(ledger.requests, 3600, float(end)) == 60
    assert ledger.count(ledger.denials, 3600, float(end)) == 30 and ledger.held == 90
    ledger.record(end + 1.0, denied=True, signed=())
    assert ledger.count(ledger.requests, 60, end + 1.0) == 60 and ledger.count(ledger.requests, 61, end + 1.0) == 61
    ledger.prune(end + 3600.0, 60)
    assert ledger.held == 0 and ledger.count(ledger.requests, 3600, end + 3600.0) == 0


def test_amounts_archived_in_the_same_bucket_are_summed_into_the_latest_bucket() -> None:
    ledger = Ledger()
    for at, amount in ((0.0, 1), (700.0, 10), (800.0, 100), (1150.0, 1000)):  # buckets ending at 600 and 1200
        ledger.record(at, denied=False, signed=(Reservation("SOL", amount),))
    ledger.prune(2000.0, 60)  # all archived, oldest first
    assert ledger.held == 2  # two buckets, no request time left
    assert ledger.spent("SOL", 3600, 2000.0) == 1111
    # Counted at the later bucket's end (1200): the first bucket (600) leaves a window before it.
    assert ledger.spent("SOL", 1399, 2000.0) == 1110 and ledger.spent("SOL", 800, 2000.0) == 0


def test_a_bucket_merged_before_its_end_is_counted_at_the_prune_cutoff() -> None:
    # A bucket counts from its end or the prune cutoff, whichever is earlier (so it stays older than every exact
    # entry): two amounts merged into a bucket whose end (600) is after the cutoff (140) count from 140.
    ledger = Ledger()
    ledger.record(0.0, denied=False, signed=(Reservation("SOL", 1),))
    ledger.record(100.0, denied=False, signed=(Reservation("SOL", 2),))
    ledger.prune(200.0, 60)
    assert ledger.held == 1
    assert ledger.spent("SOL", 101, 240.0) == 3 and ledger.spent("SOL", 100, 240.0) == 0


def test_archive_buckets_leave_memory_oldest_first_each_at_its_own_time() -> None:
    ledger = Ledger()
    ledger.record(0.0, denied=False, signed=(Reservation("SOL", 1),))  # bucket ending at 600
    ledger.record(1300.0, denied=False, signed=(Reservation("SOL", 2),))  # bucket ending at 1800
    ledger.prune(2000.0, 60)
    assert ledger.held == 2
    ledger.prune(600.0 + ARCHIVE_SECONDS, 60)  # the first bucket's month is over, not the second's
    assert ledger.held == 1 and ledger.spent("SOL", ARCHIVE_SECONDS, 600.0 + ARCHIVE_SECONDS) == 2
    ledger.prune(1800.0 + ARCHIVE_SECONDS, 60)
    assert ledger.held == 0


def test_receipt_verification_refuses_tampering() -> None:
    session = SessionKey(bytes(range(32)))
    receipt = Receipt("transaction", "w", 1, bytes(32), bytes(32), "deny", False, bytes(32), 1, 1)
    encoded, signature = session.sign(receipt)
    assert verify_receipt(encoded, signature, session.public_key) == receipt
    other = SessionKey(bytes(32))
    with pytest.raises(ReceiptError, match="receipt signature invalid"):
        verify_receipt(encoded, signature, other.public_key)
    with pytest.raises(ReceiptError, match="size out of bounds"):
        verify_receipt(encoded, signature[:63], session.public_key)
    junk, junk_signature = b"\xa1\x61x\x01", session._key.sign(b"\xffwaiaas/receipt\x00" + b"\xa1\x61x\x01")
    with pytest.raises(ReceiptError, match="receipt malformed"):
        verify_receipt(junk, junk_signature, session.public_key)
    assert "SessionKey(public_key=" in repr(session) and bytes(range(32)).hex() not in repr(session)


def test_benchmark_last_line(capsys: pytest.CaptureFixture[str]) -> None:
    from enclave_app.bench import main as bench_main

    assert bench_main(["--samples", "200"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(r"enclave-sign p50_us=[\d.]+ p99_us=[\d.]+ sign_us=[\d.]+ ratio=[\d.]+", last)


def test_ledger_room_counts_outflows_and_pruning_frees_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("enclave_app.ledger.MAX_LEDGER_ENTRIES", 6)
    ledger = Ledger()
    ledger.record(10.0, denied=False, signed=(Reservation("SOL", 1), Reservation("M", 2)))  # 1 request + 2 outflows
    ledger.record(20.0, denied=False, signed=(Reservation("SOL", 3),))  # 1 request + 1 outflow
    ledger.check_room(1)
    with pytest.raises(StateError, match="per-boot counters are full"):
        ledger.check_room(2)
    ledger.prune(75.0, 60)  # everything at 10.0 is past the horizon: 1 request goes, 2 outflows become 2 buckets
    ledger.check_room(2)
    with pytest.raises(StateError, match="per-boot counters are full"):
        ledger.check_room(3)
    ledger.prune(ARCHIVE_BUCKET_SECONDS + ARCHIVE_SECONDS, 60)  # the rest is archived, and every bucket expires
    ledger.check_room(6)
    with pytest.raises(StateError, match="per-boot counters are full"):
        ledger.check_room(7)


def test_ledger_windows_past_the_horizon_still_count_archived_amounts() -> None:
    """Before: amounts older than the horizon were forgotten, so after an owner lengthened a window a parent that
    reported 0 was capped only by what the enclave still remembered."""
    ledger = Ledger()
    ledger.record(10.0, denied=False, signed=(Reservation("SOL", 1),))
    ledger.record(50.0, denied=False, signed=(Reservation("SOL", 2),))
    assert ledger.spent("SOL", 100, 60.0) == 3 and ledger.spent("SOL", 30, 60.0) == 2
    ledger.prune(60.0, 30)  # horizon 30: the entry at 10.0 is archived; the 100 s view is dropped
    assert ledger.spent("SOL", 100, 60.0) == 3  # rebuilt: archived + kept
    assert ledger.spent("SOL", 30, 60.0) == 2
    ledger.prune(61.0, 100)  # a longer horizon keeps both views
    ledger.record(61.0, denied=False, signed=(Reservation("SOL", 4),))
    assert ledger.spent("SOL", 100, 61.0) == 7 and ledger.spent("SOL", 30, 61.0) == 6
    # the archived amount (signed at 10.0, counted at the prune cutoff 30.0) leaves the 100 s window at 130.0
    assert ledger.spent("SOL", 100, 129.0) == 7 and ledger.spent("SOL", 100, 130.0) == 6


def test_archived_amounts_leave_after_the_longest_window_any_policy_may_have() -> None:
    ledger = Ledger()
    ledger.record(0.0, denied=False, signed=(Reservation("SOL", 5),))
    ledger.prune(1000.0, 60)  # archived in the bucket ending at 600, counted from 600.0
    month = ARCHIVE_SECONDS
    assert ledger.spent("SOL", month, 600.0 + month - 1) == 5
    ledger.prune(600.0 + month, 60)
    assert ledger.spent("SOL", month + 10, 600.0 + month) == 0  # gone from memory, not only from the window


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(
        st.tuples(st.integers(0, 3 * ARCHIVE_BUCKET_SECONDS), st.integers(1, 1000), st.sampled_from((30, 600, 7200))),
        min_size=1,
        max_size=40,
    ),
    window=st.sampled_from((60, 900, 3600, 86_400)),
)
def test_ledger_never_counts_less_than_exactly_and_at_most_one_bucket_longer(
    events: list[tuple[int, int, int]], window: int
) -> None:
    """Whatever the horizons the ledger was pruned with (policies replaced in between), the amount it reports for
    any window is at least the exact sum of what was signed in it, and at most the exact sum over a window one
    bucket longer."""
    ledger = Ledger()
    signed: list[tuple[float, int]] = []

    def check(at: float, seconds: int) -> None:
        reported = ledger.spent("SOL", seconds, at)
        exact = sum(amount for t, amount in signed if t > at - seconds)
        widened = sum(amount for t, amount in signed if t > at - seconds - ARCHIVE_BUCKET_SECONDS)
        assert exact <= reported <= widened, (at, seconds)

    now = 0.0
    for step, amount, horizon in events:
        now += step
        ledger.prune(now, horizon)
        ledger.record(now, denied=False, signed=(Reservation("SOL", amount),))
        signed.append((now, amount))
        check(now, horizon)  # the windows of the policy installed now (views that then live on and slide)
        check(now, window)
    later = now + window // 2
    ledger.prune(later, 30)
    check(later, window)
