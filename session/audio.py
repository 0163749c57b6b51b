"""PCM formats and the stateful streaming resampler used at provider edges.

Inside the gateway audio is 16-bit little-endian mono PCM. Each component declares the sample
rate it wants; the session converts once, at that component's edge, with a resampler that keeps
its filter state between chunks (per-chunk stateless resampling clicks at every boundary).
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass

with warnings.catch_warnings():
    # The stdlib module is deprecated on 3.11/3.12; audioop-lts provides it on >= 3.13.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = ["SAMPLE_WIDTH", "AudioFormat", "StreamingResampler", "audioop", "pcm_duration"]

SAMPLE_WIDTH = 2  # bytes per sample: 16-bit PCM everywhere inside


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """A PCM stream's shape. Only mono 16-bit is used inside, so the rate is what varies."""

    sample_rate: int

    def bytes_for(self, seconds: float) -> int:
        return int(self.sample_rate * seconds) * SAMPLE_WIDTH

    def duration(self, nbytes: int) -> float:
        return nbytes / (SAMPLE_WIDTH * self.sample_rate)


def pcm_duration(pcm: bytes, sample_rate: int) -> float:
    return len(pcm) / (SAMPLE_WIDTH * sample_rate)


class StreamingResampler:
    """Converts a PCM stream between rates, carrying filter state across chunks."""

    __slots__ = ("_state", "dst_rate", "src_rate")

    def __init__(self, src_rate: int, dst_rate: int) -> None:
        self.src_rate = src_rate
        self.dst_rate = dst_rate
        self._state: object = None

    @property
    def passthrough(self) -> bool:
        return self.src_rate == self.dst_rate

    def process(self, pcm: bytes) -> bytes:
        if self.src_rate == self.dst_rate or not pcm:
            return pcm
        out, self._state = audioop.ratecv(
            pcm, SAMPLE_WIDTH, 1, self.src_rate, self.dst_rate, self._state
        )
        return out

    def reset(self) -> None:
        self._state = None


if sys.byteorder != "little":  # pragma: no cover - every supported platform is little-endian
    raise ImportError("the gateway assumes a little-endian host for PCM buffers")
