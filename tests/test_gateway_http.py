"""The gateway's HTTP and websocket edges against a real server: signatures, errors, API."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from gateway.caller import CallError, run_call
from telephony.twilio import peer
from telephony.twilio.signature import SignatureChecker
from tests.gateway_server import RunningGateway, free_port, run_gateway

AUTH_TOKEN = "twilio-auth-token-for-tests"
API = {"Authorization": "Bearer test-api-token"}
CALL_FORM = {
    "CallSid": "CA" + "1" * 32,
    "AccountSid": "AC" + "2" * 32,
    "From": "+15550100001",
    "To": "+15550100002",
    "CallStatus": "ringing",
}


@pytest.fixture(scope="module")
def signed_gateway() -> Iterator[RunningGateway]:
    with run_gateway({"TWILIO_AUTH_TOKEN": AUTH_TOKEN}) as running:
        yield running


@pytest.fixture(scope="module")
def open_gateway() -> Iterator[RunningGateway]:
    with run_gateway() as running:
        yield running


def _signed_headers(url: str, params: dict[str, str]) -> dict[str, str]:
    return {"X-Twilio-Signature": SignatureChecker(AUTH_TOKEN).sign(url, params)}


def test_webhook_answers_with_a_connect_stream_twiml(signed_gateway: RunningGateway) -> None:
    url = signed_gateway.url + "/twilio/voice"
    reply = httpx.post(url, data=CALL_FORM, headers=_signed_headers(url, CALL_FORM))
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("application/xml")
    stream = ET.fromstring(reply.text).find("./Connect/Stream")
    assert stream is not None
    assert stream.get("url") == signed_gateway.url.replace("http", "ws", 1) + "/twilio/stream"
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert params == {
        "callSid": CALL_FORM["CallSid"],
        "from": CALL_FORM["From"],
        "to": CALL_FORM["To"],
        "route": "default",
    }


@pytest.mark.parametrize("signature", [None, "", "bm90IGEgc2lnbmF0dXJl"])
def test_webhook_with_a_bad_signature_is_refused(
    signed_gateway: RunningGateway, signature: str | None
) -> None:
    form = {**CALL_FORM, "CallSid": "CA" + "9" * 32}
    headers = {} if signature is None else {"X-Twilio-Signature": signature}
    reply = httpx.post(signed_gateway.url + "/twilio/voice", data=form, headers=headers)
    assert reply.status_code == 403
    assert reply.json() == {"detail": "invalid Twilio signature"}
    assert signed_gateway.record(form["CallSid"]) is None  # nothing else happened


def test_webhook_signed_over_other_params_is_refused(signed_gateway: RunningGateway) -> None:
    url = signed_gateway.url + "/twilio/voice"
    headers = _signed_headers(url, CALL_FORM)
    tampered = {**CALL_FORM, "From": "+15559999999"}
    assert httpx.post(url, data=tampered, headers=headers).status_code == 403


async def test_websocket_with_a_bad_signature_is_closed_with_1008(
    signed_gateway: RunningGateway,
) -> None:
    stream_url = signed_gateway.runtime.stream_url
    for headers in ({}, {"X-Twilio-Signature": "bm9wZQ=="}):
        async with connect(stream_url, additional_headers=headers) as ws:
            with pytest.raises(ConnectionClosed) as info:
                await ws.send(peer.encode_connected())
                await asyncio.wait_for(ws.recv(), 5)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1008
    assert signed_gateway.runtime.live == {}


async def test_a_wrongly_signed_caller_cannot_call(signed_gateway: RunningGateway) -> None:
    with pytest.raises(CallError) as info:
        await run_call(signed_gateway.url, ["dtmf:1#"], auth_token="wrong", printer=None)
    assert info.value.status == 403


async def test_a_correctly_signed_call_goes_through(signed_gateway: RunningGateway) -> None:
    report = await run_call(
        signed_gateway.url,
        ["dtmf:7#"],
        auth_token=AUTH_TOKEN,
        api_token="test-api-token",
        printer=None,
    )
    assert report.ok, report.errors
    assert "7" in " ".join(report.turns[0].agent_text)


def test_status_callback_is_recorded(open_gateway: RunningGateway) -> None:
    form = {"CallSid": "CA" + "5" * 32, "CallStatus": "completed", "CallDuration": "42"}
    assert httpx.post(open_gateway.url + "/twilio/voice", data={**CALL_FORM, **form}).is_success
    reply = httpx.post(open_gateway.url + "/twilio/status", data=form)
    assert reply.status_code == 204
    deadline = time.monotonic() + 5  # written behind, within the writer's flush interval
    while True:
        events = httpx.get(
            f"{open_gateway.url}/api/sessions/{form['CallSid']}/events", headers=API
        ).json()["events"]
        if (events and events[-1]["kind"] == "call_status") or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert events[-1]["kind"] == "call_status"
    assert events[-1]["data"] == {"status": "completed", "duration": "42"}
    bad = httpx.post(open_gateway.url + "/twilio/status", data={"CallSid": "CA1"})
    assert bad.status_code == 400


def test_webhook_without_call_sid_is_a_client_error(open_gateway: RunningGateway) -> None:
    reply = httpx.post(open_gateway.url + "/twilio/voice", data={"From": "+1555"})
    assert reply.status_code == 400
    assert "CallSid" in reply.json()["detail"]


def test_api_needs_the_bearer_token(open_gateway: RunningGateway) -> None:
    url = open_gateway.url + "/api/sessions"
    missing = httpx.get(url)
    assert missing.status_code == 401 and "bearer token" in missing.json()["detail"]
    wrong = httpx.get(url, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    assert httpx.get(url, headers=API).status_code == 200
    unknown = httpx.get(open_gateway.url + "/api/sessions/CAnope/events", headers=API)
    assert unknown.status_code == 404 and "CAnope" in unknown.json()["detail"]
    assert httpx.get(open_gateway.url + "/api/sessions/CAnope", headers=API).status_code == 404
    negative = httpx.get(open_gateway.url + "/api/sessions/x/events?after=-1", headers=API)
    assert negative.status_code == 422


async def test_malformed_frames_are_recorded_as_typed_errors_and_the_call_goes_on(
    open_gateway: RunningGateway,
) -> None:
    call_sid, stream_sid = "CA" + "3" * 32, "MZ" + "4" * 32
    silence = b"\xff" * 160
    async with connect(open_gateway.runtime.stream_url) as ws:
        await ws.send(peer.encode_connected())
        await ws.send(peer.encode_start(stream_sid, call_sid, "AC" + "0" * 32, None, 1))
        await ws.send("{not json")
        await ws.send(orjson.dumps({"event": "bogus", "streamSid": stream_sid}).decode())
        media = {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": "%%not-base64"}
        bad_media = {"event": "media", "sequenceNumber": "3", "streamSid": stream_sid}
        await ws.send(orjson.dumps({**bad_media, "media": media}).decode())
        await ws.send(peer.encode_inbound_media("MZwrong", 4, 2, 20, silence))
        # The call goes on: good media is still taken, and the greeting still arrives.
        for seq in range(5, 30):
            await ws.send(peer.encode_inbound_media(stream_sid, seq, seq, seq * 20, silence))
        got_media = False
        while not got_media:
            message = peer.parse_gateway_message(await asyncio.wait_for(ws.recv(), 10))
            got_media = isinstance(message, peer.OutboundMedia)
        await ws.send(peer.encode_stop(stream_sid, 30, "AC" + "0" * 32, call_sid))
    deadline = asyncio.get_running_loop().time() + 10
    while call_sid in open_gateway.runtime.live:
        assert asyncio.get_running_loop().time() < deadline, "the session did not end"
        await asyncio.sleep(0.05)
    # Records are written behind the call: let the writer's queue reach the store first.
    open_gateway.call_in_loop(open_gateway.runtime.writer.flush)
    async with httpx.AsyncClient() as http:
        url = f"{open_gateway.url}/api/sessions/{call_sid}/events"
        events = (await http.get(url, headers=API)).json()
    errors = [e["data"]["kind"] for e in events["events"] if e["kind"] == "protocol_error"]
    assert errors == ["invalid_json", "unknown_event", "bad_base64", "wrong_stream_sid"]
    record = open_gateway.record(call_sid)
    assert record is not None and record.end_reason == "stop"


def test_serve_command_starts_warns_and_rejects_bad_settings(tmp_path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "API_TOKEN"))}
    cmd = [sys.executable, "-m", "gateway", "serve", "--port", str(port)]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.2)
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    assert "TWILIO_AUTH_TOKEN is not set" in stderr
    assert "API token for this run" in stderr

    bad = subprocess.run(
        cmd,
        cwd=tmp_path,
        env={**env, "HEARTBEAT_TTL": "soon"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "HEARTBEAT_TTL" in bad.stderr
    unknown = subprocess.run(
        cmd,
        cwd=tmp_path,
        env={**env, "TTS_PROVIDER": "nope"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unknown.returncode == 2 and "nope" in unknown.stderr


async def test_a_call_whose_recogniser_cannot_open_is_closed_with_1011() -> None:
    env = {
        "STT_PROVIDER": "deepgram",
        "DEEPGRAM_API_KEY": "test-key",
        "DEEPGRAM_URL": f"ws://127.0.0.1:{free_port()}",  # nothing listens there
    }
    call_sid = "CA" + "6" * 32
    with run_gateway(env) as gateway:
        async with connect(gateway.runtime.stream_url) as ws:
            await ws.send(peer.encode_connected())
            await ws.send(peer.encode_start("MZ" + "6" * 32, call_sid, "AC" + "0" * 32, None, 1))
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    await asyncio.wait_for(ws.recv(), 30)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1011
        assert gateway.runtime.live == {}
        record = gateway.record(call_sid)
        assert record is not None and record.end_reason == "error"
