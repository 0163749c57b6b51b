"""Voice activity detection by frame energy above an adaptive noise floor (no model).

A fixed level threshold fails on real phone lines: one caller's line hiss sits at -70 dBFS,
another's car or call centre at -40 dBFS, louder than a quiet talker on a clean line. So the
detector tracks the line's noise floor as the quietest recent frames (minimum statistics: the
minimum frame level over a sliding window a few seconds long, kept as per-block minima so each
frame costs O(1)) and calls a frame speech when it stands `threshold_db` above that floor and
above an absolute `min_level_db`. Speech has pauses between words and syllables often enough
that the window's minimum stays on the noise, not on the voice.

The floor is learnt from the first sound on, with no assumed starting value: calls open with
line noise while the greeting plays, and a noisy line taken for speech there would barge in on
the greeting. The price is that a caller already talking in the first frame is heard only
once a frame stands `threshold_db` above the quietest part of the speech so far.

Frames of digital silence (all-zero PCM, such as the 0xFF μ-law a Twilio stream opens with) say
nothing about the line's noise, so they are never speech and never lower the floor: otherwise
the first hiss after them would stand 50 dB above a floor of zeros.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Final

import numpy as np

from session.audio import SAMPLE_WIDTH

__all__ = ["EnergyVad"]

SAMPLE_RATES: Final = (8000, 16000, 24000, 32000, 48000)
FRAME_MS: Final = (10, 20, 30)
FULL_SCALE: Final = 32768.0
# Below this a frame is digital silence: nearly all zeros (a frame of μ-law's smallest non-zero
# value, ±8, is already -72 dBFS).
DIGITAL_SILENCE_DB: Final = -90.0
# Blocks the floor window is cut into: the floor follows a rising noise within one window.
FLOOR_BLOCKS: Final = 8


def _level_db(samples: np.ndarray) -> float:
    """Mean power in dB relative to a full-scale square wave (dBFS)."""
    power = float(np.dot(samples, samples)) / (len(samples) * FULL_SCALE * FULL_SCALE)
    return 10.0 * math.log10(power) if power > 0.0 else -math.inf


class EnergyVad:
    """Speech/non-speech per frame from its level above the line's noise floor.

    One instance per call: the floor it learns belongs to that call's line.
    """

    name = "energy"

    def __init__(
        self,
        sample_rate: int = 8000,
        frame_ms: int = 20,
        threshold_db: float = 10.0,
        min_level_db: float = -50.0,
        hysteresis_db: float = 3.0,
        floor_window_ms: int = 2000,
    ) -> None:
        if sample_rate not in SAMPLE_RATES:
            raise ValueError(f"sample_rate must be one of {SAMPLE_RATES}, got {sample_rate}")
        if frame_ms not in FRAME_MS:
            raise ValueError(f"frame_ms must be one of {FRAME_MS}, got {frame_ms}")
        if not 0.0 < threshold_db <= 60.0:
            raise ValueError(f"threshold_db must be in (0, 60] dB, got {threshold_db}")
        if not DIGITAL_SILENCE_DB < min_level_db <= 0.0:
            raise ValueError(
                f"min_level_db must be in ({DIGITAL_SILENCE_DB}, 0] dBFS, got {min_level_db}"
            )
        if not 0.0 <= hysteresis_db < threshold_db:
            raise ValueError(
                f"hysteresis_db must be >= 0 and below threshold_db ({threshold_db}), "
                f"got {hysteresis_db}"
            )
        if floor_window_ms < FLOOR_BLOCKS * frame_ms:
            raise ValueError(
                f"floor_window_ms must be at least {FLOOR_BLOCKS * frame_ms} ms "
                f"({FLOOR_BLOCKS} frames of {frame_ms} ms), got {floor_window_ms}"
            )
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        self.frame_bytes = sample_rate * frame_ms // 1000 * SAMPLE_WIDTH
        self.threshold_db = threshold_db
        self.min_level_db = min_level_db
        self.hysteresis_db = hysteresis_db
        self.floor_window_ms = floor_window_ms
        self._block_frames = max(1, floor_window_ms // frame_ms // FLOOR_BLOCKS)
        self._blocks: deque[float] = deque(maxlen=FLOOR_BLOCKS - 1)  # finished blocks' minima
        self._past_floor = math.inf  # min of `_blocks`, kept so a frame need not rescan them
        self._block_min = math.inf
        self._block_count = 0
        self._speaking = False
        self.level_db = -math.inf  # the last frame's level, for logs and tuning

    @property
    def noise_floor_db(self) -> float:
        """The current noise floor estimate, dBFS (infinite before the first sound)."""
        return min(self._past_floor, self._block_min)

    def is_speech(self, frame: bytes) -> bool:
        if len(frame) != self.frame_bytes:
            raise ValueError(
                f"frame must be {self.frame_bytes} bytes ({self.frame_ms} ms of 16-bit PCM at "
                f"{self.sample_rate} Hz), got {len(frame)}"
            )
        level = _level_db(np.frombuffer(frame, dtype=np.int16).astype(np.float32))
        self.level_db = level
        if level < DIGITAL_SILENCE_DB:
            self._speaking = False
            return False
        self._track_floor(level)
        margin = self.threshold_db - (self.hysteresis_db if self._speaking else 0.0)
        self._speaking = level >= self.min_level_db and level >= self.noise_floor_db + margin
        return self._speaking

    def _track_floor(self, level: float) -> None:
        if level < self._block_min:
            self._block_min = level
        self._block_count += 1
        if self._block_count == self._block_frames:
            self._blocks.append(self._block_min)
            self._past_floor = min(self._blocks)
            self._block_min = math.inf
            self._block_count = 0
