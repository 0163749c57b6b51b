"""A customer's agent server, speaking the webhook protocol of `providers.agent.webhook`.

The test picks how it answers (`mode`): a whole JSON reply, chunked ``text/plain``, or
Server-Sent Events. It checks the bearer secret and the request document, records every
request, and has switches for the failures a real customer server has: an error status (500,
503, 429 with Retry-After), a slow answer (the client's timeout), a connection dropped
mid-reply, a pause after the first piece.

A real uvicorn server on 127.0.0.1, on a free port, in a background thread.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.serve import serve_in_thread

SECRET = "test-secret"
PATH = "/agent"
Mode = Literal["json", "chunked", "sse"]
FIELDS: dict[str, type] = {
    "session_id": str,
    "metadata": dict,
    "transcript": str,
    "dtmf": str,
    "history": list,
}


def echo_reply(body: dict[str, Any]) -> str:
    if body["dtmf"]:
        return f"You pressed {body['dtmf']}."
    return f"You said: {body['transcript']}. Anything else?"


def pieces(text: str, words: int = 2) -> list[str]:
    """Word groups with their trailing spaces, like a model's tokens: joined, they give `text`."""
    tokens = re.findall(r"\S+\s*", text)
    return ["".join(tokens[i : i + words]) for i in range(0, len(tokens), words)]


@dataclass
class FakeAgentWebhook:
    url: str = ""
    mode: Mode = "json"
    reply: Callable[[dict[str, Any]], str] = echo_reply
    sse_json: bool = False  # SSE data as {"text": ...} objects instead of plain text
    # (content type, body) to answer with instead: for replies that break the protocol.
    raw: tuple[str | None, bytes] | None = None
    raw_status: int = 200
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    _failures: list[tuple[int, float | None]] = field(default_factory=list)
    _slow: list[float] = field(default_factory=list)
    _drops: int = 0
    _gate: threading.Event | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self._lock:
            self.mode = "json"
            self.reply = echo_reply
            self.sse_json = False
            self.raw = None
            self.raw_status = 200
            self.requests.clear()
            self.headers.clear()
            self._failures.clear()
            self._slow.clear()
            self._drops = 0
            self._gate = None

    def fail_next(self, status: int, times: int = 1, retry_after: float | None = None) -> None:
        with self._lock:
            self._failures.extend([(status, retry_after)] * times)

    def slow_next(self, seconds: float, times: int = 1) -> None:
        """The next `times` requests wait `seconds` before any reply byte."""
        with self._lock:
            self._slow.extend([seconds] * times)

    def drop_next(self, times: int = 1) -> None:
        """The next `times` streamed replies are cut after their first piece."""
        with self._lock:
            self._drops += times

    def hold_after_first_piece(self) -> threading.Event:
        gate = threading.Event()
        self._gate = gate
        return gate

    def _take(self) -> tuple[tuple[int, float | None] | None, float, bool]:
        with self._lock:
            failure = self._failures.pop(0) if self._failures else None
            slow = self._slow.pop(0) if self._slow else 0.0
            drop = self._drops > 0
            self._drops -= drop
            return failure, slow, drop

    # ------------------------------------------------------------------ the endpoint

    async def handle(self, request: Request) -> Response:
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        if request.headers.get("authorization") != f"Bearer {SECRET}":
            return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401)
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "the body is not JSON"}, status_code=400)
        if problem := _check(body):
            return JSONResponse({"error": problem}, status_code=400)
        self.requests.append(body)
        failure, slow, drop = self._take()
        if slow:
            await asyncio.sleep(slow)
        if failure is not None:
            status, retry_after = failure
            headers = {"retry-after": f"{retry_after:g}"} if retry_after is not None else None
            return JSONResponse(
                {"error": f"injected failure {status}"}, status_code=status, headers=headers
            )
        if self.raw is not None:
            return Response(self.raw[1], status_code=self.raw_status, media_type=self.raw[0])
        text = self.reply(body)
        if self.mode == "json":
            return JSONResponse({"text": text})
        parts = pieces(text)
        if self.mode == "chunked":
            return StreamingResponse(
                self._stream(parts, drop), media_type="text/plain; charset=utf-8"
            )
        # Event 0 is a comment: hold or cut after the first event that carries text.
        events = self._stream(self._events(parts), drop, cut_after=1)
        return StreamingResponse(events, media_type="text/event-stream")

    def _events(self, parts: list[str]) -> list[str]:
        # A comment and an event name first: the client must skip both.
        events = [": the reply follows\n\n"]
        for part in parts:
            data = json.dumps({"text": part}) if self.sse_json else part
            events.append(f"event: message\ndata: {data}\n\n")
        # Anything after [DONE] must be ignored.
        return [*events, "data: [DONE]\n\n", "data: never said\n\n"]

    async def _stream(
        self, parts: list[str], drop: bool, cut_after: int = 0
    ) -> AsyncIterator[bytes]:
        for n, part in enumerate(parts):
            yield part.encode()
            if n == cut_after:
                if drop:
                    raise ConnectionAbortedError("injected: connection dropped")
                if (gate := self._gate) is not None:
                    await asyncio.to_thread(gate.wait, 10)  # bounded: never outlive the test
            await asyncio.sleep(0)


def _check(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    for name, kind in FIELDS.items():
        if not isinstance(body.get(name), kind):
            return f"{name}: missing or not a {kind.__name__}"
    for turn in body["history"]:
        if not (
            isinstance(turn, dict)
            and turn.get("role") in ("user", "assistant")
            and isinstance(turn.get("text"), str)
        ):
            return "history: each entry must be {role: user|assistant, text}"
    return None


@contextmanager
def run_fake_agent() -> Iterator[FakeAgentWebhook]:
    fake = FakeAgentWebhook()
    app = Starlette(routes=[Route(PATH, fake.handle, methods=["POST"])])
    with serve_in_thread(app, "fake-agent") as url:
        fake.url = url + PATH
        yield fake
