"""What the session needs from the outside world, as `typing.Protocol`s.

Providers are injected, never imported: `session/` knows these shapes and nothing of the
concrete implementations in `providers/` or the transports in `telephony/`.
All audio crossing these interfaces is 16-bit little-endian mono PCM at the component's
declared `sample_rate`; the session resamples at each edge where rates differ.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class TranscriptEvent:
    """A recogniser hypothesis. Interim ones may change; a final one closes a speech segment."""

    text: str
    is_final: bool
    confidence: float | None = None


@runtime_checkable
class STTStream(Protocol):
    """One call's recognition stream.

    The session pushes audio while the caller speaks and calls `flush()` when the VAD says the
    speech segment ended; the stream must then emit one final `TranscriptEvent` for that segment
    (with empty text when nothing was recognised). Iterating yields events until `aclose()`.
    """

    def push_audio(self, pcm: bytes) -> None: ...

    def flush(self) -> None: ...

    def __aiter__(self) -> AsyncIterator[TranscriptEvent]: ...

    async def aclose(self) -> None: ...


class STT(Protocol):
    name: str
    sample_rate: int

    async def open_stream(self) -> STTStream: ...


class VAD(Protocol):
    """Frame classifier. One instance per call (it may keep state between frames)."""

    name: str
    sample_rate: int
    frame_bytes: int  # exact frame size `is_speech` accepts

    def is_speech(self, frame: bytes) -> bool: ...


class TTS(Protocol):
    name: str
    sample_rate: int

    def synthesize(self, text: str) -> AsyncIterator[bytes]:
        """Yields PCM chunks as they are produced; heavy work must not block the loop."""
        ...


class TurnDetector(Protocol):
    def endpointing_delay(self, transcript: str, min_delay: float, max_delay: float) -> float:
        """Silence to wait after speech ends before the turn is over, given what was said."""
        ...


class NoiseFilter(Protocol):
    sample_rate: int

    def process(self, pcm: bytes) -> bytes: ...


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Literal["user", "assistant"]
    text: str


@dataclass(slots=True)
class AgentContext:
    """What an agent sees for one turn."""

    session_id: str
    metadata: Mapping[str, str]
    history: list[ChatMessage] = field(default_factory=list)
    dtmf: str = ""  # keypad digits that made this turn, "" for a spoken turn


AgentReply = str | AsyncIterator[str]
AgentCallable = Callable[[AgentContext, str], Awaitable[AgentReply] | AsyncIterator[str]]


class AgentObject(Protocol):
    """`respond` is a coroutine returning text or a stream, or an async generator itself."""

    def respond(
        self, ctx: AgentContext, transcript: str
    ) -> Awaitable[AgentReply] | AsyncIterator[str]: ...


Agent = AgentCallable | AgentObject


class Transport(Protocol):
    """A call leg's audio path, as the session sees it.

    The transport feeds the session (`process_audio`, `handle_dtmf`, `handle_playout`,
    `handle_transport_closed`) and carries the session's audio to the caller. `mark(name)` asks
    to be told when the caller has heard everything sent before it; the transport reports it
    through `TransportListener.handle_playout(name, played)`, with `played=False` for marks
    whose audio was dropped by `clear()`.
    """

    sample_rate: int

    async def send_audio(self, pcm: bytes) -> None: ...

    async def mark(self, name: str) -> None: ...

    async def clear(self) -> None: ...

    async def close(self) -> None: ...


class TransportListener(Protocol):
    def process_audio(self, pcm: bytes) -> None: ...

    def handle_dtmf(self, digit: str) -> None: ...

    def handle_playout(self, name: str, played: bool) -> None: ...

    def handle_transport_closed(self, reason: str) -> None: ...
