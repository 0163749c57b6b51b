"""The pure parts of the caller simulator: Twilio's playout buffer and the script format.

Twilio plays the audio a stream sends in order, in real time, and echoes each `mark` once the
audio queued before it has been played; `clear` throws away what has not been played yet and
echoes the pending marks at once. The gateway learns what the caller heard only from those
echoes, so the simulator must reproduce that clock exactly, including its gaps. Everything here
takes the time as a parameter and does no I/O, so the timing rules are tested without sleeping.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "BYTES_PER_SECOND",
    "DTMF_DIGITS",
    "PlayoutBuffer",
    "Reply",
    "ScriptLine",
    "attribute_replies",
    "parse_script",
    "parse_script_line",
]

BYTES_PER_SECOND = 8000  # μ-law at 8 kHz: one byte per sample
DTMF_DIGITS = frozenset("0123456789*#ABCD")  # what a Media Streams `dtmf` event can carry
DTMF_PREFIX = "dtmf:"


@dataclass(slots=True)
class Reply:
    """One stretch of gateway audio the caller hears without a pause of `settle` or more.

    `stale` marks a stretch that began while a clear window was open (see
    `PlayoutBuffer.media_after_clear`): it is leftover audio of an interrupted reply, not an
    answer, so it is never attributed to a turn.
    """

    index: int
    started_at: float  # when its first audio began playing
    queued_bytes: int = 0
    dropped_bytes: int = 0  # thrown away by a clear before it was played
    media_messages: int = 0
    underruns: int = 0
    gap_seconds: float = 0.0  # silence the caller heard between its pieces
    ended_at: float | None = None  # when its last audio stopped playing (or the clear)
    closed: bool = False  # settled or cleared: no later audio belongs to it
    interrupted: bool = False  # a clear dropped audio or pending marks
    stale: bool = False

    @property
    def played_bytes(self) -> int:
        return self.queued_bytes - self.dropped_bytes

    @property
    def audio_seconds(self) -> float:
        return self.played_bytes / BYTES_PER_SECOND


class PlayoutBuffer:
    """Twilio's per-stream playout queue, driven by the caller's clock.

    Audio drains at 8000 bytes/s from the moment it lands on an empty buffer; audio arriving
    while something plays queues behind it. A mark is due when everything queued before it has
    played, so its due time is fixed when it arrives. Every method takes `now` and first
    catches up to it; marks that fell due are collected and handed out by `take_echoes()` in
    the order they must be sent back.

    A reply closes once the buffer has been empty, with no marks pending and no gateway
    message, for `settle` seconds. Audio that arrives on an empty buffer before that is the
    same reply resuming after an underrun; gaps up to `gap_tolerance` are not counted, since
    delivery jitter that short is inaudible.
    """

    def __init__(
        self, *, settle: float = 0.6, gap_tolerance: float = 0.01, clear_grace: float = 0.3
    ) -> None:
        self.settle = settle
        self.gap_tolerance = gap_tolerance
        self.clear_grace = clear_grace
        self.replies: list[Reply] = []
        self.marks_received = 0
        self.marks_echoed = 0
        self.clear_times: list[float] = []
        self.media_after_clear = 0
        self._play_end = -math.inf  # when the audio queued so far will have played
        self._last_message_at = -math.inf
        self._pending_marks: deque[tuple[float, str]] = deque()
        self._echoes: list[str] = []
        self._after_clear = False  # a clear came and no mark since
        self._clear_window_end = -math.inf
        self._caller_talking = False

    # -- gateway messages -------------------------------------------------------------------

    def push_audio(self, now: float, payload: bytes) -> None:
        self.advance(now)
        self._last_message_at = now
        stale = self.clear_window_open(now)
        if stale:
            self.media_after_clear += 1
        if not payload:
            return
        reply = self.current_reply
        if reply is not None and reply.stale != stale:
            # The clear window closed while leftover audio played: what follows is new audio.
            reply.closed = True
            reply = None
        if reply is None:
            start = max(now, self._play_end)
            reply = Reply(index=len(self.replies), started_at=start, stale=stale)
            self.replies.append(reply)
        elif now > self._play_end:
            gap = now - self._play_end
            if gap > self.gap_tolerance:
                reply.underruns += 1
                reply.gap_seconds += gap
        start = max(now, self._play_end)
        self._play_end = start + len(payload) / BYTES_PER_SECOND
        reply.queued_bytes += len(payload)
        reply.media_messages += 1
        reply.ended_at = self._play_end

    def push_mark(self, now: float, name: str) -> None:
        self.advance(now)
        self._last_message_at = now
        self.marks_received += 1
        # A mark closes the clear window: the gateway has moved on to new, accounted audio.
        self._after_clear = False
        if now >= self._play_end:
            self._echo(name)
        else:
            self._pending_marks.append((self._play_end, name))

    def clear(self, now: float) -> None:
        self.advance(now)
        self._last_message_at = now
        self.clear_times.append(now)
        self._after_clear = True
        # Open until the caller's utterance ends (math.inf marks that), else for the grace.
        self._clear_window_end = math.inf if self._caller_talking else now + self.clear_grace
        dropped = self._unplayed_bytes(now)
        had_pending = bool(self._pending_marks)
        # Twilio sends back every mark it was still holding, in queue order, right away.
        while self._pending_marks:
            self._echo(self._pending_marks.popleft()[1])
        reply = self.current_reply
        if reply is not None:
            reply.dropped_bytes += min(dropped, reply.queued_bytes)
            reply.interrupted = dropped > 0 or had_pending
            reply.ended_at = min(now, reply.ended_at or now)
            reply.closed = True
        self._play_end = min(self._play_end, now)

    # -- the caller's side --------------------------------------------------------------------

    def stop(self, now: float) -> None:
        """The call ended: what had not played was never heard, and its marks never return."""
        self.advance(now)
        dropped = self._unplayed_bytes(now)
        self._pending_marks.clear()
        reply = self.current_reply
        if reply is not None:
            reply.dropped_bytes += min(dropped, reply.queued_bytes)
            reply.interrupted = reply.interrupted or dropped > 0
            reply.ended_at = min(now, reply.ended_at or now)
            reply.closed = True
        self._play_end = min(self._play_end, now)

    def set_caller_talking(self, talking: bool) -> None:
        """The caller's utterance began or ended; it holds a clear window open."""
        self._caller_talking = talking
        if not talking and self._clear_window_end == math.inf:
            self._clear_window_end = -math.inf

    def clear_window_open(self, now: float) -> bool:
        return self._after_clear and now < self._clear_window_end

    def advance(self, now: float) -> None:
        """Play out up to `now`: echo marks that fell due and close a reply that settled."""
        while self._pending_marks and self._pending_marks[0][0] <= now:
            self._echo(self._pending_marks.popleft()[1])
        reply = self.current_reply
        if reply is not None and now >= self._settled_at():
            reply.closed = True

    def take_echoes(self) -> list[str]:
        echoes, self._echoes = self._echoes, []
        return echoes

    def next_deadline(self) -> float | None:
        """The next time `advance` would change something, for the I/O loop's timer."""
        if self._pending_marks:
            return self._pending_marks[0][0]
        if self.current_reply is not None:
            return self._settled_at()
        return None

    # -- state --------------------------------------------------------------------------------

    @property
    def current_reply(self) -> Reply | None:
        if self.replies and not self.replies[-1].closed:
            return self.replies[-1]
        return None

    def playing(self, now: float) -> bool:
        return now < self._play_end

    def queued_seconds(self, now: float) -> float:
        return max(0.0, self._play_end - now)

    def idle(self, now: float) -> bool:
        """Nothing playing, no mark pending, and the gateway quiet for `settle` seconds."""
        self.advance(now)
        return self.current_reply is None and now >= self._settled_at()

    def first_reply_since(self, since: float) -> Reply | None:
        for reply in self.replies:
            if reply.started_at >= since and not reply.stale:
                return reply
        return None

    @property
    def underruns(self) -> int:
        return sum(r.underruns for r in self.replies)

    def _unplayed_bytes(self, now: float) -> int:
        # Compared first: before any audio the end of playout is -inf, which has no byte count.
        if self._play_end <= now:
            return 0
        return round((self._play_end - now) * BYTES_PER_SECOND)

    def _settled_at(self) -> float:
        return max(self._play_end, self._last_message_at) + self.settle

    def _echo(self, name: str) -> None:
        self._echoes.append(name)
        self.marks_echoed += 1


