"""Sans-I/O state of one gateway-side Twilio media stream (one websocket, one call leg).

`receive()` takes each text frame from Twilio and returns a typed event after checking it fits
the stream: order (`connected`, one `start`, then media/dtmf/mark, then `stop`) and identity (every
message carries the stream SID that `start` announced). The `send_*` methods return the text to
write back and keep the bookkeeping for marks, so the session learns what the caller really heard.

No sockets, no clock: the asyncio transport feeds frames in and writes strings out.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum, auto
from typing import Final

from telephony.twilio.messages import (
    Connected,
    Dtmf,
    Mark,
    Media,
    ProtocolErrorKind,
    Start,
    Stop,
    TwilioEvent,
    TwilioProtocolError,
    encode_clear,
    encode_mark,
    encode_media,
    parse_message,
)

__all__ = ["MediaStreamConnection", "PlayoutMark"]


@dataclass(frozen=True, slots=True)
class PlayoutMark:
    """Twilio's echo of a mark the gateway sent.

    `played` is True when the audio before the mark was heard in full, False when a `clear`
    discarded it (the mark was still pending when the gateway sent `clear`).
    """

    name: str
    played: bool


class _Phase(Enum):
    OPENED = auto()  # nothing received yet
    CONNECTED = auto()  # `connected` seen, waiting for `start`
    STREAMING = auto()  # `start` seen
    STOPPED = auto()  # `stop` seen: nothing more may arrive


# Every legal transition, in one place. A (phase, event) pair missing here is UNEXPECTED_EVENT.
# `start` is accepted as the first message because some proxies drop `connected`.
_TRANSITIONS: Final[dict[tuple[_Phase, type[TwilioEvent]], _Phase]] = {
    (_Phase.OPENED, Connected): _Phase.CONNECTED,
    (_Phase.OPENED, Start): _Phase.STREAMING,
    (_Phase.CONNECTED, Start): _Phase.STREAMING,
    (_Phase.STREAMING, Media): _Phase.STREAMING,
    (_Phase.STREAMING, Dtmf): _Phase.STREAMING,
    (_Phase.STREAMING, Mark): _Phase.STREAMING,
    (_Phase.STREAMING, Stop): _Phase.STOPPED,
}

_EVENT_NAMES: Final[dict[type[TwilioEvent], str]] = {
    Connected: "connected",
    Start: "start",
    Media: "media",
    Dtmf: "dtmf",
    Mark: "mark",
    Stop: "stop",
}

_STREAMING: Final = _Phase.STREAMING


class MediaStreamConnection:
    """Protocol state for one Media Streams websocket, seen from the gateway.

    A message that fails a check raises TwilioProtocolError and changes nothing, so the caller
    can log it and keep feeding frames.
    """

    __slots__ = ("_cleared", "_pending", "_phase", "_start", "_stream_sid")

    def __init__(self) -> None:
        self._phase = _Phase.OPENED
        self._start: Start | None = None
        self._stream_sid: str | None = None
        # Names of marks sent and not yet echoed, oldest first (Twilio echoes them in order).
        self._pending: deque[str] = deque()
        # The first `_cleared` pending marks were pending when `clear` was last sent: a `clear`
        # covers every mark sent before it, so the cleared ones are always a prefix.
        self._cleared = 0

    # -- state

    @property
    def stream_sid(self) -> str | None:
        return self._stream_sid

    @property
    def start(self) -> Start | None:
        return self._start

    @property
    def stopped(self) -> bool:
        return self._phase is _Phase.STOPPED

    @property
    def pending_marks(self) -> int:
        return len(self._pending)

    # -- inbound

    def receive(self, data: str | bytes) -> TwilioEvent | PlayoutMark:
        """Parse and check one frame from Twilio.

        Returns the event, except that a `mark` echo comes back as a PlayoutMark saying whether
        its audio was played or cleared.
        """
        event = parse_message(data)
        # Hot path: media while streaming needs only the identity check.
        if type(event) is Media and self._phase is _STREAMING:
            if event.stream_sid != self._stream_sid:
                raise self._wrong_stream(event.stream_sid, "media")
            return event
        return self._transition(event)

    def _transition(self, event: TwilioEvent) -> TwilioEvent | PlayoutMark:
        name = _EVENT_NAMES[type(event)]
        next_phase = _TRANSITIONS.get((self._phase, type(event)))
        if next_phase is None:
            raise TwilioProtocolError(
                ProtocolErrorKind.UNEXPECTED_EVENT,
                f"{name} message not allowed {self._where()}",
                name,
            )
        if isinstance(event, Start):
            self._start = event
            self._stream_sid = event.stream_sid
        elif not isinstance(event, Connected) and event.stream_sid != self._stream_sid:
            raise self._wrong_stream(event.stream_sid, name)
        result: TwilioEvent | PlayoutMark = event
        if isinstance(event, Mark):
            result = self._resolve_mark(event.name)  # may raise: phase stays as it was
        self._phase = next_phase
        return result

    def _resolve_mark(self, name: str) -> PlayoutMark:
        pending = self._pending
        if pending and pending[0] == name:
            index = 0
        else:
            try:
                index = pending.index(name)
            except ValueError:
                raise TwilioProtocolError(
                    ProtocolErrorKind.UNKNOWN_MARK,
                    f"mark message: echo of mark {name[:40]!r}, which is not pending "
                    "(never sent, or already echoed)",
                    "mark",
                ) from None
        del pending[index]
        played = index >= self._cleared
        if not played:
            self._cleared -= 1
        return PlayoutMark(name, played)

    def _wrong_stream(self, got: str, name: str) -> TwilioProtocolError:
        return TwilioProtocolError(
            ProtocolErrorKind.WRONG_STREAM_SID,
            f"{name} message for stream {got[:40]!r}, but this socket carries {self._stream_sid!r}",
            name,
        )

    def _where(self) -> str:
        if self._phase is _Phase.STOPPED:
            return "after stop"
        if self._phase is _STREAMING:
            return "after start"
        return "before start"

    # -- outbound

    def send_media(self, ulaw: bytes) -> str:
        """Text of a `media` message playing `ulaw` (8 kHz μ-law) to the caller."""
        return encode_media(self._outbound_sid("media"), ulaw)

    def send_mark(self, name: str) -> str:
        """Text of a `mark` message; Twilio echoes it once the audio sent before it has played."""
        text = encode_mark(self._outbound_sid("mark"), name)
        self._pending.append(name)
        return text

    def send_clear(self) -> str:
        """Text of a `clear` message, which drops the audio Twilio has buffered.

        Twilio answers a clear by echoing every pending mark at once. From the Media Streams
        WebSocket Messages page, "Mark message": "If your server sends a clear message, Twilio
        empties the audio buffer and sends back `mark` messages matching any remaining `mark`
        messages from your server. Your application can use this information to keep track of
        which `media` messages have been cleared and will not be played." So those echoes do not
        mean the audio was heard: every mark pending now is flagged as cleared.
        """
        text = encode_clear(self._outbound_sid("clear"))
        self._cleared = len(self._pending)
        return text

    def _outbound_sid(self, name: str) -> str:
        if self._phase is not _STREAMING or self._stream_sid is None:
            raise TwilioProtocolError(
                ProtocolErrorKind.UNEXPECTED_EVENT,
                f"cannot send {name} {self._where()}",
                name,
            )
        return self._stream_sid
