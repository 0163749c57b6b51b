"""A recogniser that hears a fixed script: every speech segment "says" the next line of it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Final

from session.interfaces import TranscriptEvent

__all__ = ["ScriptedSTT", "ScriptedStream"]

DEFAULT_TEXT: Final = "hello"


class ScriptedSTT:
    """Each `flush()` after audio gives the next scripted final transcript; one with no audio
    pushed since the previous flush gives a final "" (nothing was said).

    `text` is one line said every time, or a list of lines taken in turn and started again
    from the top when used up. Each stream keeps its own place in the list, so concurrent
    calls do not disturb one another.
    """

    name = "scripted"
    sample_rate = 8000

    def __init__(self, text: str | Sequence[str] = DEFAULT_TEXT) -> None:
        lines = (text,) if isinstance(text, str) else tuple(text)
        if not lines:
            raise ValueError("text: give at least one line")
        self.lines: tuple[str, ...] = lines

    async def open_stream(self) -> ScriptedStream:
        return ScriptedStream(self.lines)


class ScriptedStream:
    __slots__ = ("_closed", "_events", "_heard", "_lines", "_next")

    def __init__(self, lines: Sequence[str]) -> None:
        self._lines = lines
        self._next = 0
        self._heard = False
        self._closed = False
        self._events: asyncio.Queue[TranscriptEvent | None] = asyncio.Queue()

    def push_audio(self, pcm: bytes) -> None:
        if pcm:
            self._heard = True

    def flush(self) -> None:
        if self._closed:
            return
        text = ""
        if self._heard:
            text = self._lines[self._next % len(self._lines)]
            self._next += 1
            self._heard = False
        self._events.put_nowait(TranscriptEvent(text, is_final=True, confidence=1.0))

    def __aiter__(self) -> AsyncIterator[TranscriptEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[TranscriptEvent]:
        while (event := await self._events.get()) is not None:
            yield event

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._events.put_nowait(None)
