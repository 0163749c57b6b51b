"""OpenAI transcription against the local fake API: WAV uploads, typed errors, a session turn."""

from __future__ import annotations

import gc
import math
import struct
import weakref
from collections.abc import Iterator

import pytest

from providers.stt.openai_transcribe import OpenAITranscribeSTT, wav_bytes
from session.chunking import ChunkedSTTStream
from session.errors import ErrorCode, ProviderError
from session.state import SessionState
from tests.fakes.openai_server import (
    API_KEY,
    FakeOpenAI,
    error_strings,
    read_wav,
    run_fake_openai,
)
from tests.fakes.serve import free_port
from tests.session_doubles import silence, tone
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


def sine(seconds: float, rate: int, freq: float = 300.0) -> bytes:
    n = int(rate * seconds)
    samples = (int(5000 * math.sin(2 * math.pi * freq * i / rate)) for i in range(n))
    return struct.pack(f"<{n}h", *samples)


async def failure(stt: OpenAITranscribeSTT, pcm: bytes | None = None) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await stt.transcribe(pcm if pcm is not None else sine(0.5, stt.sample_rate))
    return caught.value


# ------------------------------------------------------------------------- happy paths


async def test_a_clip_goes_up_as_a_wav_file_and_its_text_comes_back(fake: FakeOpenAI) -> None:
    fake.transcripts.append(" I would like to book a table. ")
    stt = OpenAITranscribeSTT(API_KEY, fake.url, language="en", prompt="Restaurant bookings.")
    pcm = sine(0.5, 16000)
    assert await stt.transcribe(pcm) == "I would like to book a table."
    clip = fake.clips[-1]
    assert (clip.sample_rate, clip.pcm, clip.filename) == (16000, pcm, "clip.wav")
    assert clip.fields == {
        "model": "gpt-4o-mini-transcribe",
        "response_format": "json",
        "language": "en",
        "prompt": "Restaurant bookings.",
    }
    await stt.aclose()


async def test_8khz_audio_is_sent_at_8khz_and_whisper_is_accepted(fake: FakeOpenAI) -> None:
    stt = OpenAITranscribeSTT(API_KEY, fake.url, "whisper-1", sample_rate=8000)
    assert (stt.name, stt.sample_rate, stt.streaming) == ("openai", 8000, False)
    assert not hasattr(stt, "open_stream")  # the session must take the batch path
    # An empty script: the fake answers with how much audio it received.
    assert await stt.transcribe(sine(0.75, 8000) + b"\x01") == "0.75 seconds"
    assert fake.clips[-1].sample_rate == 8000
    assert fake.clips[-1].fields == {"model": "whisper-1", "response_format": "json"}
    await stt.aclose()


def test_the_wav_file_is_a_well_formed_riff_wave() -> None:
    pcm = sine(0.2, 16000)
    data = wav_bytes(pcm, 16000)
    assert data[:4] == b"RIFF" and data[8:16] == b"WAVEfmt "
    assert read_wav(data) == (16000, pcm)


async def test_a_sliver_of_audio_is_not_sent(fake: FakeOpenAI) -> None:
    stt = OpenAITranscribeSTT(API_KEY, fake.url)
    assert await stt.transcribe(sine(0.05, 16000)) == ""
    assert fake.requests == 0


def test_settings_are_checked_and_the_key_stays_out_of_repr() -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        OpenAITranscribeSTT(API_KEY, sample_rate=44100)
    stt = OpenAITranscribeSTT(WRONG_KEY)
    assert WRONG_KEY not in repr(stt) and "api.openai.com/v1" in repr(stt)


# ------------------------------------------------------------------------------ errors


async def test_a_wrong_key_is_an_authentication_error_that_does_not_leak(
    fake: FakeOpenAI,
) -> None:
    error = await failure(OpenAITranscribeSTT(WRONG_KEY, fake.url))
    assert error.code is ErrorCode.AUTHENTICATION_ERROR and not error.retryable
    assert "HTTP 401" in error.message and "Incorrect API key provided" in error.message
    assert not any(WRONG_KEY in text for text in error_strings(error))


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (403, ErrorCode.AUTHENTICATION_ERROR, False),
        (404, ErrorCode.PROVIDER_ERROR, False),
        (429, ErrorCode.PROVIDER_ERROR, True),
        (500, ErrorCode.PROVIDER_ERROR, True),
        (503, ErrorCode.PROVIDER_ERROR, True),
    ],
)
async def test_http_errors_become_typed_provider_errors(
    fake: FakeOpenAI, status: int, code: ErrorCode, retryable: bool
) -> None:
    fake.fail_next(status, retry_after=7 if status == 429 else None)
    error = await failure(OpenAITranscribeSTT(API_KEY, fake.url))
    assert (error.code, error.retryable, error.provider) == (code, retryable, "openai")
    assert f"HTTP {status}" in error.message
    assert error.retry_after == (7.0 if status == 429 else None)


