"""Shared call state: session records, event logs, heartbeats, routes and the command channel.

`open_store` picks the backend: `RedisStore` when ``REDIS_URL`` is set (the production path,
shared by every instance), else `MemoryStore` (embedded, single instance, nothing to install).
The call path writes through `StoreWriter`, never to the store directly.
"""

from __future__ import annotations

from infra.store.base import (
    INSTANCE_LOST,
    SessionRecord,
    SessionWrite,
    Store,
    StoredEvent,
    StoreUnavailable,
)
from infra.store.keys import DEFAULT_PREFIX, Keys
from infra.store.memory_store import MemoryStore
from infra.store.redis_store import RedisStore
from infra.store.writer import StoreWriter, WriterBacklog

__all__ = [
    "DEFAULT_PREFIX",
    "INSTANCE_LOST",
    "Keys",
    "MemoryStore",
    "RedisStore",
    "SessionRecord",
    "SessionWrite",
    "Store",
    "StoreUnavailable",
    "StoreWriter",
    "StoredEvent",
    "WriterBacklog",
    "open_store",
]


def open_store(redis_url: str | None, *, prefix: str = DEFAULT_PREFIX) -> Store:
    """The store for these settings (``settings.redis_url``)."""
    if redis_url:
        return RedisStore(redis_url, prefix=prefix)
    return MemoryStore()