# `media_after_clear` counts media messages that arrive while a clear window is open. A window
# opens at each `clear`. When the caller is talking (or pressing keys) at that moment, it lasts
# until that utterance ends: the gateway cannot answer what it has not finished hearing. When the
# caller is silent, it lasts `clear_grace` seconds: an answer to anything needs longer than that.
# A `mark` from the gateway closes it early: the gateway has moved on to new audio it accounts
# for. In a correct gateway the count is 0, since the websocket is ordered and whatever follows
# the clear inside that window can only be audio of the reply it was told to stop. (A DTMF answer
# can come within milliseconds of the last key, which is why the window does not outlast the
# utterance.)


def attribute_replies(spoke_at: list[float], replies: Iterable[Reply]) -> list[Reply | None]:
    """The reply to each turn: the first answer that starts after the caller began speaking
    and before the caller's next turn began. Stale audio is never an answer."""
    candidates = [r for r in replies if not r.stale]
    answers: list[Reply | None] = []
    for i, start in enumerate(spoke_at):
        end = spoke_at[i + 1] if i + 1 < len(spoke_at) else math.inf
        answers.append(next((r for r in candidates if start <= r.started_at < end), None))
    return answers


@dataclass(frozen=True, slots=True)
class ScriptLine:
    """One line of a call script: something the caller says, or DTMF digits it presses."""

    text: str
    dtmf: bool = False

    def __str__(self) -> str:
        return f"{DTMF_PREFIX}{self.text}" if self.dtmf else self.text


def parse_script_line(line: str) -> ScriptLine:
    """`dtmf:12#` presses keys (spaces allowed between them); anything else is spoken."""
    stripped = line.strip()
    if stripped[: len(DTMF_PREFIX)].lower() == DTMF_PREFIX:
        digits = "".join(stripped[len(DTMF_PREFIX) :].split()).upper()
        if not digits:
            raise ValueError(f"script line {line!r}: no digits after {DTMF_PREFIX!r}")
        bad = sorted(set(digits) - DTMF_DIGITS)
        if bad:
            raise ValueError(
                f"script line {line!r}: {''.join(bad)!r} cannot be sent as DTMF (use 0-9 * # A-D)"
            )
        return ScriptLine(digits, dtmf=True)
    if not stripped:
        raise ValueError("script line is empty: give the caller something to say")
    return ScriptLine(stripped)


def parse_script(lines: Iterable[str]) -> list[ScriptLine]:
    return [parse_script_line(line) for line in lines]
