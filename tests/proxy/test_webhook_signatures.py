"""What a webhook signature covers, and what `verify_webhook_signature` accepts (review findings: the event id and
type headers are outside the HMAC; the timestamp header was parsed with ``int()``)."""

from __future__ import annotations

import json

import pytest

from parent_proxy.errors import WebhookError
from parent_proxy.webhooks import event_item, sign_webhook, verify_webhook_signature
from tests.proxy.conftest import FakeClock
from tests.proxy.webhook_receiver import SECRET

NOW = 1_700_000_000


def test_the_event_id_and_type_headers_must_match_the_signed_body() -> None:
    """Before: a delivery captured and replayed within the tolerance with a new ``WAIaaS-Event-Id`` (or another
    ``WAIaaS-Event-Type``) verified, so a receiver that de-duplicated on the header acted on it twice. The body
    carries the id and type under the HMAC; the helper now refuses headers that say otherwise."""
    item = event_item(FakeClock(), "w1", "transaction.signed", {"request_id": "r1"})
    envelope = json.loads(item.body)
    assert (envelope["id"], envelope["type"]) == (item.event_id, item.event_type)  # signed, with the body
    signed = {"timestamp": str(NOW), "signature": sign_webhook(SECRET, NOW, item.body), "body": item.body}
    verify_webhook_signature(
        SECRET, **signed, event_id=item.event_id, event_type=item.event_type, now=NOW, tolerance=300
    )
    for event_id, event_type in (("0" * 32, item.event_type), (item.event_id, "approval.pending")):
        with pytest.raises(WebhookError, match="event id or type header does not match the signed body"):
            verify_webhook_signature(SECRET, **signed, event_id=event_id, event_type=event_type, now=NOW, tolerance=300)
