"""The store contract: every test runs on the Redis store (a real server) and the embedded one."""

from __future__ import annotations

import asyncio
import fnmatch
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from infra.store import MemoryStore, RedisStore, SessionRecord, SessionWrite, Store
from infra.store.base import StoreUnavailable
from infra.store.keys import TEMPLATES, Keys
from tests.redis_server import redis_server, redis_url  # noqa: F401


@pytest.fixture(params=["memory", "redis"])
async def make_store(request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., Store]]:
    """Opens stores of one kind (all on the same server, for Redis) with given options."""
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    opened: list[Store] = []

    def make(**options: Any) -> Store:
        store: Store = MemoryStore(**options) if url is None else RedisStore(url, **options)
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


@pytest.fixture
def store(make_store: Callable[..., Store]) -> Store:
    return make_store()


def record(session_id: str, started_at: float, **fields: object) -> SessionRecord:
    values: dict[str, object] = {
        "state": "listening",
        "call_sid": f"CA{session_id}",
        "from_number": "+15550001",
        "to_number": "+15559999",
        "instance": "gw-a",
        **fields,
    }
    return SessionRecord(session_id, started_at=started_at, **values)  # type: ignore[arg-type]


async def test_a_record_round_trips_with_its_types(store: Store) -> None:
    rec = SessionRecord(
        "s1",
        state="speaking",
        call_sid="CA1",
        stream_sid="MZ1",
        from_number="+15550001",
        to_number="sip:agent@example.com",
        route="support",
        instance="gw-a",
        transport="sip",
        started_at=1700000000.125,
        turns=3,
        interruptions=1,
        errors=2,
    )
    await store.put_session(rec)
    got = await store.get_session("s1")
    assert got is not None
    assert got.updated_at is not None and got.ended_at is None and got.end_reason is None
    got.updated_at = None
    assert got == rec
    assert got.to_dict()["from"] == "+15550001" and got.to_dict()["to"] == "sip:agent@example.com"
    assert await store.get_session("nope") is None


async def test_updates_set_fields_and_refuse_what_they_may_not_touch(store: Store) -> None:
    now = time.time()
    await store.put_session(record("s1", now))
    assert await store.update_session("s1", state="thinking", turns=4, stream_sid="MZ9")
    got = await store.get_session("s1")
    assert got is not None
    assert (got.state, got.turns, got.stream_sid, got.call_sid) == ("thinking", 4, "MZ9", "CAs1")
    assert got.updated_at is not None and got.updated_at >= now
    assert not await store.update_session("missing", state="thinking")
    assert await store.get_session("missing") is None
    with pytest.raises(TypeError):
        await store.update_session("s1", colour="blue")
    with pytest.raises(TypeError):
        await store.update_session("s1", end_reason="hangup")
    with pytest.raises(TypeError):
        await store.update_session("s1", turns="many")


async def test_listing_filters_paginates_and_counts(store: Store) -> None:
    base = time.time() - 100
    await store.put_session(record("a", base + 1, state="listening", from_number="+1111"))
    await store.put_session(record("b", base + 2, state="speaking", to_number="+1111"))
    await store.put_session(record("c", base + 3, state="speaking", instance="gw-b"))
    await store.put_session(record("d", base + 4, state="listening", instance="gw-b"))
    await store.put_session(record("e", base + 5, state="listening"))

    def ids(page: tuple[list[SessionRecord], int]) -> tuple[list[str], int]:
        return [r.session_id for r in page[0]], page[1]

    assert ids(await store.list_sessions()) == (["e", "d", "c", "b", "a"], 5)
    assert ids(await store.list_sessions(offset=1, limit=2)) == (["d", "c"], 5)
    assert ids(await store.list_sessions(offset=9)) == ([], 5)
    assert ids(await store.list_sessions(state="speaking")) == (["c", "b"], 2)
    assert ids(await store.list_sessions(number="+1111")) == (["b", "a"], 2)
    assert ids(await store.list_sessions(instance="gw-b")) == (["d", "c"], 2)
    assert ids(await store.list_sessions(state="listening", instance="gw-a")) == (["e", "a"], 2)
    assert ids(await store.list_sessions(state="listening", instance="gw-a", limit=1)) == (
        ["e"],
        2,
    )
    assert ids(await store.list_sessions(state="speaking", number="+1111", instance="gw-a")) == (
        ["b"],
        1,
    )
    assert ids(await store.list_sessions(state="ended")) == ([], 0)

    # Index fields can change: the session moves between listings.
    await store.update_session("a", instance="gw-b", state="thinking")
    assert ids(await store.list_sessions(instance="gw-b")) == (["d", "c", "a"], 3)
    assert ids(await store.list_sessions(state="thinking")) == (["a"], 1)
    assert ids(await store.list_sessions(state="listening")) == (["e", "d"], 2)
    assert await store.sessions_of("gw-b") == {"a", "c", "d"}

    with pytest.raises(ValueError):
        await store.list_sessions(limit=0)
    with pytest.raises(ValueError):
        await store.list_sessions(offset=-1)


