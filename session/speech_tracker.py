"""Turns per-frame VAD decisions into the caller's speech segments."""

from __future__ import annotations

from enum import Enum
from typing import Final

# A voiced frame this far below the loudest frame of its segment (40 dB, in RMS amplitude) is
# not taken as the caller's voice when deciding where the speech ended.
QUIET_RATIO: Final = 100
# How far back the end of speech may be placed before the last frame the VAD called voiced.
# webrtcvad's hangover, its longest at 20 ms frames, is 7 frames (aggressiveness 0 and 1).
MAX_QUIET_TAIL: Final = 0.15


class SpeechEdge(Enum):
    START = "start"
    END = "end"


class SpeechTracker:
    """Speech starts after `min_speech` seconds of voiced frames, ends after `end_silence` of
    unvoiced ones. Durations are counted in audio time (frames), so they are exact and
    independent of how the frames were delivered.

    `quiet_tail` says where the voice really stopped. VADs keep calling frames speech for a
    while after it stops: webrtcvad adds a hangover of up to 7 frames (100 ms at its default
    aggressiveness 2) of whatever follows, even digital silence. Counting the endpointing
    delay from the last frame the VAD called voiced would add that hangover to every reply.
    So each voiced frame's `level` (RMS) is compared with the loudest frame of the segment:
    `quiet_tail` is the audio time since the last voiced frame within `QUIET_RATIO` of it,
    capped at `MAX_QUIET_TAIL`. A quiet but real ending ("...fifty") loses at most that much,
    and a line whose noise is within 40 dB of the speech keeps the VAD's decision as it is.
    Without levels (`level=None`) every voiced frame counts as voice.
    """

    __slots__ = (
        "_end_silence",
        "_frame",
        "_min_speech",
        "_peak",
        "in_speech",
        "quiet_tail",
        "silence_run",
        "voiced",
        "voiced_run",
    )

    def __init__(self, frame_seconds: float, min_speech: float, end_silence: float) -> None:
        self._frame = frame_seconds
        self._min_speech = min_speech
        self._end_silence = end_silence
        self._peak = 0
        self.in_speech = False
        self.voiced_run = 0.0  # voiced audio while waiting for speech to start
        self.silence_run = 0.0  # unvoiced audio inside speech
        self.voiced = 0.0  # voiced audio of the current segment
        self.quiet_tail = 0.0  # audio since the last loud voiced frame (see the class doc)

    def update(self, is_voiced: bool, level: int | None = None) -> SpeechEdge | None:
        if not self.in_speech:
            if not is_voiced:
                self.voiced_run = 0.0
                return None
            if self.voiced_run == 0.0:  # a new run: its own loudest frame
                self._peak = 0
                self.quiet_tail = 0.0
            self._track_level(level)
            self.voiced_run += self._frame
            if self.voiced_run + 1e-9 < self._min_speech:
                return None
            self.in_speech = True
            self.voiced = self.voiced_run
            self.silence_run = 0.0
            return SpeechEdge.START
        if is_voiced:
            self._track_level(level)
            self.silence_run = 0.0
            self.voiced += self._frame
            return None
        self.quiet_tail = min(self.quiet_tail + self._frame, MAX_QUIET_TAIL)
        self.silence_run += self._frame
        if self.silence_run + 1e-9 < self._end_silence:
            return None
        self.reset()
        return SpeechEdge.END

    def _track_level(self, level: int | None) -> None:
        if level is None or level * QUIET_RATIO >= self._peak:
            if level is not None and level > self._peak:
                self._peak = level
            self.quiet_tail = 0.0
        else:
            self.quiet_tail = min(self.quiet_tail + self._frame, MAX_QUIET_TAIL)

    def reset(self) -> None:
        self.in_speech = False
        self.voiced_run = 0.0
        self.silence_run = 0.0
