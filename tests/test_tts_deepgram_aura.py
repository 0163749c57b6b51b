"""Deepgram Aura synthesis against a local fake that speaks Deepgram's REST protocol."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from providers.tts.deepgram_aura import DeepgramAuraTTS
from session.errors import ErrorCode, ProviderError
from tests.fakes.deepgram_server import (
    API_KEY,
    SPEAK_CHUNK_BYTES,
    SPEAK_SECONDS_PER_CHAR,
    FakeDeepgram,
    run_fake_deepgram,
)
from tests.fakes.serve import free_port
from tests.session_doubles import ScriptedSTT, silence, tone
from tests.test_session_behaviours import build
from tests.test_session_engine import feed, wait_for

SECRET = "dg-secret-key-that-must-not-leak"


@pytest.fixture(scope="module")
def served() -> Iterator[FakeDeepgram]:
    with run_fake_deepgram() as fake:
        yield fake


@pytest.fixture
def fake(served: FakeDeepgram) -> FakeDeepgram:
    served.reset()
    return served


@pytest.fixture
async def tts(fake: FakeDeepgram) -> AsyncIterator[DeepgramAuraTTS]:
    provider = DeepgramAuraTTS(API_KEY, fake.url)
    yield provider
    await provider.aclose()


def expected_bytes(text: str, rate: int) -> int:
    return int(rate * len(text) * SPEAK_SECONDS_PER_CHAR) * 2


async def collect(tts: DeepgramAuraTTS, text: str) -> list[bytes]:
    return [chunk async for chunk in tts.synthesize(text)]


# ---------------------------------------------------------------------- the wire protocol


async def test_speech_streams_as_whole_samples(fake: FakeDeepgram, tts: DeepgramAuraTTS) -> None:
    text = "Hello, how can I help you today?"
    chunks = await collect(tts, text)
    assert len(chunks) > 3  # streamed, not one buffered body
    assert all(len(c) % 2 == 0 and c for c in chunks)  # the fake's odd chunks were re-cut
    assert SPEAK_CHUNK_BYTES % 2 == 1
    assert sum(map(len, chunks)) == expected_bytes(text, 8000)
    (record,) = fake.speaks
    assert record.authorization == f"Token {API_KEY}"
    assert record.query == {
        "model": "aura-2-thalia-en",
        "encoding": "linear16",
        "sample_rate": "8000",
        "container": "none",
    }
    assert record.body == {"text": text}
    assert tts.name == "deepgram" and tts.sample_rate == 8000


async def test_chunks_arrive_before_the_body_is_complete(fake: FakeDeepgram) -> None:
    tts = DeepgramAuraTTS(API_KEY, fake.url)
    text = "A reply long enough to take a few hundred chunks of audio to send. " * 3
    stream = tts.synthesize(text)
    await anext(stream)
    # The first chunk is in hand while the fake is still sending the rest.
    assert fake.speaks[0].audio_bytes < expected_bytes(text, 8000)
    await stream.aclose()
    await tts.aclose()


@pytest.mark.parametrize("rate", [16000, 24000])
async def test_other_sample_rates(fake: FakeDeepgram, rate: int) -> None:
    tts = DeepgramAuraTTS(API_KEY, fake.url, sample_rate=rate, model="aura-2-apollo-en")
    chunks = await collect(tts, "Wideband.")
    await tts.aclose()
    assert sum(map(len, chunks)) == expected_bytes("Wideband.", rate)
    assert fake.speaks[0].query["sample_rate"] == str(rate)
    assert fake.speaks[0].query["model"] == "aura-2-apollo-en"


async def test_blank_text_makes_no_request(fake: FakeDeepgram, tts: DeepgramAuraTTS) -> None:
    assert await collect(tts, "  ") == []
    assert fake.speaks == []


async def test_the_fake_refuses_empty_text_as_deepgram_does(fake: FakeDeepgram) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{fake.url}/v1/speak",
            params={"model": "aura-2-thalia-en"},
            headers={"Authorization": f"Token {API_KEY}"},
            json={"text": ""},
        )
    assert response.status_code == 400
    assert response.json()["err_msg"] == "Input text must not be empty."


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        DeepgramAuraTTS("k", sample_rate=22050)
    with pytest.raises(ValueError, match="api_key"):
        DeepgramAuraTTS("")
    assert DeepgramAuraTTS("k").url == "https://api.deepgram.com/v1/speak"
    assert DeepgramAuraTTS("k", "wss://dg.example").url == "https://dg.example/v1/speak"


# ---------------------------------------------------------------------------- errors


def assert_no_secret(error: BaseException, secret: str) -> None:
    link: BaseException | None = error
    while link is not None:
        assert secret not in str(link) and secret not in repr(link)
        link = link.__cause__ or link.__context__


async def test_a_wrong_key_is_an_authentication_error(fake: FakeDeepgram) -> None:
    tts = DeepgramAuraTTS(SECRET, fake.url)
    with pytest.raises(ProviderError) as info:
        await collect(tts, "Hello.")
    await tts.aclose()
    assert info.value.code is ErrorCode.AUTHENTICATION_ERROR and not info.value.retryable
    assert "Invalid credentials." in info.value.message
    assert_no_secret(info.value, SECRET)
    assert SECRET not in repr(tts)


async def test_a_rate_limit_is_retryable_with_retry_after(
    fake: FakeDeepgram, tts: DeepgramAuraTTS
) -> None:
    fake.reject_next_speak(429, retry_after=3)
    with pytest.raises(ProviderError) as info:
        await collect(tts, "Hello.")
    assert info.value.code is ErrorCode.PROVIDER_ERROR and info.value.retryable
    assert info.value.retry_after == 3.0
    assert len(await collect(tts, "Hello.")) > 0  # only that one request was refused


@pytest.mark.parametrize("status", [500, 503])
async def test_a_server_error_is_retryable(
    fake: FakeDeepgram, tts: DeepgramAuraTTS, status: int
) -> None:
    fake.reject_next_speak(status)
    with pytest.raises(ProviderError) as info:
        await collect(tts, "Hello.")
    assert info.value.code is ErrorCode.PROVIDER_ERROR and info.value.retryable
    assert str(status) in info.value.message


async def test_a_bad_request_is_not_retryable_and_quotes_deepgram(fake: FakeDeepgram) -> None:
    tts = DeepgramAuraTTS(API_KEY, fake.url, model="nova-3")
    with pytest.raises(ProviderError) as info:
        await collect(tts, "Hello.")
    await tts.aclose()
    assert info.value.code is ErrorCode.PROVIDER_ERROR and not info.value.retryable
    assert "No such model/version/tier combination found." in info.value.message


async def test_a_dropped_response_is_a_network_error(
    fake: FakeDeepgram, tts: DeepgramAuraTTS
) -> None:
    fake.drop_next_speak_after(3 * SPEAK_CHUNK_BYTES)
    received: list[bytes] = []
    with pytest.raises(ProviderError) as info:
        async for chunk in tts.synthesize("This reply is cut off halfway through."):
            received.append(chunk)
    assert info.value.code is ErrorCode.NETWORK_ERROR and info.value.retryable
    assert received  # what came before the drop was passed on


async def test_a_refused_connection_is_a_network_error() -> None:
    tts = DeepgramAuraTTS(SECRET, f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ProviderError) as info:
        await collect(tts, "Hello.")
    await tts.aclose()
    assert info.value.code is ErrorCode.NETWORK_ERROR and info.value.retryable
    assert_no_secret(info.value, SECRET)


# ---------------------------------------------------------------------- in a session


async def test_a_reply_is_spoken_through_deepgram_in_a_session(
    fake: FakeDeepgram, tts: DeepgramAuraTTS
) -> None:
    session, transport, rec = build(stt=ScriptedSTT(["Good morning."]), tts=tts)
    await session.start()
    await feed(session, tone(0.4) + silence(0.5))
    await wait_for(lambda: transport.pending_marks, within=5)
    spoken = " ".join(s.body["text"] for s in fake.speaks)
    assert spoken.startswith("You said Good morning.")
    transport.play_all()
    await wait_for(lambda: rec.kinds("reply_finished"), within=5)
    assert transport.audio_bytes == sum(
        expected_bytes(s.body["text"], 8000) for s in fake.speaks if s.status == 200
    )
    await session.stop()


async def test_a_transient_503_is_retried_by_the_session(
    fake: FakeDeepgram, tts: DeepgramAuraTTS
) -> None:
    fake.reject_next_speak(503)
    session, transport, rec = build(tts=tts)
    await session.start()
    handle = session.say("Still heard.")
    await wait_for(lambda: transport.pending_marks, within=5)
    transport.play_all()
    await asyncio.wait_for(handle.wait_for_playout(), 5)
    assert handle.heard_text == "Still heard." and not handle.interrupted
    assert [s.status for s in fake.speaks] == [503, 200]
    assert transport.audio_bytes == expected_bytes("Still heard.", 8000)
    errors = rec.kinds("error")
    assert errors and errors[0]["code"] == "provider_error" and errors[0]["retryable"]
    await session.stop()
