"""``waiaas owner verify-order``: the owner's check that a freeze, an unfreeze or a policy reached the enclave. No
owner key is needed (the owner public key only).

    waiaas owner verify-order --answer F (--order F | --policy F) --owner-public-key K [--attestation F] ATTESTATION

``--answer`` is the proxy's answer to ``POST /v1/wallets/{id}/orders/receipts?nonce=HEX`` (one host's receipts of
the wallet's last order and policy, with that host's attestation: `parent_proxy.api_orders`), or to ``POST
/v1/wallets/{id}/freeze`` / ``unfreeze`` or ``PUT .../policy`` (JSON; then ``--attestation`` is the ``GET
/v1/attestation`` answer, which with several hosts may come from another host than the order's);
``--order`` the owner's own signed freeze or unfreeze order, ``--policy`` their own signed policy (the envelope
``waiaas owner freeze`` / ``sign-policy`` printed, or the request body ``{"envelope": ...}`` sent with it).
ATTESTATION is ``--root-pem F --pcr 0=HEX [--pcr I=HEX ...] --nonce HEX`` for mode nitro (the attestation
answer's document verified against the pinned root and PCRs, PCR 0 among them, saying it carries the session key,
and made over the owner's own fresh nonce: ``?nonce=`` of the receipts route, or of ``GET /v1/attestation`` in the
two-file form; without ``--nonce``, bad input, since an answer the parent kept from an earlier exchange, of an
enclave boot that has restarted since, would verify just as well), or ``--accept-unattested`` for mode none (the
answer's key as it is: proves nothing about the code): the anchor rules of ``verify-wallet`` and ``waiaas audit
verify`` (`parent_proxy.trust_anchor`; an anchor without PCR 0, or with ``--accept-unattested``, is bad input).
The parent's ``enclave_acknowledged`` / ``enclave_installed`` is
its word only; this is the check that does not rest on it:

1. the owner's file: its signature verifies under the owner key (which also says whether it is a freeze, an
   unfreeze or a policy) and its document gives the wallet, the sequence and the document's SHA-256
   (`policies.signing.document_sha256`): all taken from the owner's file, never from the answer;
2. the session key, from the attestation (``--attestation``, else the one the answer carries:
   `parent_proxy.owner_verify_cli.attested_session_key`; `parent_proxy.provisioning.session_key_from_attestation`,
   under the anchor of `parent_proxy.trust_anchor.anchor_from_options`);
3. the answer carries an order receipt (its ``order`` or ``policy`` part for the receipts route: `receipt_part`; a
   parent that swallowed the order has none to show);
4. the receipt verifies under that session key (`enclave_app.order_receipts.verify_order_receipt`, which also
   refuses a receipt whose wallet state does not follow from its purpose: a freeze frozen, an unfreeze not, a
   policy install naming the policy installed);
5. it names this purpose, wallet, sequence and document hash (`parent_proxy.order_receipts.ExpectedOrder`).

Exit 0: the enclave whose session key the attestation carries applied this order (the receipt's time says when);
the output names that key and, in mode nitro, the document's ``module_id`` (the NSM's name of that enclave: the
instance and the enclave on it); 1: not verified, do not rely on the enclave having it (the message says why); 2:
bad input. Exit 0 covers the enclave that answered, no other: not the other hosts' (ask again to see them), and not
another enclave on the same host either (a Nitro parent instance can run several enclaves of the same measured
image, and a taken-over host can keep one holding the order to answer this check while it signs with another that
never got it: docs/owner-keys.md); the stop that does not rest on any enclave is the multisig on chain. What it
cannot show either: that the enclave has not restarted since (a restart forgets its freeze; the parent restores it,
or not: docs/enclave.md).
An attestation fetched after the order with a fresh nonce names the boot running then: the receipt verifying under
its key shows that boot applied the order. What is printed quotes the parent's answer only with its control
characters escaped (`policies.terminal_text`).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from solders.pubkey import Pubkey

from enclave_app.errors import ReceiptError
from enclave_app.order_receipts import FREEZE, POLICY, UNFREEZE, OrderReceipt
from parent_proxy.order_receipts import ExpectedOrder
from parent_proxy.owner_cli_common import EXIT_OK, EXIT_REFUSED, OwnerInputError, json_object_file, public_key_option
from parent_proxy.owner_verify_cli import attestation_options, attested_session_key
from parent_proxy.provisioning import ProvisionVerificationError
from policies.canonical import MAX_DOCUMENT_BYTES, canonical_bytes
from policies.document import policy_from_object
from policies.errors import PolicyEngineError, PolicySignatureError
from policies.orders import FREEZE_PURPOSE, MAX_SEQUENCE, UNFREEZE_PURPOSE
from policies.signing import POLICY_PURPOSE, document_sha256, open_envelope
from policies.terminal_text import safe_line

COMMAND: Final = "verify-order"
_RECEIPT_PURPOSE = {FREEZE_PURPOSE: FREEZE, UNFREEZE_PURPOSE: UNFREEZE}
"""The purpose an order was signed for -> the purpose its receipt states (``policy`` for a policy)."""
MAX_ANSWER_BYTES = 64 * 1024
"""Largest answer file read (ours: a freeze or policy answer is well under 2 KiB, the receipts route's with its
attestation document under 16 KiB)."""


class OrderVerificationError(Exception):
    """The order is not shown to have reached the enclave: the message says why."""


NONCE_REQUIRED = (
    "verify-order shows what the enclave holds now, which only an attestation over your own fresh nonce shows (an "
    "answer the parent kept from an earlier exchange verifies without it); give the hex nonce you sent with "
    "?nonce= (or to GET /v1/attestation)"
)
"""Why ``--nonce`` goes with an anchor here (`parent_proxy.owner_verify_cli.attested_session_key`)."""


@dataclass(frozen=True, slots=True)
class VerifiedOrder:
    receipt: OrderReceipt
    session_public_key: str


def register(commands: Any) -> None:
    """Add ``verify-order`` to ``waiaas owner``'s subparsers."""
    parser = commands.add_parser(COMMAND, help="verify that a freeze, unfreeze or policy reached the enclave")
    parser.add_argument("--answer", required=True, type=Path, help="the proxy's answer to the order (JSON file)")
    mine = parser.add_mutually_exclusive_group(required=True)
    mine.add_argument("--order", type=Path, help="your signed freeze or unfreeze order (envelope or request body)")
    mine.add_argument("--policy", type=Path, help="your signed policy (envelope or request body)")
    attestation_options(parser)


