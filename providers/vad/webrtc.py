"""Voice activity detection with the WebRTC VAD (GMM-based, a few µs per frame)."""

from __future__ import annotations

from typing import Final

import webrtcvad

from session.audio import SAMPLE_WIDTH
from session.errors import ErrorCode, ProviderError

__all__ = ["WebRtcVad"]

SAMPLE_RATES: Final = (8000, 16000, 32000, 48000)
FRAME_MS: Final = (10, 20, 30)
AGGRESSIVENESS: Final = (0, 1, 2, 3)


class WebRtcVad:
    """Speech/non-speech per frame. One instance per call: the detector adapts to its line."""

    name = "webrtc"

    def __init__(
        self, sample_rate: int = 8000, aggressiveness: int = 2, frame_ms: int = 20
    ) -> None:
        if sample_rate not in SAMPLE_RATES:
            raise ValueError(f"sample_rate must be one of {SAMPLE_RATES}, got {sample_rate}")
        if frame_ms not in FRAME_MS:
            raise ValueError(f"frame_ms must be one of {FRAME_MS}, got {frame_ms}")
        if aggressiveness not in AGGRESSIVENESS:
            raise ValueError(
                f"aggressiveness must be 0-3 (0 = least aggressive), got {aggressiveness}"
            )
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        self.aggressiveness = aggressiveness
        self.frame_bytes = sample_rate * frame_ms // 1000 * SAMPLE_WIDTH
        self._vad = webrtcvad.Vad(aggressiveness)

    def is_speech(self, frame: bytes) -> bool:
        if len(frame) != self.frame_bytes:
            raise ValueError(
                f"frame must be {self.frame_bytes} bytes ({self.frame_ms} ms of 16-bit PCM at "
                f"{self.sample_rate} Hz), got {len(frame)}"
            )
        try:
            return bool(self._vad.is_speech(frame, self.sample_rate))
        except Exception as exc:  # sizes are checked above, so this is the library failing
            raise ProviderError(ErrorCode.VAD_FAILED, self.name, str(exc)) from exc
