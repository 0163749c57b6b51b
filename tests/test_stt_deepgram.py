"""Deepgram live recognition against a local fake that speaks Deepgram's websocket protocol.

Every byte crosses a real websocket on 127.0.0.1; transcripts come from the fake's queue, so
each assertion is about what the provider made of the wire traffic.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref
from collections.abc import Iterator

import pytest

from providers.stt.deepgram import DeepgramStream, DeepgramSTT
from session.errors import ErrorCode, ProviderError
from session.interfaces import STTStream, TranscriptEvent
from tests.fakes.deepgram_server import API_KEY, FakeDeepgram, run_fake_deepgram
from tests.fakes.serve import free_port
from tests.session_doubles import FRAME, frames, silence, tone
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


def stt(fake: FakeDeepgram, **options) -> DeepgramSTT:
    return DeepgramSTT(API_KEY, fake.url, **options)


async def push(stream: STTStream, pcm: bytes) -> None:
    """Pushes 20 ms frames with a yield between them, as the session does."""
    for frame in frames(pcm):
        stream.push_audio(frame)
        await asyncio.sleep(0)


async def events_until_finals(stream: DeepgramStream, count: int) -> list[TranscriptEvent]:
    events: list[TranscriptEvent] = []

    async def read() -> None:
        async for event in stream:
            events.append(event)
            if sum(e.is_final for e in events) == count:
                return

    await asyncio.wait_for(read(), 5)
    return events


def finals(events: list[TranscriptEvent]) -> list[str]:
    return [e.text for e in events if e.is_final]


# ---------------------------------------------------------------------- the wire protocol


async def test_a_flushed_segment_gives_interims_then_one_final(fake: FakeDeepgram) -> None:
    fake.next_transcripts.append("Hello world.")
    stream = await stt(fake).open_stream()
    assert isinstance(stream, STTStream)
    await push(stream, tone(0.6))
    stream.flush()
    events = await events_until_finals(stream, 1)
    assert events[0] == TranscriptEvent("Hello", is_final=False)
    assert events[-1] == TranscriptEvent("Hello world.", is_final=True, confidence=0.9)
    await stream.aclose()

    (record,) = fake.listens
    assert record.authorization == f"Token {API_KEY}"
    assert record.query == {
        "model": "nova-3",
        "encoding": "linear16",
        "sample_rate": "8000",
        "channels": "1",
        "interim_results": "true",
        "punctuate": "true",
        "smart_format": "true",
        "language": "en",
    }
    assert record.audio_bytes == len(tone(0.6)) and record.audio_frames == len(frames(tone(0.6)))
    assert record.messages == ["Finalize", "CloseStream"]
    assert record.empty_frames == 0
    assert record.close_code == 1000  # the server closed after CloseStream, as Deepgram does
    assert record.sent[-1]["type"] == "Metadata"


async def test_is_final_pieces_are_joined_into_the_one_final_of_the_flush(
    fake: FakeDeepgram,
) -> None:
    fake.next_transcripts.extend([["Book a table", "for two", "at eight."], "Thanks."])
    stream = await stt(fake).open_stream()
    await push(stream, tone(0.5))
    stream.flush()
    await push(stream, tone(0.4))
    stream.flush()
    events = await events_until_finals(stream, 2)
    assert finals(events) == ["Book a table for two at eight.", "Thanks."]
    await stream.aclose()


async def test_options_reach_the_query_string(fake: FakeDeepgram) -> None:
    fake.next_transcripts.append("ok")
    recogniser = stt(
        fake,
        model="nova-2-phonecall",
        language="en-US",
        sample_rate=16000,
        smart_format=False,
        endpointing=300,
        utterance_end_ms=1000,
        extra_params={"keyterm": "Deepgram"},
    )
    stream = await recogniser.open_stream()
    await stream.aclose()
    query = fake.listens[0].query
    assert query["model"] == "nova-2-phonecall" and query["language"] == "en-US"
    assert query["sample_rate"] == "16000" and query["smart_format"] == "false"
    assert query["endpointing"] == "300" and query["utterance_end_ms"] == "1000"
    assert query["keyterm"] == "Deepgram"
    assert recogniser.sample_rate == 16000


async def test_mulaw_sends_one_byte_per_sample(fake: FakeDeepgram) -> None:
    fake.next_transcripts.append("Half the bytes.")
    stream = await stt(fake, encoding="mulaw").open_stream()
    pcm = tone(0.6)
    await push(stream, pcm)
    stream.flush()
    events = await events_until_finals(stream, 1)
    assert finals(events) == ["Half the bytes."]
    await stream.aclose()
    record = fake.listens[0]
    assert record.query["encoding"] == "mulaw" and record.query["sample_rate"] == "8000"
    assert record.audio_bytes == len(pcm) // 2


async def test_a_flush_without_audio_is_answered_in_order_without_a_finalize(
    fake: FakeDeepgram,
) -> None:
    fake.next_transcripts.append("Spoken.")
    stream = await stt(fake).open_stream()
    await push(stream, tone(0.4))
    stream.flush()
    stream.flush()  # nothing since the last one: Deepgram would have nothing to finalize
    events = await events_until_finals(stream, 2)
    assert finals(events) == ["Spoken.", ""]
    await stream.aclose()
    assert fake.listens[0].messages.count("Finalize") == 1


async def test_an_unanswered_finalize_still_gives_exactly_one_final(fake: FakeDeepgram) -> None:
    fake.ignore_finalize = True
    stream = await stt(fake, finalize_timeout=0.2).open_stream()
    await push(stream, tone(0.4))  # long enough for an interim
    stream.flush()
    events = await events_until_finals(stream, 1)
    assert finals(events) == [""]
    await asyncio.sleep(0.3)
    assert sum(e.is_final for e in events) == 1
    await stream.aclose()


async def test_a_late_finalize_answer_is_not_taken_for_the_next_segment(
    fake: FakeDeepgram,
) -> None:
    fake.next_transcripts.extend(["Too late.", "Second segment."])
    fake.finalize_delays.append(0.5)
    stream = await stt(fake, finalize_timeout=0.2).open_stream()
    await push(stream, tone(0.2))
    stream.flush()
    first = await events_until_finals(stream, 1)
    assert finals(first) == [""]  # closed by the timeout
    await asyncio.sleep(0.5)  # the late answer arrives meanwhile
    await push(stream, tone(0.4))
    stream.flush()
    second = await events_until_finals(stream, 1)
    assert finals(second) == ["Second segment."]
    await stream.aclose()


async def test_keep_alive_is_sent_on_request_and_when_idle(fake: FakeDeepgram) -> None:
    stream = await stt(fake, idle_keep_alive=0.1).open_stream()
    await stream.keep_alive()
    await asyncio.sleep(0.35)
    await stream.aclose()
    messages = fake.listens[0].messages
    assert messages[-1] == "CloseStream"
    assert messages.count("KeepAlive") >= 3  # one asked for, at least two from idling


async def test_no_empty_frame_is_ever_sent(fake: FakeDeepgram) -> None:
    stream = await stt(fake).open_stream()
    stream.push_audio(b"")
    stream.push_audio(tone(0.02))
    await stream.aclose()
    assert fake.listens[0].empty_frames == 0 and fake.listens[0].audio_bytes == FRAME


async def test_a_long_backlog_is_sent_in_small_frames(fake: FakeDeepgram) -> None:
    stream = await stt(fake).open_stream()
    stream.push_audio(silence(2.0))  # what the session's replay does after a reconnect
    await stream.aclose()
    assert fake.listens[0].audio_bytes == len(silence(2.0))
    assert fake.listens[0].audio_frames == 8  # 250 ms each


# ---------------------------------------------------------------------------- errors


def assert_no_secret(error: BaseException, secret: str) -> None:
    link: BaseException | None = error
    while link is not None:
        assert secret not in str(link) and secret not in repr(link)
        link = link.__cause__ or link.__context__


async def test_a_wrong_key_is_an_authentication_error(fake: FakeDeepgram) -> None:
    with pytest.raises(ProviderError) as info:
        await DeepgramSTT(SECRET, fake.url).open_stream()
    error = info.value
    assert error.code is ErrorCode.AUTHENTICATION_ERROR and not error.retryable
    assert error.provider == "deepgram" and "Invalid credentials." in error.message
    assert_no_secret(error, SECRET)
    assert fake.listens[0].authorization == f"Token {SECRET}"


async def test_a_rate_limit_is_retryable_with_retry_after(fake: FakeDeepgram) -> None:
    fake.reject_next_listen(429, retry_after=7)
    with pytest.raises(ProviderError) as info:
        await stt(fake).open_stream()
    assert info.value.code is ErrorCode.PROVIDER_ERROR and info.value.retryable
    assert info.value.retry_after == 7.0
    assert "429" in info.value.message


@pytest.mark.parametrize("status", [500, 503])
async def test_a_server_error_is_retryable(fake: FakeDeepgram, status: int) -> None:
    fake.reject_next_listen(status)
    with pytest.raises(ProviderError) as info:
        await stt(fake).open_stream()
    assert info.value.code is ErrorCode.PROVIDER_ERROR and info.value.retryable
    assert info.value.retry_after is None
    # The rejection was for one handshake only.
    stream = await stt(fake).open_stream()
    await stream.aclose()


async def test_a_bad_request_is_not_retryable_and_quotes_deepgram(fake: FakeDeepgram) -> None:
    with pytest.raises(ProviderError) as info:
        await stt(fake, extra_params={"encoding": "speex"}).open_stream()
    assert info.value.code is ErrorCode.PROVIDER_ERROR and not info.value.retryable
    assert "needs a known encoding" in info.value.message


async def test_a_refused_connection_is_a_network_error() -> None:
    with pytest.raises(ProviderError) as info:
        await DeepgramSTT(SECRET, f"ws://127.0.0.1:{free_port()}").open_stream()
    assert info.value.code is ErrorCode.NETWORK_ERROR and info.value.retryable
    assert_no_secret(info.value, SECRET)


async def test_a_dropped_connection_ends_iteration_with_a_network_error(
    fake: FakeDeepgram,
) -> None:
    fake.drop_next_listen_after(4000)
    stream = await stt(fake).open_stream()
    await push(stream, tone(0.5))
    with pytest.raises(ProviderError) as info:
        await events_until_finals(stream, 1)
    assert info.value.code is ErrorCode.NETWORK_ERROR and info.value.retryable
    assert "no close frame" in info.value.message and fake.listens[0].dropped
    with pytest.raises(StopAsyncIteration):  # and it stays ended
        await anext(aiter(stream))
    stream.push_audio(tone(0.1))  # ignored, not raised: the session replays on a new stream
    await asyncio.wait_for(stream.aclose(), 1)


async def test_the_key_is_not_logged_nor_in_repr(
    fake: FakeDeepgram, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    recogniser = stt(fake)
    stream = await recogniser.open_stream()
    await stream.aclose()
    # The fake server's own (uvicorn) debug log shows what it received; the client side is
    # everything else, websockets' handshake logging included.
    client_side = [r for r in caplog.records if not r.name.startswith("uvicorn")]
    assert any("request id" in r.getMessage() for r in client_side)
    assert not [r for r in client_side if API_KEY in r.getMessage()]
    assert API_KEY not in repr(recogniser) and API_KEY not in recogniser.url


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="encoding"):
        DeepgramSTT("k", encoding="opus")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="api_key"):
        DeepgramSTT("")
    assert DeepgramSTT("k").url.startswith("wss://api.deepgram.com/v1/listen?model=nova-3&")
    assert DeepgramSTT("k", "https://dg.example/").url.startswith("wss://dg.example/v1/listen?")


# ---------------------------------------------------------------------- in a session


async def test_a_turn_goes_through_deepgram_in_a_session(fake: FakeDeepgram) -> None:
    fake.next_transcripts.append("What time is it?")
    session, transport, rec = build(stt=stt(fake))
    await session.start()
    await feed(session, tone(0.6) + silence(0.6))
    await wait_for(lambda: rec.kinds("user_turn"), within=5)
    assert rec.kinds("user_turn")[0]["text"] == "What time is it?"
    assert rec.contexts[0][1] == "What time is it?"
    await wait_for(lambda: transport.audio_bytes > 0)
    await session.stop()
    assert fake.listens[0].messages[-1] == "CloseStream"


async def test_a_transient_503_is_retried_by_the_session(fake: FakeDeepgram) -> None:
    fake.reject_next_listen(503)
    fake.next_transcripts.append("Still here.")
    session, _, rec = build(stt=stt(fake))
    await session.start()
    assert len(fake.listens) == 2  # the refused handshake, then the one that worked
    await feed(session, tone(0.6) + silence(0.6))
    await wait_for(lambda: rec.kinds("user_turn"), within=5)
    assert rec.kinds("user_turn")[0]["text"] == "Still here."
    await session.stop()


async def test_a_dropped_stream_is_reopened_and_the_segment_replayed(fake: FakeDeepgram) -> None:
    fake.drop_next_listen_after(3000)
    fake.next_transcripts.append("Nothing lost.")
    session, _, rec = build(stt=stt(fake))
    await session.start()
    await feed(session, tone(0.8) + silence(0.6))
    await wait_for(lambda: rec.kinds("user_turn"), within=5)
    assert rec.kinds("user_turn")[0]["text"] == "Nothing lost."
    assert rec.kinds("error")[0]["code"] == "network_error"
    assert session.metrics.stt_reconnects == 1
    first, second = fake.listens
    assert first.dropped and second.audio_bytes >= first.audio_bytes
    await session.stop()


async def test_a_closed_stream_is_freed_without_the_cyclic_collector(
    fake: FakeDeepgram, no_collector: None
) -> None:
    # One stream per call: one left in a reference cycle waits for a rare full collection.
    fake.next_transcripts.append("Hello.")
    stream = await stt(fake).open_stream()
    await push(stream, tone(0.6))
    stream.flush()
    await events_until_finals(stream, 1)
    await stream.aclose()
    ref = weakref.ref(stream)
    del stream
    for _ in range(10):  # the socket's own tasks wind down
        await asyncio.sleep(0.01)
    assert ref() is None, [type(r).__name__ for r in gc.get_referrers(ref())]
