"""Small in-memory parts for driving the session engine directly in unit tests.

The call-path tests use the real providers and a real server; these doubles exist so engine
rules (states, barge-in, playout accounting) can be exercised frame by frame.
"""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import AsyncIterator

from session.interfaces import TranscriptEvent

RATE = 8000
FRAME = 320  # 20 ms of 16-bit PCM at 8 kHz


def tone(seconds: float, freq: float = 440.0, amplitude: int = 8000) -> bytes:
    n = int(RATE * seconds)
    return struct.pack(
        f"<{n}h", *(int(amplitude * math.sin(2 * math.pi * freq * i / RATE)) for i in range(n))
    )


def silence(seconds: float) -> bytes:
    return b"\0\0" * int(RATE * seconds)


def frames(pcm: bytes) -> list[bytes]:
    return [pcm[i : i + FRAME] for i in range(0, len(pcm), FRAME)]


class LevelVAD:
    """Voiced means loud: enough to tell a test tone from digital silence."""

    name = "level"
    sample_rate = RATE
    frame_bytes = FRAME

    def is_speech(self, frame: bytes) -> bool:
        samples = struct.unpack(f"<{len(frame) // 2}h", frame)
        return max(abs(s) for s in samples) > 1000


class ScriptedSTT:
    """Emits the next scripted final transcript at each flush.

    `fail_after_bytes` makes the first stream fail once it has received that much audio, like
    a recogniser connection dropping mid-call.
    """

    name = "scripted"
    sample_rate = RATE

    def __init__(self, finals: list[str], fail_after_bytes: int | None = None) -> None:
        self.finals = list(finals)
        self.pushed = 0
        self.fail_after_bytes = fail_after_bytes
        self.streams: list[ScriptedStream] = []

    async def open_stream(self) -> ScriptedStream:
        stream = ScriptedStream(self, self.fail_after_bytes if not self.streams else None)
        self.streams.append(stream)
        return stream


class ScriptedStream:
    def __init__(self, stt: ScriptedSTT, fail_after_bytes: int | None) -> None:
        self._stt = stt
        self._fail_after = fail_after_bytes
        self.received = 0
        self.keep_alives = 0
        self._queue: asyncio.Queue[TranscriptEvent | Exception | None] = asyncio.Queue()

    def push_audio(self, pcm: bytes) -> None:
        self._stt.pushed += len(pcm)
        self.received += len(pcm)
        if self._fail_after is not None and self.received >= self._fail_after:
            self._fail_after = None
            self._queue.put_nowait(ConnectionError("recogniser connection dropped"))

    def flush(self) -> None:
        text = self._stt.finals.pop(0) if self._stt.finals else ""
        self._queue.put_nowait(TranscriptEvent(text, is_final=True))

    def interim(self, text: str) -> None:
        self._queue.put_nowait(TranscriptEvent(text, is_final=False))

    def keep_alive(self) -> None:
        self.keep_alives += 1

    def __aiter__(self) -> AsyncIterator[TranscriptEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[TranscriptEvent]:
        while (event := await self._queue.get()) is not None:
            if isinstance(event, Exception):
                raise event
            yield event

    async def aclose(self) -> None:
        self._queue.put_nowait(None)


class ClipSTT:
    """A recogniser that only takes whole clips: one scripted text per clip."""

    name = "clips"
    sample_rate = RATE
    streaming = False

    def __init__(self, texts: list[str]) -> None:
        self.texts = list(texts)
        self.clips: list[int] = []

    async def transcribe(self, pcm: bytes) -> str:
        self.clips.append(len(pcm))
        await asyncio.sleep(0)
        return self.texts.pop(0) if self.texts else ""


class ToneTTS:
    name = "tone"
    sample_rate = RATE

    def __init__(self, seconds_per_char: float = 0.01, fail_times: int = 0) -> None:
        self.seconds_per_char = seconds_per_char
        self.fail_times = fail_times
        self.calls: list[str] = []

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        self.calls.append(text)
        if self.fail_times:
            self.fail_times -= 1
            raise RuntimeError("synthesis failed")
        pcm = tone(len(text) * self.seconds_per_char)
        for i in range(0, len(pcm), 1600):
            await asyncio.sleep(0)
            yield pcm[i : i + 1600]


class MemoryTransport:
    """Records what the session sends; marks are echoed when the test says so."""

    sample_rate = RATE

    def __init__(self) -> None:
        self.sent: list[tuple[str, object]] = []
        self.pending_marks: list[str] = []
        self.listener = None
        self.closed = False
        self.keep_alives = 0

    @property
    def audio_bytes(self) -> int:
        return sum(len(p) for kind, p in self.sent if kind == "audio")  # type: ignore[arg-type]

    async def send_audio(self, pcm: bytes) -> None:
        self.sent.append(("audio", pcm))

    async def mark(self, name: str) -> None:
        self.sent.append(("mark", name))
        self.pending_marks.append(name)

    async def clear(self) -> None:
        self.sent.append(("clear", None))
        cleared, self.pending_marks = self.pending_marks, []
        for name in cleared:
            self.listener.handle_playout(name, False)

    async def close(self) -> None:
        self.closed = True

    async def keep_alive(self) -> None:
        self.keep_alives += 1

    def play_all(self) -> None:
        marks, self.pending_marks = self.pending_marks, []
        for name in marks:
            self.listener.handle_playout(name, True)
