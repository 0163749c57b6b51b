import asyncio
import base64
import json
import os
import signal
from collections.abc import Callable, Iterator

import pytest

from providers.stt.decoder_pool import DecoderPool, DecoderProcess, default_pool
from providers.stt.pocketsphinx import PocketSphinxStream, PocketSphinxSTT
from providers.tts.espeak import ESpeakTTS
from session.audio import StreamingResampler, audioop
from session.errors import ErrorCode, ProviderError
from session.interfaces import STTStream, TranscriptEvent
from tests.fixtures import PHONE_WAV, RECORDED_CALL, wav_ulaw

PHONE_RATE = 8000
STT_RATE = 16000


def call_ulaw() -> bytes:
    lines = RECORDED_CALL.read_text().splitlines()
    messages = [json.loads(line) for line in lines]
    return b"".join(
        base64.b64decode(m["media"]["payload"]) for m in messages if m["event"] == "media"
    )


def phone_to_stt(ulaw: bytes) -> bytes:
    return StreamingResampler(PHONE_RATE, STT_RATE).process(audioop.ulaw2lin(ulaw, 2))


def over_the_phone(pcm: bytes, rate: int) -> bytes:
    """What a synthesised voice sounds like after a μ-law phone line, at the recogniser's rate."""
    narrow = StreamingResampler(rate, PHONE_RATE).process(pcm)
    return phone_to_stt(audioop.lin2ulaw(narrow, 2))


@pytest.fixture(scope="module")
def pool() -> Iterator[DecoderPool]:
    pool = DecoderPool(size=2)
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def spoken() -> dict[str, bytes]:
    tts = ESpeakTTS()
    phrases = ["hello how are you today", "goodbye", "how are you"]
    return {p: over_the_phone(tts.synthesize_blocking(p), tts.sample_rate) for p in phrases}


async def open_stream(pool: DecoderPool) -> PocketSphinxStream:
    return await PocketSphinxSTT(pool).open_stream()


async def next_final(stream: PocketSphinxStream) -> tuple[list[TranscriptEvent], TranscriptEvent]:
    interims = []
    async with asyncio.timeout(30):
        async for event in stream:
            if event.is_final:
                return interims, event
            interims.append(event)
    raise AssertionError("stream ended without a final")


async def say(stream: PocketSphinxStream, pcm: bytes) -> TranscriptEvent:
    """Pushes one segment in 20 ms frames, as the session does, and returns its final."""
    for i in range(0, len(pcm), 640):
        stream.push_audio(pcm[i : i + 640])
    stream.flush()
    _, final = await next_final(stream)
    return final


async def wait_until(condition: Callable[[], bool], within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - polling pool counters; no event to wait on
            await asyncio.sleep(0.005)


def test_declares_its_rate_and_name() -> None:
    stt = PocketSphinxSTT()
    assert (stt.name, stt.sample_rate) == ("pocketsphinx", 16000)
    assert default_pool() is default_pool()
    assert default_pool().size >= 2


async def test_real_phone_recording_gives_a_final(pool: DecoderPool) -> None:
    stream = await open_stream(pool)
    assert isinstance(stream, STTStream)
    final = await say(stream, phone_to_stt(wav_ulaw(PHONE_WAV)))
    print(f"real-phone-how-are-you.wav -> {final.text!r} (confidence {final.confidence})")
    assert final.text
    assert final.confidence is not None and 0.0 <= final.confidence <= 1.0
    await stream.aclose()


async def test_recorded_call_segment_gives_a_final(pool: DecoderPool) -> None:
    call = call_ulaw()
    segment = call[int(8.0 * PHONE_RATE) : int(10.3 * PHONE_RATE)]  # the longest stretch of speech
    stream = await open_stream(pool)
    final = await say(stream, phone_to_stt(segment))
    print(f"twilio-recorded-call.jsonl 8.0-10.3 s -> {final.text!r}")
    assert final.text
    await stream.aclose()


async def test_synthesised_phrase_over_the_phone_is_recognised(
    pool: DecoderPool, spoken: dict[str, bytes]
) -> None:
    stream = await open_stream(pool)
    for i in range(0, len(spoken["hello how are you today"]), 640):
        stream.push_audio(spoken["hello how are you today"][i : i + 640])
    stream.flush()
    interims, final = await next_final(stream)
    print(f"espeak 'hello how are you today' -> {final.text!r}, interims {interims}")
    assert "how are you" in final.text
    assert interims, "expected interim hypotheses before the final"
    assert all(not event.is_final and event.text for event in interims)
    assert final.confidence is not None and 0.0 < final.confidence <= 1.0
    await stream.aclose()


async def test_two_segments_give_two_finals(pool: DecoderPool, spoken: dict[str, bytes]) -> None:
    stream = await open_stream(pool)
    first = await say(stream, spoken["hello how are you today"])
    assert pool.in_use == 0  # a decoder is only held while a segment is open
    second = await say(stream, spoken["goodbye"])
    print(f"segments -> {first.text!r}, {second.text!r}")
    assert "how are you" in first.text
    assert second.text
    await stream.aclose()


async def test_segments_queued_back_to_back_keep_their_order(
    pool: DecoderPool, spoken: dict[str, bytes]
) -> None:
    stream = await open_stream(pool)
    stream.push_audio(spoken["how are you"])
    stream.flush()
    stream.flush()  # nothing between the two flushes: an empty final
    stream.push_audio(spoken["how are you"])
    stream.flush()
    finals = [(await next_final(stream))[1].text for _ in range(3)]
    assert "how are you" in finals[0]
    assert finals[1] == ""
    assert "how are you" in finals[2]
    await stream.aclose()


async def test_flush_without_audio_gives_an_empty_final(pool: DecoderPool) -> None:
    stream = await open_stream(pool)
    stream.flush()
    _, final = await next_final(stream)
    assert final == TranscriptEvent("", is_final=True, confidence=None)
    assert pool.in_use == 0
    await stream.aclose()


async def test_pool_never_exceeds_its_size(pool: DecoderPool, spoken: dict[str, bytes]) -> None:
    streams = [await open_stream(pool) for _ in range(3)]
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, pool.in_use)
            await asyncio.sleep(0.001)

    watcher = asyncio.create_task(watch())
    finals = await asyncio.gather(*(say(s, spoken["how are you"]) for s in streams))
    watcher.cancel()
    assert [f.text for f in finals] == ["how are you"] * 3
    assert peak == 2
    assert pool.created == 2
    assert pool.in_use == 0
    for stream in streams:
        await stream.aclose()


