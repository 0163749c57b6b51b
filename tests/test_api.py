"""Every documented error path of the ops API, against a real server (embedded store)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from tests.fakes.twilio_api_server import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    FakeTwilioApi,
    run_fake_twilio_api,
)
from tests.gateway_server import RunningGateway, run_gateway

API = {"Authorization": "Bearer test-api-token"}
CALLER = {"From": "+15550100001", "To": "+15550100002"}


@pytest.fixture(scope="module")
def gateway() -> Iterator[RunningGateway]:
    with run_gateway({"STT_PROVIDER": "scripted", "TTS_PROVIDER": "tone"}) as running:
        yield running


@pytest.fixture(scope="module")
def twilio() -> Iterator[FakeTwilioApi]:
    with run_fake_twilio_api() as fake:
        yield fake


@pytest.fixture(scope="module")
def twilio_gateway(twilio: FakeTwilioApi) -> Iterator[RunningGateway]:
    env = {
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_API_BASE_URL": twilio.url,
        "STT_PROVIDER": "scripted",
    }
    with run_gateway(env) as running:
        yield running


def api(gateway: RunningGateway, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, gateway.url + path, headers=API, timeout=10, **kwargs)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/sessions"),
        ("GET", "/api/sessions/x"),
        ("GET", "/api/sessions/x/events"),
        ("POST", "/api/sessions/x/say"),
        ("POST", "/api/sessions/x/hangup"),
        ("POST", "/api/sessions/x/transfer"),
        ("GET", "/api/routes"),
        ("PUT", "/api/routes/default"),
        ("DELETE", "/api/routes/default"),
        ("POST", "/api/calls"),
    ],
)
def test_every_api_route_needs_the_token(gateway: RunningGateway, method: str, path: str) -> None:
    assert httpx.request(method, gateway.url + path).status_code == 401
    wrong = {"Authorization": "Bearer wrong"}
    assert httpx.request(method, gateway.url + path, headers=wrong).status_code == 403


def test_unknown_sessions_are_404(gateway: RunningGateway) -> None:
    for method, path, body in [
        ("GET", "/api/sessions/CAnope", None),
        ("GET", "/api/sessions/CAnope/events", None),
        ("POST", "/api/sessions/CAnope/say", {"text": "hi"}),
        ("POST", "/api/sessions/CAnope/hangup", None),
        ("POST", "/api/sessions/CAnope/transfer", {"to": "+15550100003"}),
    ]:
        reply = api(gateway, method, path, json=body)
        assert reply.status_code == 404, (path, reply.text)
        assert "CAnope" in reply.json()["detail"]


def test_invalid_input_is_422(gateway: RunningGateway) -> None:
    assert api(gateway, "POST", "/api/sessions/x/say", json={"text": ""}).status_code == 422
    assert api(gateway, "POST", "/api/sessions/x/say", json={}).status_code == 422
    assert api(gateway, "GET", "/api/sessions?limit=0").status_code == 422
    assert api(gateway, "GET", "/api/sessions/x/events?after=-1").status_code == 422
    assert api(gateway, "POST", "/api/calls", json={"to": "+15550100003"}).status_code == 422


def test_routes_crud_and_validation(gateway: RunningGateway) -> None:
    number = "+15550100009"
    assert api(gateway, "GET", f"/api/routes/{number}").status_code == 404
    assert api(gateway, "DELETE", f"/api/routes/{number}").status_code == 404
    put = api(gateway, "PUT", f"/api/routes/{number}", json={"greeting": "Hi.", "tts": "tone"})
    assert put.status_code == 200 and put.json()["greeting"] == "Hi."
    assert api(gateway, "GET", f"/api/routes/{number}").json()["tts"] == "tone"
    assert number in api(gateway, "GET", "/api/routes").json()["routes"]
    for body, field in [
        ({"tts": "nope"}, "tts"),
        ({"greting": "typo"}, "greting"),
        ({"limits": {"max_call_seconds": 0}}, "max_call_seconds"),
        ({"language": "english"}, "language"),
        ({"number": "+15550100000"}, "number"),
    ]:
        reply = api(gateway, "PUT", f"/api/routes/{number}", json=body)
        assert reply.status_code == 422 and field in reply.json()["detail"], (body, reply.text)
    missing_key = api(gateway, "PUT", f"/api/routes/{number}", json={"stt": "deepgram"})
    assert missing_key.status_code == 422 and "DEEPGRAM_API_KEY" in missing_key.json()["detail"]
    assert api(gateway, "PUT", "/api/routes/12345", json={}).status_code == 422
    assert api(gateway, "DELETE", f"/api/routes/{number}").status_code == 204
    assert api(gateway, "GET", f"/api/routes/{number}").status_code == 404


def test_outbound_calls_and_transfer_need_twilio_credentials(gateway: RunningGateway) -> None:
    body = {"to": "+15550100003", "from": "+15550100004"}
    reply = api(gateway, "POST", "/api/calls", json=body)
    assert reply.status_code == 503 and "TWILIO_ACCOUNT_SID" in reply.json()["detail"]


async def start_call(gateway: RunningGateway, call_sid: str) -> None:
    """A live session on the gateway, through the real webhook and media websocket."""
    from websockets.asyncio.client import connect

    from telephony.twilio import peer

    checker = gateway.runtime.signature_checker
    form = {"CallSid": call_sid, **CALLER}
    url = gateway.url + "/twilio/voice"
    headers = {"X-Twilio-Signature": checker.sign(url, form)} if checker else {}
    async with httpx.AsyncClient() as http:
        assert (await http.post(url, data=form, headers=headers)).status_code == 200
    stream_url = gateway.runtime.stream_url
    signature = {"X-Twilio-Signature": checker.sign(stream_url, {})} if checker else {}
    ws = await connect(stream_url, additional_headers=signature)
    await ws.send(peer.encode_connected())
    await ws.send(peer.encode_start("MZ" + call_sid[2:], call_sid, ACCOUNT_SID, None, 1))
    gateway.sockets = [*getattr(gateway, "sockets", []), ws]  # type: ignore[attr-defined]
    for _ in range(100):
        if call_sid in gateway.runtime.live:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the call did not start")


async def test_operations_that_do_not_fit_the_state_are_409(gateway: RunningGateway) -> None:
    call_sid = "CA" + "7" * 32
    await start_call(gateway, call_sid)
    session = gateway.runtime.live[call_sid]
    gateway.call_in_loop(lambda: _pause(session))
    async with httpx.AsyncClient(headers=API) as http:
        paused = await http.post(f"{gateway.url}/api/sessions/{call_sid}/say", json={"text": "x"})
        assert paused.status_code == 409 and "paused" in paused.json()["detail"]
        no_twilio = await http.post(
            f"{gateway.url}/api/sessions/{call_sid}/transfer", json={"to": "+15550100003"}
        )
        assert no_twilio.status_code == 503
        assert (await http.post(f"{gateway.url}/api/sessions/{call_sid}/hangup")).is_success
        ended = await http.post(f"{gateway.url}/api/sessions/{call_sid}/say", json={"text": "x"})
        assert ended.status_code == 409  # not live here any more, or recorded as ended


async def _pause(session) -> None:
    session.pause()


async def test_outbound_call_and_transfer_through_twilio(
    twilio_gateway: RunningGateway, twilio: FakeTwilioApi
) -> None:
    gateway = twilio_gateway
    async with httpx.AsyncClient(headers=API) as http:
        body = {"to": "+15550100003", "from": "+15550100004", "route": "+15550100002"}
        placed = await http.post(f"{gateway.url}/api/calls", json=body)
        assert placed.status_code == 201, placed.text
        created = twilio.requests_to("Calls.json")[-1]
        assert created.form["Url"].endswith("/twilio/voice?route=%2B15550100002")
        bad = await http.post(f"{gateway.url}/api/calls", json={**body, "to": "555"})
        assert bad.status_code == 422
        twilio.fail_next(500)
        refused = await http.post(f"{gateway.url}/api/calls", json=body)
        assert refused.status_code == 502


def test_routes_cli_sets_shows_and_deletes(gateway: RunningGateway, tmp_path) -> None:
    import subprocess
    import sys

    env = {"API_TOKEN": "test-api-token", "PATH": "/usr/bin:/bin"}
    cli = [sys.executable, "-m", "gateway", "routes", "--url", gateway.url]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*cli, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
        )

    made = run(
        "set", "+15550100077", "--greeting", "Hello from the CLI.", "--max-turn-seconds", "30"
    )
    assert made.returncode == 0, made.stderr
    assert '"greeting": "Hello from the CLI."' in run("get", "+15550100077").stdout
    assert "+15550100077" in run("list").stdout
    bad = run("set", "+15550100077", "--tts", "nope")
    assert bad.returncode == 1 and "HTTP 422" in bad.stderr
    assert run("delete", "+15550100077").returncode == 0
    missing = run("get", "+15550100077")
    assert missing.returncode == 1 and "HTTP 404" in missing.stderr


async def test_transfer_redirects_the_live_call_with_a_dial(
    twilio_gateway: RunningGateway, twilio: FakeTwilioApi
) -> None:
    call_sid = twilio.add_call(sid="CA" + "8" * 32)
    await start_call(twilio_gateway, call_sid)
    async with httpx.AsyncClient(headers=API) as http:
        url = f"{twilio_gateway.url}/api/sessions/{call_sid}/transfer"
        bad = await http.post(url, json={"to": "not a number"})
        assert bad.status_code == 422
        moved = await http.post(url, json={"to": "+15550100099"})
        assert moved.status_code == 200, moved.text
    update = twilio.requests_to(f"Calls/{call_sid}.json")[-1]
    assert "<Dial>+15550100099</Dial>" in update.form["Twiml"]
    for _ in range(100):
        if call_sid not in twilio_gateway.runtime.live:
            break
        await asyncio.sleep(0.05)
    record = twilio_gateway.record(call_sid)
    assert record is not None and record.end_reason == "transferred"
