"""DTMF over RTP as RFC 4733 telephone-events: the payload, a receiver that yields each key press
once, and an encoder for sending digits.

A key press is one event, told apart from others by its RTP timestamp, which stays the event's
start for every packet of it (RFC 4733 section 2.5.1.2). A sender repeats the event while the
key is down (updates with a growing duration) and sends the final packet, E bit set, three
times (section 2.5.1.4); packets arrive reordered or twice. `DtmfReceiver` therefore keys on
(SSRC, timestamp): the first packet of a new key press yields its digit, every other packet of
the same press yields nothing. sipp's recorded `dtmf_2833_1.pcap` shows why the key cannot be
the sequence number: its three end packets share one sequence number, and the event stream has
its own SSRC and numbering, apart from the audio.

The layer is a transformer over already-parsed RTP packets (`rtp.py`): packet in, digit or
None out. It keeps no clock.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass
from typing import Final

from telephony.rtp import RtpPacket

__all__ = [
    "DTMF_DIGITS",
    "DtmfError",
    "DtmfReceiver",
    "TelephoneEvent",
    "digit_to_event",
    "encode_digit",
    "event_to_digit",
]

# Event codes 0-15 in order (RFC 4733 section 3.2): 10 is "*", 11 is "#", 12-15 are A-D.
DTMF_DIGITS: Final = "0123456789*#ABCD"

_PAYLOAD: Final = struct.Struct("!BBH")
_MAX_DURATION: Final = 0xFFFF
# Key presses remembered for deduplication; a reordered packet older than this many presses
# would count again, which no real network reorders that far.
_REMEMBERED: Final = 16


class DtmfError(ValueError):
    """A telephone-event payload that cannot be read."""


def event_to_digit(event: int) -> str | None:
    """The key for a DTMF event code, or None for other events (flash, tones)."""
    return DTMF_DIGITS[event] if 0 <= event < len(DTMF_DIGITS) else None


def digit_to_event(digit: str) -> int:
    index = DTMF_DIGITS.find(digit.upper()) if len(digit) == 1 else -1
    if index < 0:
        raise ValueError(f"not a DTMF digit: {digit!r} (expected one of {DTMF_DIGITS})")
    return index


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """One RFC 4733 event payload (section 2.3): 4 bytes.

    `volume` is the power level in -dBm0 (0-63, so 10 means -10 dBm0); `duration` is in RTP
    timestamp units since the event's start.
    """

    event: int
    end: bool = False
    volume: int = 10
    duration: int = 0

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent:
        # Several events may share a packet (section 2.5.1.5, for redundancy); the first one is
        # the current event, which is all a receiver of key presses needs.
        if len(payload) < 4:
            raise DtmfError(f"telephone-event payload of {len(payload)} bytes, need 4")
        event, flags, duration = _PAYLOAD.unpack_from(payload)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)

    def serialize(self) -> bytes:
        if not 0 <= self.event <= 255:
            raise ValueError(f"event code {self.event} is outside 0-255")
        if not 0 <= self.volume <= 63:
            raise ValueError(f"volume {self.volume} is outside 0-63")
        if not 0 <= self.duration <= _MAX_DURATION:
            raise ValueError(f"duration {self.duration} is outside 0-65535")
        return _PAYLOAD.pack(self.event, (self.end << 7) | self.volume, self.duration)

    @property
    def digit(self) -> str | None:
        return event_to_digit(self.event)


class DtmfReceiver:
    """Turns the telephone-event packets of a call into key presses, each reported once."""

    __slots__ = ("_last", "_recent", "_seen")

    def __init__(self) -> None:
        self._seen: set[tuple[int, int]] = set()
        self._recent: deque[tuple[int, int]] = deque()
        # The latest press: (ssrc, timestamp, event, longest duration seen), to recognise the
        # next segment of a long press (section 2.5.1.3) as the same press.
        self._last: tuple[int, int, int, int] | None = None

    def receive(self, packet: RtpPacket) -> str | None:
        """The digit when `packet` starts a new key press; None for the rest of a press and for
        events that are not DTMF keys. Raises DtmfError for a short payload.
        """
        event = TelephoneEvent.parse(packet.payload)
        key = (packet.ssrc, packet.timestamp)
        last = self._last
        if key in self._seen:
            if last is not None and last[:2] == key and event.duration > last[3]:
                self._last = (*key, last[2], event.duration)
            return None
        continues = (
            last is not None
            and last[0] == packet.ssrc
            and last[2] == event.event
            and (last[1] + last[3]) & 0xFFFFFFFF == packet.timestamp
        )
        self._remember(key)
        self._last = (*key, event.event, event.duration)
        if continues:
            return None
        return event.digit

    def _remember(self, key: tuple[int, int]) -> None:
        self._seen.add(key)
        self._recent.append(key)
        if len(self._recent) > _REMEMBERED:
            self._seen.discard(self._recent.popleft())


def encode_digit(
    digit: str,
    *,
    duration_ms: int = 100,
    packet_ms: int = 20,
    volume: int = 10,
    clock_rate: int = 8000,
    end_repeats: int = 3,
) -> list[TelephoneEvent]:
    """The payloads of one key press, one per packet interval, all for the same RTP timestamp.

    Updates carry the duration so far; the final payload (E bit, full duration) is repeated
    `end_repeats` times as RFC 4733 section 2.5.1.4 asks. The first packet of the event gets
    the RTP marker bit; that is the RTP sender's job.
    """
    event = digit_to_event(digit)
    step = clock_rate * packet_ms // 1000
    total = clock_rate * duration_ms // 1000
    if step <= 0 or not 0 < total <= _MAX_DURATION:
        raise ValueError("duration_ms and packet_ms must be positive and under 8 s at 8 kHz")
    payloads = [
        TelephoneEvent(event, False, volume, elapsed) for elapsed in range(step, total, step)
    ]
    payloads += [TelephoneEvent(event, True, volume, total)] * max(1, end_repeats)
    return payloads
