import asyncio
import time

import numpy as np
import pytest

from providers.tts.espeak import ESpeakTTS
from session.audio import pcm_duration
from session.errors import ProviderError

SHORT = "Hello, how are you today?"
LONG = " ".join(["The quick brown fox jumps over the lazy dog, and then it runs away."] * 60)


async def collect(tts: ESpeakTTS, text: str) -> bytes:
    return b"".join([chunk async for chunk in tts.synthesize(text)])


def envelope(pcm: bytes) -> np.ndarray:
    """10 ms RMS envelope (at 22050 Hz)."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    frames = len(samples) // 220
    return np.sqrt((samples[: frames * 220].reshape(frames, 220) ** 2).mean(axis=1))


def assert_same_speech(actual: bytes, expected: bytes) -> None:
    # eSpeak carries a little waveform state (pitch phase) from one utterance to the next, so
    # the same text is not byte-identical twice; it is the same speech to within a few samples.
    assert abs(len(actual) - len(expected)) < 0.02 * len(expected)
    a, b = envelope(actual), envelope(expected)
    n = min(len(a), len(b))
    assert np.corrcoef(a[:n], b[:n])[0, 1] > 0.9  # different speech scores near 0


def test_describes_itself() -> None:
    tts = ESpeakTTS()
    assert (tts.name, tts.sample_rate, tts.voice, tts.rate_wpm) == ("espeak", 22050, "en-us", 175)


async def test_short_sentence_has_plausible_length() -> None:
    tts = ESpeakTTS()
    chunks = [chunk async for chunk in tts.synthesize(SHORT)]
    assert len(chunks) > 3  # streamed in pieces, not one blob
    assert all(len(chunk) % 2 == 0 for chunk in chunks)
    seconds = pcm_duration(b"".join(chunks), tts.sample_rate)
    assert 0.5 < seconds < 5.0, seconds


async def test_faster_rate_gives_shorter_audio() -> None:
    slow = await collect(ESpeakTTS(rate_wpm=120), SHORT)
    fast = await collect(ESpeakTTS(rate_wpm=300), SHORT)
    assert len(fast) < 0.7 * len(slow)


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
async def test_blank_text_yields_nothing(text: str) -> None:
    assert await collect(ESpeakTTS(), text) == b""
    assert ESpeakTTS().synthesize_blocking(text) == b""


async def test_first_chunk_arrives_long_before_the_end() -> None:
    tts = ESpeakTTS()
    started = time.perf_counter()
    first = None
    async for _chunk in tts.synthesize(LONG):
        first = first or time.perf_counter() - started
    total = time.perf_counter() - started
    assert first is not None
    assert first < total / 4, (first, total)


async def test_concurrent_requests_do_not_interleave() -> None:
    tts = ESpeakTTS()
    texts = [SHORT, "Goodbye and thanks for calling.", SHORT, "Please hold the line."]
    references = {text: tts.synthesize_blocking(text) for text in set(texts)}
    results = await asyncio.gather(*(collect(tts, text) for text in texts))
    for text, pcm in zip(texts, results, strict=True):
        assert_same_speech(pcm, references[text])


async def test_voices_and_rates_do_not_leak_between_concurrent_requests() -> None:
    us, slow = ESpeakTTS(voice="en-us"), ESpeakTTS(voice="en-gb", rate_wpm=120)
    references = [us.synthesize_blocking(SHORT), slow.synthesize_blocking(SHORT)]
    results = await asyncio.gather(collect(us, SHORT), collect(slow, SHORT))
    for pcm, reference in zip(results, references, strict=True):
        assert_same_speech(pcm, reference)


async def test_closing_the_stream_early_stops_synthesis_and_next_call_works() -> None:
    tts = ESpeakTTS()
    reference = tts.synthesize_blocking(SHORT)
    stream = tts.synthesize(LONG)
    first = await anext(stream)
    assert first
    await stream.aclose()
    started = time.perf_counter()
    assert_same_speech(await collect(tts, SHORT), reference)
    # The long text would take far longer than this if it had not been aborted.
    assert time.perf_counter() - started < 0.2


async def test_cancelling_the_consumer_task_does_not_break_the_next_call() -> None:
    tts = ESpeakTTS()
    reference = tts.synthesize_blocking(SHORT)
    got_audio = asyncio.Event()

    async def consume() -> None:
        async for _chunk in tts.synthesize(LONG):
            got_audio.set()
            await asyncio.sleep(0.01)  # a slow consumer, like real-time playout

    task = asyncio.create_task(consume())
    await got_audio.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_same_speech(await collect(tts, SHORT), reference)


async def test_event_loop_stays_responsive_during_long_synthesis() -> None:
    tts = ESpeakTTS()
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.002)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticking = asyncio.create_task(ticker())
    job = asyncio.create_task(asyncio.to_thread(tts.synthesize_blocking, LONG * 3))
    # The blocking helper holds the eSpeak thread; the async stream queues behind it.
    pcm = await collect(tts, LONG)
    await job
    done.set()
    await ticking
    assert pcm_duration(pcm, tts.sample_rate) > 60
    assert len(gaps) > 20
    assert max(gaps) < 0.1, max(gaps)


def test_blocking_helper_matches_streamed_audio() -> None:
    tts = ESpeakTTS()
    assert_same_speech(tts.synthesize_blocking(SHORT), asyncio.run(collect(tts, SHORT)))


def test_language_tags_are_accepted_as_voices() -> None:
    assert ESpeakTTS(voice="en-GB").voice == "en-GB"


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [({"voice": "zz-unknown"}, "voice"), ({"rate_wpm": 10}, "rate_wpm")],
)
def test_bad_settings_fail_at_construction(kwargs: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        ESpeakTTS(**kwargs)  # type: ignore[arg-type]


async def test_failures_are_provider_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    from providers.tts import espeak

    def broken(request: object) -> None:
        raise RuntimeError("library exploded")

    monkeypatch.setattr(espeak, "_run", broken)
    with pytest.raises(ProviderError) as caught:
        await collect(ESpeakTTS(), SHORT)
    assert caught.value.code == "provider_error"
    assert caught.value.provider == "espeak"