async def test_aclose_returns_the_borrowed_decoder(
    pool: DecoderPool, spoken: dict[str, bytes]
) -> None:
    stream = await open_stream(pool)
    stream.push_audio(spoken["hello how are you today"])  # a segment that is never flushed
    await wait_until(lambda: pool.in_use == 1)
    await stream.aclose()
    assert pool.in_use == 0
    async with asyncio.timeout(5):
        leftovers = [event async for event in stream]  # iteration ends
    assert not any(event.is_final for event in leftovers)
    stream.push_audio(b"\0" * 640)  # ignored after close
    stream.flush()
    assert pool.in_use == 0


async def test_aclose_while_waiting_for_a_decoder(pool: DecoderPool) -> None:
    held = [await pool.acquire() for _ in range(pool.size)]
    stream = await open_stream(pool)
    stream.push_audio(b"\0" * 3200)
    await asyncio.sleep(0.05)
    await stream.aclose()
    for decoder in held:
        pool.release(decoder)
    assert (pool.in_use, pool.idle) == (0, pool.size)


async def test_cancelled_waiter_does_not_lose_a_decoder(pool: DecoderPool) -> None:
    held = [await pool.acquire() for _ in range(pool.size)]
    waiter = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0.01)
    pool.release(held.pop())
    waiter.cancel()  # cancelled after the hand-over was scheduled: the decoder must come back
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await asyncio.sleep(0.01)
    pool.release(held.pop())
    assert (pool.in_use, pool.idle, pool.created) == (0, 2, 2)


async def test_decoder_made_for_a_cancelled_borrower_still_joins_the_pool() -> None:
    fresh = DecoderPool(size=1)
    borrower = asyncio.create_task(fresh.acquire())
    await asyncio.sleep(0.05)  # the decoder process is starting
    borrower.cancel()
    with pytest.raises(asyncio.CancelledError):
        await borrower
    await wait_until(lambda: fresh.idle == 1)
    assert fresh.created == 1
    fresh.close()
    assert fresh.created == 0


async def test_decoder_process_dying_mid_segment_fails_the_stream_and_is_replaced(
    pool: DecoderPool, spoken: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    original = DecoderProcess.process

    def dying(self: DecoderProcess, pcm: bytes) -> str:
        os.kill(self.pid, signal.SIGKILL)
        return original(self, pcm)

    monkeypatch.setattr(DecoderProcess, "process", dying)
    stream = await open_stream(pool)
    stream.push_audio(spoken["how are you"])
    stream.flush()
    with pytest.raises(ProviderError) as caught:
        await next_final(stream)
    assert caught.value.code == ErrorCode.STT_FAILED
    assert caught.value.provider == "pocketsphinx"
    assert pool.created == 1  # the dead one is gone from the pool
    monkeypatch.undo()
    await stream.aclose()

    healthy = await open_stream(pool)
    assert (await say(healthy, spoken["how are you"])).text == "how are you"
    await healthy.aclose()


async def test_bad_decoder_config_is_a_provider_error() -> None:
    broken = DecoderPool(size=1, hmm="/nonexistent/model")
    with pytest.raises(ProviderError) as caught:
        await broken.acquire()
    assert caught.value.code == ErrorCode.STT_FAILED
    assert not caught.value.retryable
    assert broken.created == 0
    broken.close()


def test_pool_size_is_validated() -> None:
    with pytest.raises(ValueError, match="size"):
        DecoderPool(size=0)
