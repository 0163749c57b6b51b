"""Heartbeats on a real Redis: expiry, the lost-instance reaper racing itself, and outages."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest

from infra.heartbeat import Heartbeat
from infra.store import INSTANCE_LOST, MemoryStore, RedisStore, SessionRecord
from tests.redis_server import RedisServer, redis_server, redis_url  # noqa: F401


@pytest.fixture
async def stores(redis_url: str) -> AsyncIterator[list[RedisStore]]:  # noqa: F811
    """Three clients, as three gateway instances would have."""
    opened = [RedisStore(redis_url) for _ in range(3)]
    yield opened
    for store in opened:
        await store.close()


def live_session(session_id: str, instance: str, started_at: float | None = None) -> SessionRecord:
    return SessionRecord(
        session_id, state="speaking", instance=instance, started_at=started_at or time.time()
    )


async def test_a_beat_publishes_info_and_expires_without_the_next(
    stores: list[RedisStore],
) -> None:
    store = stores[0]
    beat = Heartbeat(
        store, "gw-a", interval=0.1, ttl=0.4, info_fn=lambda: {"live_calls": 3, "draining": False}
    )
    await beat.start()
    await asyncio.sleep(0.6)  # longer than the TTL: only the background beats keep it alive
    assert await store.live_instances() == {"gw-a"}
    info = await store.instance_info("gw-a")
    assert info is not None
    assert (info["instance"], info["live_calls"], info["draining"]) == ("gw-a", 3, False)
    assert {"started_at", "pid", "host", "beat_at"} <= info.keys()

    await beat.aclose(retire=False)  # as if killed: the key lives out its TTL
    assert await store.live_instances() == {"gw-a"}
    await asyncio.sleep(0.5)
    assert await store.lost_instances() == {"gw-a"}


async def test_racing_reapers_end_each_lost_session_exactly_once(
    stores: list[RedisStore],
) -> None:
    a_store, b_store, c_store = stores
    dead = Heartbeat(a_store, "gw-a", interval=0.1, ttl=0.3)
    await dead.beat()
    for n in range(10):
        await a_store.put_session(live_session(f"s{n}", "gw-a"))
    await a_store.put_session(live_session("done", "gw-a"))
    await a_store.mark_ended("done", "caller_hangup", time.time())

    b = Heartbeat(b_store, "gw-b", interval=0.1, ttl=0.3)
    c = Heartbeat(c_store, "gw-c", interval=0.1, ttl=0.3)
    await b_store.put_session(live_session("b1", "gw-b"))  # a call of gw-b's, not to reap
    await asyncio.gather(b.beat(), c.beat())
    assert await asyncio.gather(b.reap(), c.reap()) == [{}, {}]  # gw-a is still beating

    await asyncio.sleep(0.4)
    await asyncio.gather(b.beat(), c.beat())
    results = await asyncio.gather(b.reap(), c.reap(), b.reap(), c.reap())
    ended = [sid for result in results for sid in result.get("gw-a", [])]
    assert sorted(ended) == sorted(f"s{n}" for n in range(10))  # each once, by one reaper

    for n in range(10):
        got = await b_store.get_session(f"s{n}")
        assert got is not None and (got.state, got.end_reason) == ("ended", INSTANCE_LOST)
        events = await b_store.events(f"s{n}")
        assert [(e["kind"], e["data"]["reason"]) for e in events] == [("ended", INSTANCE_LOST)]
        assert events[0]["data"]["reaped_by"] in ("gw-b", "gw-c")
    done = await b_store.get_session("done")
    assert done is not None and done.end_reason == "caller_hangup"
    assert await b_store.events("done") == []
    b1 = await b_store.get_session("b1")
    assert b1 is not None and not b1.ended
    assert await b_store.lost_instances() == set()
    assert await b_store.sessions_of("gw-a") == set()


async def test_a_reaper_that_claimed_and_died_is_replaced_after_the_claim_expires(
    stores: list[RedisStore],
) -> None:
    a_store, b_store, _ = stores
    await a_store.heartbeat("gw-a", {}, ttl=0.2)
    await a_store.put_session(live_session("s1", "gw-a"))
    await asyncio.sleep(0.3)
    assert await a_store.claim_reap("gw-a", "gw-dead-reaper", ttl=0.3)  # then it died

    b = Heartbeat(b_store, "gw-b", interval=0.1, ttl=0.3)
    await b.beat()
    assert await b.reap() == {}
    await asyncio.sleep(0.35)
    assert await b.reap() == {"gw-a": ["s1"]}


async def test_a_restarted_instance_ends_what_its_last_run_left(
    stores: list[RedisStore],
) -> None:
    store = stores[0]
    await store.put_session(live_session("old", "gw-a", started_at=time.time() - 60))
    beat = Heartbeat(store, "gw-a", interval=0.1, ttl=0.3)
    await store.put_session(live_session("new", "gw-a"))  # a call of this run
    await beat.tick()
    old = await store.get_session("old")
    new = await store.get_session("new")
    assert old is not None and old.end_reason == INSTANCE_LOST
    assert new is not None and not new.ended
    assert await store.sessions_of("gw-a") == {"new"}


async def test_heartbeats_survive_a_redis_outage(
    stores: list[RedisStore],
    redis_server: RedisServer,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = stores[0]
    beat = Heartbeat(store, "gw-a", interval=0.1, ttl=1.0)
    await beat.start()
    assert beat.healthy
    with caplog.at_level(logging.WARNING, logger="infra.heartbeat"):
        redis_server.stop()
        await asyncio.sleep(0.5)  # several rounds against a dead server
        assert not beat.healthy
        warnings = [r for r in caplog.records if r.name == "infra.heartbeat"]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        redis_server.start()
        deadline = time.monotonic() + 5
        while not beat.healthy:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    assert await store.live_instances() == {"gw-a"}
    await beat.aclose()
    assert await store.live_instances() == set()  # retired at a clean shutdown


async def test_the_embedded_store_beats_too() -> None:
    store = MemoryStore()
    beat = Heartbeat(store, "solo", interval=0.1, ttl=0.3, info_fn=lambda: {"live_calls": 0})
    await beat.start()
    assert await store.live_instances() == {"solo"}
    await beat.aclose()
    assert await store.live_instances() == set()
    assert await beat.reap() == {}  # it never reaps itself


def test_a_ttl_not_longer_than_the_interval_is_refused() -> None:
    with pytest.raises(ValueError):
        Heartbeat(MemoryStore(), "gw", interval=5, ttl=5)
