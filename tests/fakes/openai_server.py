"""A local stand-in for the OpenAI API: transcriptions, speech and chat completions.

A Starlette app served by uvicorn on a free port of 127.0.0.1, in a thread of the test process,
so every provider request crosses a real socket and real HTTP. It behaves as the documented API
does where the providers depend on it: bearer-key checks with OpenAI's 401 bodies, request
validation with `{"error": {"message", "type", "param", "code"}}` bodies, multipart WAV uploads
(parsed and checked), streamed raw PCM, and server-sent chat chunks ending in `data: [DONE]`.

Tests script it through plain attributes (`transcripts`, `replies`) and switches that act on the
next request (`fail_next`, `drop_next`, `stall_next`, `error_in_stream_next`), and read back what
it received (`clips`, `speech_requests`, `chat_requests`).
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import struct
import time
import wave
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tests.fakes.serve import serve_in_thread

API_KEY = "test-key"
SPEECH_RATE = 24000  # OpenAI's "pcm" output
SPEECH_CHUNK = 4801  # odd on purpose: network reads never respect sample boundaries
SECONDS_PER_CHAR = 0.04
VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer"}
    | {"verse", "marin", "cedar"}
)
TRANSCRIBE_MODELS = frozenset({"whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"})
SPEECH_MODELS = frozenset({"tts-1", "tts-1-hd", "gpt-4o-mini-tts"})
MIN_AUDIO_SECONDS = 0.1


def speech_tone(seconds: float, freq: float = 330.0, amplitude: int = 6000) -> bytes:
    n = int(SPEECH_RATE * seconds)
    return struct.pack(
        f"<{n}h",
        *(int(amplitude * math.sin(2 * math.pi * freq * i / SPEECH_RATE)) for i in range(n)),
    )


def speech_seconds(text: str) -> float:
    """How long the fake speaks `text`: the tests predict the audio length from it."""
    return min(max(len(text) * SECONDS_PER_CHAR, 0.2), 10.0)


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(
    status: int,
    message: str,
    kind: str,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(message, kind, param, code), status, headers=headers)


def mask(key: str) -> str:
    """How OpenAI quotes a wrong key back: both ends kept, the middle starred."""
    return key[:3] + "*" * max(len(key) - 7, 0) + key[-4:] if len(key) > 8 else "*" * len(key)


# What an injected failure sends, per status (the wording follows OpenAI's error guide).
_INJECTED: dict[int, tuple[str, str, str | None]] = {
    400: ("Invalid request.", "invalid_request_error", None),
    404: ("The requested resource was not found.", "invalid_request_error", None),
    429: ("Rate limit reached for requests. Please try again later.", "requests",
          "rate_limit_exceeded"),
    500: ("The server had an error while processing your request.", "server_error", None),
    502: ("Bad gateway.", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
}  # fmt: skip


@dataclass
class Injection:
    kind: Literal["status", "drop", "stall", "stream_error"]
    path: str | None  # only a request whose path ends with this takes it; None: any
    status: int = 0
    retry_after: str | None = None
    message: str | None = None
    seconds: float = 0.0


@dataclass
class Clip:
    """One transcription upload, as the fake understood it."""

    sample_rate: int
    pcm: bytes
    fields: dict[str, str]
    filename: str | None

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / self.sample_rate


@dataclass
class FakeOpenAI:
    url: str = ""  # base URL to give a provider, ending in /v1
    transcripts: deque[str] = field(default_factory=deque)  # next answers of transcriptions
    replies: deque[str] = field(default_factory=deque)  # next chat replies; else an echo
    word_delay: float = 0.0  # pause between streamed chat words
    clips: list[Clip] = field(default_factory=list)
    speech_requests: list[dict[str, Any]] = field(default_factory=list)
    chat_requests: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0  # every request that reached the app, failed ones included
    aborted_streams: int = 0  # chat streams the client left before the end
    _injections: deque[Injection] = field(default_factory=deque)

    def reset(self) -> None:
        self.transcripts.clear()
        self.replies.clear()
        self.word_delay = 0.0
        self.clips.clear()
        self.speech_requests.clear()
        self.chat_requests.clear()
        self.requests = 0
        self.aborted_streams = 0
        self._injections.clear()

    # ------------------------------------------------------------- error injection

    def fail_next(
        self,
        status: int,
        *,
        retry_after: float | str | None = None,
        message: str | None = None,
        path: str | None = None,
    ) -> None:
        """The next request (to `path`, if given) gets this HTTP error, after the auth check."""
        after = None if retry_after is None else str(retry_after)
        self._injections.append(Injection("status", path, status, after, message))

    def drop_next(self, path: str | None = None) -> None:
        """The next response starts (200, part of the body) and then the connection is cut."""
        self._injections.append(Injection("drop", path))

    def stall_next(self, seconds: float, path: str | None = None) -> None:
        """The next request waits `seconds` before anything is answered."""
        self._injections.append(Injection("stall", path, seconds=seconds))

    def error_in_stream_next(self, message: str = "The server had an error.") -> None:
        """The next chat stream sends one word, then an SSE `error` event, and ends."""
        self._injections.append(Injection("stream_error", "/chat/completions", message=message))

    def _take(self, path: str) -> Injection | None:
        for injection in list(self._injections):
            if injection.path is None or path.endswith(injection.path):
                self._injections.remove(injection)
                return injection
        return None

    # ---------------------------------------------------------------------- the app

    @property
    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/audio/transcriptions", self._transcriptions, methods=["POST"]),
                Route("/v1/audio/speech", self._speech, methods=["POST"]),
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
            ]
        )

    async def _gate(self, request: Request) -> Response | Injection | None:
        """Auth and injected failures, before the endpoint looks at the request."""
        self.requests += 1
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            return error_response(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                "invalid_request_error",
            )
        key = auth[7:].strip()
        if key != API_KEY:
            return error_response(
                401,
                f"Incorrect API key provided: {mask(key)}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                code="invalid_api_key",
            )
        injection = self._take(request.url.path)
        if injection is None:
            return None
        if injection.kind == "status":
            message, kind, code = _INJECTED.get(
                injection.status, ("Injected failure.", "server_error", None)
            )
            headers = {"retry-after": injection.retry_after} if injection.retry_after else None
            return error_response(
                injection.status, injection.message or message, kind, None, code, headers
            )
        if injection.kind == "stall":
            await asyncio.sleep(injection.seconds)
            return None
        return injection  # drop / stream_error: the endpoint acts on it mid-response

    # ---------------------------------------------------------------- transcriptions

    async def _transcriptions(self, request: Request) -> Response:
        gate = await self._gate(request)
        if isinstance(gate, Response):
            return gate
        try:
            form = await request.form()
        except Exception:
            return error_response(
                400, "Could not parse multipart form", "invalid_request_error", None, None
            )
        upload = form.get("file")
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        if not isinstance(upload, UploadFile):
            return _missing("file")
        if not fields.get("model"):
            return _missing("model")
        if fields["model"] not in TRANSCRIBE_MODELS:
            return error_response(
                400,
                f"Invalid model {fields['model']!r}.",
                "invalid_request_error",
                "model",
                "invalid_value",
            )
        response_format = fields.get("response_format", "json")
        if response_format not in ("json", "text"):
            return error_response(
                400,
                f"response_format {response_format!r} is not supported by this fake",
                "invalid_request_error",
                "response_format",
            )
        data = await upload.read()
        try:
            sample_rate, pcm = read_wav(data)
        except ValueError as exc:
            return error_response(
                400,
                f"Invalid file format: {exc}. Supported formats: ['flac', 'm4a', 'mp3', "
                "'mp4', 'mpeg', 'mpga', 'oga', 'ogg', 'wav', 'webm']",
                "invalid_request_error",
                "file",
                "invalid_value",
            )
        clip = Clip(sample_rate, pcm, fields, upload.filename)
        if clip.seconds < MIN_AUDIO_SECONDS:
            return error_response(
                400,
                "Audio file is too short. Minimum audio length is 0.1 seconds.",
                "invalid_request_error",
                "file",
                "audio_too_short",
            )
        self.clips.append(clip)
        text = self.transcripts.popleft() if self.transcripts else f"{clip.seconds:.2f} seconds"
        if isinstance(gate, Injection):  # drop: a body that never finishes
            return _DroppedResponse(b'{"text": "' + text[:3].encode())
        if response_format == "text":
            return PlainTextResponse(text)
        return JSONResponse(
            {"text": text, "usage": {"type": "duration", "seconds": math.ceil(clip.seconds)}}
        )

    # ------------------------------------------------------------------------ speech

    async def _speech(self, request: Request) -> Response:
        gate = await self._gate(request)
        if isinstance(gate, Response):
            return gate
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        for name in ("model", "input", "voice"):
            if not body.get(name):
                return _missing(name)
        if body["model"] not in SPEECH_MODELS:
            return error_response(
                400, f"Invalid model {body['model']!r}.", "invalid_request_error", "model"
            )
        if body["voice"] not in VOICES:
            return error_response(
                400,
                f"Invalid value: '{body['voice']}'. Supported values are: "
                + ", ".join(f"'{v}'" for v in sorted(VOICES))
                + ".",
                "invalid_request_error",
                "voice",
                "invalid_value",
            )
        if len(body["input"]) > 4096:
            return error_response(
                400,
                "Invalid 'input': string too long. Expected a string with maximum length 4096.",
                "invalid_request_error",
                "input",
                "string_above_max_length",
            )
        speed = body.get("speed", 1.0)
        if not isinstance(speed, int | float) or not 0.25 <= speed <= 4.0:
            return error_response(
                400, "speed must be between 0.25 and 4.0", "invalid_request_error", "speed"
            )
        if body.get("response_format", "mp3") != "pcm":
            return error_response(
                400,
                "this fake only produces response_format 'pcm'",
                "invalid_request_error",
                "response_format",
            )
        self.speech_requests.append(body)
        audio = speech_tone(speech_seconds(body["input"]))
        if isinstance(gate, Injection):
            return _DroppedResponse(audio[:SPEECH_CHUNK])

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(audio), SPEECH_CHUNK):
                yield audio[i : i + SPEECH_CHUNK]
                await asyncio.sleep(0)

        return StreamingResponse(chunks(), media_type="audio/pcm")

    # ---------------------------------------------------------------- chat completions

    async def _chat(self, request: Request) -> Response:
        gate = await self._gate(request)
        if isinstance(gate, Response):
            return gate
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        if not body.get("model"):
            return _missing("model")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _missing("messages")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in (
                "system",
                "developer",
                "user",
                "assistant",
            ):
                return error_response(
                    400,
                    f"Invalid value for 'messages[{i}].role'.",
                    "invalid_request_error",
                    f"messages.[{i}].role",
                    "invalid_value",
                )
            if not isinstance(message.get("content"), str):
                return error_response(
                    400,
                    f"Invalid type for 'messages[{i}].content': expected a string.",
                    "invalid_request_error",
                    f"messages.[{i}].content",
                    "invalid_type",
                )
        self.chat_requests.append(body)
        reply = self.replies.popleft() if self.replies else _echo(messages)
        model = body["model"]
        if not body.get("stream"):
            return JSONResponse(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": reply},
                            "finish_reason": "stop",
                        }
                    ],
                }
            )
        events = list(_chat_events(model, reply))
        if isinstance(gate, Injection) and gate.kind == "drop":
            return _DroppedResponse(b"".join(events[:2]))
        if isinstance(gate, Injection) and gate.kind == "stream_error":
            failure = error_body(gate.message or "error", "server_error")
            events = [*events[:2], _sse(failure)]

        async def stream() -> AsyncIterator[bytes]:
            finished = False
            try:
                for event in events:
                    yield event
                    await asyncio.sleep(self.word_delay)
                finished = True
            finally:
                if not finished:
                    self.aborted_streams += 1

        return StreamingResponse(stream(), media_type="text/event-stream")


def read_wav(data: bytes) -> tuple[int, bytes]:
    """(sample rate, PCM) of a 16-bit mono PCM WAV file, or ValueError saying what is wrong."""
    if len(data) < 44 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    if struct.unpack_from("<I", data, 4)[0] != len(data) - 8:
        raise ValueError("RIFF size does not match the file")
    try:
        with wave.open(io.BytesIO(data), "rb") as wav:
            if wav.getnchannels() != 1 or wav.getsampwidth() != 2:
                raise ValueError("expected 16-bit mono")
            frames = wav.getnframes()
            pcm = wav.readframes(frames)
            rate = wav.getframerate()
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"bad WAV: {exc}") from exc
    if len(pcm) != frames * 2:
        raise ValueError("the data chunk is shorter than its header says")
    if not 8000 <= rate <= 48000:
        raise ValueError(f"unsupported sample rate {rate}")
    return rate, pcm


def _missing(param: str) -> JSONResponse:
    return error_response(
        400,
        f"Missing required parameter: '{param}'.",
        "invalid_request_error",
        param,
        "missing_required_parameter",
    )


async def _json_body(request: Request) -> dict[str, Any] | Response:
    try:
        body = json.loads(await request.body())
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return error_response(
            400,
            "We could not parse the JSON body of your request.",
            "invalid_request_error",
        )
    return body


def _echo(messages: list[dict[str, Any]]) -> str:
    said = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    return f"You said {said.strip().rstrip('.!?')}."


def _sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {data}\n\n".encode()


def _chat_events(model: str, reply: str) -> Iterator[bytes]:
    created = int(time.time())

    def chunk(delta: dict[str, str], finish: str | None = None) -> bytes:
        return _sse(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
        )

    yield chunk({"role": "assistant", "content": ""})
    for i, word in enumerate(reply.split(" ")):
        yield chunk({"content": word if i == 0 else " " + word})
    yield chunk({}, "stop")
    yield _sse("[DONE]")


class _DroppedResponse:
    """A 200 whose body is cut off after `head`: the connection closes mid-body.

    Returning without the final `more_body=False` message makes uvicorn close the socket, which
    the client sees as an incomplete chunked body, just like a connection lost on the way.
    """

    def __init__(self, head: bytes) -> None:
        self.head = head

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": self.head, "more_body": True})


@contextmanager
def run_fake_openai() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI()
    with serve_in_thread(
        fake.app, "fake-openai", timeout_graceful_shutdown=1, loop="asyncio"
    ) as url:
        fake.url = url + "/v1"
        yield fake


def error_strings(exc: BaseException) -> list[str]:
    """str() and repr() of `exc` and everything it was raised from: where a secret could hide."""
    out: list[str] = []
    link: BaseException | None = exc
    seen: list[BaseException] = []
    while link is not None and link not in seen:
        seen.append(link)
        out += [str(link), repr(link)]
        link = link.__cause__ or link.__context__
    return out
