"""A simulated phone caller that behaves towards a running gateway exactly like Twilio does.

It posts the voice webhook, follows the TwiML `<Connect><Stream>` to the websocket, streams the
caller's side in real time (20 ms μ-law frames, silence between utterances), plays the gateway's
audio through a model of Twilio's playout buffer and echoes marks when that model says they were
heard. Lines of the script are spoken with eSpeak; `dtmf:12#` presses keys instead. The same code
is the newcomer's `voice-gateway call` and the integration tests' client, so what it measures
(reply latency, clear latency, underruns, leftover audio after a clear) is what a caller hears.

The pure parts (playout buffer, script format) live in `caller_playout.py`; this module is the
I/O around them: one task paces the outgoing frames, one reads the gateway, one runs the playout
clock, one polls the session's events, and the script runs on top.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import time
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from gateway.caller_playout import PlayoutBuffer, Reply, ScriptLine, attribute_replies
from gateway.caller_playout import parse_script as parse_script
from session.audio import StreamingResampler
from telephony.g711 import pcm_to_ulaw
from telephony.twilio.messages import TwilioProtocolError
from telephony.twilio.peer import (
    OutboundClear,
    OutboundMark,
    OutboundMedia,
    encode_connected,
    encode_dtmf,
    encode_inbound_media,
    encode_mark_echo,
    encode_start,
    encode_stop,
    parse_gateway_message,
)
from telephony.twilio.signature import SIGNATURE_HEADER, SignatureChecker

__all__ = [
    "CallError",
    "CallReport",
    "StreamTarget",
    "TurnReport",
    "parse_script",
    "parse_twiml",
    "run_call",
    "run_call_cli",
]

FRAME_SECONDS = 0.02
FRAME_BYTES = 160  # 20 ms of 8 kHz μ-law
SILENCE_FRAME = b"\xff" * FRAME_BYTES  # μ-law 0xFF decodes to zero
BREATH_SECONDS = 0.3  # silence before a line, as a person takes a breath
DTMF_INTERVAL = 0.1
BARGE_IN_AFTER = 0.6  # how far into a reply the caller cuts in when barge_in is on
EVENT_POLL_INTERVAL = 0.2
WAIT_POLL_INTERVAL = 0.01
# A reply that has started may run long, but a gateway that never stops must not hang the call.
REPLY_PLAY_LIMIT = 120.0
MAX_MESSAGE = 4 * 2**20  # a gateway may send a whole reply as one media message

Printer = Callable[[str], None]
Synthesizer = Callable[[str], bytes]


class CallError(Exception):
    """The call could not be set up (webhook refused, bad TwiML, websocket refused)."""

    def __init__(self, message: str, *, status: int | None = None, body: str | None = None):
        super().__init__(message)
        self.status = status
        self.body = body


@dataclass
class TurnReport:
    said: str
    spoke_at: float  # first frame of speech (or first digit) sent, seconds since call start
    speech_end_at: float  # last frame of speech (or last digit) sent
    reply_started_at: float | None
    reply_latency: float | None  # first reply audio played minus the caller's last speech frame
    reply_audio_seconds: float  # audio of the reply the caller actually heard
    interrupted_previous: bool  # a clear arrived while the caller spoke over the last reply
    clear_latency: float | None  # that clear's arrival minus spoke_at
    transcripts: list[str] = field(default_factory=list)  # the gateway's final transcripts
    agent_text: list[str] = field(default_factory=list)  # sentences of the reply sent to TTS


@dataclass
class CallReport:
    call_sid: str
    stream_sid: str
    greeting_audio_seconds: float
    turns: list[TurnReport]
    marks_echoed: int
    clears: int
    # Media messages received inside a clear window: after a `clear`, until the end of the
    # caller's utterance in progress (or for 0.3 s when the caller was silent), or until the
    # gateway's next `mark` if that comes first. `caller_playout` explains why 0 is right.
    media_after_clear: int
    underruns: int  # gaps in the playout of a reply (the buffer ran dry mid-reply)
    send_lateness_max: float  # worst delay of an outgoing frame behind its real-time slot
    events: list[dict[str, Any]]  # the session's events from the REST API, as received
    errors: list[str]
    late_frames: int = 0  # outgoing frames sent a whole frame or more behind their slot

    @property
    def ok(self) -> bool:
        return not self.errors and all(t.reply_started_at is not None for t in self.turns)


@dataclass(frozen=True, slots=True)
class StreamTarget:
    url: str
    parameters: dict[str, str]


def parse_twiml(text: str) -> StreamTarget:
    """The stream URL and parameters of a `<Response><Connect><Stream>` answer."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise CallError(f"the webhook answer is not XML ({exc})", body=text) from None
    stream = root.find("./Connect/Stream") if root.tag == "Response" else None
    if stream is None:
        raise CallError("the webhook's TwiML has no <Connect><Stream>", body=text)
    url = stream.get("url", "").strip()
    if not url:
        raise CallError("the TwiML <Stream> has no url", body=text)
    parameters = {
        name: param.get("value", "")
        for param in stream.findall("Parameter")
        if (name := param.get("name"))
    }
    return StreamTarget(url, parameters)


