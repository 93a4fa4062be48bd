"""The parent proxy's state store: one `Store` protocol and its adapters (SQLite embedded, DynamoDB fleet)."""

from parent_proxy.store.protocol import Limits, Store

__all__ = ["Limits", "Store"]