async def test_events_come_back_in_order_after_a_seq(store: Store) -> None:
    await store.put_session(record("s1", time.time()))
    t0 = time.time()
    await store.add_events("s1", [("state", {"old": "initial", "new": "listening"}, t0)])
    await store.add_events(
        "s1", [("transcript", {"text": f"word {i}", "is_final": i == 4}, t0 + i) for i in range(5)]
    )
    events = await store.events("s1")
    assert [e["kind"] for e in events] == ["state"] + ["transcript"] * 5
    assert events[0]["data"] == {"old": "initial", "new": "listening"}
    assert events[5]["data"] == {"text": "word 4", "is_final": True}
    assert events[2]["time"] == pytest.approx(t0 + 1)
    seqs = [e["seq"] for e in events]
    assert len(set(seqs)) == 6
    assert [tuple(map(int, s.split("-"))) for s in seqs] == sorted(
        tuple(map(int, s.split("-"))) for s in seqs
    )

    page = await store.events("s1", after=seqs[1], limit=2)
    assert [e["seq"] for e in page] == seqs[2:4]
    assert await store.events("s1", after=seqs[-1]) == []
    assert await store.events("unknown") == []
    with pytest.raises(ValueError):
        await store.events("s1", after="not-a-seq")


async def test_the_event_log_is_capped_keeping_the_newest(store: Store) -> None:
    t0 = time.time()
    await store.add_events("s1", [("tick", {"n": n}, t0) for n in range(2300)])
    events = await store.events("s1", limit=5000)
    # Redis trims approximately (whole stream nodes), never below the cap.
    assert 2000 <= len(events) <= 2100
    assert events[-1]["data"] == {"n": 2299}
    assert [e["data"]["n"] for e in events] == list(range(2300 - len(events), 2300))


async def test_ending_is_final_and_first_reason_wins(store: Store) -> None:
    now = time.time()
    await store.put_session(record("s1", now - 10, state="speaking"))
    assert await store.sessions_of("gw-a") == {"s1"}

    assert await store.mark_ended("s1", "caller_hangup", now)
    assert not await store.mark_ended("s1", "instance_lost", now + 1)
    assert not await store.mark_ended("missing", "caller_hangup", now)

    got = await store.get_session("s1")
    assert got is not None and got.ended
    assert (got.state, got.end_reason, got.ended_at) == ("ended", "caller_hangup", now)
    assert await store.sessions_of("gw-a") == set()
    assert [r.session_id for r in (await store.list_sessions(state="ended"))[0]] == ["s1"]
    assert (await store.list_sessions(state="speaking"))[1] == 0

    # Late writes update counters but cannot reopen the call.
    await store.update_session("s1", state="listening", turns=7)
    await store.put_session(record("s1", now - 10, state="speaking"))
    got = await store.get_session("s1")
    assert got is not None
    assert (got.state, got.end_reason, got.turns) == ("ended", "caller_hangup", 0)
    assert await store.sessions_of("gw-a") == set()


async def test_a_state_of_ended_without_a_reason_leaves_the_reason_to_mark_ended(
    store: Store,
) -> None:
    await store.put_session(record("s1", time.time()))
    await store.update_session("s1", state="ended")
    got = await store.get_session("s1")
    assert got is not None and got.ended and got.end_reason is None
    assert await store.sessions_of("gw-a") == set()
    assert await store.mark_ended("s1", "completed", time.time())
    assert not await store.mark_ended("s1", "instance_lost", time.time())
    got = await store.get_session("s1")
    assert got is not None and got.end_reason == "completed"


async def test_concurrent_ends_have_exactly_one_winner(
    store: Store, make_store: Callable[..., Store]
) -> None:
    # Two clients of one Redis race; the embedded store races itself.
    other = make_store() if isinstance(store, RedisStore) else store
    now = time.time()
    for n in range(20):
        await store.put_session(record(f"s{n}", now))
    racers = ((store, "one"), (other, "two"))
    results = await asyncio.gather(
        *(racer.mark_ended(f"s{n}", reason, now) for n in range(20) for racer, reason in racers)
    )
    assert sum(results) == 20
    for n in range(20):
        winner = "one" if results[2 * n] else "two"
        got = await store.get_session(f"s{n}")
        assert got is not None and got.end_reason == winner


async def test_a_retried_write_is_applied_once(store: Store) -> None:
    now = time.time()
    write = SessionWrite(
        "s1",
        record=record("s1", now),
        fields={"turns": 2},
        events=[("transcript", {"text": "hi"}, now)],
        writer="w1",
        seq=5,
    )
    await store.write([write])
    await store.write([write])  # the reply was lost, the writer resends
    stale = SessionWrite("s1", fields={"turns": 1}, writer="w1", seq=4)
    await store.write([stale])
    fresh = SessionWrite("s1", fields={"turns": 3}, writer="w1", seq=6, end=("completed", now))
    other_writer = SessionWrite("s1", events=[("note", {}, now)], writer="w2", seq=1)
    await store.write([fresh, other_writer])
    got = await store.get_session("s1")
    assert got is not None and (got.turns, got.end_reason) == (3, "completed")
    assert [e["kind"] for e in await store.events("s1")] == ["transcript", "note"]


