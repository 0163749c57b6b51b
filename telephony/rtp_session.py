"""One call leg's RTP media, sans-I/O: datagrams in, audio and DTMF events out, paced packets back.

The shape is aioquic's connection object:

- `receive_datagram(data, addr, now)` takes every datagram that reached the leg's RTP port.
- `next_event()` hands back what it produced: `AudioReceived` (16-bit PCM at the codec rate,
  after the jitter buffer, in order, concealed frames included), `DtmfReceived`, and
  `PlayoutMark` once the audio queued before a `mark()` has been sent.
- `send_audio(pcm)` / `send_dtmf(digit)` / `mark(name)` / `clear()` queue outbound media;
  `datagrams_to_send(now)` returns the packets due by `now`.
- `get_timer()` says when to call `handle_timer(now)` and `datagrams_to_send(now)` next.

The I/O adapter calls `datagrams_to_send(now)` and drains `next_event()` after every input and
every timer, and re-arms one timer from `get_timer()`. Nothing here reads a clock or a socket.

Inbound. Symmetric RTP (RFC 4961): the first valid packet from the peer fixes the address we
send to and the only one we accept from, because behind NAT the address in the SDP is often
not where the packets come from. Datagrams from elsewhere after that are counted and dropped.
RTCP on the RTP port is recognised and ignored. A malformed datagram is counted, never raised.
Audio goes through `JitterBuffer`; telephone-events go straight to `DtmfReceiver` (they carry
their own timing and are deduplicated by timestamp), so a digit can overtake the last frames of
audio played before it. When the peer stops sending (silence suppression, a pause for DTMF),
silence frames keep the inbound clock running from the jitter margin after the last frame:
the session hears a caller who stopped talking as silence, and their turn can end.

Outbound. The sender is paced from the caller's monotonic clock: packet k of a talk spurt is
due at the spurt's start + k·ptime, whatever the size of the chunks `send_audio` was given.
A talk spurt ends when a packet is due and nothing is queued; the next one starts with the
marker bit (RFC 3551 section 4.1), its sequence number continues by one and its timestamp
by the time that passed. After a stall (the adapter did not run) the sender skips the slots it
missed beyond `max_catchup_ms`, so at most a few packets go out back to back; the audio is
delayed, not dropped, and the timestamp jump tells the receiver about the gap. The playout
position is what has been sent: `played_until` and the marks report it, like Twilio's marks.

Hold: while our direction does not include sending (the peer offered sendonly or inactive),
queued audio waits and marks stay pending; nothing is sent that the caller cannot hear.
"""

from __future__ import annotations

import math
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from session.audio import SAMPLE_WIDTH, audioop
from telephony.dtmf import DtmfError, DtmfReceiver, TelephoneEvent, digit_to_event, encode_digit
from telephony.g711 import alaw_to_pcm, pcm_to_alaw, pcm_to_ulaw, ulaw_to_pcm
from telephony.jitterbuffer import JitterBuffer, JitterStats
from telephony.rtp import RtpError, RtpPacket, is_rtcp
from telephony.sdp import MediaParams

__all__ = [
    "Addr",
    "AudioReceived",
    "DtmfReceived",
    "PlayoutMark",
    "RtpEvent",
    "RtpSession",
    "RtpStats",
]

Addr = tuple[str, int]

_EPSILON: Final = 1e-6  # float seconds from a monotonic clock: 0.02 * 3 is due at 0.06
_CODECS: Final[dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes], bytes]]] = {
    # decode, encode, one sample of silence in the codec (what 0 encodes to)
    "PCMU": (ulaw_to_pcm, pcm_to_ulaw, b"\xff"),
    "PCMA": (alaw_to_pcm, pcm_to_alaw, b"\xd5"),
}
# Gains for the concealment frames that follow a real one: repeat it, fading, then silence.
_CONCEAL_GAINS: Final = (0.5, 0.25)
# Silence frames played at most per timer call: after a stall, time is not made up in a burst.
_MAX_FILL_FRAMES: Final = 5


