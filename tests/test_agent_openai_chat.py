"""The chat completions agent against the local fake API: SSE streaming, history, errors."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from providers.agent.openai_chat import DEFAULT_SYSTEM_PROMPT, OpenAIChatAgent
from providers.openai_api import retry_after, vendor_message
from session.errors import ErrorCode, ProviderError
from session.interfaces import AgentContext, ChatMessage
from session.state import SessionState
from tests.fakes.openai_server import (
    API_KEY,
    FakeOpenAI,
    error_strings,
    run_fake_openai,
)
from tests.fakes.serve import free_port
from tests.session_doubles import ScriptedSTT, silence, tone
from tests.test_session_behaviours import build
from tests.test_session_engine import feed, wait_for

WRONG_KEY = "sk-wrong-secret-0123456789"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAI]:
    with run_fake_openai() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeOpenAI) -> FakeOpenAI:
    server.reset()
    return server


def context(history: list[ChatMessage] | None = None, dtmf: str = "") -> AgentContext:
    return AgentContext("call-1", {}, history or [], dtmf)


async def reply(
    agent: OpenAIChatAgent, transcript: str, ctx: AgentContext | None = None
) -> list[str]:
    return [piece async for piece in agent.respond(ctx or context(), transcript)]


async def failure(agent: OpenAIChatAgent, received: list[str] | None = None) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        async for piece in agent.respond(context(), "Hello?"):
            if received is not None:
                received.append(piece)
    return caught.value


# ------------------------------------------------------------------------- happy paths


async def test_the_reply_streams_piece_by_piece(fake: FakeOpenAI) -> None:
    fake.replies.append("Sure, a table for two at seven.")
    agent = OpenAIChatAgent(API_KEY, fake.url)
    pieces = await reply(agent, " Book a table. ")
    assert pieces == ["Sure,", " a", " table", " for", " two", " at", " seven."]
    request = fake.chat_requests[-1]
    assert request == {
        "model": "gpt-4o-mini",
        "stream": True,
        "messages": [
            {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
            {"role": "user", "content": "Book a table."},
        ],
    }
    await agent.aclose()


async def test_history_and_keypad_turns_become_alternating_messages(fake: FakeOpenAI) -> None:
    history = [
        ChatMessage("user", "Hi."),
        ChatMessage("assistant", "Hello, how can I help?"),
        ChatMessage("user", "[keypad] 12"),
        ChatMessage("user", "Are you there?"),  # the reply to it was cut off unheard
    ]
    agent = OpenAIChatAgent(API_KEY, fake.url, system_prompt="Be brief.")
    await reply(agent, "", context(history, dtmf="123"))
    assert fake.chat_requests[-1]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi."},
        {"role": "assistant", "content": "Hello, how can I help?"},
        {
            "role": "user",
            "content": "The caller pressed: 1 2\nAre you there?\nThe caller pressed: 1 2 3",
        },
    ]


async def test_model_options_are_sent(fake: FakeOpenAI) -> None:
    agent = OpenAIChatAgent(
        API_KEY, fake.url, "llama3.2", system_prompt="", temperature=0.3, max_tokens=120
    )
    assert "".join(await reply(agent, "Hello")) == "You said Hello."
    request = fake.chat_requests[-1]
    assert (request["model"], request["temperature"], request["max_tokens"]) == (
        "llama3.2",
        0.3,
        120,
    )
    assert request["messages"] == [{"role": "user", "content": "Hello"}]


async def test_the_server_stops_when_the_consumer_stops_early(fake: FakeOpenAI) -> None:
    fake.word_delay = 0.05
    fake.replies.append(" ".join(["word"] * 40))
    pieces = OpenAIChatAgent(API_KEY, fake.url).respond(context(), "Talk to me.")
    assert await anext(pieces) == "word"
    await pieces.aclose()  # the caller barged in
    await wait_for(lambda: fake.aborted_streams == 1, within=2)


def test_settings_are_checked_and_the_key_stays_out_of_repr() -> None:
    with pytest.raises(ValueError, match="temperature"):
        OpenAIChatAgent(API_KEY, temperature=3.0)
    with pytest.raises(ValueError, match="max_tokens"):
        OpenAIChatAgent(API_KEY, max_tokens=0)
    agent = OpenAIChatAgent(WRONG_KEY, greeting="Hello, Luigi's here.")
    assert WRONG_KEY not in repr(agent) and agent.greeting == "Hello, Luigi's here."


def test_error_bodies_of_compatible_servers_are_read() -> None:
    assert vendor_message(b'{"error": {"message": "bad", "type": "x"}}') == "bad"
    assert vendor_message(b'{"error": "model not found"}') == "model not found"  # Ollama
    assert vendor_message(b'{"object": "error", "message": "too long"}') == "too long"  # vLLM
    assert vendor_message(b'{"detail": [{"msg": "field required"}]}').startswith('[{"msg"')
    assert vendor_message(b"<html>Bad Gateway</html>") == "<html>Bad Gateway</html>"
    assert retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert retry_after({}) is None


# ------------------------------------------------------------------------------ errors


async def test_a_wrong_key_is_an_authentication_error_that_does_not_leak(
    fake: FakeOpenAI,
) -> None:
    error = await failure(OpenAIChatAgent(WRONG_KEY, fake.url))
    assert error.code is ErrorCode.AUTHENTICATION_ERROR and not error.retryable
    assert "Incorrect API key provided" in error.message
    assert not any(WRONG_KEY in text for text in error_strings(error))


async def test_no_key_sends_no_authorization_header(fake: FakeOpenAI) -> None:
    # For local servers that take none; OpenAI (and the fake) refuse it.
    error = await failure(OpenAIChatAgent("", fake.url))
    assert error.code is ErrorCode.AUTHENTICATION_ERROR
    assert "You didn't provide an API key" in error.message


@pytest.mark.parametrize(("status", "retry_after_s"), [(429, 20.0), (500, None), (503, None)])
async def test_overload_and_server_errors_are_retryable(
    fake: FakeOpenAI, status: int, retry_after_s: float | None
) -> None:
    fake.fail_next(status, retry_after=retry_after_s)
    error = await failure(OpenAIChatAgent(API_KEY, fake.url))
    assert error.code is ErrorCode.PROVIDER_ERROR and error.retryable
    assert f"HTTP {status}" in error.message and error.retry_after == retry_after_s


async def test_a_bad_request_is_not_retryable(fake: FakeOpenAI) -> None:
    fake.fail_next(400, message="Invalid 'messages': context too long.")
    error = await failure(OpenAIChatAgent(API_KEY, fake.url))
    assert error.code is ErrorCode.PROVIDER_ERROR and not error.retryable
    assert "context too long" in error.message


async def test_an_error_event_mid_stream_is_a_provider_error(fake: FakeOpenAI) -> None:
    fake.replies.append("Let me check that for you.")
    fake.error_in_stream_next("The server is overloaded.")
    received: list[str] = []
    error = await failure(OpenAIChatAgent(API_KEY, fake.url), received)
    assert received == ["Let"]
    assert error.code is ErrorCode.PROVIDER_ERROR and error.retryable
    assert "The server is overloaded." in error.message


async def test_a_connection_dropped_mid_reply_is_a_network_error(fake: FakeOpenAI) -> None:
    fake.replies.append("Let me check that for you.")
    fake.drop_next()
    received: list[str] = []
    error = await failure(OpenAIChatAgent(API_KEY, fake.url), received)
    assert received == ["Let"]
    assert error.code is ErrorCode.NETWORK_ERROR and error.retryable


async def test_a_refused_connection_is_a_network_error() -> None:
    error = await failure(OpenAIChatAgent(API_KEY, f"http://127.0.0.1:{free_port()}/v1"))
    assert error.code is ErrorCode.NETWORK_ERROR and error.retryable


async def test_a_stalled_server_is_a_timeout(fake: FakeOpenAI) -> None:
    fake.stall_next(1.0)
    error = await failure(OpenAIChatAgent(API_KEY, fake.url, timeout=0.2))
    assert error.code is ErrorCode.TIMEOUT and error.retryable


# ----------------------------------------------------------------------- in a session


async def test_the_agent_answers_turns_in_a_session_and_a_503_is_retried(
    fake: FakeOpenAI,
) -> None:
    fake.replies.extend(["We open at nine. We close at five.", "Yes, we do."])
    agent = OpenAIChatAgent(API_KEY, fake.url)
    stt = ScriptedSTT(["When are you open?", "Do you take bookings?"])
    session, transport, rec = build(stt=stt, agent=agent)
    await session.start()
    await feed(session, tone(0.4) + silence(0.5))
    await wait_for(lambda: len(transport.pending_marks) == 2, within=5)
    transport.play_all()
    await wait_for(lambda: rec.kinds("reply_finished"), within=5)
    assert [e["text"] for e in rec.kinds("agent_text")] == ["We open at nine.", "We close at five."]

    fake.fail_next(503, path="/chat/completions")
    await feed(session, tone(0.4) + silence(0.5))
    await wait_for(lambda: len(rec.kinds("agent_text")) == 3, within=5)
    assert rec.kinds("agent_text")[-1]["text"] == "Yes, we do."
    errors = rec.kinds("error")
    assert [(e["source"], e["code"], e["retryable"]) for e in errors] == [
        ("agent", "provider_error", True)
    ]
    assert fake.chat_requests[-1]["messages"][1:] == [
        {"role": "user", "content": "When are you open?"},
        {"role": "assistant", "content": "We open at nine. We close at five."},
        {"role": "user", "content": "Do you take bookings?"},
    ]
    assert session.state is not SessionState.ENDED
    await session.stop()
    await agent.aclose()