async def test_routes_crud(store: Store) -> None:
    assert await store.list_routes() == {}
    assert await store.get_route("+15550001") is None
    route = {"agent": "demo", "voice": "en-US", "limits": {"max_seconds": 600}}
    await store.put_route("+15550001", route)
    await store.put_route("default", {"agent": "echo"})
    assert await store.get_route("+15550001") == route
    await store.put_route("+15550001", {**route, "voice": "en-GB"})
    assert (await store.get_route("+15550001") or {})["voice"] == "en-GB"
    assert list(await store.list_routes()) == ["+15550001", "default"]
    assert await store.delete_route("+15550001")
    assert not await store.delete_route("+15550001")
    assert await store.list_routes() == {"default": {"agent": "echo"}}


async def test_heartbeats_expire_and_lost_instances_are_claimed_once(store: Store) -> None:
    await store.heartbeat("gw-a", {"live_calls": 2, "pid": 1}, ttl=0.5)
    await store.heartbeat("gw-b", {"live_calls": 0}, ttl=5)
    await store.put_session(record("s1", time.time(), instance="gw-a"))
    await store.put_session(record("s2", time.time(), instance="gw-a"))
    assert await store.live_instances() == {"gw-a", "gw-b"}
    assert await store.lost_instances() == set()
    assert await store.instance_info("gw-a") == {"live_calls": 2, "pid": 1}

    await asyncio.sleep(0.7)
    assert await store.live_instances() == {"gw-b"}
    assert await store.lost_instances() == {"gw-a"}
    assert await store.instance_info("gw-a") is None
    assert await store.claim_reap("gw-a", "gw-b", ttl=5)
    assert not await store.claim_reap("gw-a", "gw-c", ttl=5)

    # A session the reaper did not see keeps the instance registered for the next round.
    assert not await store.forget_instance("gw-a", ["s1"])
    assert await store.sessions_of("gw-a") == {"s2"}
    assert await store.forget_instance("gw-a", ["s2"])
    assert await store.lost_instances() == set()

    # An instance that beats again is not forgotten.
    await store.heartbeat("gw-c", {}, ttl=5)
    assert not await store.forget_instance("gw-c", [])
    await store.retire_instance("gw-c")
    assert await store.lost_instances() == {"gw-c"}


async def test_ended_records_expire_after_the_retention(
    make_store: Callable[..., Store],
) -> None:
    short, forever = make_store(retention=1.0), make_store(retention=0)
    now = time.time()
    await short.put_session(record("old", now - 5))
    await short.put_session(record("s1", now))
    await short.add_events("s1", [("x", {}, now)])
    assert (await short.list_sessions())[1] == 1  # "old" started before the retention
    await short.mark_ended("s1", "completed", now)
    await forever.put_session(record("ancient", now - 1e6))
    await forever.mark_ended("ancient", "completed", now - 1e6)
    await asyncio.sleep(1.2)
    assert await short.get_session("s1") is None
    assert await short.events("s1") == []
    assert await forever.get_session("ancient") is not None
    assert "ancient" in [r.session_id for r in (await forever.list_sessions(state="ended"))[0]]


async def test_ping(store: Store) -> None:
    assert await store.ping()


async def test_redis_keys_follow_the_schema(redis_url: str) -> None:  # noqa: F811
    store = RedisStore(redis_url, prefix="test:")
    try:
        now = time.time()
        await store.put_session(record("s1", now))
        await store.add_events("s1", [("x", {}, now)])
        await store.mark_ended("s1", "completed", now)
        await store.put_session(record("s2", now, state="speaking"))
        await store.heartbeat("gw-a", {}, ttl=5)
        await store.claim_reap("gw-z", "gw-a", ttl=5)
        await store.put_route("+1", {})
        await store.push_reply("r1", {"ok": True}, ttl=5)
        keys = await store.client.keys("*")
    finally:
        await store.close()
    patterns = [
        "test:" + template.replace("{", "<").split("<")[0] + "*" for template in TEMPLATES.values()
    ]
    assert keys and all(k.startswith("test:") for k in keys)
    assert all(any(fnmatch.fnmatchcase(k, p) for p in patterns) for k in keys), keys
    k = Keys("test:")
    assert k.session("s1") in keys and k.index_state("speaking") in keys
    assert k.instance_sessions("gw-a") in keys and k.index_number("+15559999") in keys


async def test_an_unreachable_redis_raises_store_unavailable() -> None:
    store = RedisStore("redis://127.0.0.1:1/0")
    try:
        with pytest.raises(StoreUnavailable):
            await store.get_session("s1")
        with pytest.raises(StoreUnavailable):
            await store.write([SessionWrite("s1", fields={"turns": 1})])
        assert not await store.ping()
    finally:
        await store.close()


def test_a_bad_prefix_is_refused() -> None:
    with pytest.raises(ValueError):
        Keys('vg"; redis.call("FLUSHALL')
