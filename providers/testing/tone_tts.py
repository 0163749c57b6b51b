"""A synthesiser that answers every sentence with the same short beep, at once."""

from __future__ import annotations

import asyncio
import functools
import math
import struct
from collections.abc import AsyncIterator
from typing import Final

__all__ = ["ToneTTS", "tone_chunks"]

RATE: Final = 8000
DEFAULT_SECONDS: Final = 0.5
DEFAULT_FREQUENCY: Final = 440.0
DEFAULT_AMPLITUDE: Final = 8000  # about -12 dBFS: clearly speech to a VAD, far from clipping
CHUNK_SECONDS: Final = 0.1


@functools.cache
def tone_chunks(
    seconds: float, frequency: float, amplitude: int, chunk_seconds: float = CHUNK_SECONDS
) -> tuple[bytes, ...]:
    """A sine tone as 16-bit PCM at 8 kHz, cut into chunks. Computed once per shape."""
    n = round(RATE * seconds)
    step = 2 * math.pi * frequency / RATE
    pcm = struct.pack(f"<{n}h", *(round(amplitude * math.sin(step * i)) for i in range(n)))
    size = max(2, round(RATE * chunk_seconds) * 2)
    return tuple(pcm[i : i + size] for i in range(0, len(pcm), size))


class ToneTTS:
    """One tone per `synthesize` call (the session sends one sentence per call), in 100 ms
    chunks, with no pacing: the transport's clock paces playout. Blank text gives nothing."""

    name = "tone"
    sample_rate = RATE

    def __init__(
        self,
        seconds: float = DEFAULT_SECONDS,
        frequency: float = DEFAULT_FREQUENCY,
        amplitude: int = DEFAULT_AMPLITUDE,
    ) -> None:
        if seconds <= 0:
            raise ValueError(f"seconds must be positive, got {seconds}")
        if not 0 < frequency < RATE / 2:
            raise ValueError(f"frequency must be between 0 and {RATE // 2} Hz, got {frequency}")
        if not 0 < amplitude <= 32767:
            raise ValueError(f"amplitude must be 1..32767, got {amplitude}")
        self._chunks = tone_chunks(seconds, frequency, amplitude)

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        if not text.strip():
            return
        for chunk in self._chunks:
            # Let other calls run between chunks, as a real synthesiser's I/O would.
            await asyncio.sleep(0)
            yield chunk
