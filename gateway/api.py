"""The ops REST API: sessions on every instance, live-call control, routes, outbound calls.

Every route needs `Authorization: Bearer <API_TOKEN>`: 401 without it, 403 with a wrong one.
Errors are JSON `{"detail": ...}`: 404 unknown session or route, 409 an operation that does
not fit the call's state, 422 invalid input, 502 Twilio refused, 503 the store, an instance or
Twilio is not available, 504 the instance carrying the call did not answer.
"""

from __future__ import annotations

import re
import secrets
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from gateway.call_control import CallControlError, dispatch
from gateway.provider_wiring import ProviderConfigError
from gateway.runtime import GatewayRuntime
from infra.routes import Route, RouteError, is_route_number
from infra.store import StoreUnavailable
from providers import registry
from providers.registry import UnknownProviderError
from telephony.twilio.rest import TwilioRestError

_bearer = HTTPBearer(auto_error=False)
_EVENT_CURSOR = re.compile(r"[0-9]+(-[0-9]+)?")


def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    runtime: GatewayRuntime = request.app.state.runtime
    if credentials is None:
        raise HTTPException(
            status_code=401,
            detail="missing bearer token (Authorization: Bearer <API_TOKEN>)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not secrets.compare_digest(credentials.credentials, runtime.settings.api_token):
        raise HTTPException(status_code=403, detail="invalid API token")


router = APIRouter(prefix="/api", dependencies=[Depends(require_token)])


def _runtime(request: Request) -> GatewayRuntime:
    return request.app.state.runtime


def _store_down() -> HTTPException:
    return HTTPException(status_code=503, detail="the store is unavailable; try again shortly")


# ------------------------------------------------------------------------------ sessions


@router.get("/sessions", tags=["sessions"], summary="Sessions on every instance, newest first")
async def list_sessions(
    request: Request,
    state: str | None = None,
    number: Annotated[str | None, Query(description="matches the caller or the callee")] = None,
    instance: str | None = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    try:
        records, total = await _runtime(request).store.list_sessions(
            state=state, number=number, instance=instance, offset=offset, limit=limit
        )
    except StoreUnavailable:
        raise _store_down() from None
    return {
        "sessions": [r.to_dict() for r in records],
        "total": total,
        "offset": offset,
        "limit": limit,
    }


@router.get("/sessions/{session_id}", tags=["sessions"], summary="One session, with live state")
async def get_session(request: Request, session_id: str) -> dict[str, Any]:
    runtime = _runtime(request)
    try:
        record = await runtime.store.get_session(session_id)
    except StoreUnavailable:
        raise _store_down() from None
    if record is None:
        raise HTTPException(status_code=404, detail=f"no session {session_id!r}")
    body = record.to_dict()
    live = runtime.live.get(session_id)
    if live is not None:
        body["live"] = {
            "state": live.state.value,
            "turns": live.metrics.turns,
            "interruptions": live.metrics.interruptions,
            "preemptive_hits": live.metrics.preemptive_hits,
            "reply_latencies": list(live.metrics.reply_latencies)[-10:],
        }
    return body


@router.get(
    "/sessions/{session_id}/events",
    tags=["sessions"],
    summary="Transcripts, replies, state changes and errors; `next` is the cursor for `after`",
)
async def get_events(
    request: Request,
    session_id: str,
    after: Annotated[str, Query(description="return events after this cursor")] = "0",
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> dict[str, Any]:
    if not _EVENT_CURSOR.fullmatch(after):
        raise HTTPException(status_code=422, detail=f"after must be an event cursor, got {after!r}")
    store = _runtime(request).store
    try:
        if await store.get_session(session_id) is None:
            raise HTTPException(status_code=404, detail=f"no session {session_id!r}")
        events = await store.events(session_id, None if after == "0" else after, limit)
    except StoreUnavailable:
        raise _store_down() from None
    return {"events": events, "next": events[-1]["seq"] if events else after}


class SayBody(BaseModel):
    text: str = Field(min_length=1, max_length=5000)
    allow_interruptions: bool = True


class TransferBody(BaseModel):
    to: str = Field(description="E.164 number or sip: URI")
    caller_id: str | None = None


async def _control(request: Request, session_id: str, op: str, args: dict[str, Any]) -> dict:
    try:
        return await dispatch(_runtime(request), session_id, op, args)
    except CallControlError as exc:
        raise HTTPException(status_code=exc.status, detail=exc.detail) from None


@router.post("/sessions/{session_id}/say", tags=["control"], summary="Speak into a live call")
async def say(request: Request, session_id: str, body: SayBody) -> dict[str, Any]:
    return await _control(request, session_id, "say", body.model_dump())


@router.post("/sessions/{session_id}/hangup", tags=["control"], summary="End a live call")
async def hangup(request: Request, session_id: str) -> dict[str, Any]:
    return await _control(request, session_id, "hangup", {})


@router.post(
    "/sessions/{session_id}/transfer",
    tags=["control"],
    summary="Transfer a live call to a number (Twilio <Dial>)",
)
async def transfer(request: Request, session_id: str, body: TransferBody) -> dict[str, Any]:
    return await _control(request, session_id, "transfer", body.model_dump())


# -------------------------------------------------------------------------------- routes


def _known_names() -> dict[str, set[str]]:
    return {
        "agent": set(registry.AGENT_PROVIDERS),
        "stt": set(registry.STT_PROVIDERS),
        "tts": set(registry.TTS_PROVIDERS),
        "vad": set(registry.VAD_PROVIDERS),
    }


def _check_number(number: str) -> None:
    if not is_route_number(number):
        raise HTTPException(
            status_code=422, detail=f'a route number is E.164 or "default", got {number!r}'
        )


@router.get("/routes", tags=["routes"], summary="Every route, by number")
async def list_routes(request: Request) -> dict[str, Any]:
    try:
        return {"routes": await _runtime(request).store.list_routes()}
    except StoreUnavailable:
        raise _store_down() from None


@router.get("/routes/{number}", tags=["routes"], summary="The route for one number")
async def get_route(request: Request, number: str) -> dict[str, Any]:
    _check_number(number)
    try:
        route = await _runtime(request).store.get_route(number)
    except StoreUnavailable:
        raise _store_down() from None
    if route is None:
        raise HTTPException(status_code=404, detail=f"no route for {number!r}")
    return route


@router.put(
    "/routes/{number}",
    tags=["routes"],
    summary="Create or replace a route; applies to the next call, no restart",
)
async def put_route(
    request: Request, number: str, body: Annotated[dict[str, Any], Body()]
) -> dict[str, Any]:
    _check_number(number)
    runtime = _runtime(request)
    if "number" in body and body["number"] != number:
        raise HTTPException(status_code=422, detail="the body's number differs from the URL's")
    try:
        route = Route.from_dict({**body, "number": number})
        route.validate_names(_known_names())
        runtime.catalog.for_route(route)  # a provider missing its key is refused now
    except RouteError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    except (ProviderConfigError, UnknownProviderError) as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    try:
        await runtime.store.put_route(number, route.to_dict())
    except StoreUnavailable:
        raise _store_down() from None
    return route.to_dict()


@router.delete("/routes/{number}", tags=["routes"], status_code=204, summary="Remove a route")
async def delete_route(request: Request, number: str) -> Response:
    _check_number(number)
    try:
        deleted = await _runtime(request).store.delete_route(number)
    except StoreUnavailable:
        raise _store_down() from None
    if not deleted:
        raise HTTPException(status_code=404, detail=f"no route for {number!r}")
    return Response(status_code=204)


# --------------------------------------------------------------------------------- calls


class CallBody(BaseModel):
    to: str
    from_: str = Field(alias="from")
    route: str = "default"


@router.post("/calls", tags=["calls"], status_code=201, summary="Place an outbound call")
async def create_call(request: Request, body: CallBody) -> dict[str, Any]:
    runtime = _runtime(request)
    _check_number(body.route)
    if runtime.twilio_rest is None:
        raise HTTPException(
            status_code=503,
            detail="outbound calls need TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN",
        )
    base = runtime.settings.public_url
    try:
        call_sid = await runtime.twilio_rest.create_call(
            body.to,
            body.from_,
            f"{base}/twilio/voice?{urlencode({'route': body.route})}",
            status_callback=f"{base}/twilio/status",
        )
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    except TwilioRestError as exc:
        raise HTTPException(status_code=502, detail=f"Twilio refused the call: {exc}") from None
    return {"call_sid": call_sid, "route": body.route}