def owner_order(path: Path, *, policy: bool, owner: Pubkey, what: str) -> ExpectedOrder:
    """Step 1: what the receipt must state, from the owner's own signed file (`OwnerInputError` if it is not one
    the owner key signed)."""
    value = json_object_file(path, what, limit=MAX_DOCUMENT_BYTES)
    envelope = value["envelope"] if set(value) == {"envelope"} and isinstance(value["envelope"], dict) else value
    try:
        data = canonical_bytes(envelope)
        if policy:
            document = open_envelope(data, POLICY_PURPOSE, owner)
            signed = policy_from_object(document)
            return ExpectedOrder(POLICY, signed.wallet_id, signed.sequence, document_sha256(document))
        purpose, document = _freeze_or_unfreeze(data, owner, what)
    except PolicySignatureError as exc:
        raise OwnerInputError(f"{what}: the signature does not verify against the owner key {owner}") from exc
    except PolicyEngineError as exc:
        raise OwnerInputError(f"{what}: not a signed {'policy' if policy else 'order'}: {exc}") from exc
    wallet_id, sequence = document.get("wallet_id"), document.get("sequence")
    if not isinstance(wallet_id, str) or type(sequence) is not int or not 1 <= sequence <= MAX_SEQUENCE:
        raise OwnerInputError(f"{what}: the order names no wallet or sequence")
    return ExpectedOrder(purpose, wallet_id, sequence, document_sha256(document))


def _freeze_or_unfreeze(data: bytes, owner: Pubkey, what: str) -> tuple[str, dict[str, Any]]:
    """The purpose the owner signed the order for (the signature covers it) and its document."""
    for purpose in (FREEZE_PURPOSE, UNFREEZE_PURPOSE):
        try:
            return _RECEIPT_PURPOSE[purpose], open_envelope(data, purpose, owner)
        except PolicySignatureError:
            continue
    raise OwnerInputError(f"{what}: the signature verifies as neither a freeze nor an unfreeze by owner key {owner}")