async def test_a_rejected_request_quotes_the_vendor_message_without_the_key(
    fake: FakeOpenAI,
) -> None:
    stt = OpenAITranscribeSTT(API_KEY, fake.url, "whisper-9")
    error = await failure(stt)
    assert error.code is ErrorCode.PROVIDER_ERROR and not error.retryable
    assert "Invalid model 'whisper-9'" in error.message
    # A careless proxy echoing the key back: the message is scrubbed.
    fake.fail_next(400, message=f"key {API_KEY} is not valid for this model")
    error = await failure(OpenAITranscribeSTT(API_KEY, fake.url))
    assert not any(API_KEY in text for text in error_strings(error))
    assert "key *** is not valid" in error.message


async def test_a_dropped_connection_is_a_retryable_network_error(fake: FakeOpenAI) -> None:
    fake.drop_next()
    error = await failure(OpenAITranscribeSTT(API_KEY, fake.url))
    assert error.code is ErrorCode.NETWORK_ERROR and error.retryable


async def test_a_refused_connection_is_a_retryable_network_error() -> None:
    stt = OpenAITranscribeSTT(API_KEY, f"http://127.0.0.1:{free_port()}/v1")
    error = await failure(stt)
    assert error.code is ErrorCode.NETWORK_ERROR and error.retryable
    assert not any(API_KEY in text for text in error_strings(error))


async def test_a_stalled_server_is_a_timeout(fake: FakeOpenAI) -> None:
    fake.stall_next(1.0)
    error = await failure(OpenAITranscribeSTT(API_KEY, fake.url, timeout=0.2))
    assert error.code is ErrorCode.TIMEOUT and error.retryable


# ----------------------------------------------------------------------- in a session


async def test_turns_are_transcribed_in_a_session_and_a_503_is_retried(
    fake: FakeOpenAI,
) -> None:
    fake.transcripts.extend(["book a table", "for two people"])
    stt = OpenAITranscribeSTT(API_KEY, fake.url)
    session, _, rec = build(stt=stt)
    await session.start()
    await feed(session, tone(0.5) + silence(0.6))
    await wait_for(lambda: rec.kinds("user_turn"), within=5)
    assert rec.kinds("user_turn")[0]["text"] == "book a table"

    fake.fail_next(503, path="/audio/transcriptions")
    await feed(session, tone(0.5) + silence(0.6))
    await wait_for(lambda: len(rec.kinds("user_turn")) == 2, within=5)
    assert rec.kinds("user_turn")[1]["text"] == "for two people"
    errors = rec.kinds("error")
    assert [(e["source"], e["code"], e["retryable"]) for e in errors] == [
        ("stt", "provider_error", True)
    ]
    assert session.state is not SessionState.ENDED
    # The caller's 8 kHz audio reached the API resampled to the rate the recogniser declared.
    assert {clip.sample_rate for clip in fake.clips} == {16000}
    assert all(clip.seconds >= 0.4 for clip in fake.clips)
    await session.stop()
    await stt.aclose()


async def test_a_closed_chunked_stream_is_freed_without_the_cyclic_collector(
    fake: FakeOpenAI, no_collector: None
) -> None:
    # The session's stream over a batch recogniser, one per call.
    fake.transcripts.append("Hello.")
    stt = OpenAITranscribeSTT(API_KEY, fake.url)
    try:
        stream = ChunkedSTTStream(stt, max_chunk_seconds=10)
        stream.push_audio(sine(0.5, stt.sample_rate))
        stream.flush()
        events = stream.__aiter__()
        assert (await events.__anext__()).text == "Hello."
        await events.aclose()
        await stream.aclose()
        ref = weakref.ref(stream)
        del stream, events
        assert ref() is None, [type(r).__name__ for r in gc.get_referrers(ref())]
    finally:
        await stt.aclose()
