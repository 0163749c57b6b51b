"""ElevenLabs streaming TTS against a local fake that speaks the vendor's wire protocol."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from providers.tts.elevenlabs import OUTPUT_FORMATS, ElevenLabsTTS
from session.audio import audioop
from session.config import Config
from session.errors import ErrorCode, ProviderError
from session.interfaces import AgentContext
from session.session import VoiceSession
from tests.fakes.elevenlabs_server import (
    API_KEY,
    FakeElevenLabs,
    expected_audio,
    run_fake_elevenlabs,
)
from tests.fakes.serve import free_port
from tests.session_doubles import LevelVAD, MemoryTransport, ScriptedSTT, silence, tone
from tests.test_session_engine import Recorder, feed, wait_for

TEXT = "Hello there, how are you?"
WRONG_KEY = "sk-wrong-key-0123456789"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeElevenLabs]:
    with run_fake_elevenlabs() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeElevenLabs) -> FakeElevenLabs:
    server.reset()
    return server


@pytest.fixture
async def tts(fake: FakeElevenLabs) -> AsyncIterator[ElevenLabsTTS]:
    provider = ElevenLabsTTS(API_KEY, fake.url)
    yield provider
    await provider.aclose()


async def collect(tts: ElevenLabsTTS, text: str = TEXT) -> list[bytes]:
    return [chunk async for chunk in tts.synthesize(text)]


async def failure(tts: ElevenLabsTTS, text: str = TEXT) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await collect(tts, text)
    return caught.value


def assert_no_secret(exc: BaseException, secret: str) -> None:
    link: BaseException | None = exc
    while link is not None:
        assert secret not in str(link) and secret not in repr(link)
        link = link.__cause__ or link.__context__


# --------------------------------------------------------------------------- shape


def test_describes_itself_without_the_key() -> None:
    tts = ElevenLabsTTS("sk-secret-123456")
    assert (tts.name, tts.sample_rate, tts.output_format) == ("elevenlabs", 8000, "ulaw_8000")
    assert tts.model_id == "eleven_flash_v2_5"
    assert tts.base_url == "https://api.elevenlabs.io"
    assert "sk-secret-123456" not in repr(tts)


@pytest.mark.parametrize("output_format", sorted(OUTPUT_FORMATS))
def test_sample_rate_follows_the_output_format(output_format: str) -> None:
    rate = int(output_format.split("_")[1])
    assert ElevenLabsTTS("k", output_format=output_format).sample_rate == rate


@pytest.mark.parametrize("bad", [{"output_format": "mp3_44100_128"}, {"voice_id": ""}])
def test_rejects_options_it_cannot_honour(bad: dict) -> None:
    with pytest.raises(ValueError):
        ElevenLabsTTS("k", **bad)


# ---------------------------------------------------------------------- happy path


async def test_ulaw_is_requested_and_decoded_to_pcm(
    tts: ElevenLabsTTS, fake: FakeElevenLabs
) -> None:
    audio = b"".join(await collect(tts))
    assert audio == audioop.ulaw2lin(expected_audio(TEXT, "ulaw_8000"), 2)
    assert len(audio) == 2 * round(8000 * 0.01 * len(TEXT))
    (request,) = fake.requests
    assert request.voice_id == "JBFqnCBsd6RMkjVDRZzb"
    assert request.query == {"output_format": "ulaw_8000"}
    assert request.headers["xi-api-key"] == API_KEY
    assert request.headers["content-type"] == "application/json"
    assert request.body == {"text": TEXT, "model_id": "eleven_flash_v2_5"}


async def test_pcm_samples_split_across_network_chunks_are_stitched(
    fake: FakeElevenLabs,
) -> None:
    tts = ElevenLabsTTS(
        API_KEY,
        fake.url,
        voice_id="test-voice",
        output_format="pcm_16000",
        voice_settings={"stability": 0.5, "similarity_boost": 0.75},
    )
    try:
        chunks = await collect(tts)
    finally:
        await tts.aclose()
    assert len(chunks) > 3 and all(len(c) % 2 == 0 for c in chunks)  # fake sends 801-byte pieces
    assert b"".join(chunks) == expected_audio(TEXT, "pcm_16000")
    (request,) = fake.requests
    assert request.voice_id == "test-voice"
    assert request.query == {"output_format": "pcm_16000"}
    assert request.body["voice_settings"] == {"stability": 0.5, "similarity_boost": 0.75}


async def test_audio_is_yielded_while_the_server_is_still_sending(
    tts: ElevenLabsTTS, fake: FakeElevenLabs
) -> None:
    gate = fake.hold_after_first_chunk()
    stream = tts.synthesize(TEXT)
    first = await asyncio.wait_for(anext(stream), 2)  # the rest is held back by the server
    assert first
    gate.set()
    rest = [chunk async for chunk in stream]
    assert first + b"".join(rest) == audioop.ulaw2lin(expected_audio(TEXT, "ulaw_8000"), 2)


@pytest.mark.parametrize("text", ["", "  \n"])
async def test_blank_text_makes_no_request(
    tts: ElevenLabsTTS, fake: FakeElevenLabs, text: str
) -> None:
    assert await collect(tts, text) == []
    assert fake.requests == []


# -------------------------------------------------------------------------- errors


async def test_a_wrong_key_is_an_authentication_error_that_names_no_key(
    fake: FakeElevenLabs,
) -> None:
    tts = ElevenLabsTTS(WRONG_KEY, fake.url)
    try:
        error = await failure(tts)
    finally:
        await tts.aclose()
    assert error.code is ErrorCode.AUTHENTICATION_ERROR and not error.retryable
    assert error.provider == "elevenlabs"
    assert "invalid_api_key" in error.message and "Invalid API key" in error.message
    assert_no_secret(error, WRONG_KEY)


async def test_too_many_requests_is_retryable_after_the_servers_delay(
    tts: ElevenLabsTTS, fake: FakeElevenLabs
) -> None:
    fake.fail_next(429, retry_after=2.5)
    error = await failure(tts)
    assert error.code is ErrorCode.PROVIDER_ERROR and error.retryable
    assert error.retry_after == 2.5
    assert "concurrent_limit_exceeded" in error.message
    assert_no_secret(error, API_KEY)


async def test_the_concurrency_limit_answers_429(tts: ElevenLabsTTS, fake: FakeElevenLabs) -> None:
    fake.max_concurrent = 1
    gate = fake.hold_after_first_chunk()
    first = tts.synthesize(TEXT)
    await anext(first)
    error = await failure(tts)
    assert error.code is ErrorCode.PROVIDER_ERROR and error.retryable
    gate.set()
    await first.aclose()


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_retryable(
    tts: ElevenLabsTTS, fake: FakeElevenLabs, status: int
) -> None:
    fake.fail_next(status)
    error = await failure(tts)
    assert error.code is ErrorCode.PROVIDER_ERROR and error.retryable
    assert f"HTTP {status}" in error.message
    assert b"".join(await collect(tts))  # the next request works


async def test_validation_errors_quote_the_vendor_and_are_final(fake: FakeElevenLabs) -> None:
    tts = ElevenLabsTTS(API_KEY, fake.url, voice_settings={"stability": 7})
    try:
        error = await failure(tts)
    finally:
        await tts.aclose()
    assert error.code is ErrorCode.PROVIDER_ERROR and not error.retryable
    assert "HTTP 422" in error.message and "body.voice_settings" in error.message


@pytest.mark.parametrize(
    ("options", "expected"),
    [({"voice_id": "nobody"}, "voice_not_found"), ({"model_id": "eleven_v9"}, "eleven_v9")],
)
async def test_bad_requests_are_not_retried(
    fake: FakeElevenLabs, options: dict, expected: str
) -> None:
    tts = ElevenLabsTTS(API_KEY, fake.url, **options)
    try:
        error = await failure(tts)
    finally:
        await tts.aclose()
    assert error.code is ErrorCode.PROVIDER_ERROR and not error.retryable
    assert "HTTP 400" in error.message and expected in error.message


async def test_a_connection_dropped_mid_stream_is_a_network_error(
    tts: ElevenLabsTTS, fake: FakeElevenLabs
) -> None:
    fake.drop_next()
    received: list[bytes] = []
    with pytest.raises(ProviderError) as caught:
        async for chunk in tts.synthesize(TEXT):
            received.append(chunk)
    assert received  # the first chunk got through before the cut
    assert caught.value.code is ErrorCode.NETWORK_ERROR and caught.value.retryable
    assert_no_secret(caught.value, API_KEY)


async def test_a_refused_connection_is_a_network_error() -> None:
    tts = ElevenLabsTTS(API_KEY, f"http://127.0.0.1:{free_port()}")
    try:
        error = await failure(tts)
    finally:
        await tts.aclose()
    assert error.code is ErrorCode.NETWORK_ERROR and error.retryable
    assert_no_secret(error, API_KEY)


async def test_a_stalled_stream_times_out(fake: FakeElevenLabs) -> None:
    gate = fake.hold_after_first_chunk()
    tts = ElevenLabsTTS(API_KEY, fake.url, timeout=0.3)
    try:
        error = await failure(tts)
    finally:
        gate.set()
        await tts.aclose()
    assert error.code is ErrorCode.TIMEOUT and error.retryable


# ------------------------------------------------------------------ in a session

BASE = dict(min_endpointing_delay=0.3, speech_end_silence=0.2, retry_delay=0.01)


def build(tts: ElevenLabsTTS, finals: list[str]) -> tuple[VoiceSession, MemoryTransport, Recorder]:
    rec = Recorder()
    transport = MemoryTransport()

    async def echo(ctx: AgentContext, transcript: str) -> str:
        return f"You said {transcript}."

    session = VoiceSession(
        transport=transport,
        stt=ScriptedSTT(finals),
        tts=tts,
        vad=LevelVAD(),
        agent=echo,
        config=Config(**BASE),
        on_event=rec.events.append,
    )
    transport.listener = session
    return session, transport, rec


def sent_audio(transport: MemoryTransport) -> bytes:
    return b"".join(p for kind, p in transport.sent if kind == "audio")  # type: ignore[misc]


async def test_a_session_speaks_through_elevenlabs_and_survives_a_503(
    tts: ElevenLabsTTS, fake: FakeElevenLabs
) -> None:
    session, transport, rec = build(tts, ["hello there", "one more"])
    await session.start()
    await feed(session, tone(0.4) + silence(0.6))
    await wait_for(lambda: rec.kinds("agent_text"), within=5)
    first = "You said hello there."
    assert rec.kinds("agent_text")[0]["text"] == first
    assert sent_audio(transport) == audioop.ulaw2lin(expected_audio(first, "ulaw_8000"), 2)
    transport.play_all()
    await wait_for(lambda: rec.kinds("reply_finished"))

    fake.fail_next(503)  # the next synthesis fails once; the session tries again
    await feed(session, tone(0.4) + silence(0.6))
    await wait_for(lambda: len(rec.kinds("agent_text")) == 2, within=5)
    (error,) = rec.kinds("error")
    assert (error["code"], error["source"], error["retryable"]) == ("provider_error", "tts", True)
    second = "You said one more."
    assert rec.kinds("agent_text")[1]["text"] == second
    assert len(fake.requests) == 3 and fake.requests[-1].body["text"] == second
    assert sent_audio(transport) == audioop.ulaw2lin(
        expected_audio(first, "ulaw_8000") + expected_audio(second, "ulaw_8000"), 2
    )
    await session.stop()
