"""One SIP call leg's RTP as a session `Transport` (thin asyncio adapter around `RtpSession`).

All media rules (jitter buffer, pacing, marks, DTMF, symmetric RTP) live in `RtpSession`; this
class owns the UDP socket and the one timer, and after every input (a datagram, a timer, audio
from the session) it sends what is due, hands events to the session and re-arms the timer, the
way aioquic's asyncio protocol drives its connection. The clock is the loop's monotonic clock.

The playout position is the sender's clock: a mark is reported once the audio queued before it
has gone out as RTP, which is when the caller hears it (less network delay).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from session.interfaces import TransportListener
from telephony.loop_timer import LoopTimer
from telephony.rtp_session import AudioReceived, DtmfReceived, PlayoutMark, RtpSession
from telephony.sdp import MediaParams

__all__ = ["RtpTransport"]

log = logging.getLogger(__name__)


class RtpTransport(asyncio.DatagramProtocol):
    def __init__(
        self,
        params: MediaParams,
        *,
        label: str = "",
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.rtp = RtpSession(params)
        self.sample_rate = params.clock_rate
        self.listener: TransportListener | None = None
        self.closed = False
        self.label = label
        self._on_close = on_close
        self._socket: asyncio.DatagramTransport | None = None
        self._loop = asyncio.get_running_loop()
        self._timer = LoopTimer(self._loop, self._on_timer)

    # ------------------------------------------------------------- asyncio protocol

    def connection_made(self, transport: Any) -> None:
        self._socket = transport

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if self.closed:
            return
        now = self._loop.time()
        self.rtp.receive_datagram(data, (str(addr[0]), int(addr[1])), now)
        self._pump(now)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a peer that went away: the call ends by BYE or timeout.
        log.debug("RTP socket error on %s: %s", self.label, exc)

    # ------------------------------------------------------------- session transport

    async def send_audio(self, pcm: bytes) -> None:
        if not self.closed:
            self.rtp.send_audio(pcm)
            self._pump(self._loop.time())

    async def mark(self, name: str) -> None:
        if not self.closed:
            self.rtp.mark(name)
            self._pump(self._loop.time())

    async def clear(self) -> None:
        if not self.closed:
            self.rtp.clear()
            self._pump(self._loop.time())

    async def close(self) -> None:
        """The session ended: stop the media; `on_close` hangs the call up (BYE)."""
        if self.closed:
            return
        on_close = self._on_close
        self._shut()
        if on_close is not None:
            on_close()

    # ------------------------------------------------------------- call control

    def update(self, params: MediaParams) -> None:
        """A re-INVITE renegotiated the stream (hold, resume, another codec)."""
        self.rtp.update(params)
        self._pump(self._loop.time())

    def peer_closed(self, reason: str) -> None:
        """The call ended on the SIP side (BYE, CANCEL, no ACK): tell the session."""
        if self.closed:
            return
        self._shut()
        if self.listener is not None:
            self.listener.handle_transport_closed(reason)

    def _shut(self) -> None:
        self.closed = True
        self._on_close = None  # it refers to the call that refers to us: no cycle left
        self._timer.close()
        if self._socket is not None:
            self._socket.close()

    # ------------------------------------------------------------- the pump

    def _pump(self, now: float) -> None:
        rtp = self.rtp
        socket = self._socket
        for data, addr in rtp.datagrams_to_send(now):
            if socket is not None:
                socket.sendto(data, addr)
        listener = self.listener
        while (event := rtp.next_event()) is not None:
            if listener is None:
                continue  # nothing listens before the session starts: early audio is dropped
            if type(event) is AudioReceived:
                listener.process_audio(event.pcm)
            elif type(event) is PlayoutMark:
                listener.handle_playout(event.name, event.played)
            elif type(event) is DtmfReceived:
                listener.handle_dtmf(event.digit)
        if not self.closed:
            self._timer.arm(rtp.get_timer())

    def _on_timer(self) -> None:
        if self.closed:
            return
        now = self._loop.time()
        self.rtp.handle_timer(now)
        self._pump(now)
