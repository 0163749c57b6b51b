"""Incremental transcription for recognisers that only take whole clips.

A batch recogniser (a REST transcription API, say) cannot stream. So that the transcript is
ready when the caller stops, the audio is cut into chunks at the VAD's pauses (each `flush()`)
and, inside a long stretch of speech, at `max_chunk_seconds`; each chunk is transcribed in the
background while the caller keeps talking. The stream keeps the STTStream contract: one final
per flush, with the text of every chunk of that segment.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Protocol

from session.interfaces import TranscriptEvent
from session.tasks import reap


class BatchSTT(Protocol):
    """A recogniser that transcribes a complete clip (`streaming = False`)."""

    name: str
    sample_rate: int
    streaming: bool

    async def transcribe(self, pcm: bytes) -> str: ...


_END = object()


class ChunkedSTTStream:
    def __init__(self, stt: BatchSTT, max_chunk_seconds: float) -> None:
        self._stt = stt
        self._max_bytes = int(max_chunk_seconds * stt.sample_rate) * 2
        self._buffer = bytearray()
        # (clip, closes_segment) in arrival order; transcribed strictly in that order.
        self._chunks: asyncio.Queue[tuple[bytes, bool] | object] = asyncio.Queue()
        self._events: asyncio.Queue[TranscriptEvent | BaseException | object] = asyncio.Queue()
        self._worker = asyncio.create_task(self._transcribe_chunks())
        self.chunks_transcribed = 0

    def push_audio(self, pcm: bytes) -> None:
        self._buffer += pcm
        if len(self._buffer) >= self._max_bytes:
            self._cut(closes_segment=False)

    def flush(self) -> None:
        self._cut(closes_segment=True)

    def _cut(self, *, closes_segment: bool) -> None:
        clip, self._buffer = bytes(self._buffer), bytearray()
        self._chunks.put_nowait((clip, closes_segment))

    async def _transcribe_chunks(self) -> None:
        segment: list[str] = []
        try:
            while (item := await self._chunks.get()) is not _END:
                clip, closes_segment = item  # type: ignore[misc]
                if clip:
                    text = (await self._stt.transcribe(clip)).strip()
                    self.chunks_transcribed += 1
                    if text:
                        segment.append(text)
                if closes_segment:
                    self._events.put_nowait(TranscriptEvent(" ".join(segment), is_final=True))
                    segment = []
                elif segment:
                    self._events.put_nowait(TranscriptEvent(" ".join(segment), is_final=False))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._events.put_nowait(exc)
            return
        self._events.put_nowait(_END)

    def __aiter__(self) -> AsyncIterator[TranscriptEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[TranscriptEvent]:
        while True:
            item = await self._events.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]

    async def aclose(self) -> None:
        self._chunks.put_nowait(_END)
        self._worker.cancel()
        await reap(self._worker)  # its frame refers to this stream, which holds it
        self._events.put_nowait(_END)
