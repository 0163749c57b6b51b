"""The media stream endpoint on both of its paths, against a real gateway over TCP.

`websockets-sansio` gives the endpoint plain ASGI messages; `MediaWebSocketProtocol` (what
`voice-gateway serve` runs, on uvloop) hands frames to the transport directly once the call has
started. Every behaviour must be the same on both: signature check, protocol errors recorded
against the call, end reason, clean close.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx
import orjson
import pytest
import uvloop
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from gateway.asgi_websocket import MediaWebSocketProtocol
from gateway.caller import run_call
from telephony.twilio import peer
from telephony.twilio.signature import SignatureChecker
from tests.gateway_server import RunningGateway, run_gateway

T = TypeVar("T")

API_TOKEN = "test-api-token"
API = {"Authorization": f"Bearer {API_TOKEN}"}
AUTH_TOKEN = "twilio-auth-token-for-tests"
ACCOUNT = "AC" + "0" * 32
SILENCE = b"\xff" * 160
PATHS = ("asgi", "direct")


@contextmanager
def serve(path: str, env: dict[str, str] | None = None) -> Iterator[RunningGateway]:
    """A gateway in a thread, on asyncio with plain `websockets-sansio` or as `serve` runs it
    (`MediaWebSocketProtocol` on uvloop)."""
    fast = {"STT_PROVIDER": "scripted", "TTS_PROVIDER": "tone", "AGENT_PROVIDER": "instant"}
    new_loop = uvloop.new_event_loop if path == "direct" else asyncio.new_event_loop
    with run_gateway({**fast, **(env or {})}, path=path, new_loop=new_loop) as gateway:
        yield gateway


@pytest.fixture(scope="module", params=PATHS)
def gateway(request: pytest.FixtureRequest) -> Iterator[RunningGateway]:
    with serve(request.param) as running:
        yield running


@pytest.fixture
def attached(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The receivers attached through DIRECT_RECEIVE, so a test can see the direct path ran."""
    receivers: list[object] = []
    original = MediaWebSocketProtocol.attach

    def spy(self: MediaWebSocketProtocol, receiver: Any) -> None:
        receivers.append(receiver)
        original(self, receiver)

    monkeypatch.setattr(MediaWebSocketProtocol, "attach", spy)
    return receivers


async def wait_until_ended(gateway: RunningGateway, call_sid: str, within: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while call_sid in gateway.runtime.live:
        assert asyncio.get_running_loop().time() < deadline, "the session did not end"
        await asyncio.sleep(0.05)


async def first_media(ws: Any) -> None:
    while not isinstance(
        peer.parse_gateway_message(await asyncio.wait_for(ws.recv(), 10)), peer.OutboundMedia
    ):
        pass


async def test_a_call_is_answered_and_ends_with_stop(
    gateway: RunningGateway, attached: list[object]
) -> None:
    report = await run_call(gateway.url, ["hello", "dtmf:42#"], api_token=API_TOKEN, printer=None)
    assert report.ok, report.errors
    assert len(report.turns) == 2 and all(turn.agent_text for turn in report.turns)
    await wait_until_ended(gateway, report.call_sid)
    record = gateway.record(report.call_sid)
    assert record is not None and record.end_reason == "stop"
    assert len(attached) == (1 if gateway.path == "direct" else 0)


async def test_bad_frames_are_recorded_against_the_call_and_the_call_goes_on(
    gateway: RunningGateway,
) -> None:
    call_sid, stream_sid = "CA" + "3" * 31 + gateway.path[0], "MZ" + "4" * 32
    async with connect(gateway.runtime.stream_url) as ws:
        await ws.send(peer.encode_connected())
        await ws.send(peer.encode_start(stream_sid, call_sid, ACCOUNT, None, 1))
        await ws.send("{not json")
        await ws.send(orjson.dumps({"event": "bogus", "streamSid": stream_sid}).decode())
        await ws.send(peer.encode_inbound_media("MZwrong", 3, 1, 0, SILENCE))
        await ws.send(b"\x00binary is not a Twilio message")
        for seq in range(4, 30):
            await ws.send(peer.encode_inbound_media(stream_sid, seq, seq, seq * 20, SILENCE))
        await first_media(ws)  # the greeting: the call went on
        await ws.send(peer.encode_stop(stream_sid, 30, ACCOUNT, call_sid))
        with pytest.raises(ConnectionClosed) as info:
            while True:
                await asyncio.wait_for(ws.recv(), 10)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1000
    await wait_until_ended(gateway, call_sid)
    gateway.call_in_loop(gateway.runtime.writer.flush)
    async with httpx.AsyncClient() as http:
        url = f"{gateway.url}/api/sessions/{call_sid}/events"
        events = (await http.get(url, headers=API)).json()["events"]
    errors = [e["data"]["kind"] for e in events if e["kind"] == "protocol_error"]
    assert errors == ["invalid_json", "unknown_event", "wrong_stream_sid", "invalid_json"]
    record = gateway.record(call_sid)
    assert record is not None and record.end_reason == "stop"


async def test_a_caller_who_hangs_up_ends_the_call_as_disconnected(
    gateway: RunningGateway,
) -> None:
    call_sid, stream_sid = "CA" + "5" * 31 + gateway.path[0], "MZ" + "5" * 32
    async with connect(gateway.runtime.stream_url) as ws:
        await ws.send(peer.encode_connected())
        await ws.send(peer.encode_start(stream_sid, call_sid, ACCOUNT, None, 1))
        for seq in range(2, 12):
            await ws.send(peer.encode_inbound_media(stream_sid, seq, seq, seq * 20, SILENCE))
        await first_media(ws)
    # No stop: the socket just closed.
    await wait_until_ended(gateway, call_sid)
    record = gateway.record(call_sid)
    assert record is not None and record.end_reason == "disconnected"


async def test_a_session_that_ends_closes_the_socket(gateway: RunningGateway) -> None:
    call_sid, stream_sid = "CA" + "7" * 31 + gateway.path[0], "MZ" + "7" * 32
    runtime = gateway.runtime
    async with connect(gateway.runtime.stream_url) as ws:
        await ws.send(peer.encode_connected())
        await ws.send(peer.encode_start(stream_sid, call_sid, ACCOUNT, None, 1))
        await first_media(ws)

        async def hang_up() -> None:
            await runtime.end_call(runtime.live[call_sid], "hangup")

        gateway.call_in_loop(hang_up)
        with pytest.raises(ConnectionClosed) as info:
            while True:
                await asyncio.wait_for(ws.recv(), 10)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1000
    assert info.value.rcvd.reason == "session ended"
    await wait_until_ended(gateway, call_sid)
    record = gateway.record(call_sid)
    assert record is not None and record.end_reason == "hangup"


@pytest.mark.parametrize("path", list(PATHS))
async def test_a_stream_without_a_valid_signature_is_closed_with_1008(path: str) -> None:
    with serve(path, {"TWILIO_AUTH_TOKEN": AUTH_TOKEN}) as gateway:
        url = gateway.runtime.stream_url
        for headers in ({}, {"X-Twilio-Signature": "bm9wZQ=="}):
            async with connect(url, additional_headers=headers) as ws:
                with pytest.raises(ConnectionClosed) as info:
                    await asyncio.wait_for(ws.recv(), 10)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1008
        good = {"X-Twilio-Signature": SignatureChecker(AUTH_TOKEN).sign(url, {})}
        async with connect(url, additional_headers=good) as ws:
            await ws.send(peer.encode_connected())
            await ws.send(peer.encode_start("MZ" + "8" * 32, "CA" + "8" * 32, ACCOUNT, None, 1))
            await first_media(ws)
