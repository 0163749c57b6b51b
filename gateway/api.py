"""The ops REST API: sessions on this instance and what happened in each."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.runtime import GatewayRuntime

_bearer = HTTPBearer(auto_error=False)


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


router = APIRouter(prefix="/api", tags=["sessions"], dependencies=[Depends(require_token)])


def _runtime(request: Request) -> GatewayRuntime:
    return request.app.state.runtime


@router.get("/sessions", summary="Sessions on this instance, newest first")
def list_sessions(
    request: Request,
    state: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    records = reversed(_runtime(request).calls.records())
    items = [r.summary() for r in records if state is None or r.state == state]
    return {"sessions": items[:limit]}


@router.get("/sessions/{session_id}", summary="One session's record")
def get_session(request: Request, session_id: str) -> dict[str, Any]:
    record = _runtime(request).calls.get(session_id)
    if record is None:
        raise HTTPException(status_code=404, detail=f"no session {session_id!r}")
    return record.summary()


@router.get("/sessions/{session_id}/events", summary="Transcripts, replies and state changes")
def get_events(
    request: Request,
    session_id: str,
    after: Annotated[int, Query(ge=0, description="return events with seq > after")] = 0,
) -> dict[str, Any]:
    calls = _runtime(request).calls
    if calls.get(session_id) is None:
        raise HTTPException(status_code=404, detail=f"no session {session_id!r}")
    events, last = calls.events_after(session_id, after)
    return {"events": events, "next": last}
