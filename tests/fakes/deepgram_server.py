"""A local stand-in for Deepgram's API: live transcription and Aura speech on one port.

It speaks the documented wire protocol (see the module docstrings of `providers.stt.deepgram`
and `providers.tts.deepgram_aura`): `Authorization: Token <key>` checked as Deepgram does (401
with an `err_code`/`err_msg` body, and on the websocket handshake a `dg-error` header too),
`/v1/listen` with binary audio up and JSON `Results` down, `KeepAlive`/`Finalize`/`CloseStream`
control messages, and `POST /v1/speak` streaming raw linear16.

Transcripts are deterministic: each `Finalize` is answered with the next entry of
`next_transcripts` (a string, or a list of strings sent as successive `is_final` pieces, the
last with `from_finalize: true`), and an interim result with the entry's first word is sent once
a segment has 0.3 s of audio. Times in results count the audio received, as Deepgram's do.
Switches inject failures: a refused handshake or request (401/429 with Retry-After/5xx), a
connection dropped after some bytes, a `Finalize` left unanswered or answered late.
"""

from __future__ import annotations

import asyncio
import json
import math
import struct
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from tests.fakes.serve import serve_in_thread

API_KEY = "test-key"
INTERIM_AFTER_SECONDS = 0.3
SPEAK_SECONDS_PER_CHAR = 0.05
SPEAK_CHUNK_BYTES = 1001  # odd on purpose: clients must not split samples across chunks
SPEAK_SAMPLE_RATES = (8000, 16000, 24000, 32000, 48000)
LISTEN_ENCODINGS = {"linear16": 2, "mulaw": 1, "alaw": 1}  # bytes per sample


@dataclass(frozen=True)
class Failure:
    status: int
    retry_after: float | None = None


@dataclass
class ListenRecord:
    """What one /v1/listen connection received."""

    query: dict[str, str]
    authorization: str | None
    messages: list[str] = field(default_factory=list)  # text message types, in order
    audio_bytes: int = 0
    audio_frames: int = 0
    empty_frames: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)  # what the fake answered
    close_code: int | None = None  # set when the fake closed it
    dropped: bool = False


@dataclass
class SpeakRecord:
    query: dict[str, str]
    authorization: str | None
    body: Any
    status: int = 200
    audio_bytes: int = 0


def _error_body(code: str, message: str) -> dict[str, str]:
    return {"err_code": code, "err_msg": message, "request_id": str(uuid.uuid4())}


_FAILURE_BODIES = {
    401: ("INVALID_AUTH", "Invalid credentials."),
    403: ("INSUFFICIENT_PERMISSIONS", "You do not have permission to access this resource."),
    429: ("TOO_MANY_REQUESTS", "Too many requests. Please try again later."),
    500: ("INTERNAL_SERVER_ERROR", "An internal server error occurred."),
    502: ("BAD_GATEWAY", "Bad gateway."),
    503: ("SERVICE_UNAVAILABLE", "The service is temporarily unavailable."),
}


def _failure_response(failure: Failure) -> JSONResponse:
    code, message = _FAILURE_BODIES.get(failure.status, ("ERROR", "Request failed."))
    body = _error_body(code, message)
    headers = {"dg-request-id": body["request_id"], "dg-error": json.dumps(body)}
    if failure.retry_after is not None:
        headers["Retry-After"] = f"{failure.retry_after:g}"
    return JSONResponse(body, status_code=failure.status, headers=headers)


def tone(seconds: float, sample_rate: int, freq: float = 440.0, amplitude: int = 6000) -> bytes:
    n = int(sample_rate * seconds)
    return struct.pack(
        f"<{n}h",
        *(int(amplitude * math.sin(2 * math.pi * freq * i / sample_rate)) for i in range(n)),
    )


