"""Inbound jitter buffer: RTP packets in, in any order, at any time; frames out, in order, on time.

Sans-I/O: `push(packet, now)` and `pop(now)` take the time as a parameter and never read a
clock, so tests drive it with exact numbers.

How playout is timed. The first packet of a stream fixes an anchor: its RTP timestamp plays at
its arrival time plus the target delay. Every later frame is due at the anchor time plus its
timestamp distance from the anchor, so the sender's clock paces playout and a frame that waits
for a late neighbour never shifts the frames after it. The anchor moves only when it must:

- underrun: a packet arrives after its due time into an empty buffer (the network delay grew,
  or the sender's clock is slower than ours). It is re-anchored to play after the target delay,
  which restores the margin that absorbs jitter.
- a talk spurt (marker bit) starting into an empty buffer later than the target: re-anchored
  earlier, which gives back latency collected by earlier underruns (RFC 3550 section 5.1 names
  the marker as the place to adjust playout).
- overflow: the newest frame is due more than `max_delay` from now (a burst after a network
  stall, or a sender clock running fast). The buffer skips ahead: it keeps the newest `target`
  worth of audio and drops the older frames, counted in `skipped`.

Frames missing when their due time comes (lost, or later than the buffer waits) are concealed:
a frame of the same length filled with the codec's silence, flagged `concealed` so the consumer
can replace it with something better (the RTP session repeats the last frame, faded). A lost
packet that turns up after its slot was concealed is late and dropped. Concealment only fills
gaps in sequence numbers; a timestamp jump with consecutive sequence numbers is the sender
being silent on purpose (RFC 3551 section 4.1), and the buffer plays nothing there.

Sequence numbers (16 bits) and timestamps (32 bits) are unwrapped into ever-growing integers, so
wrap-around is invisible to the rest of the logic. A new SSRC, or a sequence jump that the next
packet confirms (RFC 3550 appendix A.1), restarts the buffer: the source restarted.

Frame length comes from the payload length (`bytes_per_sample`: 1 for G.711), so 20 ms and
30 ms packets work without being told which; the sipp `uac_pcap` stream sends 30 ms packets
without an a=ptime line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from telephony.rtp import RtpPacket

__all__ = ["Frame", "JitterBuffer", "JitterStats"]

# Float times from a monotonic clock: compare with a tolerance so that 0.04 + 0.02 is due at 0.06.
_EPSILON: Final = 1e-6
# A frame longer than this many typical frames is not one lost packet but a silent gap as well.
_MAX_CONCEAL_FACTOR: Final = 4


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame of encoded audio, due now. A concealed frame stands in for a lost packet: its
    payload is silence of the right length, and `sequence`/`timestamp` are the lost packet's.
    """

    sequence: int
    timestamp: int
    payload: bytes
    concealed: bool = False


@dataclass(slots=True)
class JitterStats:
    received: int = 0  # packets pushed
    played: int = 0  # real frames popped
    duplicates: int = 0  # same sequence number already buffered
    late: int = 0  # arrived after its slot was played or concealed
    lost: int = 0  # sequence numbers never received in time (concealed, or skipped when stale)
    concealed: int = 0  # concealment frames emitted
    skipped: int = 0  # frames dropped to bring the delay back under max_delay
    discarded: int = 0  # sequence numbers far outside the window (a restart not yet confirmed)
    resets: int = 0  # new SSRC or confirmed restart


def _unwrap(value: int, reference: int, bits: int) -> int:
    """`value` (mod 2**bits) as the integer nearest to `reference`: undoes wrap-around."""
    modulus = 1 << bits
    delta = (value - reference) % modulus
    if delta >= modulus >> 1:
        delta -= modulus
    return reference + delta


