"""Write-behind: coalescing, batching, and a call that keeps talking through a Redis restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from infra.store import MemoryStore, RedisStore, SessionRecord, SessionWrite, Store, StoreWriter
from tests.redis_server import RedisServer, redis_server, redis_url  # noqa: F401


class CountingStore(RedisStore):
    """The real Redis store, recording each write batch it is given."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.batches: list[list[SessionWrite]] = []

    async def write(self, writes: Sequence[SessionWrite]) -> None:
        self.batches.append(list(writes))
        await super().write(writes)


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[CountingStore]:  # noqa: F811
    opened = CountingStore(redis_url)
    yield opened
    await opened.close()


def new_record(session_id: str, **fields: Any) -> SessionRecord:
    return SessionRecord(
        session_id, state="initial", call_sid=f"CA{session_id}", instance="gw-a", **fields
    )


async def wait_until(condition: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_many_updates_between_flushes_become_one_write(store: CountingStore) -> None:
    writer = StoreWriter(store)
    writer.started(new_record("s1"))
    for turn in range(50):
        writer.session_updated("s1", state="listening" if turn % 2 else "speaking", turns=turn)
        writer.event("s1", "transcript", {"text": f"turn {turn}"}, time.time())
    writer.session_updated("s2", turns=1)  # a session this writer did not start
    assert writer.backlog.sessions == 2 and writer.backlog.events == 50

    assert await writer.flush()
    assert len(store.batches) == 1
    (s1, s2) = store.batches[0]
    assert s1.record is not None and s1.record.turns == 49 and len(s1.events) == 50
    assert s2.record is None and s2.fields.keys() == {"turns", "updated_at"}

    got = await store.get_session("s1")
    assert got is not None and (got.state, got.turns) == ("listening", 49)
    events = await store.events("s1", limit=100)
    assert [e["data"]["text"] for e in events] == [f"turn {t}" for t in range(50)]
    assert await store.get_session("s2") is None  # no record to update: nothing is invented
    assert writer.backlog.sessions == 0 and writer.healthy

    assert await writer.flush()  # nothing queued: no write at all
    assert len(store.batches) == 1


async def test_the_background_flush_batches_sessions_and_ends_them(store: CountingStore) -> None:
    writer = StoreWriter(store, interval=0.05)
    writer.start()
    try:
        for n in range(3):
            writer.started(new_record(f"s{n}"))
            writer.event(f"s{n}", "state", {"new": "listening"}, time.time())
        writer.ended("s0", "caller_hangup", time.time())
        writer.ended("s0", "completed", time.time())  # the first reason wins
        await wait_until(lambda: store.batches and writer.backlog.sessions == 0)
        assert [len(batch) for batch in store.batches] == [3]
        got = await store.get_session("s0")
        assert got is not None and (got.state, got.end_reason) == ("ended", "caller_hangup")
        assert await store.sessions_of("gw-a") == {"s1", "s2"}

        writer.session_updated("s0", turns=9)  # after the end: plain fields, still ended
        await wait_until(lambda: writer.backlog.sessions == 0)
        got = await store.get_session("s0")
        assert got is not None and (got.state, got.turns) == ("ended", 9)
    finally:
        await writer.aclose()


async def test_a_call_keeps_talking_while_redis_restarts(
    store: CountingStore,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    writer = StoreWriter(store, interval=0.05, backoff_max=0.3)
    writer.start()
    writer.started(new_record("s1", from_number="+15550001"))
    writer.event("s1", "state", {"n": -1}, time.time())
    await wait_until(lambda: writer.backlog.sessions == 0)

    redis_server.stop()  # saves, like a production Redis with persistence
    slowest = 0.0
    n = 0
    outage_ends = time.monotonic() + 2.5
    while time.monotonic() < outage_ends:
        started = time.perf_counter()
        writer.session_updated("s1", state="speaking" if n % 2 else "listening", turns=n)
        writer.event("s1", "transcript", {"n": n}, time.time())
        slowest = max(slowest, time.perf_counter() - started)
        n += 1
        await asyncio.sleep(0.01)
    writer.ended("s1", "caller_hangup", time.time())
    assert not writer.healthy
    assert writer.backlog.events > 0
    assert slowest < 0.005, f"the call path waited {slowest * 1000:.1f} ms"

    redis_server.start()
    await wait_until(lambda: writer.healthy and writer.backlog.sessions == 0)

    got = await store.get_session("s1")
    assert got is not None
    assert (got.turns, got.state, got.end_reason) == (n - 1, "ended", "caller_hangup")
    assert got.from_number == "+15550001"
    events = await store.events("s1", limit=5000)
    assert [e["data"]["n"] for e in events] == list(range(-1, n))
    assert writer.backlog.dropped_events == 0


async def test_live_records_come_back_after_redis_restarts_empty(
    store: CountingStore,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    writer = StoreWriter(store)
    writer.started(new_record("s1", to_number="+15559999"))
    writer.session_updated("s1", turns=1)
    assert await writer.flush()

    redis_server.stop(save=False)
    redis_server.start()
    writer.session_updated("s1", turns=2)
    for _ in range(20):  # the first tries may meet pooled connections to the old server
        if await writer.flush():
            break
        await asyncio.sleep(0.05)
    got = await store.get_session("s1")
    assert got is not None and (got.turns, got.to_number) == (2, "+15559999")
    assert [r.session_id for r in (await store.list_sessions(number="+15559999"))[0]] == ["s1"]


async def test_a_long_outage_drops_the_oldest_events_never_the_record(
    store: CountingStore,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    writer = StoreWriter(store, max_events=50)
    writer.started(new_record("s1"))
    assert await writer.flush()

    redis_server.stop()
    for n in range(120):
        writer.session_updated("s1", turns=n)
        writer.event("s1", "tick", {"n": n}, time.time())
    assert not await writer.flush()
    assert writer.backlog == type(writer.backlog)(1, 50, 70, 0)

    redis_server.start()
    assert await writer.flush()
    got = await store.get_session("s1")
    assert got is not None and got.turns == 119
    assert [e["data"]["n"] for e in await store.events("s1")] == list(range(70, 120))


async def test_close_flushes_or_gives_up_at_its_deadline(
    store: CountingStore,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    writer = StoreWriter(store, interval=10)  # only aclose will flush
    writer.start()
    writer.started(new_record("s1"))
    assert await writer.aclose()
    assert await store.get_session("s1") is not None

    writer = StoreWriter(store)
    writer.started(new_record("s2"))
    redis_server.stop()
    started = time.monotonic()
    assert not await writer.aclose(grace=0.5)
    assert time.monotonic() - started < 1.5
    assert writer.backlog.sessions == 1


async def test_a_forgotten_session_is_still_written_then_updated_by_fields() -> None:
    store = MemoryStore()
    writer = StoreWriter(store)
    writer.session_updated("s1", turns=5)  # before the record: superseded by it
    writer.started(new_record("s1", turns=1))
    writer.forget("s1")  # e.g. the media stream landed on another instance
    assert await writer.flush()
    got = await store.get_session("s1")
    assert got is not None and got.turns == 1
    writer.session_updated("s1", turns=2)
    assert await writer.flush()
    got = await store.get_session("s1")
    assert got is not None and got.turns == 2


async def test_bad_fields_fail_in_the_caller_not_in_the_flush() -> None:
    writer = StoreWriter(MemoryStore())
    with pytest.raises(TypeError):
        writer.session_updated("s1", colour="blue")
    with pytest.raises(TypeError):
        writer.session_updated("s1", turns="three")
    with pytest.raises(TypeError):
        writer.session_updated("s1", end_reason="done")
    assert writer.backlog.sessions == 0


async def test_the_embedded_store_takes_the_same_writes() -> None:
    store: Store = MemoryStore()
    writer = StoreWriter(store)
    writer.started(new_record("s1"))
    writer.session_updated("s1", state="thinking", turns=2)
    writer.event("s1", "agent_text", {"text": "hello"}, time.time())
    writer.ended("s1", "completed", time.time())
    assert await writer.aclose()
    got = await store.get_session("s1")
    assert got is not None and (got.turns, got.end_reason) == (2, "completed")
    assert [e["kind"] for e in await store.events("s1")] == ["agent_text"]