def new_sid(prefix: str) -> str:
    """A Twilio-shaped SID: two letters and 32 hex digits."""
    return prefix + secrets.token_hex(16)


def espeak_synthesizer() -> Synthesizer:
    """Text to 8 kHz μ-law through eSpeak, imported only when a call actually speaks."""
    from providers.tts.espeak import ESpeakTTS

    tts = ESpeakTTS()

    def synthesize(text: str) -> bytes:
        pcm = StreamingResampler(tts.sample_rate, 8000).process(tts.synthesize_blocking(text))
        return pcm_to_ulaw(pcm)

    return synthesize


async def run_call(
    url: str,
    lines: Sequence[str],
    *,
    auth_token: str | None = None,
    api_token: str | None = None,
    from_number: str = "+15550100001",
    to_number: str = "+15550100002",
    barge_in: bool = False,
    hangup_after_reply_start: float | None = None,
    reply_timeout: float = 15.0,
    settle: float = 0.6,
    printer: Printer | None = print,
    verbose: bool = False,
    account_sid: str | None = None,
    synthesize: Synthesizer | None = None,
) -> CallReport:
    """Place one call to the gateway at `url`, speak `lines`, and report what was heard.

    `synthesize` turns a line into 8 kHz μ-law (eSpeak by default; tests may pass a tone).
    Raises CallError when the call cannot be set up; problems during the call go into
    `CallReport.errors`.
    """
    script = parse_script(lines)
    base_url = url.rstrip("/")
    call_sid, stream_sid = new_sid("CA"), new_sid("MZ")
    account_sid = account_sid or new_sid("AC")

    # Synthesised before dialling so a slow synthesiser cannot stall the real-time stream.
    audio = [b""] * len(script)
    if any(not line.dtmf for line in script):
        try:
            speak = synthesize or espeak_synthesizer()
            for i, line in enumerate(script):
                if not line.dtmf:
                    audio[i] = await asyncio.to_thread(speak, line.text)
        except Exception as exc:  # whatever the synthesiser raises, the call cannot go ahead
            raise CallError(f"cannot synthesise the caller's speech: {exc}") from exc

    clock = _Clock()  # the call starts when it is dialled, after the speech is ready
    async with httpx.AsyncClient(timeout=10.0) as http:
        params = {
            "CallSid": call_sid,
            "AccountSid": account_sid,
            "From": from_number,
            "To": to_number,
            "CallStatus": "ringing",
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
        }
        target = await _post_webhook(http, base_url, params, auth_token)
        call = _Call(
            clock=clock,
            call_sid=call_sid,
            stream_sid=stream_sid,
            account_sid=account_sid,
            buffer=PlayoutBuffer(settle=settle),
            printer=printer,
            verbose=verbose,
        )
        call.log(f"dialled {to_number} as {from_number}: call {call_sid}")
        headers: dict[str, str] = {}
        if auth_token:
            headers[SIGNATURE_HEADER] = _sign(auth_token, target.url, {})
        try:
            ws = await connect(
                target.url, additional_headers=headers, open_timeout=10, max_size=MAX_MESSAGE
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise CallError(
                f"the stream websocket {target.url} was refused with HTTP {status}",
                status=status,
                body=exc.response.body.decode("utf-8", "replace") if exc.response.body else None,
            ) from None
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            raise CallError(f"cannot open the stream websocket {target.url}: {exc}") from None
        async with ws:
            await call.run(
                ws,
                script,
                audio,
                target,
                http=http,
                events_url=f"{base_url}/api/sessions/{call_sid}/events",
                api_token=api_token,
                barge_in=barge_in,
                hangup_after_reply_start=hangup_after_reply_start,
                reply_timeout=reply_timeout,
            )
    return call.report()


def run_call_cli(
    url: str,
    lines: Sequence[str],
    auth_token: str | None,
    api_token: str | None,
    verbose: bool,
    *,
    barge_in: bool = False,
    hangup_after_reply_start: float | None = None,
) -> int:
    """`voice-gateway call`: run one call, print it as it happens, then a summary."""
    try:
        parse_script(lines)
    except ValueError as exc:  # a script line that cannot be said or dialled
        print(f"call script: {exc}")
        return 1
    try:
        report = asyncio.run(
            run_call(
                url,
                lines,
                auth_token=auth_token,
                api_token=api_token,
                barge_in=barge_in,
                hangup_after_reply_start=hangup_after_reply_start,
                verbose=verbose,
            )
        )
    except CallError as exc:
        print(f"call failed: {exc}")
        if exc.body and verbose:
            print(exc.body[:2000])
        return 1
    for line in summarize(report):
        print(line)
    return 0 if report.ok else 1


def summarize(report: CallReport) -> list[str]:
    answered = [t for t in report.turns if t.reply_latency is not None]
    latencies = [t.reply_latency for t in answered if t.reply_latency is not None]
    out = [f"--- call {report.call_sid}"]
    out.append(f"greeting: {report.greeting_audio_seconds:.1f} s of audio")
    out.append(f"turns: {len(report.turns)}, answered: {len(answered)}")
    if latencies:
        mean = sum(latencies) / len(latencies)
        out.append(f"reply latency: mean {mean:.2f} s, max {max(latencies):.2f} s")
    clear_latencies = [t.clear_latency for t in report.turns if t.clear_latency is not None]
    barge = f", clear latency max {max(clear_latencies):.2f} s" if clear_latencies else ""
    out.append(
        f"marks echoed: {report.marks_echoed}, clears: {report.clears}{barge}, "
        f"media after clear: {report.media_after_clear}, underruns: {report.underruns}"
    )
    out.append(
        f"send lateness max: {report.send_lateness_max * 1000:.1f} ms "
        f"({report.late_frames} frames a frame or more late)"
    )
    out.extend(f"error: {error}" for error in report.errors)
    out.append("result: ok" if report.ok else "result: FAILED")
    return out


# ---------------------------------------------------------------------------------------------
# Setup


async def _post_webhook(
    http: httpx.AsyncClient, base_url: str, params: dict[str, str], auth_token: str | None
) -> StreamTarget:
    webhook = f"{base_url}/twilio/voice"
    headers: dict[str, str] = {}
    if auth_token:
        headers[SIGNATURE_HEADER] = _sign(auth_token, webhook, params)
    try:
        response = await http.post(webhook, data=params, headers=headers)
    except httpx.HTTPError as exc:
        raise CallError(f"cannot reach the gateway at {webhook}: {exc}") from None
    if response.status_code != 200:
        raise CallError(
            f"the webhook {webhook} answered HTTP {response.status_code}: {response.text[:300]}",
            status=response.status_code,
            body=response.text,
        )
    return parse_twiml(response.text)


def _sign(auth_token: str, url: str, params: dict[str, str]) -> str:
    return SignatureChecker(auth_token).sign(url, params)


class _Clock:
    """Seconds since the call started, from a monotonic clock."""

    __slots__ = ("_t0",)

    def __init__(self) -> None:
        self._t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self._t0


@dataclass
class _Turn:
    line: ScriptLine
    spoke_at: float = math.nan
    speech_end_at: float = math.nan
    talked_over_reply: bool = False  # gateway audio was still playing when the caller began
    transcripts: list[str] = field(default_factory=list)
    agent_text: list[str] = field(default_factory=list)


# A frame to send, and what to do once it has gone out (mark the start or end of an utterance).
_Frame = tuple[bytes, Callable[[float], None] | None]
_SILENCE: _Frame = (SILENCE_FRAME, None)


class _Call:
    """One call's I/O: the tasks around the playout buffer, and the script driver."""

    def __init__(
        self,
        *,
        clock: _Clock,
        call_sid: str,
        stream_sid: str,
        account_sid: str,
        buffer: PlayoutBuffer,
        printer: Printer | None,
        verbose: bool,
    ) -> None:
        self.clock = clock
        self.call_sid = call_sid
        self.stream_sid = stream_sid
        self.account_sid = account_sid
        self.buffer = buffer
        self.printer = printer
        self.verbose = verbose
        self.turns: list[_Turn] = []
        self.events: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.lateness_max = 0.0
        self.late_frames = 0
        self._ws: ClientConnection | None = None
        self._seq = 0
        self._send_lock = asyncio.Lock()
        self._outgoing: deque[_Frame] = deque()
        self._wake = asyncio.Event()  # the buffer changed: the playout clock re-arms its timer
        self._ended = asyncio.Event()  # the websocket is gone
        self._hung_up = False
        self._stop_sent = False
        self._announced = 0  # replies already printed
        self._events_after = "0"  # the events API cursor (opaque: the store's event id)

    # -- output ---------------------------------------------------------------------------------

    def log(self, text: str, *, at: float | None = None) -> None:
        if self.printer is not None:
            t = self.clock.now() if at is None else at
            self.printer(f"[{t:5.2f}] {text}")

    def error(self, text: str) -> None:
        # A gateway that gets one thing wrong usually gets it wrong on every message.
        if text not in self.errors:
            self.errors.append(text)
            self.log(f"error: {text}")

    # -- the call -----------------------------------------------------------------------------

    async def run(
        self,
        ws: ClientConnection,
        script: list[ScriptLine],
        audio: list[bytes],
        target: StreamTarget,
        *,
        http: httpx.AsyncClient,
        events_url: str,
        api_token: str | None,
        barge_in: bool,
        hangup_after_reply_start: float | None,
        reply_timeout: float,
    ) -> None:
        self._ws = ws
        try:
            # Twilio's order: `connected` carries no sequence number, `start` is number 1.
            await ws.send(encode_connected())
            await self._send(
                # Twilio leaves customParameters out when the TwiML has no <Parameter>.
                lambda seq: encode_start(
                    self.stream_sid, self.call_sid, self.account_sid, target.parameters or None, seq
                )
            )
        except ConnectionClosed:
            self.error(f"the gateway closed the stream at once ({_close_reason(ws)})")
            return
        tasks = [
            self._spawn(self._pace_media(), "media"),
            self._spawn(self._receive(), "receive"),
            self._spawn(self._run_playout_clock(), "playout"),
        ]
        poller = None
        if api_token:
            poller = self._spawn(self._poll_events(http, events_url, api_token), "events")
        else:
            self.log("(no API token: the gateway's transcripts and agent text are not shown)")
        try:
            await self._converse(script, audio, barge_in, hangup_after_reply_start, reply_timeout)
            if self._ended.is_set() and not self._hung_up:
                self.error(f"the gateway closed the stream ({_close_reason(ws)})")
            await self._hang_up()
            if poller is not None:
                # The session's last events (reply_finished, errors) trail the hang-up.
                await asyncio.sleep(0.5)
        finally:
            for task in [*tasks, poller]:
                if task is not None:
                    task.cancel()
            await asyncio.gather(*(t for t in [*tasks, poller] if t), return_exceptions=True)
        if poller is not None:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                await self._poll_once(http, events_url, api_token or "")
        self._announce_replies()

    async def _converse(
        self,
        script: list[ScriptLine],
        audio: list[bytes],
        barge_in: bool,
        hangup_after_reply_start: float | None,
        reply_timeout: float,
    ) -> None:
        greeting = await self._await_reply_start(0.0, reply_timeout)
        if greeting is None:
            if not self._ended.is_set():
                self.error(f"no greeting within {reply_timeout:.0f} s")
        elif not script and hangup_after_reply_start is not None:
            await self._sleep_until(greeting.started_at + hangup_after_reply_start)
            return
        else:
            await self._await_reply_end(greeting)
        previous = greeting
        for i, line in enumerate(script):
            if self._ended.is_set():
                return
            last = i == len(script) - 1
            # Barge-in talks over the reply to the previous line (not over the greeting).
            talk_over = previous if barge_in and i > 0 else None
            if talk_over is not None:
                await self._sleep_until(talk_over.started_at + BARGE_IN_AFTER)
            turn = await self._speak(line, audio[i], breath=talk_over is None)
            reply = await self._await_reply_start(turn.spoke_at, reply_timeout)
            previous = reply
            if reply is None:
                if not self._ended.is_set():
                    self.error(f"no reply to {str(line)!r} within {reply_timeout:.0f} s")
                continue
            if last and hangup_after_reply_start is not None:
                await self._sleep_until(reply.started_at + hangup_after_reply_start)
                return
            if not (barge_in and not last):
                await self._await_reply_end(reply)

    async def _speak(self, line: ScriptLine, ulaw: bytes, *, breath: bool) -> _Turn:
        turn = _Turn(line)
        self.turns.append(turn)
        if line.dtmf:
            await self._press(turn, line.text)
            return turn
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[None] = loop.create_future()

        def began(at: float) -> None:
            turn.spoke_at = at
            turn.talked_over_reply = self.buffer.playing(at)
            self.buffer.set_caller_talking(True)
            self.log(f'caller: "{line.text}"', at=at)

        def ended(at: float) -> None:
            turn.speech_end_at = at
            self.buffer.set_caller_talking(False)
            if not finished.done():
                finished.set_result(None)

        frames = [ulaw[i : i + FRAME_BYTES] for i in range(0, len(ulaw), FRAME_BYTES)] or [
            SILENCE_FRAME
        ]
        frames[-1] = frames[-1].ljust(FRAME_BYTES, b"\xff")
        if breath:
            self._outgoing.extend((SILENCE_FRAME, None) for _ in range(_frames(BREATH_SECONDS)))
        last = len(frames) - 1
        for k, frame in enumerate(frames):
            callbacks = [cb for cb, applies in ((began, k == 0), (ended, k == last)) if applies]
            self._outgoing.append((frame, _chain(callbacks)))
        await _until_either(finished, self._ended)
        return turn

    async def _press(self, turn: _Turn, digits: str) -> None:
        start = self.clock.now()
        for k, digit in enumerate(digits):
            await self._sleep_until(start + k * DTMF_INTERVAL)
            if self._ended.is_set():
                return
            await self._send(lambda seq, d=digit: encode_dtmf(self.stream_sid, seq, d))
            at = self.clock.now()
            if k == 0:
                turn.spoke_at = at
                turn.talked_over_reply = self.buffer.playing(at)
                self.buffer.set_caller_talking(True)
                self.log(f"caller: presses {digits}", at=at)
            turn.speech_end_at = at
        self.buffer.set_caller_talking(False)

    async def _hang_up(self) -> None:
        if self._hung_up:
            return
        self._hung_up = True
        self._outgoing.clear()
        self.buffer.stop(self.clock.now())
        self._announce_replies()
        if self._ended.is_set() or self._ws is None:
            return
        with contextlib.suppress(ConnectionClosed):
            await self._send_many(
                [lambda seq: encode_stop(self.stream_sid, seq, self.account_sid, self.call_sid)],
                final=True,
            )
            await self._ws.close()
        self.log("caller: hung up (stop sent)")

    # -- waiting on the playout buffer ----------------------------------------------------------

    async def _await_reply_start(self, since: float, limit: float) -> Reply | None:
        """The first answer that began playing at or after `since`, waiting up to `limit`
        seconds from now (the caller's speech has been sent)."""
        found: list[Reply] = []

        def started() -> bool:
            reply = self.buffer.first_reply_since(since)
            if reply is not None:
                found.append(reply)
            return reply is not None

        await self._wait_for(started, limit)
        return found[-1] if found else None

    async def _await_reply_end(self, reply: Reply) -> None:
        closed = await self._wait_for(lambda: reply.closed, REPLY_PLAY_LIMIT)
        if not closed and not self._ended.is_set():
            self.error(f"a reply was still playing after {REPLY_PLAY_LIMIT:.0f} s")

    async def _wait_for(self, predicate: Callable[[], bool], limit: float) -> bool:
        deadline = self.clock.now() + limit
        while not predicate():
            if self._ended.is_set() or self.clock.now() >= deadline:
                return predicate()
            await asyncio.sleep(WAIT_POLL_INTERVAL)
        return True

    async def _sleep_until(self, at: float) -> None:
        delay = at - self.clock.now()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ended.wait(), delay)

    # -- the tasks ------------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A broken task must end the call, not leave the script waiting forever.
                self.error(f"caller {name} task failed: {exc!r}")
                self._ended.set()

        return asyncio.create_task(guarded(), name=f"caller-{name}")

    async def _send(self, encode: Callable[[int], str]) -> None:
        await self._send_many([encode])

    async def _send_many(
        self, encoders: Sequence[Callable[[int], str]], *, final: bool = False
    ) -> None:
        # Numbers are taken under the lock so the wire order is the numbering order, and a batch
        # of mark echoes is never interleaved with another batch.
        if self._ws is None or not encoders:
            return
        async with self._send_lock:
            if self._stop_sent:
                return  # Twilio sends nothing after `stop`; neither do queued frames or echoes
            self._stop_sent = final
            for encode in encoders:
                self._seq += 1
                await self._ws.send(encode(self._seq))

    async def _pace_media(self) -> None:
        # Frame k is due at t0 + k * 20 ms: deadlines come from the clock, never from summed
        # sleeps, so scheduling delays do not accumulate into drift.
        t0 = self.clock.now()
        k = 0
        try:
            while not self._hung_up:
                deadline = t0 + k * FRAME_SECONDS
                delay = deadline - self.clock.now()
                if delay > 0:
                    await asyncio.sleep(delay)
                if self._hung_up:
                    break
                frame, on_sent = self._outgoing.popleft() if self._outgoing else _SILENCE
                chunk, timestamp_ms = k + 1, k * 20
                await self._send(
                    lambda seq, c=chunk, ts=timestamp_ms, f=frame: encode_inbound_media(
                        self.stream_sid, seq, c, ts, f
                    )
                )
                sent_at = self.clock.now()
                lateness = sent_at - deadline
                self.lateness_max = max(self.lateness_max, lateness)
                if lateness >= FRAME_SECONDS:
                    self.late_frames += 1
                if on_sent is not None:
                    on_sent(sent_at)
                k += 1
        except ConnectionClosed:
            self._ended.set()

    async def _receive(self) -> None:
        assert self._ws is not None
        try:
            async for raw in self._ws:
                self._handle(raw, self.clock.now())
                await self._flush_echoes()
                self._wake.set()
        except ConnectionClosed:
            pass
        finally:
            self._ended.set()
            self._wake.set()

    def _handle(self, raw: str | bytes, now: float) -> None:
        try:
            message = parse_gateway_message(raw)
        except TwilioProtocolError as exc:
            self.error(f"the gateway sent a bad message: {exc}")
            return
        if message.stream_sid != self.stream_sid:
            self.error(f"the gateway used stream {message.stream_sid!r}, not {self.stream_sid!r}")
            return
        if isinstance(message, OutboundMedia):
            self.buffer.push_audio(now, message.payload)
        elif isinstance(message, OutboundMark):
            self.buffer.push_mark(now, message.name)
            if self.verbose:
                self.log(f"gateway: mark {message.name!r}")
        elif isinstance(message, OutboundClear):
            playing = self.buffer.queued_seconds(now)
            self.buffer.clear(now)
            since = self._awaiting_answer_since()
            after = f", {now - since:.2f} s after the caller began" if since is not None else ""
            self.log(f"gateway: clear ({playing:.1f} s of audio dropped{after})")
        self._announce_replies()

    async def _flush_echoes(self) -> None:
        names = self.buffer.take_echoes()
        await self._send_many(
            [lambda seq, n=n: encode_mark_echo(self.stream_sid, seq, n) for n in names]
        )
        if self.verbose:
            for name in names:
                self.log(f"caller: mark {name!r} played")

    async def _run_playout_clock(self) -> None:
        # Marks fall due and replies settle with time alone, so this task sleeps until the
        # buffer's next deadline, or until a gateway message changes the buffer.
        try:
            while True:
                self._wake.clear()
                self.buffer.advance(self.clock.now())
                self._announce_replies()
                await self._flush_echoes()
                deadline = self.buffer.next_deadline()
                if self._ended.is_set():
                    return
                timeout = None if deadline is None else max(0.0, deadline - self.clock.now())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
        except ConnectionClosed:
            self._ended.set()

    def _awaiting_answer_since(self) -> float | None:
        """When the caller began the turn that has no answer yet (a clear belongs to it)."""
        turn = self._turn_before(math.inf)
        if turn is None or self.buffer.first_reply_since(turn.spoke_at) is not None:
            return None
        return turn.spoke_at

    def _announce_replies(self) -> None:
        replies = self.buffer.replies
        while self._announced < len(replies) and replies[self._announced].closed:
            reply = replies[self._announced]
            self._announced += 1
            seconds = f"{reply.audio_seconds:.1f} s"
            if reply.stale:
                self.log(f"gateway: {reply.media_messages} media after the clear ({seconds})")
                continue
            turn = self._turn_before(reply.started_at)
            if turn is None:
                self.log(f"gateway: greeting ({seconds} of audio)")
                continue
            text = f"gateway: reply audio ({seconds})"
            if not math.isnan(turn.speech_end_at):
                text += f", latency {reply.started_at - turn.speech_end_at:.2f} s"
            if reply.underruns:
                text += f", {reply.underruns} underruns ({reply.gap_seconds:.2f} s of gaps)"
            if reply.interrupted:
                text += ", interrupted"
            self.log(text)

    def _turn_before(self, at: float) -> _Turn | None:
        for turn in reversed(self.turns):
            if not math.isnan(turn.spoke_at) and turn.spoke_at <= at:
                return turn
        return None

    # -- the session's events ------------------------------------------------------------------

    async def _poll_events(self, http: httpx.AsyncClient, url: str, api_token: str) -> None:
        while True:
            try:
                if not await self._poll_once(http, url, api_token):
                    return
            except (httpx.HTTPError, ValueError) as exc:
                if self.verbose:
                    self.log(f"(events: {exc})")
            await asyncio.sleep(EVENT_POLL_INTERVAL)

    async def _poll_once(self, http: httpx.AsyncClient, url: str, api_token: str) -> bool:
        """Fetch new events; False when polling cannot work (the token was refused)."""
        response = await http.get(
            url,
            params={"after": self._events_after},
            headers={"Authorization": f"Bearer {api_token}"},
        )
        if response.status_code == 404:  # the session is not registered yet, or gone
            return True
        if response.status_code in (401, 403):
            self.error(f"the events API refused the API token (HTTP {response.status_code})")
            return False
        if response.status_code != 200:
            if self.verbose:
                self.log(f"(events: HTTP {response.status_code})")
            return True
        body = response.json()  # ValueError when it is not JSON
        if not isinstance(body, dict) or not isinstance(body.get("events"), list):
            raise ValueError("the events API answered without an 'events' list")
        for event in body["events"]:
            if isinstance(event, dict):
                self._on_event(event)
        self._events_after = str(body.get("next") or self._events_after)
        return True

    def _on_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        kind = event.get("kind")
        data = event.get("data") or {}
        turn = self._turn_before(math.inf)  # the turn the caller has begun most recently
        text = str(data.get("text", ""))
        if kind == "transcript":
            if data.get("is_final"):
                self.log(f'gateway heard: "{text}"')
                if turn is not None:
                    turn.transcripts.append(text)
            elif self.verbose:
                self.log(f'gateway hearing: "{text}"')
        elif kind == "user_turn":
            dtmf = data.get("dtmf")
            self.log(f"gateway turn: dtmf {dtmf}" if dtmf else f'gateway turn: "{text}"')
        elif kind == "agent_text":
            self.log(f'agent: "{text}"')
            if turn is not None:
                turn.agent_text.append(text)
        elif kind == "reply_finished":
            how = "interrupted" if data.get("interrupted") else "played in full"
            heard = data.get("heard_text")
            self.log(f"gateway: reply {how}" + (f', caller heard "{heard}"' if heard else ""))
        elif kind == "error":
            self.error(f"gateway error {data.get('code')}: {data.get('message')}")
        elif self.verbose:
            self.log(f"gateway event {kind}: {data}")

    # -- the report ----------------------------------------------------------------------------

    def report(self) -> CallReport:
        turns = [t for t in self.turns if not math.isnan(t.spoke_at)]
        replies = self.buffer.replies
        spoke = [t.spoke_at for t in turns]
        answers = attribute_replies(spoke, replies)
        first_spoke = spoke[0] if spoke else math.inf
        greeting = sum(
            r.audio_seconds for r in replies if not r.stale and r.started_at < first_spoke
        )
        errors = list(self.errors)
        reports = []
        for i, (turn, answer) in enumerate(zip(turns, answers, strict=True)):
            window_end = spoke[i + 1] if i + 1 < len(spoke) else math.inf
            heard = sum(
                r.audio_seconds
                for r in replies
                if not r.stale and turn.spoke_at <= r.started_at < window_end
            )
            clear_until = answer.started_at if answer is not None else window_end
            clears = [c for c in self.buffer.clear_times if turn.spoke_at <= c < clear_until]
            latency = None
            if answer is not None and not math.isnan(turn.speech_end_at):
                latency = answer.started_at - turn.speech_end_at
            if turn.talked_over_reply and not clears:
                errors.append(f"barge-in: no clear while the caller said {str(turn.line)!r}")
            reports.append(
                TurnReport(
                    said=str(turn.line),
                    spoke_at=turn.spoke_at,
                    speech_end_at=turn.speech_end_at,
                    reply_started_at=answer.started_at if answer else None,
                    reply_latency=latency,
                    reply_audio_seconds=heard,
                    interrupted_previous=bool(clears),
                    clear_latency=clears[0] - turn.spoke_at if clears else None,
                    transcripts=turn.transcripts,
                    agent_text=turn.agent_text,
                )
            )
        return CallReport(
            call_sid=self.call_sid,
            stream_sid=self.stream_sid,
            greeting_audio_seconds=greeting,
            turns=reports,
            marks_echoed=self.buffer.marks_echoed,
            clears=len(self.buffer.clear_times),
            media_after_clear=self.buffer.media_after_clear,
            underruns=self.buffer.underruns,
            send_lateness_max=self.lateness_max,
            events=self.events,
            errors=errors,
            late_frames=self.late_frames,
        )


def _frames(seconds: float) -> int:
    return round(seconds / FRAME_SECONDS)


def _chain(callbacks: list[Callable[[float], None]]) -> Callable[[float], None] | None:
    if not callbacks:
        return None

    def run(at: float) -> None:
        for callback in callbacks:
            callback(at)

    return run


async def _until_either(future: Awaitable[None], event: asyncio.Event) -> None:
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({asyncio.ensure_future(future), waiter}, return_when="FIRST_COMPLETED")
    finally:
        waiter.cancel()


def _close_reason(ws: ClientConnection) -> str:
    code, reason = ws.close_code, ws.close_reason
    if code is None:
        return "no close frame"
    return f"code {code}" + (f": {reason}" if reason else "")
