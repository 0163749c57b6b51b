"""Deepgram live streaming speech recognition over its websocket API.

Wire protocol (https://developers.deepgram.com/reference/speech-to-text-api/listen-streaming,
https://developers.deepgram.com/docs/finalize, https://developers.deepgram.com/docs/keep-alive,
https://developers.deepgram.com/docs/close-stream,
https://developers.deepgram.com/docs/stt-troubleshooting-websocket-data-and-net-errors):

- `wss://api.deepgram.com/v1/listen?model=...&encoding=...&sample_rate=...` with the header
  `Authorization: Token <key>`. A refused handshake is a plain HTTP answer (401, 429, 5xx)
  whose `dg-error` header and JSON body (`err_code`/`err_msg`, or `category`/`message`) say why.
- Audio goes up as binary frames (never an empty one: Deepgram reads that as end of stream);
  control messages are JSON text: `KeepAlive`, `Finalize`, `CloseStream`.
- Down come `Results` (`is_final` false = interim, true = that stretch of audio is settled;
  `from_finalize: true` marks the answer to a `Finalize`), `UtteranceEnd`, `SpeechStarted` and,
  after `CloseStream`, `Metadata` before the server closes with 1000.
- Deepgram closes a socket that carried neither audio nor a text message for ~10 s (1011,
  NET-0001), so an idle stream sends `KeepAlive` itself every few seconds.

Turn taking belongs to the session's VAD, not to Deepgram's endpointing: only a `flush()`
(sent as `Finalize`) closes a segment. The `is_final` pieces Deepgram sends on its own are
collected and the segment's one final `TranscriptEvent` is their concatenation, emitted when the
`from_finalize` result arrives. Deepgram documents that this answer is "not guaranteed if there
is no significant amount of audio data to process", so a flush with no audio since the previous
one is answered locally, and a `Finalize` unanswered after `finalize_timeout` is closed with what
was collected: the stream always keeps its promise of exactly one final per flush. Results are
matched to segments by their audio time (`start + duration`, seconds of audio this connection
received), so an answer arriving after its segment was closed is recognised and dropped instead
of being taken for the next segment's.

Phone audio is G.711 μ-law at 8 kHz. The session hands recognisers 16-bit PCM at their declared
rate, so this recogniser declares 8 kHz and sends it as `linear16` (no resampling at all on a
phone call). With `encoding="mulaw"` it re-encodes each chunk to μ-law before sending: half the
bytes of 8 kHz linear16 on the wire (a quarter of 16 kHz linear16) for one table lookup per
sample, and no loss the phone network's own μ-law coding did not already make. Sending the
caller's μ-law bytes untouched (no transcoding at all) would need the session to pass the
transport's native payload through to the recogniser, which it does not do yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.frames import CloseCode

from providers.http_errors import status_error
from session.audio import SAMPLE_WIDTH, audioop
from session.errors import ErrorCode, ProviderError
from session.interfaces import TranscriptEvent
from session.tasks import reap

__all__ = ["DeepgramSTT", "DeepgramStream"]

PROVIDER: Final = "deepgram"
DEFAULT_URL: Final = "wss://api.deepgram.com"
LISTEN_PATH: Final = "/v1/listen"
Encoding = Literal["linear16", "mulaw"]

# Deepgram drops a socket after ~10 s without a frame from the client; half that leaves room
# for a slow network.
IDLE_KEEP_ALIVE_SECONDS: Final = 5.0
# A replayed backlog can be many seconds long; frames of at most this much audio keep each
# websocket message small, as Deepgram recommends for streaming.
MAX_FRAME_SECONDS: Final = 0.25
# Slack when comparing Deepgram's result times with the audio this stream sent.
TIME_TOLERANCE: Final = 0.05
# Close codes that mean "this request is wrong" (undecodable audio, bad parameters): sending the
# same audio again would fail the same way.
_REQUEST_CLOSE_CODES: Final = frozenset(
    {
        CloseCode.PROTOCOL_ERROR,
        CloseCode.UNSUPPORTED_DATA,
        CloseCode.INVALID_DATA,
        CloseCode.POLICY_VIOLATION,
        CloseCode.MESSAGE_TOO_BIG,
    }
)

log = logging.getLogger(__name__)


class _QuietHandshakeLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Keeps websockets from logging the handshake headers, which carry the API key.

    websockets logs every request header at DEBUG level when its logger has DEBUG enabled, so
    this adapter reports DEBUG as disabled; warnings and errors still go through.
    """

    def isEnabledFor(self, level: int) -> bool:
        return level > logging.DEBUG and self.logger.isEnabledFor(level)


