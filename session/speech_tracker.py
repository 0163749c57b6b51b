"""Turns per-frame VAD decisions into the caller's speech segments."""

from __future__ import annotations

from enum import Enum


class SpeechEdge(Enum):
    START = "start"
    END = "end"


class SpeechTracker:
    """Speech starts after `min_speech` seconds of voiced frames, ends after `end_silence` of
    unvoiced ones. Durations are counted in audio time (frames), so they are exact and
    independent of how the frames were delivered."""

    __slots__ = (
        "_end_silence",
        "_frame",
        "_min_speech",
        "in_speech",
        "silence_run",
        "voiced",
        "voiced_run",
    )

    def __init__(self, frame_seconds: float, min_speech: float, end_silence: float) -> None:
        self._frame = frame_seconds
        self._min_speech = min_speech
        self._end_silence = end_silence
        self.in_speech = False
        self.voiced_run = 0.0  # voiced audio while waiting for speech to start
        self.silence_run = 0.0  # unvoiced audio inside speech
        self.voiced = 0.0  # voiced audio of the current segment

    def update(self, is_voiced: bool) -> SpeechEdge | None:
        if not self.in_speech:
            if not is_voiced:
                self.voiced_run = 0.0
                return None
            self.voiced_run += self._frame
            if self.voiced_run + 1e-9 < self._min_speech:
                return None
            self.in_speech = True
            self.voiced = self.voiced_run
            self.silence_run = 0.0
            return SpeechEdge.START
        if is_voiced:
            self.silence_run = 0.0
            self.voiced += self._frame
            return None
        self.silence_run += self._frame
        if self.silence_run + 1e-9 < self._end_silence:
            return None
        self.reset()
        return SpeechEdge.END

    def reset(self) -> None:
        self.in_speech = False
        self.voiced_run = 0.0
        self.silence_run = 0.0
