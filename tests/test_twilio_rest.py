"""TwilioRest against a fake Twilio REST API over real HTTP, through the twilio library."""

from __future__ import annotations

import traceback
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator

import pytest

from telephony.twilio.rest import TwilioRest, TwilioRestError, transfer_twiml
from tests.fakes.serve import free_port
from tests.fakes.twilio_api_server import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    FakeTwilioApi,
    run_fake_twilio_api,
)

CALLS = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls"
CALLER = "+15005550006"
GATEWAY_NUMBER = "+15005550001"
VOICE_URL = "https://gateway.example.com/twilio/voice?route=sales"
STATUS_URL = "https://gateway.example.com/twilio/status"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeTwilioApi]:
    with run_fake_twilio_api() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeTwilioApi) -> FakeTwilioApi:
    server.reset()
    return server


@pytest.fixture
async def rest(fake: FakeTwilioApi) -> AsyncIterator[TwilioRest]:
    async with TwilioRest(ACCOUNT_SID, AUTH_TOKEN, fake.url) as client:
        yield client


def _dial(twiml: str) -> ET.Element:
    root = ET.fromstring(twiml)
    assert root.tag == "Response"
    (dial,) = list(root)
    assert dial.tag == "Dial"
    return dial


# ----------------------------------------------------------------- requests


async def test_transfer_redirects_the_call_with_dial_twiml(
    fake: FakeTwilioApi, rest: TwilioRest
) -> None:
    sid = fake.add_call(to=GATEWAY_NUMBER, from_=CALLER)

    await rest.transfer(sid, "+442071838750", caller_id=GATEWAY_NUMBER)

    (request,) = fake.requests
    assert (request.method, request.path, request.status) == ("POST", f"{CALLS}/{sid}.json", 200)
    assert request.username == ACCOUNT_SID
    assert set(request.form) == {"Twiml"}  # a redirect only: no status change
    dial = _dial(request.form["Twiml"])
    assert dial.attrib == {"callerId": GATEWAY_NUMBER}
    assert dial.text == "+442071838750"
    assert fake.calls[sid].status == "in-progress"


async def test_transfer_to_a_sip_uri_dials_sip(fake: FakeTwilioApi, rest: TwilioRest) -> None:
    sid = fake.add_call()

    await rest.transfer(sid, "sip:desk@pbx.example.com;transport=tls")

    dial = _dial(fake.calls[sid].twiml[-1])
    assert dial.attrib == {}  # no caller id asked for: Twilio keeps the caller's
    (sip,) = list(dial)
    assert (sip.tag, sip.text) == ("Sip", "sip:desk@pbx.example.com;transport=tls")


async def test_hangup_completes_the_call(fake: FakeTwilioApi, rest: TwilioRest) -> None:
    sid = fake.add_call()

    await rest.hangup(sid)
    await rest.hangup(sid)  # hanging up an ended call is harmless

    assert [(r.path, r.form) for r in fake.requests] == [
        (f"{CALLS}/{sid}.json", {"Status": "completed"}),
    ] * 2
    assert fake.calls[sid].status == "completed"


async def test_create_call_returns_the_sid_and_sends_the_form(
    fake: FakeTwilioApi, rest: TwilioRest
) -> None:
    sid = await rest.create_call(CALLER, GATEWAY_NUMBER, VOICE_URL, status_callback=STATUS_URL)

    (request,) = fake.requests
    assert (request.method, request.path, request.status) == ("POST", f"{CALLS}.json", 201)
    assert request.form == {
        "To": CALLER,
        "From": GATEWAY_NUMBER,
        "Url": VOICE_URL,
        "Method": "POST",
        "StatusCallback": STATUS_URL,
    }
    call = fake.calls[sid]
    assert sid.startswith("CA") and len(sid) == 34
    assert (call.status, call.direction, call.url) == ("queued", "outbound-api", VOICE_URL)


async def test_create_call_without_status_callback_sends_none(
    fake: FakeTwilioApi, rest: TwilioRest
) -> None:
    await rest.create_call(CALLER, GATEWAY_NUMBER, VOICE_URL)
    assert "StatusCallback" not in fake.requests[0].form


