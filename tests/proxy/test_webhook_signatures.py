"""What a webhook signature covers, and what `verify_webhook_signature` accepts (review findings: the event id and
type headers are outside the HMAC; the timestamp header was parsed with ``int()``; a non-ASCII signature header
raised ``TypeError``)."""

from __future__ import annotations

import json
import re
from typing import TypedDict

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from parent_proxy.errors import WebhookError
from parent_proxy.webhooks import event_item, sign_webhook, verify_webhook_signature
from tests.proxy.conftest import FakeClock
from tests.proxy.webhook_receiver import SECRET

NOW = 1_700_000_000


class Signed(TypedDict):
    """A delivery's signed parts, as `verify_webhook_signature` takes them."""

    timestamp: str
    signature: str
    body: bytes


def test_the_event_id_and_type_headers_must_match_the_signed_body() -> None:
    """Before: a delivery captured and replayed within the tolerance with a new ``WAIaaS-Event-Id`` (or another
    ``WAIaaS-Event-Type``) verified, so a receiver that de-duplicated on the header acted on it twice. The body
    carries the id and type under the HMAC; the helper now refuses headers that say otherwise."""
    item = event_item(FakeClock(), "w1", "transaction.signed", {"request_id": "r1"})
    envelope = json.loads(item.body)
    assert (envelope["id"], envelope["type"]) == (item.event_id, item.event_type)  # signed, with the body
    signed: Signed = {"timestamp": str(NOW), "signature": sign_webhook(SECRET, NOW, item.body), "body": item.body}
    verify_webhook_signature(
        SECRET, **signed, event_id=item.event_id, event_type=item.event_type, now=NOW, tolerance=300
    )
    for event_id, event_type in (("0" * 32, item.event_type), (item.event_id, "approval.pending")):
        with pytest.raises(WebhookError, match="event id or type header does not match the signed body"):
            verify_webhook_signature(SECRET, **signed, event_id=event_id, event_type=event_type, now=NOW, tolerance=300)


@pytest.mark.parametrize(
    "timestamp",
    [
        "\u00b2",  # a superscript two: str.isdigit() is true, int() raised ValueError
        "9" * 5000,  # past int()'s 4300-digit limit: ValueError
        "".join(chr(0x0660 + int(c)) for c in str(NOW)),  # Arabic-Indic digits of NOW: accepted before
        "\uff11" + str(NOW)[1:],  # a fullwidth digit one
        "",
        " " + str(NOW),
        str(NOW) + "\n",
        "+" + str(NOW),
        "0" * 13,  # thirteen digits: longer than any timestamp this side of the year 33658
    ],
)
def test_only_ascii_digit_timestamps_are_accepted(timestamp: str) -> None:
    """Before: ValueError (not WebhookError) for some, acceptance for non-ASCII digits that int() reads."""
    item = event_item(FakeClock(), "w1", "decision", {})
    with pytest.raises(WebhookError, match="webhook timestamp is missing or outside the tolerance"):
        verify_webhook_signature(
            SECRET,
            timestamp=timestamp,
            signature=sign_webhook(SECRET, NOW, item.body),
            body=item.body,
            event_id=item.event_id,
            event_type=item.event_type,
            now=NOW,
            tolerance=10**13,  # so that only the form of the timestamp can refuse it
        )


@given(st.text(max_size=20))
@example(str(NOW))
@example("\u00b2")
@example("\u0661")
def test_a_timestamp_header_is_accepted_only_as_one_to_twelve_ascii_digits(timestamp: str) -> None:
    """Whatever the header holds, the helper returns or raises `WebhookError`; it returns only for ``[0-9]{1,12}``
    (the signature is made over the same digits, so the form alone decides)."""
    body = b'{"id":"e1","type":"decision"}'
    well_formed = re.fullmatch(r"[0-9]{1,12}", timestamp, flags=re.ASCII) is not None
    signature = sign_webhook(SECRET, int(timestamp) if well_formed else NOW, body)
    try:
        verify_webhook_signature(
            SECRET,
            timestamp=timestamp,
            signature=signature,
            body=body,
            event_id="e1",
            event_type="decision",
            now=NOW,
            tolerance=10**13,
        )
    except WebhookError:
        assert not well_formed
    else:
        assert well_formed


@pytest.mark.parametrize("signature", ["v1=\u00e9" + "0" * 63, "v1=\u00ff", "\u00e9", "v1=\udcff"])
def test_a_non_ascii_signature_header_is_a_webhook_error(signature: str) -> None:
    """Before: `hmac.compare_digest` raised ``TypeError`` for a str that is not ASCII (HTTP header bytes decode as
    latin-1 in Starlette, Django, Flask), so a receiver that catches `WebhookError` answered 500, with a traceback,
    to an unauthenticated request."""
    item = event_item(FakeClock(), "w1", "transaction.signed", {})
    with pytest.raises(WebhookError, match="webhook signature is invalid"):
        verify_webhook_signature(
            SECRET,
            timestamp=str(NOW),
            signature=signature,
            body=item.body,
            event_id=item.event_id,
            event_type=item.event_type,
            now=NOW,
            tolerance=300,
        )
