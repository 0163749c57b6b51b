"""`voice-gateway load`: many simulated Twilio callers against a running gateway at once.

Each caller does what Twilio does (signed webhook, Media Streams websocket, `connected` and
`start`, one 20 ms μ-law frame per slot, mark echoes when its playout model says the audio was
heard, `stop`), and speaks turn after turn: a stretch of vowel-like speech that the real
webrtcvad calls voiced, silence, the reply played out in real time, a pause, the next turn.

What is measured is what a caller hears (reply latency, missing replies, gaps in the reply
audio), next to how late the load tool itself sent its frames: a gateway is only judged
saturated while the load tool is not.

Cost is what decides the shape, since hundreds of callers share one core:
- one task per call: the websocket is sans-I/O (`websockets`' `ClientProtocol` under a plain
  `asyncio.Protocol`), so received frames are handled in `data_received`, with no reader task,
  and sends are synchronous writes, so sequence numbers need no lock;
- the media message is one bytes %-format of a per-call template and a payload that is
  base64-encoded once per frame position for every caller (`CallerAudio`);
- one shared HTTP client for the webhooks.

Timing: calls start evenly over `ramp` seconds; all of them hang up together `duration`
seconds after the last one started, so the steady part (every call up) is `duration` long,
and that is where the gateway's CPU is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import binascii
import contextlib
import functools
import gc
import math
import sys
import time
from array import array
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx
import numpy as np
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import OPEN
from websockets.uri import parse_uri

from gateway.caller import (
    FRAME_BYTES,
    FRAME_SECONDS,
    MAX_MESSAGE,
    SILENCE_FRAME,
    CallError,
    _post_webhook,
    _sign,
    new_sid,
)
from gateway.caller_playout import PlayoutBuffer, Reply
from gateway.load_report import (
    CallResult,
    LoadReport,
    ProcessProbe,
    SteadyMeasurement,
    build_report,
    measure_steady_part,
    summary_line,
)
from telephony.g711 import pcm_to_ulaw
from telephony.twilio.messages import TwilioProtocolError
from telephony.twilio.peer import (
    OutboundMark,
    OutboundMedia,
    encode_connected,
    encode_mark_echo,
    encode_start,
    encode_stop,
    parse_gateway_message,
)
from telephony.twilio.signature import SIGNATURE_HEADER

__all__ = [
    "CallerAudio",
    "add_load_parser",
    "main_load",
    "media_template",
    "new_event_loop",
    "new_http_client",
    "run_call",
    "run_load",
    "start_offset",
    "vowel_pcm",
]

T = TypeVar("T")

RATE = 8000
REPLY_TIMEOUT = 5.0  # a turn with no reply audio this long after the caller stopped: missing
PAUSE = 1.0  # between the end of a reply's audio and the caller's next turn
# A reply is over once nothing has played or arrived for this long (`PlayoutBuffer.settle`).
SETTLE = 0.6
UNDERRUN_GAP = 0.1  # shorter gaps in a reply are delivery jitter, not an audible break
CONNECT_TIMEOUT = 10.0
CLOSE_WAIT = 2.0  # for the gateway's side of the closing handshake after `stop`
START_DELAY = 0.2  # first call's start after run_load begins, so setup is off the clock


# ---------------------------------------------------------------------------------------------
# The caller's voice


def vowel_pcm(seconds: float, *, amplitude: int = 12000) -> bytes:
    """A sustained vowel as 16-bit PCM at 8 kHz: three harmonics of a slightly wavering
    150 Hz voice (the second strongest, like a first formant near 300 Hz) under a slow
    syllable-rate envelope. webrtcvad's speech model wants harmonic energy in the voice band;
    a pure tone is voiced only at low aggressiveness, this is voiced at all four."""
    n = max(1, round(seconds * RATE))
    t = np.arange(n) / RATE
    pitch = 150 * (1 + 0.04 * np.sin(2 * np.pi * 2.0 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / RATE
    voice = 0.6 * np.sin(phase) + 1.0 * np.sin(2 * phase) + 0.8 * np.sin(3 * phase)
    envelope = 0.65 + 0.35 * np.sin(2 * np.pi * 3.0 * t)
    fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.03)  # no click at either end
    signal = voice * envelope * fade
    peak = float(np.abs(signal).max()) or 1.0
    return (signal * (amplitude / peak)).astype("<i2").tobytes()


@dataclass(frozen=True, slots=True)
class CallerAudio:
    """Every frame a caller can send, base64-encoded once and shared by all callers."""

    speech: tuple[bytes, ...]  # one payload per frame position of the utterance
    silence: bytes
    speech_ulaw: bytes  # the utterance as sent, for checking it against a VAD

    @staticmethod
    @functools.cache
    def for_speech(seconds: float) -> CallerAudio:
        if not seconds > 0:
            raise ValueError(f"speech_seconds must be positive, got {seconds}")
        ulaw = pcm_to_ulaw(vowel_pcm(seconds))
        ulaw = ulaw.ljust(-(-len(ulaw) // FRAME_BYTES) * FRAME_BYTES, SILENCE_FRAME[:1])
        frames = [ulaw[i : i + FRAME_BYTES] for i in range(0, len(ulaw), FRAME_BYTES)]
        return CallerAudio(
            speech=tuple(_b64(frame) for frame in frames),
            silence=_b64(SILENCE_FRAME),
            speech_ulaw=ulaw,
        )


def _b64(data: bytes) -> bytes:
    return binascii.b2a_base64(data, newline=False)


def media_template(stream_sid: str) -> bytes:
    """An inbound media message with `%d` for sequence number, chunk and timestamp and `%b`
    for the base64 payload: byte for byte what `telephony.twilio.peer.encode_inbound_media`
    writes (a test holds it to that), for one %-format per frame instead of a dict, a JSON
    dump and a base64 encode."""
    if not stream_sid.isalnum():
        raise ValueError(f"stream SID {stream_sid!r} would need escaping")
    return (
        b'{"event":"media","sequenceNumber":"%d","media":{"track":"inbound","chunk":"%d",'
        b'"timestamp":"%d","payload":"%b"},"streamSid":"' + stream_sid.encode() + b'"}'
    )


# ---------------------------------------------------------------------------------------------
# The websocket, sans-I/O


class _StreamLink(asyncio.Protocol):
    """One call's websocket: `websockets`' protocol state machine over an asyncio transport.

    Incoming text messages go straight to `on_message` from `data_received`; `send_text`
    writes at once. `closed` turns true on the first sign the stream is over (a close frame,
    a protocol error, the TCP connection gone), which the call's task checks every frame.
    """

    def __init__(
        self, ws: ClientProtocol, headers: dict[str, str], on_message: Callable[[bytes], None]
    ) -> None:
        loop = asyncio.get_running_loop()
        self.ws = ws
        self.on_message = on_message
        self.opened: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.closed = False
        self.close_detail = ""
        self._headers = headers
        self._transport: asyncio.Transport | None = None
        self._fragments: list[bytes] | None = None

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports have the asyncio.Transport methods without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        request = self.ws.connect()
        for name, value in self._headers.items():
            request.headers[name] = value
        self.ws.send_request(request)
        self._flush()

    def data_received(self, data: bytes) -> None:
        ws = self.ws
        ws.receive_data(data)
        for event in ws.events_received():
            if type(event) is Frame:
                self._frame(event)
            elif type(event) is Response and ws.handshake_exc is None and not self.opened.done():
                self.opened.set_result(None)
        if ws.handshake_exc is not None and not self.opened.done():
            self.opened.set_exception(_refusal(ws.handshake_exc))
        if ws.parser_exc is not None:
            self._end(f"websocket protocol error: {ws.parser_exc}")
        self._flush()

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self._end("the gateway closed the TCP connection")
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(f"connection lost: {exc}" if exc else "the connection closed")
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(self.close_detail))
        if not self.lost.done():
            self.lost.set_result(None)

    # -- the call's side

    def send_text(self, data: bytes) -> None:
        if self.ws.state is OPEN:
            self.ws.send_text(data)
            self._flush()

    def close(self) -> None:
        if self.ws.state is OPEN:
            self.ws.send_close(1000)
            self._flush()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # -- internals

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if frame.fin:
                self.on_message(frame.data)
            else:
                self._fragments = [frame.data]
        elif opcode is Opcode.CONT and self._fragments is not None:
            self._fragments.append(frame.data)
            if frame.fin:
                message, self._fragments = b"".join(self._fragments), None
                self.on_message(message)
        elif opcode is Opcode.CLOSE:
            code = self.ws.close_code
            reason = self.ws.close_reason
            self._end(
                f"the gateway closed the websocket (code {code}{': ' if reason else ''}"
                f"{reason or ''})"
            )

    def _end(self, detail: str) -> None:
        if not self.closed:
            self.closed = True
            self.close_detail = detail

    def _flush(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        for chunk in self.ws.data_to_send():
            if chunk:
                transport.write(chunk)
            elif transport.can_write_eof():  # websockets' SEND_EOF: half-close
                transport.write_eof()


class _Refused(Exception):
    pass


def _refusal(exc: Exception) -> Exception:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return _Refused(f"HTTP {status}" if status is not None else str(exc))


# ---------------------------------------------------------------------------------------------
# One caller

# Where a caller is in its conversation.
_GREETING, _LISTENING, _PAUSING, _SPEAKING, _AWAITING = range(5)


class _Caller:
    """One simulated call: a single task paces the frames and runs the conversation; the
    websocket's `data_received` feeds the playout buffer in between."""

    def __init__(
        self,
        audio: CallerAudio,
        lateness: array[float],
        *,
        turns_per_call: int | None,
        reply_timeout: float,
        pause: float,
    ) -> None:
        self.audio = audio
        self.lateness = lateness
        self.turns_per_call = turns_per_call
        self.reply_timeout = reply_timeout
        self.pause = pause
        self.result = CallResult()
        self.buffer = PlayoutBuffer(settle=SETTLE, gap_tolerance=UNDERRUN_GAP)
        self.call_sid = new_sid("CA")
        self.stream_sid = new_sid("MZ")
        self.account_sid = new_sid("AC")
        self.seq = 0
        self.link: _StreamLink | None = None

    async def run(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        auth_token: str | None,
        start_at: float,
        end_at: float,
    ) -> CallResult:
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        try:
            if await self._dial(http, base_url, auth_token):
                await self._converse(end_at)
        except Exception as exc:  # a bug here must cost one call, not the run
            self.result.fail("load tool error", f"load tool error: {exc!r}")
        finally:
            await self._hang_up()
        return self.result

    async def _dial(self, http: httpx.AsyncClient, base_url: str, auth_token: str | None) -> bool:
        params = {
            "CallSid": self.call_sid,
            "AccountSid": self.account_sid,
            "From": "+15550100001",
            "To": "+15550100002",
            "CallStatus": "ringing",
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
        }
        try:
            target = await _post_webhook(http, base_url, params, auth_token)
        except CallError as exc:
            self.result.fail("webhook", str(exc))
            return False
        uri = parse_uri(target.url)
        headers = {SIGNATURE_HEADER: _sign(auth_token, target.url, {})} if auth_token else {}
        ws = ClientProtocol(uri, max_size=MAX_MESSAGE)
        link = _StreamLink(ws, headers, self._on_message)
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: link,
                    uri.host,
                    uri.port,
                    ssl=uri.secure or None,
                    server_hostname=uri.host if uri.secure else None,
                ),
                CONNECT_TIMEOUT,
            )
            self.link = link
            await asyncio.wait_for(asyncio.shield(link.opened), CONNECT_TIMEOUT)
        except _Refused as exc:
            self.result.fail("websocket refused", f"websocket {target.url} refused: {exc}")
            return False
        except (OSError, TimeoutError) as exc:
            self.result.fail("websocket", f"cannot open websocket {target.url}: {exc!r}")
            return False
        # Twilio's order: `connected` has no sequence number, `start` is number 1.
        link.send_text(encode_connected().encode())
        self.seq = 1
        start = encode_start(
            self.stream_sid, self.call_sid, self.account_sid, target.parameters or None, self.seq
        )
        link.send_text(start.encode())
        return True

    async def _converse(self, end_at: float) -> None:
        """Frame k goes out at t0 + k * 20 ms, from the clock, never from summed sleeps, so
        a late wake-up does not push every later frame back; each send's lateness is kept."""
        link, buffer, result = self.link, self.buffer, self.result
        assert link is not None
        clock, sleep = time.monotonic, asyncio.sleep
        record_lateness = self.lateness.append
        template = media_template(self.stream_sid)
        speech, silence = self.audio.speech, self.audio.silence
        speech_frames = len(speech)
        reply_timeout, pause = self.reply_timeout, self.pause
        max_turns = math.inf if self.turns_per_call is None else self.turns_per_call

        t0 = clock()
        phase, until = _GREETING, t0 + reply_timeout
        reply: Reply | None = None
        position = turns = 0
        spoke_at = speech_end = 0.0
        k = 0
        while True:
            deadline = t0 + k * FRAME_SECONDS
            # Always yield, even when late, so one late caller's backlog cannot starve the rest.
            await sleep(max(0.0, deadline - clock()))
            if link.closed:
                result.fail("closed early", f"before the end: {link.close_detail}")
                break
            if result.error is not None:
                break
            if clock() >= end_at:
                break
            self.seq += 1
            payload = speech[position] if phase == _SPEAKING else silence
            link.send_text(template % (self.seq, k + 1, k * 20, payload))
            now = clock()
            record_lateness(now - deadline)
            k += 1
            # The playout clock: marks fall due and replies settle with time alone.
            due = buffer.next_deadline()
            if due is not None and now >= due:
                buffer.advance(now)
                self._send_echoes()

            if phase == _SPEAKING:
                if position == 0:
                    spoke_at = now
                    buffer.set_caller_talking(True)
                position += 1
                if position == speech_frames:
                    speech_end = now
                    buffer.set_caller_talking(False)
                    phase = _AWAITING
            elif phase == _AWAITING:
                reply = buffer.first_reply_since(spoke_at)
                if reply is not None:
                    # When its first audio began playing, not when it arrived.
                    result.latencies.append(reply.started_at - speech_end)
                    phase = _LISTENING
                elif now - speech_end > reply_timeout:
                    result.missing += 1
                    phase, until = _PAUSING, now + pause
            elif phase == _LISTENING:
                assert reply is not None
                if reply.closed:
                    ended = reply.ended_at if reply.ended_at is not None else now
                    phase, until = _PAUSING, ended + pause
            elif phase == _PAUSING:
                if now >= until and turns < max_turns:
                    phase, position = _SPEAKING, 0
                    turns += 1
            elif phase == _GREETING:
                reply = buffer.first_reply_since(-math.inf)
                if reply is not None:
                    phase = _LISTENING
                elif now >= until:
                    result.fail("no greeting", f"no greeting within {reply_timeout:.0f} s")
                    break
        if phase in (_SPEAKING, _AWAITING) and result.error is None:
            result.unfinished += 1
        result.frames_sent = k

    def _on_message(self, data: bytes) -> None:
        now = time.monotonic()
        try:
            message = parse_gateway_message(data)
        except TwilioProtocolError as exc:
            self.result.fail("bad message", f"the gateway sent a bad message: {exc}")
            return
        if message.stream_sid != self.stream_sid:
            self.result.fail("bad message", f"the gateway used stream {message.stream_sid!r}")
            return
        if isinstance(message, OutboundMedia):
            self.buffer.push_audio(now, message.payload)
            return
        if isinstance(message, OutboundMark):
            self.buffer.push_mark(now, message.name)
        else:
            self.buffer.clear(now)
        self._send_echoes()

    def _send_echoes(self) -> None:
        link = self.link
        for name in self.buffer.take_echoes():
            if link is not None:
                self.seq += 1
                link.send_text(encode_mark_echo(self.stream_sid, self.seq, name).encode())

    async def _hang_up(self) -> None:
        now = time.monotonic()
        buffer, result = self.buffer, self.result
        buffer.stop(now)
        for reply in buffer.replies:
            if not reply.stale:
                result.underruns += reply.underruns
                result.underrun_seconds += reply.gap_seconds
                result.reply_seconds += reply.audio_seconds + reply.gap_seconds
        link = self.link
        if link is None:
            return
        if not link.closed:
            self.seq += 1
            stop = encode_stop(self.stream_sid, self.seq, self.account_sid, self.call_sid)
            link.send_text(stop.encode())
            link.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(link.lost), CLOSE_WAIT)
        link.abort()


