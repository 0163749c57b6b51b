"""A local stand-in for ElevenLabs' streaming text-to-speech endpoint.

It speaks the documented wire protocol (https://elevenlabs.io/docs/api-reference/text-to-speech/
stream): ``POST /v1/text-to-speech/{voice_id}/stream?output_format=...`` with the ``xi-api-key``
header, a JSON body, and the audio streamed back in chunks. The audio is a 440 Hz tone, 10 ms
per character of text, in the requested format (16-bit PCM or μ-law). Errors use the vendor's
bodies (https://elevenlabs.io/docs/eleven-api/resources/errors). Switches let a test inject the
next failures: a status (429 with Retry-After, 500, 503), a connection dropped mid-stream, a
pause after the first chunk, or a concurrency limit.

A real uvicorn server on 127.0.0.1, on a free port, in a background thread.
"""

from __future__ import annotations

import asyncio
import math
import struct
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from session.audio import audioop
from tests.fakes.serve import serve_in_thread

API_KEY = "test-key"
VOICES = frozenset({"JBFqnCBsd6RMkjVDRZzb", "test-voice"})
MODELS = frozenset({"eleven_flash_v2_5", "eleven_turbo_v2_5", "eleven_multilingual_v2"})
FORMATS = {
    "pcm_8000": 8000,
    "pcm_16000": 16000,
    "pcm_22050": 22050,
    "pcm_24000": 24000,
    "pcm_44100": 44100,
    "ulaw_8000": 8000,
}
SECONDS_PER_CHAR = 0.01
FREQUENCY = 440.0


def tone_pcm(seconds: float, rate: int, frequency: float = FREQUENCY) -> bytes:
    n = round(seconds * rate)
    step = 2 * math.pi * frequency / rate
    return struct.pack(f"<{n}h", *(round(8000 * math.sin(step * i)) for i in range(n)))


def expected_audio(text: str, output_format: str) -> bytes:
    """The exact bytes the fake streams for `text`: tests compare against them."""
    pcm = tone_pcm(len(text) * SECONDS_PER_CHAR, FORMATS[output_format])
    return audioop.lin2ulaw(pcm, 2) if output_format.startswith("ulaw") else pcm


