"""OpenAI speech against the local fake API: streamed 24 kHz PCM, typed errors, a session reply."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from providers.tts.openai_speech import OpenAISpeechTTS
from session.errors import ErrorCode, ProviderError
from tests.fakes.openai_server import (
    API_KEY,
    SPEECH_CHUNK,
    FakeOpenAI,
    error_strings,
    run_fake_openai,
    speech_seconds,
    speech_tone,
)
from tests.fakes.serve import free_port
from tests.session_doubles import ScriptedSTT
from tests.test_session_behaviours import build
from tests.test_session_engine import wait_for

WRONG_KEY = "sk-wrong-secret-0123456789"
TEXT = "Hello there, how can I help you today?"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAI]:
    with run_fake_openai() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeOpenAI) -> FakeOpenAI:
    server.reset()
    return server


async def collect(tts: OpenAISpeechTTS, text: str = TEXT) -> list[bytes]:
    return [chunk async for chunk in tts.synthesize(text)]


async def failure(tts: OpenAISpeechTTS, received: list[bytes] | None = None) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        async for chunk in tts.synthesize(TEXT):
            if received is not None:
                received.append(chunk)
    return caught.value


# ------------------------------------------------------------------------- happy paths


async def test_speech_streams_as_whole_24khz_samples(fake: FakeOpenAI) -> None:
    tts = OpenAISpeechTTS(API_KEY, fake.url, instructions="Warm and unhurried.", speed=1.25)
    assert (tts.name, tts.sample_rate) == ("openai", 24000)
    chunks = await collect(tts)
    assert len(chunks) > 1  # yielded as it arrived, not gathered into one piece
    # The fake sends odd-sized pieces; none of ours splits a sample.
    assert all(len(chunk) % 2 == 0 for chunk in chunks)
    assert b"".join(chunks) == speech_tone(speech_seconds(TEXT))
    assert fake.speech_requests == [
        {
            "model": "gpt-4o-mini-tts",
            "input": TEXT,
            "voice": "alloy",
            "response_format": "pcm",
            "instructions": "Warm and unhurried.",
            "speed": 1.25,
        }
    ]
    await tts.aclose()


async def test_blank_text_makes_no_request(fake: FakeOpenAI) -> None:
    assert await collect(OpenAISpeechTTS(API_KEY, fake.url), "  \n") == []
    assert fake.requests == 0


async def test_text_over_the_input_limit_is_spoken_in_parts(fake: FakeOpenAI) -> None:
    text = " ".join(["word"] * 1000)  # 4999 characters
    audio = b"".join(await collect(OpenAISpeechTTS(API_KEY, fake.url, "tts-1", "nova"), text))
    inputs = [request["input"] for request in fake.speech_requests]
    assert len(inputs) == 2 and all(len(part) <= 4096 for part in inputs)
    assert " ".join(inputs) == text
    assert audio == b"".join(speech_tone(speech_seconds(part)) for part in inputs)


def test_settings_are_checked_and_the_key_stays_out_of_repr() -> None:
    with pytest.raises(ValueError, match="speed"):
        OpenAISpeechTTS(API_KEY, speed=5.0)
    assert WRONG_KEY not in repr(OpenAISpeechTTS(WRONG_KEY))


# ------------------------------------------------------------------------------ errors


async def test_an_unknown_voice_is_a_request_error_quoting_openai(fake: FakeOpenAI) -> None:
    error = await failure(OpenAISpeechTTS(API_KEY, fake.url, voice="robot"))
    assert error.code is ErrorCode.PROVIDER_ERROR and not error.retryable
    assert "HTTP 400" in error.message and "Invalid value: 'robot'" in error.message


async def test_a_wrong_key_is_an_authentication_error_that_does_not_leak(
    fake: FakeOpenAI,
) -> None:
    error = await failure(OpenAISpeechTTS(WRONG_KEY, fake.url))
    assert error.code is ErrorCode.AUTHENTICATION_ERROR and not error.retryable
    assert "Incorrect API key provided" in error.message
    assert not any(WRONG_KEY in text for text in error_strings(error))


@pytest.mark.parametrize(
    ("status", "retry_after"), [(429, 3.5), (500, None), (502, None), (503, 1.0)]
)
async def test_overload_and_server_errors_are_retryable(
    fake: FakeOpenAI, status: int, retry_after: float | None
) -> None:
    fake.fail_next(status, retry_after=retry_after)
    error = await failure(OpenAISpeechTTS(API_KEY, fake.url))
    assert error.code is ErrorCode.PROVIDER_ERROR and error.retryable
    assert f"HTTP {status}" in error.message and error.retry_after == retry_after


async def test_a_connection_dropped_mid_audio_is_a_network_error(fake: FakeOpenAI) -> None:
    fake.drop_next()
    received: list[bytes] = []
    error = await failure(OpenAISpeechTTS(API_KEY, fake.url), received)
    assert error.code is ErrorCode.NETWORK_ERROR and error.retryable
    # What did arrive was passed on, cut to whole samples.
    assert sum(map(len, received)) == SPEECH_CHUNK - 1


async def test_a_refused_connection_is_a_network_error() -> None:
    error = await failure(OpenAISpeechTTS(API_KEY, f"http://127.0.0.1:{free_port()}/v1"))
    assert error.code is ErrorCode.NETWORK_ERROR and error.retryable


async def test_a_stalled_server_is_a_timeout(fake: FakeOpenAI) -> None:
    fake.stall_next(1.0)
    error = await failure(OpenAISpeechTTS(API_KEY, fake.url, timeout=0.2))
    assert error.code is ErrorCode.TIMEOUT and error.retryable


# ----------------------------------------------------------------------- in a session


async def test_a_reply_is_spoken_through_openai_and_a_503_is_retried(fake: FakeOpenAI) -> None:
    tts = OpenAISpeechTTS(API_KEY, fake.url)
    session, transport, rec = build(stt=ScriptedSTT([]), tts=tts)
    await session.start()
    fake.fail_next(503, path="/audio/speech")
    handle = session.say("Welcome to the restaurant.")
    await wait_for(lambda: transport.pending_marks, within=5)
    transport.play_all()
    await handle.wait_for_playout()
    assert not handle.interrupted and handle.heard_text == "Welcome to the restaurant."
    errors = rec.kinds("error")
    assert [(e["source"], e["code"], e["retryable"]) for e in errors] == [
        ("tts", "provider_error", True)
    ]
    # 24 kHz from the API reached the 8 kHz phone leg at the right length.
    expected = speech_seconds("Welcome to the restaurant.") * 8000 * 2
    assert abs(transport.audio_bytes - expected) < 0.01 * 8000 * 2
    await session.stop()
    await tts.aclose()