# ---------------------------------------------------------------------------------------------
# The run


def new_http_client() -> httpx.AsyncClient:
    """The client every caller of a run shares for its webhooks: enough connections that a
    burst of webhooks during the ramp never queues for one."""
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    return httpx.AsyncClient(timeout=CONNECT_TIMEOUT, limits=limits)


async def run_call(
    http: httpx.AsyncClient,
    url: str,
    audio: CallerAudio,
    lateness: array[float],
    *,
    start_at: float,
    end_at: float,
    auth_token: str | None = None,
    turns_per_call: int | None = None,
    reply_timeout: float = REPLY_TIMEOUT,
    pause: float = PAUSE,
) -> CallResult:
    """One simulated call, the same as each of `run_load`'s: dial at `start_at`, talk turn
    after turn, hang up at `end_at` (both `time.monotonic()` times), and return what the
    caller saw. Each frame's send lateness is appended to `lateness`. Never raises for what
    the gateway does: a failure is in the result. For tools that start and end calls on
    their own schedule (`bench.soak`)."""
    caller = _Caller(
        audio, lateness, turns_per_call=turns_per_call, reply_timeout=reply_timeout, pause=pause
    )
    return await caller.run(http, url.rstrip("/"), auth_token, start_at, end_at)


async def run_load(
    url: str,
    calls: int,
    ramp: float,
    duration: float,
    *,
    auth_token: str | None = None,
    gateway_pid: int | None = None,
    speech_seconds: float = 1.0,
    turns_per_call: int | None = None,
    reply_timeout: float = REPLY_TIMEOUT,
    pause: float = PAUSE,
) -> LoadReport:
    """Run `calls` simulated callers against the gateway at `url` and report what they saw.

    Calls start evenly over `ramp` seconds and all hang up `duration` seconds after the last
    one started. `auth_token` signs the webhook and websocket like Twilio (needed when the
    gateway enforces signatures). With `gateway_pid`, the gateway's CPU over the steady part
    and its RSS are read from /proc (that process only, not its children). Raises ValueError
    for bad arguments and ProcessLookupError for a pid that is not running.
    """
    if calls < 1:
        raise ValueError(f"calls must be at least 1, got {calls}")
    if ramp < 0 or duration <= 0:
        raise ValueError(f"ramp must be >= 0 and duration > 0, got {ramp} and {duration}")
    if turns_per_call is not None and turns_per_call < 0:
        raise ValueError(f"turns_per_call must be >= 0, got {turns_per_call}")
    audio = CallerAudio.for_speech(speech_seconds)
    probe = ProcessProbe(gateway_pid) if gateway_pid is not None else None
    base_url = url.rstrip("/")
    lateness: array[float] = array("d")
    t0 = time.monotonic() + START_DELAY
    steady_start, end_at = t0 + ramp, t0 + ramp + duration
    callers = [
        _Caller(
            audio,
            lateness,
            turns_per_call=turns_per_call,
            reply_timeout=reply_timeout,
            pause=pause,
        )
        for _ in range(calls)
    ]
    async with new_http_client() as http:
        monitor = asyncio.create_task(measure_steady_part(probe, calls, steady_start, end_at))
        try:
            results = await asyncio.gather(
                *(
                    caller.run(
                        http, base_url, auth_token, t0 + start_offset(i, calls, ramp), end_at
                    )
                    for i, caller in enumerate(callers)
                )
            )
        finally:
            # Calls that all ended well before the end failed: there is no steady part to
            # measure, and nothing to wait for.
            if time.monotonic() < end_at - 1:
                monitor.cancel()
            await asyncio.wait({monitor}, timeout=2)
    measured = SteadyMeasurement()
    if monitor.done() and not monitor.cancelled() and monitor.exception() is None:
        measured = monitor.result()
    return build_report(
        results,
        lateness,
        url=base_url,
        ramp=ramp,
        duration=duration,
        speech_seconds=speech_seconds,
        event_loop=type(asyncio.get_running_loop()).__module__.split(".")[0],
        client_cpu_percent=measured.client_cpu_percent,
        gateway=measured.gateway,
        frame_seconds=FRAME_SECONDS,
        host_cores=measured.host_cores,
    )