@dataclass(frozen=True, slots=True)
class AudioReceived:
    """One frame of the caller's audio: 16-bit little-endian PCM at the codec's clock rate.
    `concealed` frames stand in for packets that were lost or too late.
    """

    pcm: bytes
    concealed: bool = False


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    digit: str


@dataclass(frozen=True, slots=True)
class PlayoutMark:
    """All audio queued before `mark(name)` has been sent (`played`), or was dropped by
    `clear()` before it could be (`played` False).
    """

    name: str
    played: bool = True


RtpEvent = AudioReceived | DtmfReceived | PlayoutMark


@dataclass(slots=True)
class RtpStats:
    received: int = 0  # RTP packets accepted from the peer
    sent: int = 0
    malformed: int = 0  # not RTP, or a telephone-event payload too short
    rtcp: int = 0  # RTCP datagrams ignored
    wrong_source: int = 0  # from an address other than the latched one
    unknown_payload_type: int = 0  # neither the codec nor telephone-event (e.g. comfort noise)
    not_receiving: int = 0  # arrived while our direction excludes receiving
    skipped_slots: int = 0  # send slots missed in a stall and not caught up
    silence_filled: int = 0  # frames of silence played while the peer sent nothing
    jitter: JitterStats = field(default_factory=JitterStats)


@dataclass(slots=True)
class _Mark:
    position: int  # outbound PCM byte offset the mark follows
    name: str


@dataclass(slots=True)
class _Dtmf:
    position: int
    digit: str
    duration_ms: int


