"""The webhook agent against a local customer server, in each reply form and failure."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from providers.agent.webhook import WebhookAgent, request_body, sse_pieces
from session.config import Config
from session.errors import ErrorCode, ProviderError
from session.interfaces import AgentContext, ChatMessage
from session.session import VoiceSession
from tests.fakes.agent_webhook_server import (
    SECRET,
    FakeAgentWebhook,
    run_fake_agent,
)
from tests.fakes.serve import free_port
from tests.session_doubles import LevelVAD, MemoryTransport, ScriptedSTT, ToneTTS, silence, tone
from tests.test_session_engine import Recorder, feed, wait_for

AUTH = {"Authorization": f"Bearer {SECRET}"}
CTX = AgentContext(
    session_id="call-1",
    metadata={"from": "+15550100", "to": "+15550199"},
    history=[ChatMessage("user", "hi"), ChatMessage("assistant", "Hello! How can I help?")],
)
REPLY = "You said: what time is it. Anything else?"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeAgentWebhook]:
    with run_fake_agent() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeAgentWebhook) -> FakeAgentWebhook:
    server.reset()
    return server


@pytest.fixture
async def agent(fake: FakeAgentWebhook) -> AsyncIterator[WebhookAgent]:
    webhook = WebhookAgent(fake.url, headers=AUTH)
    yield webhook
    await webhook.aclose()


async def pieces(agent: WebhookAgent, transcript: str = "what time is it") -> list[str]:
    return [piece async for piece in agent.respond(CTX, transcript)]


async def failure(agent: WebhookAgent) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await pieces(agent)
    return caught.value


def assert_no_secret(exc: BaseException) -> None:
    link: BaseException | None = exc
    while link is not None:
        assert SECRET not in str(link) and SECRET not in repr(link)
        link = link.__cause__ or link.__context__


async def lines(*items: str) -> AsyncIterator[str]:
    for item in items:
        yield item


async def sse(*items: str) -> list[str]:
    return [piece async for piece in sse_pieces(lines(*items))]


# ----------------------------------------------------------------------- the request


def test_the_request_document() -> None:
    assert request_body(CTX, "what time is it") == {
        "session_id": "call-1",
        "metadata": {"from": "+15550100", "to": "+15550199"},
        "transcript": "what time is it",
        "dtmf": "",
        "history": [
            {"role": "user", "text": "hi"},
            {"role": "assistant", "text": "Hello! How can I help?"},
        ],
    }


def test_repr_shows_no_secret() -> None:
    agent = WebhookAgent("https://user:pw@agent.example/hook?token=abc", headers=AUTH)
    assert repr(agent) == "WebhookAgent(url='https://agent.example/hook')"
    assert SECRET not in repr(agent)


@pytest.mark.parametrize("url", ["ftp://x/y", "agent.example/hook", ""])
def test_rejects_a_url_it_cannot_post_to(url: str) -> None:
    with pytest.raises(ValueError):
        WebhookAgent(url)


async def test_posts_the_turn_with_the_configured_headers(
    agent: WebhookAgent, fake: FakeAgentWebhook
) -> None:
    await pieces(agent)
    (body,) = fake.requests
    assert body == request_body(CTX, "what time is it")
    headers = fake.headers[0]
    assert headers["authorization"] == f"Bearer {SECRET}"
    assert headers["content-type"] == "application/json"
    assert "text/event-stream" in headers["accept"]


# ----------------------------------------------------------------------- the replies


async def test_a_json_reply_comes_whole(agent: WebhookAgent, fake: FakeAgentWebhook) -> None:
    assert await pieces(agent) == [REPLY]


async def test_a_chunked_text_reply_streams(agent: WebhookAgent, fake: FakeAgentWebhook) -> None:
    fake.mode = "chunked"
    gate = fake.hold_after_first_piece()
    stream = agent.respond(CTX, "what time is it")
    first = await asyncio.wait_for(anext(stream), 2)  # the server holds the rest back
    assert first == "You said: "
    gate.set()
    assert first + "".join([p async for p in stream]) == REPLY


@pytest.mark.parametrize("as_json", [False, True])
async def test_an_event_stream_reply_streams_up_to_done(
    agent: WebhookAgent, fake: FakeAgentWebhook, as_json: bool
) -> None:
    fake.mode, fake.sse_json = "sse", as_json
    gate = fake.hold_after_first_piece()
    stream = agent.respond(CTX, "what time is it")
    assert await asyncio.wait_for(anext(stream), 2) == "You said: "
    gate.set()
    rest = [p async for p in stream]
    assert len(rest) > 1 and "You said: " + "".join(rest) == REPLY  # "never said" is after DONE


async def test_a_keypad_turn(agent: WebhookAgent, fake: FakeAgentWebhook) -> None:
    ctx = AgentContext(session_id="call-2", metadata={}, dtmf="42#")
    assert [p async for p in agent.respond(ctx, "")] == ["You pressed 42#."]
    assert fake.requests[0]["dtmf"] == "42#" and fake.requests[0]["transcript"] == ""


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (("application/json", b""), []),
        (("application/json", b'{"text": ""}'), []),
        (("text/plain", b""), []),
        (("application/json; charset=utf-8", '{"text": "Grüß Gott."}'.encode()), ["Grüß Gott."]),
    ],
)
async def test_empty_replies_say_nothing(
    agent: WebhookAgent, fake: FakeAgentWebhook, raw: tuple[str, bytes], expected: list[str]
) -> None:
    fake.raw = raw
    assert await pieces(agent) == expected


async def test_sse_events_follow_the_standard() -> None:
    assert await sse("data: one", "data: two", "", "data:three", "") == ["one\ntwo", "three"]
    assert await sse(": comment", "event: x", "id: 7", "retry: 10", "", "data:  spaced", "") == [
        " spaced"
    ]
    assert await sse('data: {"text": " json"}', "", 'data: {"other": 1}', "") == [" json"]
    assert await sse("data: {not json}", "") == ["{not json}"]
    assert await sse("data: a", "", "data: [DONE]", "", "data: b", "") == ["a"]
    assert await sse("data: cut short") == ["cut short"]  # no closing blank line
    assert await sse("", "", "data", "") == []  # a bare "data" line carries ""


@pytest.mark.parametrize(
    "raw",
    [
        ("text/html", b"<p>hello</p>"),
        (None, b"hello"),
        ("application/json", b"not json"),
        ("application/json", b'["a list"]'),
        ("application/json", b'{"reply": "wrong key"}'),
    ],
)
async def test_replies_outside_the_protocol_are_agent_errors(
    agent: WebhookAgent, fake: FakeAgentWebhook, raw: tuple[str | None, bytes]
) -> None:
    fake.raw = raw
    error = await failure(agent)
    assert error.code is ErrorCode.AGENT_ERROR and not error.retryable


# -------------------------------------------------------------------------- failures


async def test_a_wrong_secret_is_an_authentication_error(fake: FakeAgentWebhook) -> None:
    agent = WebhookAgent(fake.url, headers={"Authorization": "Bearer nope-not-it"})
    try:
        error = await failure(agent)
    finally:
        await agent.aclose()
    assert error.code is ErrorCode.AUTHENTICATION_ERROR and not error.retryable
    assert "bearer token" in error.message and "nope-not-it" not in str(error)


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_retryable(
    agent: WebhookAgent, fake: FakeAgentWebhook, status: int
) -> None:
    fake.fail_next(status)
    error = await failure(agent)
    assert error.code is ErrorCode.PROVIDER_ERROR and error.retryable
    assert f"HTTP {status}: injected failure {status}" in error.message
    assert_no_secret(error)


async def test_too_many_requests_carries_retry_after(
    agent: WebhookAgent, fake: FakeAgentWebhook
) -> None:
    fake.fail_next(429, retry_after=3)
    error = await failure(agent)
    assert error.code is ErrorCode.PROVIDER_ERROR and error.retryable and error.retry_after == 3


@pytest.mark.parametrize("status", [400, 404, 422])
async def test_request_errors_are_final(
    agent: WebhookAgent, fake: FakeAgentWebhook, status: int
) -> None:
    fake.fail_next(status)
    error = await failure(agent)
    assert error.code is ErrorCode.PROVIDER_ERROR and not error.retryable
    assert f"injected failure {status}" in error.message


async def test_a_slow_server_times_out(fake: FakeAgentWebhook) -> None:
    agent = WebhookAgent(fake.url, headers=AUTH, timeout=0.3)
    fake.slow_next(1.0)
    try:
        error = await failure(agent)
    finally:
        await agent.aclose()
    assert error.code is ErrorCode.TIMEOUT and error.retryable
    assert_no_secret(error)


@pytest.mark.parametrize("mode", ["chunked", "sse"])
async def test_a_reply_cut_mid_stream_is_a_network_error(
    agent: WebhookAgent, fake: FakeAgentWebhook, mode: str
) -> None:
    fake.mode = mode  # type: ignore[assignment]
    fake.drop_next()
    received: list[str] = []
    with pytest.raises(ProviderError) as caught:
        async for piece in agent.respond(CTX, "what time is it"):
            received.append(piece)
    assert received == ["You said: "]
    assert caught.value.code is ErrorCode.NETWORK_ERROR and caught.value.retryable
    assert_no_secret(caught.value)


async def test_a_refused_connection_is_a_retryable_network_error() -> None:
    agent = WebhookAgent(f"http://127.0.0.1:{free_port()}/agent", headers=AUTH)
    try:
        error = await failure(agent)
    finally:
        await agent.aclose()
    assert error.code is ErrorCode.NETWORK_ERROR and error.retryable
    assert_no_secret(error)


# ------------------------------------------------------------------ in a session


def build(agent: WebhookAgent, finals: list[str]) -> tuple[VoiceSession, MemoryTransport, Recorder]:
    rec = Recorder()
    transport = MemoryTransport()
    session = VoiceSession(
        transport=transport,
        stt=ScriptedSTT(finals),
        tts=ToneTTS(),
        vad=LevelVAD(),
        agent=agent,
        config=Config(min_endpointing_delay=0.3, speech_end_silence=0.2, retry_delay=0.01),
        metadata={"from": "+15550100"},
        on_event=rec.events.append,
    )
    transport.listener = session
    return session, transport, rec


async def test_a_session_talks_to_the_webhook_and_survives_a_503(
    agent: WebhookAgent, fake: FakeAgentWebhook
) -> None:
    fake.mode = "sse"
    session, transport, rec = build(agent, ["what time is it", "thanks"])
    await session.start()
    await feed(session, tone(0.4) + silence(0.6))
    await wait_for(lambda: len(rec.kinds("agent_text")) == 2, within=5)
    assert [e["text"] for e in rec.kinds("agent_text")] == [
        "You said: what time is it.",
        "Anything else?",
    ]
    assert transport.audio_bytes > 0
    transport.play_all()
    await wait_for(lambda: rec.kinds("reply_finished"))
    first = fake.requests[0]
    assert first["session_id"] == session.session_id
    assert first["metadata"] == {"from": "+15550100"} and first["history"] == []

    fake.fail_next(503)  # the next turn's first request fails; the session asks again
    await feed(session, tone(0.4) + silence(0.6))
    await wait_for(lambda: len(rec.kinds("agent_text")) == 4, within=5)
    (error,) = rec.kinds("error")
    assert (error["code"], error["source"], error["retryable"]) == (
        "provider_error",
        "agent",
        True,
    )
    assert rec.kinds("agent_text")[2]["text"] == "You said: thanks."
    retried = [r for r in fake.requests if r["transcript"] == "thanks"]
    assert len(retried) == 2 and retried[0] == retried[1]
    assert retried[1]["history"] == [
        {"role": "user", "text": "what time is it"},
        {"role": "assistant", "text": "You said: what time is it. Anything else?"},
    ]
    await session.stop()


async def test_an_echoed_token_is_redacted(agent: WebhookAgent, fake: FakeAgentWebhook) -> None:
    fake.raw, fake.raw_status = ("application/json", f'{{"error": "bad {SECRET}"}}'.encode()), 400
    error = await failure(agent)
    assert error.message == "webhook: HTTP 400: bad [redacted]"