_GOLDEN = (5**0.5 - 1) / 2


def start_offset(i: int, calls: int, ramp: float) -> float:
    """When call `i` starts, after the first: evenly over the ramp, plus a share of one frame
    that spreads the calls' 20 ms send slots over the frame.

    Without it, a ramp that is a multiple of 20 ms per call (5 s for 50 calls) puts every
    call's frames in the same millisecond, and both ends see bursts no real set of callers
    makes. Multiples of the golden ratio, modulo 1, fill the frame evenly for any count.
    """
    return ramp * i / calls + (i * _GOLDEN % 1.0) * FRAME_SECONDS


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when it is installed (it comes with uvicorn[standard]): the load tool's own
    per-frame cost is what limits how many calls one core can simulate."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run a load on a fresh event loop (the CLI's and the sweep's entry point).

    Everything alive at this point (modules, the precomputed audio) is moved out of the
    collector's reach first: a full collection walking it all took ~20 ms, long enough to
    make a few hundred frames late at once (measured).
    """
    gc.collect()
    gc.freeze()
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(coro)


# ---------------------------------------------------------------------------------------------
# The command line


def add_load_parser(sub: Any) -> None:
    load = sub.add_parser(
        "load",
        help="load a running gateway with many simulated Twilio callers",
        description="N callers in one process, each talking turn after turn with a synthetic "
        "voice, until DURATION seconds after the last one started. Prints a one-line summary "
        "and the report as JSON (to stdout, the summary then going to stderr, unless --json "
        "names a file). Exit status 1 when a call failed or a reply was missing.",
    )
    load.add_argument("--calls", type=int, required=True, metavar="N", help="concurrent calls")
    load.add_argument(
        "--ramp",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds over which calls start (default 10)",
    )
    load.add_argument(
        "--duration",
        type=float,
        default=30.0,
        metavar="T",
        help="seconds with every call up (default 30)",
    )
    load.add_argument("--url", help="gateway base URL (default: PUBLIC_URL or local)")
    load.add_argument(
        "--gateway-pid",
        type=int,
        metavar="PID",
        help="the gateway's pid, for its CPU and RSS (that process only)",
    )
    load.add_argument(
        "--turns-per-call",
        type=int,
        metavar="K",
        help="at most K turns per call, then silence (default: no limit)",
    )
    load.add_argument(
        "--speech-seconds", type=float, default=1.0, help="length of each utterance (default 1.0)"
    )
    load.add_argument("--json", metavar="FILE", help="write the JSON report here")
    load.set_defaults(func=main_load)


def main_load(args: argparse.Namespace) -> int:
    from infra.settings import SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"voice-gateway: invalid setting: {exc}", file=sys.stderr)
        return 2
    url = (args.url or settings.public_url).rstrip("/")
    try:
        report = run_blocking(
            run_load(
                url,
                args.calls,
                args.ramp,
                args.duration,
                auth_token=settings.twilio_auth_token,
                gateway_pid=args.gateway_pid,
                speech_seconds=args.speech_seconds,
                turns_per_call=args.turns_per_call,
            )
        )
    except (ValueError, ProcessLookupError) as exc:
        print(f"voice-gateway load: {exc}", file=sys.stderr)
        return 2
    line = summary_line(report)
    if args.json:
        Path(args.json).write_text(report.to_json() + "\n")
        print(line)
    else:
        print(line, file=sys.stderr)
        print(report.to_json())
    return 0 if report.ok else 1
