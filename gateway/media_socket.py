"""The Media Streams websocket: one Twilio call leg, fed into a voice session.

Twilio sends a message every 20 ms on every call, so what this endpoint does per message is
most of what a call costs the gateway. It is a plain ASGI endpoint, not a Starlette
`WebSocket` one: the wrapper's state checks and message dicts cost more per message than the
transport's own parsing. Messages reach the transport one of two ways:

- through ASGI `receive()`, one await per message: any ASGI server, and always until the call
  has started;
- directly, once the call has started, when the server offers the `DIRECT_RECEIVE` extension
  (`gateway.asgi_websocket`, which `voice-gateway serve` runs): the server then feeds each
  frame to the transport inside its `data_received`, and this endpoint waits for the end of
  the stream (a `stop`, the peer leaving, or the session closing the socket).

Either way the same happens to each frame, in the same order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from fastapi import APIRouter
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect

from gateway.asgi_websocket import DIRECT_RECEIVE
from gateway.runtime import GatewayRuntime
from session.errors import SessionError
from session.session import VoiceSession
from telephony.twilio.messages import Start
from telephony.twilio.signature import SIGNATURE_HEADER
from telephony.twilio.transport import TwilioTransport

log = logging.getLogger(__name__)

POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011

_SIGNATURE_HEADER = SIGNATURE_HEADER.lower().encode("latin-1")


class AsgiTextSocket:
    """The `TextSocket` a `TwilioTransport` writes to, over raw ASGI `send`.

    Errors are Starlette's, as the transport and the session expect from a socket: sending
    after the close raises RuntimeError, a peer that is gone raises WebSocketDisconnect(1006).
    """

    __slots__ = ("_send", "closed")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.closed = False  # the app sent its close frame (or the peer is known to be gone)

    async def send_text(self, data: str) -> None:
        if self.closed:
            raise RuntimeError('Cannot call "send" once a close message has been sent.')
        try:
            await self._send({"type": "websocket.send", "text": data})
        except OSError:  # uvicorn's ClientDisconnected
            self.closed = True
            raise WebSocketDisconnect(code=1006) from None

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        if self.closed:
            raise RuntimeError('Cannot call "send" once a close message has been sent.')
        self.closed = True
        try:
            await self._send({"type": "websocket.close", "code": code, "reason": reason or ""})
        except OSError:
            raise WebSocketDisconnect(code=1006) from None


class MediaStreamEndpoint:
    """ASGI app for `WS /twilio/stream`."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime: GatewayRuntime = scope["app"].state.runtime
        if (await receive())["type"] != "websocket.connect":
            return  # the peer left before the handshake
        checker = runtime.signature_checker
        signed = checker is None or checker.check_websocket(
            runtime.stream_url, _header(scope, _SIGNATURE_HEADER)
        )
        await send({"type": "websocket.accept"})
        socket = AsgiTextSocket(send)
        if not signed:
            log.warning("rejected media stream: bad or missing X-Twilio-Signature")
            await _close(socket, POLICY_VIOLATION, "invalid Twilio signature")
            return
        transport = TwilioTransport(socket)
        session: VoiceSession | None = None
        reason = "disconnected"
        peer_gone = False
        try:
            while not transport.closed:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    peer_gone = True
                    break
                event = transport.feed(message.get("text") or message.get("bytes") or b"")
                if event is None:
                    _record_protocol_error(runtime, transport, session)
                elif session is None and isinstance(event, Start):
                    try:
                        session = await runtime.start_call(event, transport)
                    except SessionError as exc:
                        # The record says why (state ended, reason error); Twilio hangs up.
                        log.error("call %s could not start: %s", event.call_sid, exc)
                        await _close(socket, INTERNAL_ERROR, "the call could not start")
                        return
                    attach = scope.get("extensions", {}).get(DIRECT_RECEIVE)
                    if attach is not None and not transport.closed:
                        reason, peer_gone = await _receive_directly(
                            attach, runtime, transport, session
                        )
                        break
            else:
                reason = "stop"
        finally:
            transport.socket_closed()
            if session is not None:
                await runtime.end_call(session, reason)
            # The session holds the transport; without this the pair is a reference cycle
            # that only a full collection frees, and full collections are made rare.
            transport.listener = None
            if not peer_gone:
                await _close(socket, 1000, None)


class DirectFeed:
    """The `DirectReceiver` of one started call: each frame goes to the transport at once."""

    __slots__ = ("_feed", "_runtime", "_session", "_transport", "done")

    def __init__(
        self, runtime: GatewayRuntime, transport: TwilioTransport, session: VoiceSession
    ) -> None:
        self._runtime = runtime
        self._transport = transport
        self._feed = transport.feed
        self._session = session
        # (reason, the peer is gone), or the exception a frame raised.
        self.done: asyncio.Future[tuple[str, bool]] = asyncio.get_running_loop().create_future()

    def on_message(self, data: str | bytes) -> None:
        done = self.done
        if done.done():
            return  # past the `stop`: the ASGI loop would not read on either
        try:
            if self._feed(data) is None:
                _record_protocol_error(self._runtime, self._transport, self._session)
        except Exception as exc:  # a bug below the transport: the endpoint task re-raises it
            done.set_exception(exc)
            return
        if self._transport.closed:
            done.set_result(("stop", False))

    def on_disconnect(self, code: int) -> None:
        if not self.done.done():
            self.done.set_result(("disconnected", True))


async def _receive_directly(
    attach: Any, runtime: GatewayRuntime, transport: TwilioTransport, session: VoiceSession
) -> tuple[str, bool]:
    feed = DirectFeed(runtime, transport, session)
    attach(feed)  # feeds what the server queued meanwhile, then every frame as it comes
    return await feed.done


async def _close(socket: AsgiTextSocket, code: int, reason: str | None) -> None:
    if socket.closed:
        return
    with contextlib.suppress(WebSocketDisconnect):  # the peer vanished before the close frame
        await socket.close(code, reason)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def _record_protocol_error(
    runtime: GatewayRuntime, transport: TwilioTransport, session: VoiceSession | None
) -> None:
    """Puts a rejected frame in the call's event log, so ops can see it against the call."""
    error = transport.last_error
    if session is not None and error is not None:
        runtime.protocol_error(session.session_id, error.kind.value, str(error))


router = APIRouter()
router.add_websocket_route("/twilio/stream", MediaStreamEndpoint(), name="media_stream")