_WS_LOGGER: Final = _QuietHandshakeLogger(logging.getLogger(f"{__name__}.websocket"), {})


class _End:
    """End of the event stream."""


_END: Final = _End()


@dataclass(slots=True)
class _Flush:
    """One `flush()` still waiting for its final transcript."""

    answered_by_server: bool  # False: no audio since the previous flush, nothing to finalize
    audio_end: float  # seconds of audio sent before this flush
    timer: asyncio.TimerHandle | None = None


class DeepgramStream:
    """One call's recognition stream (see `session.interfaces.STTStream`).

    `push_audio` and `flush` only queue: a sender task writes frames in order, so audio pushed
    right after `open_stream` (the session's replay after a reconnect) keeps its order with the
    flushes between it. A receiver task turns Deepgram's messages into `TranscriptEvent`s. A
    stream that fails raises its `ProviderError` from iteration and ends; the session then opens
    a new one and replays what is still unanswered.
    """

    def __init__(
        self,
        ws: ClientConnection,
        *,
        encoding: Encoding,
        sample_rate: int,
        finalize_timeout: float,
        close_timeout: float,
        idle_keep_alive: float = IDLE_KEEP_ALIVE_SECONDS,
    ) -> None:
        self._ws = ws
        self._encoding = encoding
        self._finalize_timeout = finalize_timeout
        self._close_timeout = close_timeout
        self._idle_keep_alive = idle_keep_alive
        self._bytes_per_second = sample_rate * SAMPLE_WIDTH
        self._max_frame = int(sample_rate * MAX_FRAME_SECONDS) * SAMPLE_WIDTH
        self._outbox: asyncio.Queue[bytes | str] = asyncio.Queue()
        self._events: asyncio.Queue[TranscriptEvent | ProviderError | _End] = asyncio.Queue()
        self._pending: deque[_Flush] = deque()
        self._finals: list[tuple[str, float | None]] = []  # is_final pieces of this segment
        self._last_interim = ""
        self._audio_since_flush = False
        self._audio_seconds = 0.0  # sent on this connection: Deepgram's result times count it
        self._closed_until = 0.0  # audio time up to which every segment has had its final
        self._closing = False
        self._failed = False
        self._loop = asyncio.get_running_loop()
        self._sender = asyncio.create_task(self._send_loop(), name="deepgram-send")
        self._receiver = asyncio.create_task(self._receive_loop(), name="deepgram-receive")

    # ---------------------------------------------------------------- session side

    def push_audio(self, pcm: bytes) -> None:
        if self._closing or self._failed or not pcm:
            return  # never an empty frame: Deepgram takes it as the end of the audio
        self._audio_since_flush = True
        self._audio_seconds += len(pcm) / self._bytes_per_second
        for start in range(0, len(pcm), self._max_frame):
            chunk = pcm[start : start + self._max_frame]
            if self._encoding == "mulaw":
                chunk = audioop.lin2ulaw(chunk, SAMPLE_WIDTH)
            self._outbox.put_nowait(chunk)

    def flush(self) -> None:
        if self._closing or self._failed:
            return
        entry = _Flush(answered_by_server=self._audio_since_flush, audio_end=self._audio_seconds)
        self._audio_since_flush = False
        self._pending.append(entry)
        if entry.answered_by_server:
            self._outbox.put_nowait(json.dumps({"type": "Finalize"}))
            entry.timer = self._loop.call_later(
                self._finalize_timeout, self._finalize_overdue, entry
            )
        self._settle_local_flushes()

    async def keep_alive(self) -> None:
        """Called by the session every `keep_alive_interval`; idle streams also send their own."""
        if not (self._closing or self._failed):
            self._outbox.put_nowait(json.dumps({"type": "KeepAlive"}))

    def __aiter__(self) -> DeepgramStream:
        return self

    async def __anext__(self) -> TranscriptEvent:
        item = await self._events.get()
        if isinstance(item, TranscriptEvent):
            return item
        self._events.put_nowait(_END)  # later iterations end too
        if isinstance(item, ProviderError):
            raise item
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Asks Deepgram to close (`CloseStream`), waits briefly for it, then drops the socket."""
        if self._closing:
            await reap(self._sender, self._receiver)
            return
        self._closing = True
        for entry in self._pending:
            if entry.timer is not None:
                entry.timer.cancel()
        self._pending.clear()
        if not self._failed:
            self._outbox.put_nowait(json.dumps({"type": "CloseStream"}))
            # The server answers with Metadata and a close frame; the receiver ends on it.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._receiver), self._close_timeout)
        self._sender.cancel()
        self._receiver.cancel()
        await reap(self._sender, self._receiver)
        with contextlib.suppress(Exception):
            await self._ws.close()
        self._events.put_nowait(_END)

    # ---------------------------------------------------------------- wire side

    async def _send_loop(self) -> None:
        outbox = self._outbox
        last_sent = time.monotonic()
        try:
            while True:
                if outbox.empty():
                    wait = last_sent + self._idle_keep_alive - time.monotonic()
                    try:
                        message = await asyncio.wait_for(outbox.get(), max(wait, 0.0))
                    except TimeoutError:
                        message = json.dumps({"type": "KeepAlive"})
                else:
                    message = outbox.get_nowait()
                await self._ws.send(message)
                last_sent = time.monotonic()
        except ConnectionClosed:
            return  # the receiver sees the close and reports it
        except Exception as exc:
            self._fail(
                ProviderError(
                    ErrorCode.PROVIDER_ERROR, PROVIDER, f"sending: {type(exc).__name__}", cause=exc
                )
            )

    async def _receive_loop(self) -> None:
        try:
            async for message in self._ws:
                if isinstance(message, str):
                    self._on_message(message)
        except ConnectionClosed as exc:
            if not self._closing:
                self._fail(_closed_error(exc))
            return
        except ProviderError as exc:
            self._fail(exc)
            return
        except Exception as exc:  # a bug here must still end the stream visibly
            self._fail(
                ProviderError(
                    ErrorCode.PROVIDER_ERROR, PROVIDER, f"{type(exc).__name__}: {exc}", cause=exc
                )
            )
            return
        # The iterator ended on a normal close (1000) the stream did not ask for.
        if not self._closing:
            self._fail(_closed_error(None, self._ws))

    def _fail(self, error: ProviderError) -> None:
        self._failed = True
        for entry in self._pending:
            if entry.timer is not None:
                entry.timer.cancel()
        self._pending.clear()
        self._sender.cancel()
        self._events.put_nowait(error)

    def _on_message(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            log.warning("deepgram: ignoring a message that is not JSON (%d chars)", len(text))
            return
        if not isinstance(message, dict):
            return
        kind = message.get("type")
        if kind == "Results":
            self._on_results(message)
        elif kind == "UtteranceEnd":
            log.debug("deepgram: utterance end at %s s", message.get("last_word_end"))
        elif kind == "Error":
            # Newer API versions describe a fatal problem in a message before closing.
            detail = message.get("description") or message.get("message") or "error"
            raise ProviderError(ErrorCode.PROVIDER_ERROR, PROVIDER, str(detail))
        # Metadata, SpeechStarted and anything newer carry nothing the session uses.

    def _on_results(self, message: Mapping[str, Any]) -> None:
        transcript, confidence = _best_alternative(message)
        end = _result_end(message)
        if end is not None and end <= self._closed_until + TIME_TOLERANCE:
            # Audio of a segment whose final was given already (a Finalize answer or piece
            # that came after `finalize_timeout`): it must not leak into the next segment.
            if transcript and message.get("is_final"):
                log.warning("deepgram: dropped %d chars that arrived too late", len(transcript))
            return
        if message.get("is_final"):
            if transcript:
                self._finals.append((transcript, confidence))
        elif transcript:
            text = " ".join([*(t for t, _ in self._finals), transcript])
            if text != self._last_interim:
                self._last_interim = text
                self._events.put_nowait(TranscriptEvent(text, is_final=False))
        if message.get("from_finalize") and self._pending:
            # Local flushes never wait at the head, so the head is the Finalize answered here.
            self._close_segment(self._pending.popleft())

    def _finalize_overdue(self, entry: _Flush) -> None:
        # Timers fire in order and share one timeout, so an overdue flush is the oldest one.
        if not self._pending or self._pending[0] is not entry:
            return
        log.warning("deepgram: no answer to Finalize in %.1f s", self._finalize_timeout)
        self._close_segment(self._pending.popleft())

    def _close_segment(self, entry: _Flush) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
        self._closed_until = max(self._closed_until, entry.audio_end)
        self._emit_final()
        self._settle_local_flushes()

    def _settle_local_flushes(self) -> None:
        """Flushes with no audio behind them are answered in order, once they reach the head."""
        while self._pending and not self._pending[0].answered_by_server:
            self._pending.popleft()
            self._emit_final()

    def _emit_final(self) -> None:
        pieces, self._finals = self._finals, []
        self._last_interim = ""
        text = " ".join(t for t, _ in pieces)
        scores = [c for _, c in pieces if c is not None]
        confidence = sum(scores) / len(scores) if scores else None
        self._events.put_nowait(TranscriptEvent(text, is_final=True, confidence=confidence))


def _best_alternative(message: Mapping[str, Any]) -> tuple[str, float | None]:
    channel = message.get("channel")
    alternatives = channel.get("alternatives") if isinstance(channel, dict) else None
    if not isinstance(alternatives, list) or not alternatives:
        return "", None
    best = alternatives[0]
    if not isinstance(best, dict):
        return "", None
    transcript = best.get("transcript")
    confidence = best.get("confidence")
    text = transcript.strip() if isinstance(transcript, str) else ""
    score = float(confidence) if isinstance(confidence, int | float) else None
    return text, score


def _result_end(message: Mapping[str, Any]) -> float | None:
    start, duration = message.get("start"), message.get("duration")
    if isinstance(start, int | float) and isinstance(duration, int | float):
        return float(start) + float(duration)
    return None


def _closed_error(
    exc: ConnectionClosed | None, ws: ClientConnection | None = None
) -> ProviderError:
    """What a close the stream did not ask for means to the session."""
    frame = exc.rcvd if exc is not None else (ws.close_rcvd if ws is not None else None)
    if frame is None:
        return ProviderError(
            ErrorCode.NETWORK_ERROR,
            PROVIDER,
            "connection lost (no close frame)",
            retryable=True,
            cause=exc,
        )
    what = (
        f"connection closed by Deepgram ({frame.code}{': ' + frame.reason if frame.reason else ''})"
    )
    if frame.code in _REQUEST_CLOSE_CODES:
        return ProviderError(ErrorCode.PROVIDER_ERROR, PROVIDER, what, retryable=False, cause=exc)
    # 1011 (NET-0000/NET-0001 timeouts, internal errors), 1001 (going away), even an
    # unrequested 1000: a new connection is worth a try.
    return ProviderError(ErrorCode.NETWORK_ERROR, PROVIDER, what, retryable=True, cause=exc)


class DeepgramSTT:
    """Deepgram streaming recogniser factory; one instance serves every call.

    `base_url` is the API root (`wss://api.deepgram.com` by default); `http(s)://` roots are
    accepted too, so one `DEEPGRAM_URL` serves this and the speech synthesiser.
    """

    name = PROVIDER

    def __init__(
        self,
        api_key: str,
        base_url: str | None = None,
        *,
        model: str = "nova-3",
        language: str | None = "en",
        encoding: Encoding = "linear16",
        sample_rate: int = 8000,
        smart_format: bool = True,
        endpointing: int | Literal[False] | None = None,
        utterance_end_ms: int | None = None,
        extra_params: Mapping[str, str | int | bool] | None = None,
        finalize_timeout: float = 1.5,
        idle_keep_alive: float = IDLE_KEEP_ALIVE_SECONDS,
        open_timeout: float = 10.0,
        close_timeout: float = 2.0,
    ) -> None:
        if not api_key:
            raise ValueError("api_key: a Deepgram API key is required")
        if encoding not in ("linear16", "mulaw"):
            raise ValueError(f"encoding must be 'linear16' or 'mulaw', got {encoding!r}")
        if sample_rate not in (8000, 16000, 24000, 32000, 44100, 48000):
            raise ValueError(f"sample_rate {sample_rate} is not a rate phone or web audio uses")
        if finalize_timeout <= 0 or idle_keep_alive <= 0:
            raise ValueError("finalize_timeout and idle_keep_alive must be positive")
        self._api_key = api_key
        self.base_url = base_url
        self.model = model
        self.language = language
        self.encoding: Encoding = encoding
        self.sample_rate: int = sample_rate
        self.smart_format = smart_format
        self.endpointing = endpointing
        self.utterance_end_ms = utterance_end_ms
        self.extra_params = dict(extra_params or {})
        self.finalize_timeout = finalize_timeout
        self.idle_keep_alive = idle_keep_alive
        self.open_timeout = open_timeout
        self.close_timeout = close_timeout

    def __repr__(self) -> str:
        return (
            f"DeepgramSTT(model={self.model!r}, encoding={self.encoding!r}, "
            f"sample_rate={self.sample_rate}, base_url={self.base_url!r})"
        )

    @property
    def url(self) -> str:
        """The listen URL with every query parameter (nothing secret: the key is a header)."""
        params: dict[str, str | int | bool] = {
            "model": self.model,
            "encoding": self.encoding,
            "sample_rate": self.sample_rate,
            "channels": 1,
            "interim_results": True,
            "punctuate": True,
            "smart_format": self.smart_format,
        }
        if self.language:
            params["language"] = self.language
        if self.endpointing is not None:
            params["endpointing"] = self.endpointing
        if self.utterance_end_ms is not None:
            params["utterance_end_ms"] = self.utterance_end_ms
        params.update(self.extra_params)
        query = urlencode({k: _query_value(v) for k, v in params.items()})
        return f"{_listen_endpoint(self.base_url)}?{query}"

    async def open_stream(self) -> DeepgramStream:
        try:
            ws = await connect(
                self.url,
                additional_headers={"Authorization": f"Token {self._api_key}"},
                open_timeout=self.open_timeout,
                close_timeout=self.close_timeout,
                logger=_WS_LOGGER,
            )
        except InvalidStatus as exc:
            raise _handshake_error(exc) from None
        except TimeoutError as exc:
            raise ProviderError(
                ErrorCode.TIMEOUT, PROVIDER, "websocket handshake timed out", cause=exc
            ) from None
        except InvalidURI as exc:
            raise ProviderError(
                ErrorCode.INVALID_CONFIG, PROVIDER, f"bad URL: {exc}", retryable=False, cause=exc
            ) from None
        except (OSError, InvalidHandshake) as exc:
            raise ProviderError(
                ErrorCode.NETWORK_ERROR,
                PROVIDER,
                f"cannot connect: {type(exc).__name__}: {exc}",
                retryable=True,
                cause=exc,
            ) from None
        # The request id is what Deepgram support asks for; the key never reaches a log.
        log.debug(
            "deepgram: listening (model %s, request id %s)",
            self.model,
            ws.response.headers.get("dg-request-id") if ws.response else None,
        )
        return DeepgramStream(
            ws,
            encoding=self.encoding,
            sample_rate=self.sample_rate,
            finalize_timeout=self.finalize_timeout,
            close_timeout=self.close_timeout,
            idle_keep_alive=self.idle_keep_alive,
        )


def _query_value(value: str | int | bool) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _listen_endpoint(base_url: str | None) -> str:
    parts = urlsplit((base_url or DEFAULT_URL).rstrip("/"))
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path if parts.path not in ("", "/") else LISTEN_PATH
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def _handshake_error(exc: InvalidStatus) -> ProviderError:
    response = exc.response
    status = response.status_code
    detail = _error_detail(response.headers.get("dg-error"), response.body)
    message = f"handshake rejected: HTTP {status}" + (f": {detail}" if detail else "")
    return status_error(PROVIDER, status, message, response.headers, cause=exc)


def _error_detail(header: str | None, body: bytes | None) -> str:
    """Deepgram's own words: `err_msg` or `message` from the JSON body, else `dg-error`."""
    if body:
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if isinstance(payload, dict):
            for key in ("err_msg", "message", "details", "err_code", "category"):
                value = payload.get(key)
                if isinstance(value, str) and value:
                    return value[:300]
    return (header or "")[:300]
