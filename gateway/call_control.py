"""Live-call operations (say, hang up, transfer): one table, state checked first.

An operation for a call this instance carries runs here; for a call on another instance it is
sent over the command bus and that instance's answer comes back. Each failure has a status:
404 no such session, 409 the call is not in a state the operation fits, 502 Twilio refused,
503 the owner or the store cannot be reached, 504 the owner did not answer.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from infra.commands import CommandTimeout, CommandUndeliverable
from infra.store import StoreUnavailable
from session.session import VoiceSession
from telephony.twilio.rest import TwilioRestError

if TYPE_CHECKING:
    from gateway.runtime import GatewayRuntime

log = logging.getLogger(__name__)

SPEAKABLE = frozenset({"listening", "processing", "speaking"})
LIVE = frozenset({"starting", "listening", "processing", "speaking", "paused"})


class CallControlError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


Run = Callable[["GatewayRuntime", VoiceSession, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Operation:
    states: frozenset[str]
    run: Run


async def _say(runtime: GatewayRuntime, session: VoiceSession, args: dict[str, Any]) -> dict:
    handle = session.say(args["text"], allow_interruptions=args.get("allow_interruptions", True))
    return {"speech_id": handle.id}


async def _hangup(runtime: GatewayRuntime, session: VoiceSession, args: dict[str, Any]) -> dict:
    # A SIP call's transport sends the BYE when the session ends.
    if session.metadata.get("transport") != "sip" and runtime.twilio_rest is not None:
        try:
            await runtime.twilio_rest.hangup(session.metadata["call_sid"])
        except TwilioRestError as exc:
            # Closing the media stream ends the call anyway: <Connect> was the last verb.
            log.warning(
                "Twilio hangup of %s failed (%s): closing the stream", session.session_id, exc
            )
    await runtime.end_call(session, "hangup")
    return {"ended": True}


async def _transfer(runtime: GatewayRuntime, session: VoiceSession, args: dict[str, Any]) -> dict:
    if session.metadata.get("transport") == "sip":
        raise CallControlError(409, "transfer is only supported for Twilio calls (no SIP REFER)")
    if runtime.twilio_rest is None:
        raise CallControlError(
            503, "transfer needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN to be configured"
        )
    try:
        await runtime.twilio_rest.transfer(
            session.metadata["call_sid"], args["to"], caller_id=args.get("caller_id")
        )
    except ValueError as exc:
        raise CallControlError(422, str(exc)) from None
    except TwilioRestError as exc:
        raise CallControlError(502, f"Twilio refused the transfer: {exc}") from None
    await runtime.end_call(session, "transferred")
    return {"transferred_to": args["to"]}


OPERATIONS: dict[str, Operation] = {
    "say": Operation(SPEAKABLE, _say),
    "hangup": Operation(LIVE, _hangup),
    "transfer": Operation(LIVE, _transfer),
}


async def run_here(
    runtime: GatewayRuntime, session_id: str, op: str, args: dict[str, Any]
) -> dict[str, Any]:
    operation = OPERATIONS[op]
    session = runtime.live.get(session_id)
    if session is None:
        raise CallControlError(409, f"session {session_id} is not live")
    state = session.state.value
    if state not in operation.states:
        raise CallControlError(409, f"cannot {op} while the session is {state}")
    return await operation.run(runtime, session, args)


async def dispatch(
    runtime: GatewayRuntime, session_id: str, op: str, args: dict[str, Any]
) -> dict[str, Any]:
    """Runs `op` wherever the call lives."""
    try:
        record = await runtime.store.get_session(session_id)
    except StoreUnavailable:
        record = None
        if session_id not in runtime.live:
            raise CallControlError(503, "the store is unavailable") from None
    if record is None and session_id not in runtime.live:
        raise CallControlError(404, f"no session {session_id!r}")
    if record is not None and record.ended:
        raise CallControlError(409, f"session {session_id} has ended ({record.end_reason})")
    owner = record.instance if record is not None else runtime.instance_id
    if owner == runtime.instance_id or session_id in runtime.live:
        return await run_here(runtime, session_id, op, args)
    command = {"op": op, "session_id": session_id, "args": args}
    try:
        reply = await runtime.bus.send(owner, command)
    except CommandUndeliverable:
        raise CallControlError(
            503, f"instance {owner} that carries the call is unreachable"
        ) from None
    except CommandTimeout:
        raise CallControlError(504, f"instance {owner} did not answer in time") from None
    except StoreUnavailable:
        raise CallControlError(503, "the store is unavailable") from None
    if not reply.get("ok"):
        raise CallControlError(int(reply.get("status", 500)), str(reply.get("detail", "failed")))
    return dict(reply.get("result") or {})


def command_handler(runtime: GatewayRuntime) -> Callable[[dict[str, Any]], Awaitable[dict]]:
    """Serves operations other instances send for calls on this one."""

    async def handle(command: dict[str, Any]) -> dict[str, Any]:
        op = command.get("op")
        if op not in OPERATIONS:
            return {"ok": False, "status": 422, "detail": f"unknown operation {op!r}"}
        try:
            result = await run_here(runtime, str(command["session_id"]), op, command["args"])
        except CallControlError as exc:
            return {"ok": False, "status": exc.status, "detail": exc.detail}
        return {"ok": True, "result": result}

    return handle