class FakeDeepgram:
    """The fake's state and switches; tests mutate it from their own thread.

    Only deques and list appends cross threads, which the GIL makes safe enough for a test.
    """

    def __init__(self) -> None:
        self.url = ""  # http://127.0.0.1:PORT once running
        self.next_transcripts: deque[str | list[str]] = deque()
        self.listens: list[ListenRecord] = []
        self.speaks: list[SpeakRecord] = []
        self.listen_failures: deque[Failure] = deque()
        self.speak_failures: deque[Failure] = deque()
        self.listen_drops: deque[int] = deque()  # next connections: drop after N audio bytes
        self.speak_drops: deque[int] = deque()  # next requests: drop after N body bytes
        self.ignore_finalize = False  # leave Finalize unanswered, as Deepgram may
        self.finalize_delays: deque[float] = deque()  # next Finalize answers come this late

    # ------------------------------------------------------------- switches

    def reject_next_listen(self, status: int, retry_after: float | None = None) -> None:
        self.listen_failures.append(Failure(status, retry_after))

    def reject_next_speak(self, status: int, retry_after: float | None = None) -> None:
        self.speak_failures.append(Failure(status, retry_after))

    def drop_next_listen_after(self, nbytes: int) -> None:
        self.listen_drops.append(nbytes)

    def drop_next_speak_after(self, nbytes: int) -> None:
        self.speak_drops.append(nbytes)

    def reset(self) -> None:
        self.next_transcripts.clear()
        self.listens.clear()
        self.speaks.clear()
        self.listen_failures.clear()
        self.speak_failures.clear()
        self.listen_drops.clear()
        self.speak_drops.clear()
        self.finalize_delays.clear()
        self.ignore_finalize = False

    # ------------------------------------------------------------- app

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                WebSocketRoute("/v1/listen", self._listen),
                Route("/v1/speak", self._speak, methods=["POST"]),
            ]
        )

    async def _listen(self, websocket: WebSocket) -> None:
        record = ListenRecord(
            query=dict(websocket.query_params), authorization=websocket.headers.get("authorization")
        )
        self.listens.append(record)
        if record.authorization != f"Token {API_KEY}":
            await websocket.send_denial_response(_failure_response(Failure(401)))
            return
        if self.listen_failures:
            await websocket.send_denial_response(_failure_response(self.listen_failures.popleft()))
            return
        encoding = record.query.get("encoding", "linear16")
        rate = record.query.get("sample_rate", "")
        if encoding not in LISTEN_ENCODINGS or not rate.isdigit():
            body = _error_body(
                "INVALID_QUERY_PARAMETER", "Raw audio needs a known encoding and a sample_rate."
            )
            await websocket.send_denial_response(
                JSONResponse(body, status_code=400, headers={"dg-error": json.dumps(body)})
            )
            return
        await websocket.accept(headers=[(b"dg-request-id", str(uuid.uuid4()).encode())])
        conn = _ListenConnection(self, websocket, record, LISTEN_ENCODINGS[encoding] * int(rate))
        drop_after = self.listen_drops.popleft() if self.listen_drops else None
        await conn.run(drop_after)

    async def _speak(self, request: Request) -> Response:
        query = dict(request.query_params)
        record = SpeakRecord(query, request.headers.get("authorization"), None)
        self.speaks.append(record)
        if record.authorization != f"Token {API_KEY}":
            record.status = 401
            return _failure_response(Failure(401))
        if self.speak_failures:
            failure = self.speak_failures.popleft()
            record.status = failure.status
            return _failure_response(failure)
        try:
            record.body = await request.json()
        except ValueError:
            record.status = 400
            return JSONResponse(
                {
                    "category": "INVALID_JSON",
                    "message": "Invalid JSON submitted.",
                    "details": "Json deserialize error: expected value at line 1 column 1",
                    "request_id": str(uuid.uuid4()),
                },
                status_code=400,
            )
        text = record.body.get("text") if isinstance(record.body, dict) else None
        problem = None
        if not isinstance(text, str):
            problem = _error_body("Bad Request", "Missing field `text` in the request body.")
        elif not text.strip():
            problem = _error_body("Bad Request", "Input text must not be empty.")
        elif not query.get("model", "aura-asteria-en").startswith("aura"):
            problem = _error_body(
                "INVALID_QUERY_PARAMETER", "No such model/version/tier combination found."
            )
        elif query.get("encoding", "linear16") != "linear16":
            problem = _error_body("UNSUPPORTED_AUDIO_FORMAT", "This fake only speaks linear16.")
        elif int(query.get("sample_rate", "24000")) not in SPEAK_SAMPLE_RATES:
            problem = _error_body(
                "UNSUPPORTED_AUDIO_FORMAT", "Invalid sample rate for encoding linear16."
            )
        if problem is not None:
            record.status = 400
            return JSONResponse(problem, status_code=400)
        assert isinstance(text, str)
        rate = int(query.get("sample_rate", "24000"))
        pcm = tone(len(text) * SPEAK_SECONDS_PER_CHAR, rate)
        drop_after = self.speak_drops.popleft() if self.speak_drops else None

        async def body() -> AsyncIterator[bytes]:
            for start in range(0, len(pcm), SPEAK_CHUNK_BYTES):
                if drop_after is not None and start >= drop_after:
                    # Raising mid-body makes uvicorn cut the connection: the client sees an
                    # incomplete chunked body, as with a real dropped connection.
                    raise ConnectionResetError("fake: dropping the response")
                chunk = pcm[start : start + SPEAK_CHUNK_BYTES]
                record.audio_bytes += len(chunk)
                yield chunk
                await asyncio.sleep(0.002)

        return StreamingResponse(
            body(),
            media_type="application/octet-stream",
            headers={
                "dg-request-id": str(uuid.uuid4()),
                "dg-model-name": query.get("model", "aura-asteria-en"),
                "dg-char-count": str(len(text)),
            },
        )


