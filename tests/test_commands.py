"""Commands between instances over a real Redis, and on the embedded store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from infra.commands import CommandBus, CommandTimeout, CommandUndeliverable
from infra.store import MemoryStore, RedisStore, StoreUnavailable
from tests.redis_server import RedisServer, redis_server, redis_url  # noqa: F401


def handler_for(instance_id: str) -> Any:
    async def handle(command: dict[str, Any]) -> dict[str, Any]:
        op = command.get("op")
        if op == "slow":
            await asyncio.sleep(command.get("seconds", 2.0))
        if op == "fail":
            raise LookupError("no such session")
        if op == "odd":
            return "not a dict"  # type: ignore[return-value]
        return {"ok": True, "by": instance_id, "echo": command}

    return handle


@pytest.fixture
async def buses(redis_url: str) -> AsyncIterator[tuple[CommandBus, CommandBus]]:  # noqa: F811
    """Two instances, each with its own Redis client; gw-b serves commands."""
    a_store, b_store = RedisStore(redis_url), RedisStore(redis_url)
    a = CommandBus(a_store, "gw-a")
    b = CommandBus(b_store, "gw-b", retry_max=0.3)
    await b.start(handler_for("gw-b"))
    yield a, b
    await a.aclose()
    await b.aclose(grace=0.1)
    await a_store.close()
    await b_store.close()


async def test_a_command_round_trips_to_another_instance(
    buses: tuple[CommandBus, CommandBus],
) -> None:
    a, b = buses
    reply = await a.send("gw-b", {"op": "hangup", "session_id": "s1"})
    assert reply == {"ok": True, "by": "gw-b", "echo": {"op": "hangup", "session_id": "s1"}}
    assert b.listening


async def test_commands_run_concurrently(buses: tuple[CommandBus, CommandBus]) -> None:
    a, _ = buses
    started = time.monotonic()
    replies = await asyncio.gather(
        *(a.send("gw-b", {"op": "slow", "seconds": 0.2, "n": n}) for n in range(10))
    )
    assert [r["echo"]["n"] for r in replies] == list(range(10))
    assert time.monotonic() - started < 1.5


async def test_nobody_listening_is_undeliverable_at_once(
    buses: tuple[CommandBus, CommandBus],
) -> None:
    a, _ = buses
    started = time.monotonic()
    with pytest.raises(CommandUndeliverable):
        await a.send("gw-gone", {"op": "hangup"})
    assert time.monotonic() - started < 0.5


async def test_a_slow_handler_times_out(buses: tuple[CommandBus, CommandBus]) -> None:
    a, _ = buses
    started = time.monotonic()
    with pytest.raises(CommandTimeout):
        await a.send("gw-b", {"op": "slow", "seconds": 3}, timeout=0.3)
    assert time.monotonic() - started < 1.0


async def test_handler_errors_come_back_as_replies(buses: tuple[CommandBus, CommandBus]) -> None:
    a, _ = buses
    assert await a.send("gw-b", {"op": "fail"}) == {"ok": False, "error": "no such session"}
    reply = await a.send("gw-b", {"op": "odd"})
    assert reply["ok"] is False and "not a dict" in reply["error"]


async def test_a_command_to_itself_skips_the_channel(buses: tuple[CommandBus, CommandBus]) -> None:
    _, b = buses
    assert (await b.send("gw-b", {"op": "say"}))["by"] == "gw-b"
    with pytest.raises(CommandTimeout):
        await b.send("gw-b", {"op": "slow", "seconds": 3}, timeout=0.2)


async def test_the_bus_resubscribes_after_redis_restarts(
    buses: tuple[CommandBus, CommandBus],
    redis_server: RedisServer,  # noqa: F811
) -> None:
    a, b = buses
    redis_server.stop()
    await asyncio.sleep(0.3)
    redis_server.start()
    deadline = time.monotonic() + 5
    while True:
        try:
            reply = await a.send("gw-b", {"op": "ping"}, timeout=1.0)
            break
        except (CommandUndeliverable, StoreUnavailable):
            assert time.monotonic() < deadline, "gw-b did not resubscribe"
            await asyncio.sleep(0.1)
    assert reply["by"] == "gw-b" and b.listening


async def test_the_embedded_store_reaches_only_this_instance() -> None:
    store = MemoryStore()
    bus = CommandBus(store, "solo")
    await bus.start(handler_for("solo"))
    try:
        assert (await bus.send("solo", {"op": "say"}))["by"] == "solo"
        assert await bus.send("solo", {"op": "fail"}) == {"ok": False, "error": "no such session"}
        with pytest.raises(CommandUndeliverable):
            await bus.send("other", {"op": "say"})
    finally:
        await bus.aclose()


async def test_two_buses_on_one_embedded_store_talk_through_it() -> None:
    store = MemoryStore()
    a, b = CommandBus(store, "gw-a"), CommandBus(store, "gw-b")
    await b.start(handler_for("gw-b"))
    try:
        assert (await a.send("gw-b", {"op": "say"}))["by"] == "gw-b"
        with pytest.raises(CommandTimeout):
            await a.send("gw-b", {"op": "slow", "seconds": 3}, timeout=0.2)
    finally:
        await b.aclose(grace=0.1)


async def test_a_sender_that_gives_up_does_not_cancel_the_command() -> None:
    done: list[int] = []

    async def handle(command: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0.3)
        done.append(command["n"])
        return {"ok": True}

    bus = CommandBus(MemoryStore(), "solo")
    await bus.start(handle)
    try:
        with pytest.raises(CommandTimeout):
            await bus.send("solo", {"n": 1}, timeout=0.05)
        await asyncio.sleep(0.4)
        assert done == [1]
    finally:
        await bus.aclose()
