"""The Twilio Media Streams call leg as a session `Transport` (thin asyncio adapter).

All protocol rules live in `MediaStreamConnection`; this class only moves frames between the
websocket and the session and converts μ-law <-> 16-bit PCM at 8 kHz.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from typing import Protocol

from session.interfaces import TransportListener
from telephony.g711 import pcm_to_ulaw, ulaw_to_pcm
from telephony.twilio.connection import MediaStreamConnection, PlayoutMark
from telephony.twilio.messages import Dtmf, Media, Start, Stop, TwilioEvent, TwilioProtocolError

log = logging.getLogger(__name__)

# One media message carries up to a second of audio: Twilio buffers what it is sent, and fewer,
# larger messages cost far less per call than one message per 20 ms frame.
MAX_MEDIA_BYTES = 8000


class TextSocket(Protocol):
    async def send_text(self, data: str) -> None: ...

    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


class TwilioTransport:
    sample_rate = 8000

    def __init__(self, socket: TextSocket, *, call_label: str = "") -> None:
        self.connection = MediaStreamConnection()
        self.listener: TransportListener | None = None
        self.protocol_errors: Counter[str] = Counter()
        self.last_error: TwilioProtocolError | None = None
        self.closed = False
        self._socket = socket
        self._label = call_label

    # ------------------------------------------------------------------ inbound

    def feed(self, data: str | bytes) -> TwilioEvent | PlayoutMark | None:
        """Handles one websocket frame; returns the event, or None for a bad frame."""
        try:
            event = self.connection.receive(data)
        except TwilioProtocolError as exc:
            self.protocol_errors[exc.kind.value] += 1
            self.last_error = exc
            log.warning(
                "twilio protocol error on %s: %s (%s)",
                self._label or self.connection.stream_sid or "new stream",
                exc,
                exc.kind.value,
                extra={"error_kind": exc.kind.value},
            )
            return None
        listener = self.listener
        if type(event) is Media:
            if listener is not None and event.track != "outbound":
                listener.process_audio(ulaw_to_pcm(event.payload))
        elif isinstance(event, PlayoutMark):
            if listener is not None:
                listener.handle_playout(event.name, event.played)
        elif isinstance(event, Dtmf):
            if listener is not None:
                listener.handle_dtmf(event.digit)
        elif isinstance(event, Stop):
            self.closed = True
            if listener is not None:
                listener.handle_transport_closed("stop")
        elif isinstance(event, Start):
            self._label = self._label or event.call_sid
        return event

    def socket_closed(self) -> None:
        """The websocket went away without a `stop` (the caller hung up, a network drop)."""
        if not self.closed:
            self.closed = True
            if self.listener is not None:
                self.listener.handle_transport_closed("disconnected")

    # ----------------------------------------------------------------- outbound

    async def send_audio(self, pcm: bytes) -> None:
        if self.closed:
            return
        ulaw = pcm_to_ulaw(pcm)
        for offset in range(0, len(ulaw), MAX_MEDIA_BYTES):
            await self._socket.send_text(
                self.connection.send_media(ulaw[offset : offset + MAX_MEDIA_BYTES])
            )

    async def mark(self, name: str) -> None:
        if not self.closed:
            await self._socket.send_text(self.connection.send_mark(name))

    async def clear(self) -> None:
        if not self.closed:
            await self._socket.send_text(self.connection.send_clear())

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(RuntimeError):  # already closed by the peer
            await self._socket.close(1000, "session ended")