def verify_order_answer(answer: Mapping[str, Any], expected: ExpectedOrder, session_public_key: bytes) -> VerifiedOrder:
    """Steps 3-5: the answer's order receipt verifies under ``session_public_key`` (from an attestation the owner
    verified) and is about ``expected`` (from the owner's own file); else :class:`OrderVerificationError`."""
    # 3. A receipt at all: the parent's flags (frozen, enclave_acknowledged) are not evidence.
    if answer.get("receipt") is None or answer.get("receipt_signature") is None:
        raise OrderVerificationError(
            "the answer carries no order receipt: nothing shows the enclave applied the order (the enclave did not "
            "acknowledge it, is too old to sign one, or the parent did not pass the order on)"
        )
    try:
        receipt = base64.b64decode(answer["receipt"], validate=True)
        signature = base64.b64decode(answer["receipt_signature"], validate=True)
    except (TypeError, ValueError, binascii.Error) as exc:
        raise OrderVerificationError("the answer's receipt or receipt_signature is not base64") from exc
    # 4. Signed by the attested session key.
    try:
        stated = expected.verify(receipt, signature, session_public_key)
    except ReceiptError as exc:
        hint, attested, named = "", str(Pubkey.from_bytes(session_public_key)), _key_or_none(answer)
        if named is not None and named != attested:
            hint = (f" (the answer names session key {named}, the attestation {attested}: a receipt of another "
                    "host's enclave, when the attestation came from another host than the answer (with several "
                    "hosts, verify the answer of POST /v1/wallets/{id}/orders/receipts?nonce=HEX, which carries its "
                    "own host's attestation), of an earlier enclave boot, whose freeze a restart forgets, or one the "
                    "parent made)")  # fmt: skip
        raise OrderVerificationError(f"{exc}: not signed by the attested enclave session key{hint}") from exc
    # 5. About this order, from the owner's own file.
    try:
        expected.check_content(stated)
    except ReceiptError as exc:
        raise OrderVerificationError(f"the receipt is not about your order: {exc}") from exc
    return VerifiedOrder(stated, str(Pubkey.from_bytes(session_public_key)))


def _key_or_none(answer: Mapping[str, Any]) -> str | None:
    """The answer's ``session_public_key`` as a base58 key, re-encoded (None if it is none): the parent's text is
    never printed as it came (it could hold terminal control sequences)."""
    try:
        return str(Pubkey.from_string(answer["session_public_key"]))
    except (KeyError, TypeError, ValueError):
        return None


def receipt_part(answer: Mapping[str, Any], purpose: str) -> Mapping[str, Any]:
    """The part of ``answer`` about an order of ``purpose``: its ``policy`` or ``order`` object in an answer of the
    receipts route (`parent_proxy.api_orders`), else the answer itself (an order route's)."""
    part = answer.get("policy" if purpose == POLICY else "order")
    return part if isinstance(part, dict) else answer


_OUTCOME = {FREEZE: "the wallet is frozen", UNFREEZE: "the wallet is unfrozen", POLICY: "this policy is installed"}


def run(args: argparse.Namespace) -> int:
    """``verify-order``: 0 when the receipt verifies and is about the owner's order, 1 when not, 2 on bad input (raised
    as `OwnerInputError` to `parent_proxy.owner_cli.run`)."""
    owner = public_key_option(args.owner_public_key, "--owner-public-key")
    policy = args.policy is not None
    expected = owner_order(args.policy if policy else args.order, policy=policy, owner=owner,
                           what="--policy" if policy else "--order")  # fmt: skip
    answer = json_object_file(args.answer, "--answer", limit=MAX_ANSWER_BYTES)
    try:
        session = attested_session_key(args, answer, limit=MAX_ANSWER_BYTES, nonce_required=NONCE_REQUIRED)  # step 2
        verified = verify_order_answer(receipt_part(answer, expected.purpose), expected, session.public_key)
    except (ProvisionVerificationError, OrderVerificationError) as exc:
        sys.stderr.write(
            safe_line(
                f"owner verify-order: NOT VERIFIED: {exc}. Do not rely on the enclave having this {expected.purpose} "
                "order; the parent's answer is its word only."
            )
        )
        return EXIT_REFUSED
    stated = verified.receipt
    when = datetime.fromtimestamp(stated.time_ms / 1000, UTC).isoformat(timespec="seconds")
    policy_hash = "none" if stated.policy_hash is None else stated.policy_hash.hex()
    what = f"policy {stated.sequence}" if stated.purpose == POLICY else f"{stated.purpose} order {stated.sequence}"
    # The module id is the verified document's (mode nitro), printed escaped as every text of the answer.
    module = "" if session.module_id is None else f" of module {session.module_id}"
    sys.stdout.write(
        safe_line(
            f"verified: the enclave{module} (session key {verified.session_public_key}) applied {what} to wallet "
            f"{stated.wallet_id} at {when}: {_OUTCOME[stated.purpose]} (frozen: {str(stated.frozen).lower()}, policy "
            f"hash {policy_hash}, receipt counter {stated.counter})"
        )
    )
    return EXIT_OK
