"""Two gateway processes sharing a real Redis: any instance answers for any call.

Each instance is `python -m gateway serve` in its own process; calls are held open by a
Twilio-side websocket client from `telephony.twilio.peer`; the fast deterministic providers
keep the test about state, not speech.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.fakes.twilio_api_server import ACCOUNT_SID, AUTH_TOKEN, run_fake_twilio_api
from tests.gateway_process import GatewayProcess, HeldCall
from tests.redis_server import RedisServer, redis_server  # noqa: F401 (fixture)

API = {"Authorization": "Bearer multi-instance-token"}
TTL = 1.5


@pytest.fixture(scope="module")
def cluster(
    redis_server: RedisServer,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[GatewayProcess, GatewayProcess, RedisServer]]:
    cwd = tmp_path_factory.mktemp("gateways")
    with run_fake_twilio_api() as twilio:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "API_"))},
            "REDIS_URL": redis_server.url,
            "API_TOKEN": API["Authorization"].split()[1],
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "TWILIO_API_BASE_URL": twilio.url,
            "HEARTBEAT_INTERVAL": "0.5",
            "HEARTBEAT_TTL": str(TTL),
            "STT_PROVIDER": "scripted",
            "TTS_PROVIDER": "tone",
            "AGENT_PROVIDER": "instant",
        }
        a, b = GatewayProcess("gw-a", env, cwd), GatewayProcess("gw-b", env, cwd)
        try:
            yield a, b, redis_server
        finally:
            a.stop()
            b.stop()


async def until(predicate, within: float = 10.0, every: float = 0.1):
    deadline = time.monotonic() + within
    while True:
        value = await predicate()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(every)


async def record(gateway: GatewayProcess, sid: str) -> dict | None:
    async with httpx.AsyncClient() as http:
        reply = await http.get(f"{gateway.url}/api/sessions/{sid}", headers=API)
    return reply.json() if reply.status_code == 200 else None


async def events(gateway: GatewayProcess, sid: str) -> list[dict]:
    async with httpx.AsyncClient() as http:
        reply = await http.get(f"{gateway.url}/api/sessions/{sid}/events", headers=API)
    return reply.json()["events"] if reply.status_code == 200 else []


def new_sid() -> str:
    return "CA" + os.urandom(16).hex()


async def test_a_call_on_a_is_listed_inspected_and_controlled_through_b(cluster) -> None:
    a, b, _ = cluster
    call = HeldCall(a, new_sid())
    await call.open()
    try:

        async def listening() -> bool:
            found = await record(b, call.call_sid)
            return found is not None and found["state"] == "listening"

        assert await until(listening), "B never saw the call on A listening"
        async with httpx.AsyncClient() as http:
            listed = (await http.get(f"{b.url}/api/sessions?instance=gw-a", headers=API)).json()
            assert call.call_sid in [s["session_id"] for s in listed["sessions"]]
            said = await http.post(
                f"{b.url}/api/sessions/{call.call_sid}/say",
                json={"text": "This comes from operations."},
                headers=API,
            )
            assert said.status_code == 200, said.text

            async def spoken() -> bool:
                texts = [e["data"].get("text") for e in await events(b, call.call_sid)]
                return "This comes from operations." in texts

            assert await until(spoken), "the say sent to B was not spoken on A"
            hung = await http.post(f"{b.url}/api/sessions/{call.call_sid}/hangup", headers=API)
            assert hung.status_code == 200, hung.text
        await asyncio.wait_for(call.closed.wait(), 10)

        async def ended() -> dict | None:
            found = await record(b, call.call_sid)
            return found if found and found["end_reason"] else None

        final = await until(ended)
        assert final is not None and final["end_reason"] == "hangup" and final["state"] == "ended"
    finally:
        await call.close()


async def test_a_route_changed_through_the_api_applies_to_the_next_call(cluster) -> None:
    a, b, _ = cluster
    async with httpx.AsyncClient() as http:
        put = await http.put(
            f"{b.url}/api/routes/+15550100002",
            json={"greeting": "Welcome to the second line."},
            headers=API,
        )
        assert put.status_code == 200, put.text
    call = HeldCall(a, new_sid())
    await call.open()
    try:

        async def greeted() -> bool:
            texts = [e["data"].get("text") for e in await events(b, call.call_sid)]
            return "Welcome to the second line." in texts

        assert await until(greeted), "the new route's greeting was not used"
    finally:
        await call.close()
        async with httpx.AsyncClient() as http:
            await http.delete(f"{b.url}/api/routes/+15550100002", headers=API)


async def test_redis_away_for_ten_seconds_drops_no_call(cluster) -> None:
    a, b, redis = cluster
    call = HeldCall(a, new_sid())
    await call.open()
    try:

        async def greeted() -> bool:
            return any(e["kind"] == "reply_finished" for e in await events(b, call.call_sid))

        assert await until(greeted)
        redis.stop()
        try:
            await asyncio.sleep(1.0)
            async with httpx.AsyncClient() as http:
                ready = (await http.get(f"{a.url}/readyz")).json()
            assert ready["status"] == "degraded"
            before = call.media
            await call.press("7#")  # a whole turn while the store is away
            await asyncio.sleep(9.0)
            assert not call.closed.is_set(), "the call dropped while Redis was away"
            assert call.media > before, "no reply audio while Redis was away"
        finally:
            redis.start()

        async def caught_up() -> bool:
            kinds = [(e["kind"], e["data"]) for e in await events(b, call.call_sid)]
            return ("user_turn", {"text": "", "dtmf": "7"}) in kinds

        assert await until(caught_up, within=15), "the outage's events never reached the store"
        found = await record(b, call.call_sid)
        assert found is not None and found["state"] in ("listening", "speaking")
        assert found["turns"] >= 1
    finally:
        await call.close()

    async def ended() -> dict | None:
        found = await record(b, call.call_sid)
        return found if found and found["end_reason"] else None

    assert await until(ended), "the call's end was not recorded after the outage"


async def test_killing_a_gets_its_calls_marked_instance_lost_by_b(cluster) -> None:
    a, b, _ = cluster
    call = HeldCall(a, new_sid())
    await call.open()
    try:

        async def on_a() -> bool:
            found = await record(b, call.call_sid)
            return found is not None and found["state"] == "listening"

        assert await until(on_a)
        a.kill()
        killed_at = time.monotonic()

        async def lost() -> dict | None:
            found = await record(b, call.call_sid)
            return found if found and found["end_reason"] == "instance_lost" else None

        final = await until(lost, within=TTL + 5)
        assert final is not None, "B never marked the call on the killed instance as lost"
        assert time.monotonic() - killed_at < TTL + 5
        assert final["state"] == "ended"
    finally:
        await call.close()