class _ListenConnection:
    """One accepted /v1/listen websocket."""

    def __init__(
        self, fake: FakeDeepgram, ws: WebSocket, record: ListenRecord, bytes_per_second: int
    ) -> None:
        self.fake = fake
        self.ws = ws
        self.record = record
        self.bytes_per_second = bytes_per_second
        self.segment_start = 0  # audio bytes at the last Finalize
        self.interim_sent = False
        self.tasks: set[asyncio.Task[None]] = set()

    def seconds(self, nbytes: int) -> float:
        return nbytes / self.bytes_per_second

    async def send(self, message: dict[str, Any]) -> None:
        self.record.sent.append(message)
        await self.ws.send_text(json.dumps(message))

    def results(
        self, transcript: str, start: float, end: float, *, is_final: bool, from_finalize: bool
    ) -> dict[str, Any]:
        words = transcript.split()
        step = (end - start) / max(len(words), 1)
        return {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": round(end - start, 4),
            "start": round(start, 4),
            "is_final": is_final,
            "speech_final": is_final,
            "from_finalize": from_finalize,
            "channel": {
                "alternatives": [
                    {
                        "transcript": transcript,
                        "confidence": 0.9 if transcript else 0.0,
                        "words": [
                            {
                                "word": w.strip(".,?!").lower(),
                                "start": round(start + i * step, 4),
                                "end": round(start + (i + 1) * step, 4),
                                "confidence": 0.9,
                                "punctuated_word": w,
                            }
                            for i, w in enumerate(words)
                        ],
                    }
                ]
            },
            "metadata": {"request_id": str(uuid.uuid4()), "model_info": {"name": "fake"}},
        }

    async def run(self, drop_after: int | None) -> None:
        record = self.record
        try:
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
                data = message.get("bytes")
                if data is not None:
                    if not data:
                        # Deepgram reads an empty frame as the end of the audio.
                        record.empty_frames += 1
                        await self.close_stream()
                        return
                    record.audio_frames += 1
                    record.audio_bytes += len(data)
                    if drop_after is not None and record.audio_bytes >= drop_after:
                        self.drop()
                        return
                    await self.maybe_interim()
                    continue
                await self.on_text(message.get("text") or "")
                if record.close_code is not None:
                    return
        except WebSocketDisconnect:
            return
        finally:
            for task in self.tasks:
                task.cancel()

    async def maybe_interim(self) -> None:
        heard = self.record.audio_bytes - self.segment_start
        if self.interim_sent or self.seconds(heard) < INTERIM_AFTER_SECONDS:
            return
        self.interim_sent = True
        upcoming = self.fake.next_transcripts[0] if self.fake.next_transcripts else ""
        first = upcoming[0] if isinstance(upcoming, list) and upcoming else upcoming
        word = first.split()[0] if isinstance(first, str) and first.split() else ""
        start = self.seconds(self.segment_start)
        await self.send(
            self.results(
                word,
                start,
                self.seconds(self.record.audio_bytes),
                is_final=False,
                from_finalize=False,
            )
        )

    async def on_text(self, text: str) -> None:
        try:
            kind = json.loads(text).get("type")
        except (ValueError, AttributeError):
            kind = "invalid"
        self.record.messages.append(str(kind))
        if kind == "Finalize":
            start, end = self.segment_start, self.record.audio_bytes
            self.segment_start = end
            self.interim_sent = False
            if self.fake.ignore_finalize:
                return
            item = self.fake.next_transcripts.popleft() if self.fake.next_transcripts else ""
            delay = self.fake.finalize_delays.popleft() if self.fake.finalize_delays else 0.0
            answer = self.answer_finalize(item, self.seconds(start), self.seconds(end), delay)
            if delay:
                task = asyncio.create_task(answer)
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            else:
                await answer
        elif kind == "CloseStream":
            await self.close_stream()
        # KeepAlive only resets Deepgram's idle timer; there is no answer to it.

    async def answer_finalize(
        self, item: str | list[str], start: float, end: float, delay: float
    ) -> None:
        if delay:
            await asyncio.sleep(delay)
        pieces = item if isinstance(item, list) else [item]
        pieces = pieces or [""]
        step = (end - start) / len(pieces)
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            await self.send(
                self.results(
                    piece,
                    start + i * step,
                    start + (i + 1) * step,
                    is_final=True,
                    from_finalize=last,
                )
            )

    async def close_stream(self) -> None:
        duration = self.seconds(self.record.audio_bytes)
        await self.send(
            {
                "type": "Metadata",
                "transaction_key": "deprecated",
                "request_id": str(uuid.uuid4()),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "duration": round(duration, 4),
                "channels": 1,
            }
        )
        self.record.close_code = 1000
        await self.ws.close(1000)

    def drop(self) -> None:
        """Cuts the TCP connection with no close frame, like a network failure."""
        self.record.dropped = True
        transport = _transport_of(self.ws)
        if transport is not None:
            transport.abort()


def _transport_of(ws: WebSocket) -> asyncio.Transport | None:
    # uvicorn hands the app its protocol's bound `send`; the protocol owns the transport. ASGI
    # has no way to reset a connection, and a close frame would not be a drop.
    owner = getattr(getattr(ws, "_send", None), "__self__", None)
    transport = getattr(owner, "transport", None)
    return transport if isinstance(transport, asyncio.Transport) else None


@contextmanager
def run_fake_deepgram() -> Iterator[FakeDeepgram]:
    """Serves a `FakeDeepgram` on 127.0.0.1 (uvicorn, in a thread) for the `with` block."""
    fake = FakeDeepgram()
    with serve_in_thread(
        fake.app(), "fake-deepgram", ws="websockets-sansio", ws_ping_interval=None
    ) as url:
        fake.url = url
        yield fake