async def test_fake_posts_a_signed_status_callback_when_a_call_completes(
    fake: FakeTwilioApi, rest: TwilioRest
) -> None:
    # The fake itself serves as the callback target: it records what it receives.
    callback_url = f"{fake.url}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json"
    sid = await rest.create_call(CALLER, GATEWAY_NUMBER, VOICE_URL, status_callback=callback_url)
    fake.answer(sid)

    fake.complete(sid)

    assert fake.callbacks == [(callback_url, 401)]  # the fake wants API credentials, not a sig
    form = fake.requests[-1].form
    assert (form["CallSid"], form["CallStatus"], form["To"]) == (sid, "completed", CALLER)


# ----------------------------------------------------------------- errors


async def test_unknown_call_is_404(rest: TwilioRest) -> None:
    with pytest.raises(TwilioRestError) as caught:
        await rest.hangup("CA" + "0" * 32)
    error = caught.value
    assert (error.status, error.code, error.retryable) == (404, 20404, False)
    assert "was not found" in error.message


async def test_wrong_token_is_401(fake: FakeTwilioApi) -> None:
    sid = fake.add_call()
    async with TwilioRest(ACCOUNT_SID, "not-the-token", fake.url) as rest:
        with pytest.raises(TwilioRestError) as caught:
            await rest.hangup(sid)
    assert (caught.value.status, caught.value.code, caught.value.retryable) == (401, 20003, False)
    assert fake.calls[sid].status == "in-progress"


async def test_redirecting_an_ended_call_is_refused(fake: FakeTwilioApi, rest: TwilioRest) -> None:
    sid = fake.add_call()
    fake.complete(sid)
    with pytest.raises(TwilioRestError) as caught:
        await rest.transfer(sid, "+442071838750")
    assert (caught.value.status, caught.value.code, caught.value.retryable) == (400, 21220, False)


@pytest.mark.parametrize(("status", "code"), [(429, 20429), (500, 20500), (503, 20503)])
async def test_overload_and_server_errors_are_retryable(
    fake: FakeTwilioApi, rest: TwilioRest, status: int, code: int
) -> None:
    sid = fake.add_call()
    fake.fail_next(status)
    with pytest.raises(TwilioRestError) as caught:
        await rest.hangup(sid)
    assert (caught.value.status, caught.value.code, caught.value.retryable) == (status, code, True)
    await rest.hangup(sid)  # the next attempt goes through
    assert fake.calls[sid].status == "completed"


async def test_unreachable_twilio_is_status_0_and_retryable() -> None:
    async with TwilioRest(ACCOUNT_SID, AUTH_TOKEN, f"http://127.0.0.1:{free_port()}") as rest:
        with pytest.raises(TwilioRestError) as caught:
            await rest.create_call(CALLER, GATEWAY_NUMBER, VOICE_URL)
    assert (caught.value.status, caught.value.code, caught.value.retryable) == (0, None, True)


async def test_slow_twilio_times_out_as_status_0(fake: FakeTwilioApi) -> None:
    sid = fake.add_call()
    fake.stall_next(2.0)
    async with TwilioRest(ACCOUNT_SID, AUTH_TOKEN, fake.url, timeout=0.3) as rest:
        with pytest.raises(TwilioRestError) as caught:
            await rest.hangup(sid)
    assert (caught.value.status, caught.value.retryable) == (0, True)
    assert "Timeout" in caught.value.message


@pytest.mark.parametrize(
    ("status", "wrong_token"), [(401, True), (404, False), (429, False), (500, False)]
)
async def test_the_token_never_appears_in_errors(
    fake: FakeTwilioApi, status: int, wrong_token: bool
) -> None:
    token = AUTH_TOKEN + "-wrong" if wrong_token else AUTH_TOKEN
    sid = "CA" + "0" * 32 if status == 404 else fake.add_call()
    if status >= 429:
        fake.fail_next(status)
    async with TwilioRest(ACCOUNT_SID, token, fake.url) as rest:
        assert AUTH_TOKEN not in repr(rest)
        with pytest.raises(TwilioRestError) as caught:
            await rest.transfer(sid, "+442071838750")
    assert caught.value.status == status
    _assert_no_token(caught.value, AUTH_TOKEN)


