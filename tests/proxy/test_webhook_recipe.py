"""docs/api.md's webhook verification recipe, followed literally from the outside: the owner configures the webhook
through the API with a base64 secret, an owner order makes an event, the real worker delivers it over HTTP to a
receiver on 127.0.0.1, and the receiver's check uses only what the document names (the headers, the decoded secret,
hex HMAC-SHA256 over timestamp "." body, the suggested tolerance) and the standard library: nothing of
`parent_proxy.webhooks`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import re
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from requests.structures import CaseInsensitiveDict

from parent_proxy.webhooks import WebhookWorker  # the sender; the receiver below uses none of this module
from tests.proxy.api_harness import Harness
from tests.proxy.harness_calls import freeze_order
from tests.proxy.webhook_receiver import local_client, serving

TOLERANCE_SECONDS = 300  # the document's suggestion


class Capture(ThreadingHTTPServer):
    """Records each POST's headers and raw body; answers 204."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.deliveries: list[tuple[CaseInsensitiveDict[str], bytes]] = []
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server: Capture

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            self.server.deliveries.append((CaseInsensitiveDict(self.headers.items()), body))  # names: any case
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def documented_check(
    secret_given: str, headers: CaseInsensitiveDict[str], body: bytes, now: float
) -> dict[str, object]:
    """Steps 1-5 of docs/api.md, Webhooks, "Verifying a delivery": the event, or ValueError naming the failed step."""
    key = base64.b64decode(secret_given, validate=True)  # the key: the secret given to PUT, base64-decoded
    timestamp = headers["WAIaaS-Timestamp"]  # step 2
    if re.fullmatch(r"[0-9]{1,12}", timestamp, re.ASCII) is None or abs(now - int(timestamp)) > TOLERANCE_SECONDS:
        raise ValueError("step 2: timestamp")
    mac = hmac.new(key, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()  # step 3
    if not hmac.compare_digest(("v1=" + mac).encode(), headers["WAIaaS-Signature"].encode()):
        raise ValueError("step 3: signature")
    event = json.loads(body)  # step 4
    if (event["id"], event["type"]) != (headers["WAIaaS-Event-Id"], headers["WAIaaS-Event-Type"]):
        raise ValueError("step 4: event headers")
    return dict(event)


def test_a_receiver_verifies_a_real_delivery_with_the_documented_recipe(provisioned: Harness) -> None:
    secret_given = base64.b64encode(secrets.token_bytes(32)).decode()
    with serving(Capture()) as receiver, local_client() as client:
        url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
        configured = provisioned.owner_call(
            "PUT", f"/v1/wallets/{provisioned.wallet_id}/webhook", {"url": url, "secret": secret_given}
        )
        assert configured.status_code == 204, configured.text
        frozen = provisioned.owner_call(
            "POST", f"/v1/wallets/{provisioned.wallet_id}/freeze", freeze_order(provisioned, 1)
        )
        assert frozen.status_code == 200, frozen.text
        WebhookWorker(provisioned.store, provisioned.clock, client, random.Random(7)).run_once()
    assert len(receiver.deliveries) == 1
    headers, body = receiver.deliveries[0]
    # Every header the document lists, and the body's fields.
    for name in ("Content-Type", "WAIaaS-Timestamp", "WAIaaS-Signature", "WAIaaS-Event-Id", "WAIaaS-Event-Type"):
        assert name in headers, (name, headers)
    assert headers["Content-Type"] == "application/json"
    assert re.fullmatch(r"v1=[0-9a-f]{64}", headers["WAIaaS-Signature"])
    event = documented_check(secret_given, headers, body, now=time.time())
    assert set(event) == {"id", "type", "wallet_id", "created_at", "data"}
    assert (event["type"], event["wallet_id"]) == ("wallet.frozen", provisioned.wallet_id)
    assert body == json.dumps(event, sort_keys=True, separators=(",", ":")).encode()  # canonical JSON

    # The recipe refuses what it should: each change fails at its own step.
    keyed_with_text = base64.b64encode(secret_given.encode()).decode()  # keyed with the base64 text, not its bytes
    retyped = CaseInsensitiveDict({**headers, "WAIaaS-Event-Type": "wallet.unfrozen"})
    wrong = [
        (keyed_with_text, headers, body, time.time(), "step 3"),
        (secret_given, headers, body.replace(b"wallet.frozen", b"wallet.unfrozen"), time.time(), "step 3"),
        (secret_given, headers, body, time.time() + TOLERANCE_SECONDS + 5, "step 2"),
        (secret_given, retyped, body, time.time(), "step 4"),
    ]
    for given, hdrs, raw, now, step in wrong:
        with pytest.raises(ValueError, match=step):
            documented_check(given, hdrs, raw, now)
