"""Moto answers one request at a time.

Moto's backends are plain Python objects without locks: a `TransactWriteItems` deep-copies the whole table while
another thread (a webhook lane, a second proxy worker) adds an item, and the copy fails with "dictionary changed size
during iteration". Real DynamoDB serves concurrent requests; what the store relies on is that each request is atomic,
which is what serializing them here gives. Importing this module (the root conftest does) wraps moto's request
handler in one process-wide lock; the store's own code is untouched.
"""

import threading
from typing import Any

from moto.core.botocore_stubber import BotocoreStubber

_LOCK = threading.RLock()
_unlocked = BotocoreStubber.process_request


def _process_request_serially(self: BotocoreStubber, request: Any) -> Any:
    with _LOCK:
        return _unlocked(self, request)


if getattr(BotocoreStubber.process_request, "__name__", "") != _process_request_serially.__name__:
    BotocoreStubber.process_request = _process_request_serially  # type: ignore[method-assign]
