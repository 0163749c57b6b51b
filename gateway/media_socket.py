"""The Media Streams websocket: one Twilio call leg, fed into a voice session."""

from __future__ import annotations

import contextlib
import logging

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from gateway.runtime import GatewayRuntime
from session.errors import SessionError
from session.session import VoiceSession
from telephony.twilio.messages import Start
from telephony.twilio.transport import TwilioTransport

log = logging.getLogger(__name__)

router = APIRouter()

POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011


@router.websocket("/twilio/stream")
async def media_stream(websocket: WebSocket) -> None:
    runtime: GatewayRuntime = websocket.app.state.runtime
    checker = runtime.signature_checker
    if checker is not None and not checker.check_websocket(
        runtime.stream_url, websocket.headers.get("x-twilio-signature")
    ):
        log.warning("rejected media stream: bad or missing X-Twilio-Signature")
        await websocket.accept()
        await websocket.close(POLICY_VIOLATION, "invalid Twilio signature")
        return
    await websocket.accept()
    transport = TwilioTransport(websocket)
    session: VoiceSession | None = None
    reason = "disconnected"
    try:
        while not transport.closed:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
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
                    await websocket.close(INTERNAL_ERROR, "the call could not start")
                    return
        else:
            reason = "stop"
    except WebSocketDisconnect:
        pass
    finally:
        transport.socket_closed()
        if session is not None:
            await runtime.end_call(session, reason)
        if (
            websocket.application_state is WebSocketState.CONNECTED
            and websocket.client_state is WebSocketState.CONNECTED
        ):
            # The peer may vanish between the check and the close frame.
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await websocket.close()


def _record_protocol_error(
    runtime: GatewayRuntime, transport: TwilioTransport, session: VoiceSession | None
) -> None:
    """Puts a rejected frame in the call's event log, so ops can see it against the call."""
    error = transport.last_error
    if session is not None and error is not None:
        runtime.protocol_error(session.session_id, error.kind.value, str(error))