class RtpSession:
    """The RTP side of one call leg, negotiated by `MediaParams` (see `sdp.answer`)."""

    def __init__(
        self,
        params: MediaParams,
        *,
        ssrc: int | None = None,
        sequence: int | None = None,
        timestamp: int | None = None,
        target_delay_ms: float = 40,
        max_delay_ms: float = 200,
        max_catchup_ms: float = 40,
        symmetric: bool = True,
    ) -> None:
        if params.codec not in _CODECS:
            raise ValueError(f"unsupported codec {params.codec!r}")
        # RFC 3550 section 5.1: SSRC, first sequence number and first timestamp are random.
        self.ssrc = secrets.randbits(32) if ssrc is None else ssrc
        self._seq = secrets.randbits(16) if sequence is None else sequence & 0xFFFF
        self._next_ts = secrets.randbits(32) if timestamp is None else timestamp & 0xFFFFFFFF
        self._target_delay_ms = target_delay_ms
        self._max_delay_ms = max_delay_ms
        self._max_catchup = max_catchup_ms / 1000
        self._symmetric = symmetric
        self.stats = RtpStats()
        self._events: deque[RtpEvent] = deque()
        self._clock = 0.0  # the latest `now` seen: "immediately" for get_timer
        # When the peer's last packet arrived: RTP of any payload type, or RTCP.
        self.last_received: float | None = None

        # outbound queue: PCM bytes plus marks and DTMF at byte positions in the stream
        self._pcm = bytearray()
        self._sent_bytes = 0  # stream position of _pcm[0]
        self._items: deque[_Mark | _Dtmf] = deque()
        self._dtmf_payloads: deque[TelephoneEvent] = deque()
        self._dtmf_ts = 0
        self._dtmf_first = False

        # pacing: the current talk spurt, or None between spurts
        self._spurt_start: float | None = None
        self._spurt_ts = 0  # RTP timestamp of slot 0 of the spurt
        self._slot = 0  # index of the next slot in the spurt
        self._marker_next = True
        self._idle_since: float | None = None  # due time of the first unused slot

        self._dtmf_receiver = DtmfReceiver()
        self._last_pcm = b""
        self._conceal_run = 0
        self._fill_due: float | None = None  # when a silence frame is due if nothing arrives
        self._params = params
        self._remote: Addr | None = None
        self._latched = False
        self._jitter = self._new_jitter_buffer()
        self.update(params)

    # -- configuration

    @property
    def params(self) -> MediaParams:
        return self._params

    @property
    def remote_addr(self) -> Addr | None:
        """Where packets go: the latched source, else the SDP address (None: nowhere yet)."""
        return self._remote

    @property
    def latched(self) -> bool:
        return self._latched

    def update(self, params: MediaParams) -> None:
        """Apply a renegotiation (re-INVITE): codec, ptime, direction, address."""
        if params.codec not in _CODECS:
            raise ValueError(f"unsupported codec {params.codec!r}")
        old = self._params
        self._params = params
        self._decode, self._encode, _ = _CODECS[params.codec]
        if (params.codec, params.payload_type, params.clock_rate) != (
            old.codec,
            old.payload_type,
            old.clock_rate,
        ):
            self._jitter = self._new_jitter_buffer()
        host, port = params.remote_addr
        sdp_addr = None if port == 0 or host in ("0.0.0.0", "::") else (host, port)
        if not self._latched or params.remote_addr != old.remote_addr:
            # A new address in the SDP (a transfer, a new media server) is latched afresh.
            self._latched = False
            self._remote = sdp_addr
        if self._spurt_start is not None and (params.ptime_ms, params.clock_rate) != (
            old.ptime_ms,
            old.clock_rate,
        ):
            self._end_spurt(self._clock)  # slots of the old size cannot continue
        self._frame_samples = params.clock_rate * params.ptime_ms // 1000
        self._frame_bytes = self._frame_samples * SAMPLE_WIDTH
        self._ptime = params.ptime_ms / 1000

    def _new_jitter_buffer(self) -> JitterBuffer:
        jitter = JitterBuffer(
            clock_rate=self._params.clock_rate,
            target_delay_ms=self._target_delay_ms,
            max_delay_ms=self._max_delay_ms,
            silence=_CODECS[self._params.codec][2],
        )
        jitter.stats = self.stats.jitter  # one set of counters across codec changes
        return jitter

    # -- inbound

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        self._clock = now
        if is_rtcp(data):
            self.stats.rtcp += 1
            if not self._latched or addr == self._remote:
                self.last_received = now  # a peer sending only RTCP is still there
            return
        try:
            packet = RtpPacket.parse(data)
        except RtpError:
            self.stats.malformed += 1
            return
        params = self._params
        pt = packet.payload_type
        if pt != params.payload_type and pt != params.dtmf_payload_type:
            self.stats.unknown_payload_type += 1
            if not self._latched or addr == self._remote:
                self.last_received = now  # comfort noise between talk spurts, say
            return
        if self._symmetric:
            if not self._latched:
                self._latched = True
                self._remote = addr
            elif addr != self._remote:
                self.stats.wrong_source += 1
                return
        self.stats.received += 1
        self.last_received = now
        if not params.receives:
            self.stats.not_receiving += 1
            return
        if pt == params.payload_type:
            self._jitter.push(packet, now)
            self._drain_jitter(now)
            return
        try:
            digit = self._dtmf_receiver.receive(packet)
        except DtmfError:
            self.stats.malformed += 1
            return
        if digit is not None:
            self._events.append(DtmfReceived(digit))

    def _drain_jitter(self, now: float) -> None:
        frames = self._jitter.pop(now)
        if frames:
            # The inbound clock runs on from the last frame: silence is played from when it
            # would have ended, plus the jitter margin, unless more audio comes by then.
            seconds = len(frames[-1].payload) / self._params.clock_rate
            self._fill_due = now + seconds + self._target_delay_ms / 1000
        for frame in frames:
            if not frame.concealed:
                pcm = self._decode(frame.payload)
                self._last_pcm = pcm
                self._conceal_run = 0
                self._events.append(AudioReceived(pcm))
                continue
            pcm = self._decode(frame.payload)  # silence of the lost frame's length
            run = self._conceal_run
            self._conceal_run += 1
            if run < len(_CONCEAL_GAINS) and len(self._last_pcm) == len(pcm):
                # Repeating the last frame, fading, hides a single loss better than a hole.
                pcm = audioop.mul(self._last_pcm, SAMPLE_WIDTH, _CONCEAL_GAINS[run])
            self._events.append(AudioReceived(pcm, concealed=True))

    def next_event(self) -> RtpEvent | None:
        return self._events.popleft() if self._events else None

    # -- outbound

    def send_audio(self, pcm: bytes) -> None:
        """Queue 16-bit PCM at the codec rate, any length; it is sent in ptime packets."""
        if len(pcm) % SAMPLE_WIDTH:
            raise ValueError(f"PCM length {len(pcm)} is not a whole number of 16-bit samples")
        self._pcm += pcm

    def send_dtmf(self, digit: str, duration_ms: int = 100) -> None:
        """Queue a key press (RFC 4733) after the audio queued so far."""
        if self._params.dtmf_payload_type is None:
            raise ValueError("the peer did not negotiate telephone-event; cannot send DTMF")
        digit_to_event(digit)  # validate now, not when it is due
        self._items.append(_Dtmf(self._queued_bytes, digit, duration_ms))

    def mark(self, name: str) -> None:
        """Ask for `PlayoutMark(name)` once everything queued before it has been sent."""
        self._items.append(_Mark(self._queued_bytes, name))
        self._resolve_marks()

    def clear(self) -> None:
        """Drop queued outbound audio (barge-in). Pending marks come back with played=False;
        queued DTMF is still sent.
        """
        self._pcm.clear()
        kept: deque[_Mark | _Dtmf] = deque()
        for item in self._items:
            if isinstance(item, _Mark):
                self._events.append(PlayoutMark(item.name, played=False))
            else:
                item.position = self._sent_bytes
                kept.append(item)
        self._items = kept

    @property
    def played_until(self) -> float:
        """Seconds of queued audio sent so far: what the caller has heard, less network delay."""
        return self._sent_bytes / (SAMPLE_WIDTH * self._params.clock_rate)

    @property
    def pending_audio(self) -> float:
        """Seconds of audio queued and not sent yet."""
        return len(self._pcm) / (SAMPLE_WIDTH * self._params.clock_rate)

    @property
    def _queued_bytes(self) -> int:
        return self._sent_bytes + len(self._pcm)

    def _has_outbound(self) -> bool:
        return bool(self._pcm or self._dtmf_payloads or self._items)

    def _can_send(self) -> bool:
        return self._params.sends and self._remote is not None

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        """The packets due by `now`, oldest first, each with the address to send it to."""
        self._clock = now
        out: list[tuple[bytes, Addr]] = []
        if not self._can_send():
            return out
        assert self._remote is not None
        while True:
            if self._spurt_start is None:
                if not self._has_outbound():
                    break
                self._begin_spurt(now)
            assert self._spurt_start is not None
            due = self._spurt_start + self._slot * self._ptime
            if due > now + _EPSILON:
                break
            late = now - due - self._max_catchup
            if not self._has_outbound():
                self._end_spurt(due)
                continue
            if late > _EPSILON:
                skip = math.ceil(late / self._ptime - _EPSILON)
                self._slot += skip
                self.stats.skipped_slots += skip
                self._marker_next = True
                continue
            packet = self._next_packet(self._spurt_ts + self._slot * self._frame_samples)
            if packet is None:
                self._end_spurt(due)
                continue
            out.append((packet.serialize(), self._remote))
            self.stats.sent += 1
            self._slot += 1
        return out

    def _begin_spurt(self, now: float) -> None:
        if self._idle_since is not None:
            # The timestamp keeps running through the silence (RFC 3550 section 5.1).
            elapsed = max(0.0, now - self._idle_since)
            self._next_ts += round(elapsed * self._params.clock_rate)
        self._spurt_start = now
        self._spurt_ts = self._next_ts
        self._slot = 0
        self._marker_next = True
        self._idle_since = None

    def _end_spurt(self, due: float) -> None:
        self._next_ts = (self._spurt_ts + self._slot * self._frame_samples) & 0xFFFFFFFF
        self._spurt_start = None
        self._idle_since = due

    def _next_packet(self, ts: int) -> RtpPacket | None:
        """The packet for the slot at RTP timestamp `ts`, or None when nothing is queued."""
        self._resolve_marks()
        if not self._dtmf_payloads and self._items and self._items[0].position <= self._sent_bytes:
            item = self._items.popleft()
            assert isinstance(item, _Dtmf)  # marks at this position were resolved above
            self._dtmf_payloads.extend(
                encode_digit(
                    item.digit,
                    duration_ms=item.duration_ms,
                    packet_ms=self._params.ptime_ms,
                    clock_rate=self._params.clock_rate,
                )
            )
            self._dtmf_ts = ts
            self._dtmf_first = True
        if self._dtmf_payloads:
            event = self._dtmf_payloads.popleft()
            # RFC 4733 section 2.5.1.2: the first packet of an event carries the marker bit.
            self._marker_next |= self._dtmf_first
            self._dtmf_first = False
            packet = self._packet(
                self._params.dtmf_payload_type or 0, self._dtmf_ts, event.serialize()
            )
            self._resolve_marks()
            return packet
        # Audio up to the next queued DTMF, which must not start mid-frame.
        limit = len(self._pcm)
        for item in self._items:
            if isinstance(item, _Dtmf):
                limit = min(limit, item.position - self._sent_bytes)
                break
        take = min(self._frame_bytes, limit)
        if take <= 0:
            return None
        chunk = bytes(self._pcm[:take])
        del self._pcm[:take]
        self._sent_bytes += take
        if take < self._frame_bytes:
            # The end of an utterance: pad the last packet with silence to a whole ptime.
            chunk += bytes(self._frame_bytes - take)
        packet = self._packet(self._params.payload_type, ts, self._encode(chunk))
        self._resolve_marks()
        return packet

    def _packet(self, payload_type: int, ts: int, payload: bytes) -> RtpPacket:
        packet = RtpPacket(
            marker=self._marker_next,
            payload_type=payload_type,
            sequence=self._seq,
            timestamp=ts & 0xFFFFFFFF,
            ssrc=self.ssrc,
            payload=payload,
        )
        self._marker_next = False
        self._seq = (self._seq + 1) & 0xFFFF
        return packet

    def _resolve_marks(self) -> None:
        if self._dtmf_payloads:
            return  # a mark queued after a key press waits for its last packet
        items = self._items
        while items and isinstance(items[0], _Mark) and items[0].position <= self._sent_bytes:
            self._events.append(PlayoutMark(items.popleft().name))

    # -- timers

    def get_timer(self) -> float | None:
        """When `handle_timer` and `datagrams_to_send` next have work; None when idle."""
        timers: list[float] = []
        due = self._jitter.next_due()
        if due is not None:
            timers.append(due)
        elif self._fill_due is not None and self._params.receives:
            timers.append(self._fill_due)
        if self._can_send():
            if self._spurt_start is not None:
                timers.append(self._spurt_start + self._slot * self._ptime)
            elif self._has_outbound():
                timers.append(self._clock)
        return min(timers) if timers else None

    def handle_timer(self, now: float) -> None:
        """Release the inbound frames due by `now`, or silence when the peer has gone quiet.
        (Outbound goes in `datagrams_to_send`.)"""
        self._clock = now
        self._drain_jitter(now)
        self._fill_silence(now)

    def _fill_silence(self, now: float) -> None:
        """Silence suppression (RFC 3551 section 4.1, or a stream that pauses for DTMF) leaves
        gaps with no packets at all. The session's clock is the audio it is given, so a caller
        who stopped talking must be heard as silence or their turn would never end."""
        due = self._fill_due
        if due is None or not self._params.receives or self._jitter.next_due() is not None:
            return
        frame = self._params.ptime_ms / 1000
        count = 0
        while due <= now + _EPSILON and count < _MAX_FILL_FRAMES:
            self._events.append(AudioReceived(self._silence_pcm(), concealed=True))
            due += frame
            count += 1
        if due <= now + _EPSILON:
            due = now + frame  # a long stall: what was missed is not played back in a burst
        self._fill_due = due
        self.stats.silence_filled += count

    def _silence_pcm(self) -> bytes:
        return bytes(self._params.clock_rate * self._params.ptime_ms // 1000 * SAMPLE_WIDTH)