@dataclass
class Recorded:
    voice_id: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class FakeElevenLabs:
    url: str = ""
    # An odd size on purpose: PCM samples then straddle chunk boundaries, as they may do in
    # real traffic, and the client has to stitch them.
    chunk_bytes: int = 801
    max_concurrent: int | None = None
    requests: list[Recorded] = field(default_factory=list)
    _failures: list[tuple[int, float | None]] = field(default_factory=list)
    _drops: int = 0
    _gate: threading.Event | None = None
    _active: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._failures.clear()
            self._drops = 0
            self._gate = None
            self.chunk_bytes = 801
            self.max_concurrent = None

    def fail_next(self, status: int, times: int = 1, retry_after: float | None = None) -> None:
        """The next `times` authorised requests get `status` with the vendor's error body."""
        with self._lock:
            self._failures.extend([(status, retry_after)] * times)

    def drop_next(self, times: int = 1) -> None:
        """The next `times` streams are cut after their first chunk (no chunked terminator)."""
        with self._lock:
            self._drops += times

    def hold_after_first_chunk(self) -> threading.Event:
        """Streams pause after their first chunk until the returned event is set."""
        gate = threading.Event()
        self._gate = gate
        return gate

    def _take_failure(self) -> tuple[int, float | None] | None:
        with self._lock:
            return self._failures.pop(0) if self._failures else None

    def _take_drop(self) -> bool:
        with self._lock:
            if self._drops:
                self._drops -= 1
                return True
            return False

    # ------------------------------------------------------------------ the endpoint

    async def stream(self, request: Request) -> Response:
        voice_id = request.path_params["voice_id"]
        record = Recorded(
            voice_id=voice_id,
            query=dict(request.query_params),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=None,
        )
        self.requests.append(record)
        if request.headers.get("xi-api-key") != API_KEY:
            return _error(401, status="invalid_api_key", message="Invalid API key")
        try:
            body = await request.json()
        except ValueError:
            return _validation("body", "JSON decode error", "json_invalid")
        record.body = body
        if (failure := self._take_failure()) is not None:
            return _injected(*failure)
        output_format = request.query_params.get("output_format", "mp3_44100_128")
        if output_format not in FORMATS:
            return _validation(
                "query.output_format",
                f"Input should be one of: {', '.join(FORMATS)} (this fake streams no mp3)",
                "enum",
            )
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            return _validation("body.text", "Field required", "missing")
        if not body["text"].strip():
            return _error(
                400, status="invalid_text", message="Text must contain at least one character."
            )
        settings = body.get("voice_settings")
        if settings is not None and not _valid_settings(settings):
            return _validation(
                "body.voice_settings", "stability and similarity_boost must be 0..1", "value_error"
            )
        model = body.get("model_id", "eleven_multilingual_v2")
        if model not in MODELS:
            return _error(
                400,
                status="invalid_parameters",
                code="invalid_parameters",
                type="validation_error",
                param="model_id",
                message=f"A model with model ID {model} does not exist.",
            )
        if voice_id not in VOICES:
            return _error(
                400,
                status="voice_not_found",
                message=f"A voice with voice_id {voice_id} was not found.",
            )
        if self.max_concurrent is not None and self._active >= self.max_concurrent:
            return _injected(429, 1.0)
        audio = expected_audio(body["text"], output_format)
        media = "audio/basic" if output_format.startswith("ulaw") else "audio/pcm"
        return StreamingResponse(self._chunks(audio, self._take_drop()), media_type=media)

    async def _chunks(self, audio: bytes, drop: bool) -> AsyncIterator[bytes]:
        self._active += 1
        try:
            for n, start in enumerate(range(0, len(audio), self.chunk_bytes)):
                yield audio[start : start + self.chunk_bytes]
                if n == 0:
                    if drop:
                        # Raising after the body started makes uvicorn close the socket.
                        raise ConnectionAbortedError("injected: connection dropped")
                    if (gate := self._gate) is not None:
                        await asyncio.to_thread(gate.wait, 10)  # bounded: never outlive the test
                await asyncio.sleep(0)
        finally:
            self._active -= 1


def _valid_settings(settings: Any) -> bool:
    if not isinstance(settings, dict):
        return False
    for key in ("stability", "similarity_boost", "style"):
        value = settings.get(key)
        if value is not None and not (isinstance(value, int | float) and 0 <= value <= 1):
            return False
    return True


def _error(http_status: int, /, **detail: Any) -> JSONResponse:
    detail.setdefault("request_id", uuid.uuid4().hex)
    return JSONResponse({"detail": detail}, status_code=http_status)


def _validation(where: str, message: str, kind: str) -> JSONResponse:
    # Request validation errors have the list shape of the API's 422 responses.
    entry = {"loc": where.split("."), "msg": message, "type": kind}
    return JSONResponse({"detail": [entry]}, status_code=422)


def _injected(status: int, retry_after: float | None) -> JSONResponse:
    if status == 429:
        response = _error(
            429,
            type="rate_limit_error",
            code="concurrent_limit_exceeded",
            status="too_many_concurrent_requests",
            message="You have too many concurrent requests. Please wait and try again.",
        )
    elif status >= 500:
        response = _error(
            status,
            status="internal_server_error" if status == 500 else "service_unavailable",
            message="The server had an error while processing your request.",
        )
    else:
        response = _error(status, status="injected", message=f"injected {status}")
    if retry_after is not None:
        response.headers["retry-after"] = f"{retry_after:g}"
    return response


@contextmanager
def run_fake_elevenlabs() -> Iterator[FakeElevenLabs]:
    fake = FakeElevenLabs()
    app = Starlette(
        routes=[Route("/v1/text-to-speech/{voice_id}/stream", fake.stream, methods=["POST"])]
    )
    with serve_in_thread(app, "fake-elevenlabs") as url:
        fake.url = url
        yield fake