class JitterBuffer:
    """Reorders one inbound RTP stream and releases its frames when they are due."""

    __slots__ = (
        "_anchor_time",
        "_anchor_ts",
        "_bad_seq",
        "_bytes_per_sample",
        "_clock_rate",
        "_frame_samples",
        "_highest_seq",
        "_last_ts",
        "_max_delay",
        "_max_dropout",
        "_max_misorder",
        "_next_seq",
        "_next_ts",
        "_packets",
        "_played_any",
        "_silence",
        "_ssrc",
        "_target_delay",
        "stats",
    )

    def __init__(
        self,
        *,
        clock_rate: int = 8000,
        target_delay_ms: float = 40,
        max_delay_ms: float = 200,
        silence: bytes = b"\x00",
        bytes_per_sample: int = 1,
        max_misorder: int = 100,
        max_dropout: int = 3000,
    ) -> None:
        if not 0 <= target_delay_ms < max_delay_ms:
            raise ValueError("need 0 <= target_delay_ms < max_delay_ms")
        if len(silence) != bytes_per_sample:
            raise ValueError("silence must encode exactly one sample")
        self._clock_rate = clock_rate
        self._target_delay = target_delay_ms / 1000
        self._max_delay = max_delay_ms / 1000
        self._silence = silence
        self._bytes_per_sample = bytes_per_sample
        # RFC 3550 appendix A.1's defaults: how far back a packet may be reordered, and how far
        # forward a sequence number may jump, before it is treated as a possible restart.
        self._max_misorder = max_misorder
        self._max_dropout = max_dropout
        self.stats = JitterStats()
        self._ssrc: int | None = None
        self._packets: dict[int, tuple[int, RtpPacket]] = {}  # unwrapped seq -> (unwrapped ts, p)
        self._next_seq = 0
        self._next_ts = 0
        self._highest_seq = 0
        self._last_ts = 0
        self._anchor_time = 0.0
        self._anchor_ts = 0
        self._frame_samples = clock_rate // 50  # 20 ms until a real frame says otherwise
        self._bad_seq: int | None = None
        self._played_any = False

    # -- state

    def __len__(self) -> int:
        return len(self._packets)

    @property
    def ssrc(self) -> int | None:
        return self._ssrc

    def depth(self, now: float) -> float:
        """Seconds of buffered audio still ahead of `now` (0 when empty)."""
        if not self._packets:
            return 0.0
        newest = max(ts for ts, _ in self._packets.values())
        return max(0.0, self._due(newest) - now)

    def next_due(self) -> float | None:
        """When `pop` will next return something, or None while the buffer is empty."""
        if not self._packets:
            return None
        entry = self._packets.get(self._next_seq)
        return self._due(entry[0] if entry is not None else self._next_ts)

    def reset(self) -> None:
        """Forget the stream: the next packet starts a new one (e.g. after a codec change)."""
        self._ssrc = None
        self._packets.clear()
        self._bad_seq = None
        self._played_any = False

    # -- input

    def push(self, packet: RtpPacket, now: float) -> None:
        self.stats.received += 1
        if packet.ssrc != self._ssrc:
            if self._ssrc is not None:
                self.stats.resets += 1
                self.stats.skipped += len(self._packets)
            self._start(packet, now)
            return
        seq = _unwrap(packet.sequence, self._highest_seq, 16)
        if seq - self._highest_seq > self._max_dropout or self._next_seq - seq > self._max_misorder:
            if packet.sequence == self._bad_seq:
                # Two packets in a row agree on the new numbering: the source restarted.
                self.stats.resets += 1
                self.stats.skipped += len(self._packets)
                self._start(packet, now)
            else:
                self._bad_seq = (packet.sequence + 1) & 0xFFFF
                self.stats.discarded += 1
            return
        self._bad_seq = None
        ts = _unwrap(packet.timestamp, self._last_ts, 32)
        if seq < self._next_seq:
            if self._played_any:
                self.stats.late += 1
                return
            # Nothing played yet: an earlier packet overtaken by the first one still fits.
            self._next_seq, self._next_ts = seq, ts
        if seq in self._packets:
            self.stats.duplicates += 1
            return
        was_empty = not self._packets
        self._packets[seq] = (ts, packet)
        self._highest_seq = max(self._highest_seq, seq)
        self._last_ts = ts
        if was_empty:
            due = self._due(ts)
            late = due < now - _EPSILON
            early_spurt = packet.marker and due > now + self._target_delay + _EPSILON
            if late or early_spurt:
                self._anchor(ts, now)
        if self._due(ts) - now > self._max_delay + _EPSILON:
            self._skip_ahead(ts, now)

    def _start(self, packet: RtpPacket, now: float) -> None:
        self._ssrc = packet.ssrc
        self._packets.clear()
        self._next_seq = self._highest_seq = packet.sequence
        self._next_ts = self._last_ts = packet.timestamp
        self._bad_seq = None
        self._played_any = False
        self._packets[packet.sequence] = (packet.timestamp, packet)
        self._anchor(packet.timestamp, now)

    def _anchor(self, ts: int, now: float) -> None:
        self._anchor_ts = ts
        self._anchor_time = now + self._target_delay

    def _skip_ahead(self, newest_ts: int, now: float) -> None:
        self._anchor(newest_ts, now)
        stale = [seq for seq, (ts, _) in self._packets.items() if self._due(ts) < now - _EPSILON]
        for seq in stale:
            del self._packets[seq]
        self.stats.skipped += len(stale)
        first = min(self._packets)
        self._next_seq, self._next_ts = first, self._packets[first][0]

    def _due(self, ts: int) -> float:
        return self._anchor_time + (ts - self._anchor_ts) / self._clock_rate

    # -- output

    def pop(self, now: float) -> list[Frame]:
        """The frames due by `now`, in order: real ones, and concealment for lost ones."""
        frames: list[Frame] = []
        packets = self._packets
        limit = now + _EPSILON
        while packets:
            entry = packets.get(self._next_seq)
            if entry is not None:
                ts, packet = entry
                if self._due(ts) > limit:
                    break
                del packets[self._next_seq]
                frames.append(Frame(packet.sequence, packet.timestamp, packet.payload))
                samples = len(packet.payload) // self._bytes_per_sample
                if samples:
                    self._frame_samples = samples
                self.stats.played += 1
                self._played_any = True
                self._next_seq += 1
                self._next_ts = ts + (samples or self._frame_samples)
                continue
            due = self._due(self._next_ts)
            if due > limit:
                break
            if now - due > self._max_delay:
                # A hole this far in the past (pop was not called for a while) is not worth a
                # burst of silence: move on to the next packet held.
                self._jump_gap()
                continue
            frames.append(self._conceal())
        return frames

    def _jump_gap(self) -> None:
        later = min(self._packets)
        self.stats.lost += later - self._next_seq
        self._next_seq, self._next_ts = later, self._packets[later][0]

    def _conceal(self) -> Frame:
        # The lost packets' length is read from the gap up to the next packet we hold, so a
        # 30 ms stream gets 30 ms concealment; a gap that also spans a silent period (timestamps
        # jump) falls back to the last frame's length.
        later = min(self._packets)
        missing = later - self._next_seq
        span = self._packets[later][0] - self._next_ts
        samples = span // missing if span > 0 else 0
        if not 0 < samples <= _MAX_CONCEAL_FACTOR * self._frame_samples:
            samples = self._frame_samples
        frame = Frame(
            self._next_seq & 0xFFFF,
            self._next_ts & 0xFFFFFFFF,
            self._silence * samples,
            concealed=True,
        )
        self.stats.concealed += 1
        self.stats.lost += 1
        self._played_any = True
        self._next_seq += 1
        self._next_ts += samples
        return frame