async def test_the_token_never_appears_in_connection_errors() -> None:
    async with TwilioRest(ACCOUNT_SID, AUTH_TOKEN, f"http://127.0.0.1:{free_port()}") as rest:
        with pytest.raises(TwilioRestError) as caught:
            await rest.hangup("CA" + "1" * 32)
    _assert_no_token(caught.value, AUTH_TOKEN)


def _assert_no_token(error: TwilioRestError, token: str) -> None:
    shown = [str(error), repr(error), error.message, *map(str, error.args)]
    shown.append("".join(traceback.format_exception(error)))  # what a log would print
    for text in shown:
        assert token not in text


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        *[(0, True), (400, False), (401, False), (403, False), (404, False), (409, False)],
        *[(429, True), (500, True), (502, True), (503, True)],
    ],
)
def test_retryable_follows_the_status(status: int, retryable: bool) -> None:
    assert TwilioRestError(status, None, "x").retryable is retryable


# ----------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "target",
    ["15551234567", "+1555", "+1234567890123456", "+0123456789", "+1 555 123 4567", "", "sip:x"],
)
async def test_invalid_transfer_targets_are_rejected_before_any_request(
    fake: FakeTwilioApi, rest: TwilioRest, target: str
) -> None:
    with pytest.raises(ValueError, match=r"E\.164"):
        await rest.transfer(fake.add_call(), target)
    assert fake.requests == []


@pytest.mark.parametrize(
    ("call", "match"),
    [
        ({"to": "5551234567"}, "to must be"),
        ({"from_": "+1-555-123"}, "from_ must be"),
        ({"url": "/twilio/voice"}, "url must be"),
        ({"url": "ftp://gateway.example.com/x"}, "url must be"),
        ({"status_callback": "gateway/status"}, "status_callback must be"),
    ],
)
async def test_invalid_outbound_calls_are_rejected_before_any_request(
    fake: FakeTwilioApi, rest: TwilioRest, call: dict[str, str], match: str
) -> None:
    args = {"to": CALLER, "from_": GATEWAY_NUMBER, "url": VOICE_URL, **call}
    with pytest.raises(ValueError, match=match):
        await rest.create_call(**args)
    assert fake.requests == []


@pytest.mark.parametrize("sid", ["CA123", "../Accounts", "XX" + "0" * 32, "CA" + "g" * 32])
async def test_malformed_call_sids_are_rejected_before_any_request(
    fake: FakeTwilioApi, rest: TwilioRest, sid: str
) -> None:
    with pytest.raises(ValueError, match="call SID"):
        await rest.hangup(sid)
    with pytest.raises(ValueError, match="call SID"):
        await rest.transfer(sid, CALLER)
    assert fake.requests == []


async def test_invalid_caller_id_is_rejected(fake: FakeTwilioApi, rest: TwilioRest) -> None:
    with pytest.raises(ValueError, match="caller_id"):
        await rest.transfer(fake.add_call(), CALLER, caller_id="Reception")
    with pytest.raises(ValueError, match="caller id"):
        await rest.transfer(fake.add_call(), "sip:a@b.example", caller_id="<x>")
    assert fake.requests == []


def test_sip_transfer_may_use_a_name_as_caller_id() -> None:
    dial = _dial(transfer_twiml("sip:a@b.example", caller_id="Reception"))
    assert dial.attrib == {"callerId": "Reception"}


@pytest.mark.parametrize(
    "base_url", ["ftp://api.example.com", "api.twilio.com", "https://u:p@api.example.com"]
)
def test_bad_base_urls_are_refused(base_url: str) -> None:
    with pytest.raises(ValueError, match="base URL"):
        TwilioRest(ACCOUNT_SID, AUTH_TOKEN, base_url)
