"""The SIP UDP listener: a thin asyncio adapter around the sans-I/O `SipEndpoint`.

After every input (a datagram, the timer, an application operation) it sends the datagrams
the endpoint has queued, hands the endpoint's events to the application, and re-arms the one
timer from `get_timer()`. The application's handler runs synchronously and may call the
operations below from inside it; they are applied on the same pass.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from telephony.loop_timer import LoopTimer
from telephony.sip import SipEndpoint, SipEvent

__all__ = ["SipServer", "open_sip_server"]

log = logging.getLogger(__name__)


class SipServer(asyncio.DatagramProtocol):
    def __init__(self, endpoint: SipEndpoint, on_event: Callable[[SipEvent], None]) -> None:
        self.endpoint = endpoint
        self._on_event = on_event
        self._loop = asyncio.get_running_loop()
        self._socket: asyncio.DatagramTransport | None = None
        self._timer = LoopTimer(self._loop, self._on_timer)
        self._pumping = False

    # ------------------------------------------------------------- asyncio protocol

    def connection_made(self, transport: Any) -> None:
        self._socket = transport

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.endpoint.receive_datagram(data, addr, self._loop.time())
        self.pump()

    def error_received(self, exc: Exception) -> None:
        log.debug("SIP socket error: %s", exc)

    # ------------------------------------------------------------- application operations

    def ringing(self, call_id: str) -> None:
        self.endpoint.ringing(call_id)
        self.pump()

    def answer(self, call_id: str, sdp: bytes) -> None:
        self.endpoint.answer(call_id, sdp)
        self.pump()

    def reject(
        self, call_id: str, status: int, reason: str | None = None, retry_after: int | None = None
    ) -> None:
        self.endpoint.reject(call_id, status, reason, retry_after)
        self.pump()

    def hangup(self, call_id: str) -> None:
        self.endpoint.hangup(call_id)
        self.pump()

    def answer_reinvite(self, call_id: str, sdp: bytes) -> None:
        self.endpoint.answer_reinvite(call_id, sdp)
        self.pump()

    def reject_reinvite(self, call_id: str, status: int = 488) -> None:
        self.endpoint.reject_reinvite(call_id, status)
        self.pump()

    def close(self) -> None:
        self._timer.close()
        if self._socket is not None:
            self._socket.close()

    # ------------------------------------------------------------- the pump

    def pump(self) -> None:
        """Send what is due, deliver events, re-arm the timer. Re-entrant calls (an operation
        from inside the event handler) are folded into the pass already running."""
        if self._pumping:
            return
        self._pumping = True
        try:
            endpoint = self.endpoint
            while True:
                for data, addr in endpoint.datagrams_to_send(self._loop.time()):
                    if self._socket is not None:
                        self._socket.sendto(data, addr)
                event = endpoint.next_event()
                if event is None:
                    break
                try:
                    self._on_event(event)
                except Exception:  # one call's bug must not stop the listener
                    log.exception("SIP event handler failed on %r", event)
        finally:
            self._pumping = False
        self._timer.arm(self.endpoint.get_timer())

    def _on_timer(self) -> None:
        self.endpoint.handle_timer(self._loop.time())
        self.pump()


async def open_sip_server(
    endpoint: SipEndpoint,
    on_event: Callable[[SipEvent], None],
    host: str,
    port: int,
    *,
    reuse_port: bool = False,
) -> SipServer:
    """Binds the SIP UDP socket at `host`:`port` (an OSError says why it could not).

    `reuse_port` lets worker processes share the port: the kernel hashes each datagram's
    source address to one socket, so a trunk's requests for a dialog keep reaching the worker
    that holds it while the set of workers stays the same."""
    loop = asyncio.get_running_loop()
    _, server = await loop.create_datagram_endpoint(
        lambda: SipServer(endpoint, on_event), local_addr=(host, port), reuse_port=reuse_port
    )
    return server
