"""The filter that does nothing: the default, and the baseline the real filters are measured by."""

from __future__ import annotations

from typing import Final

__all__ = ["PassthroughFilter"]

PROVIDER: Final = "none"


class PassthroughFilter:
    """Returns its input unchanged, with no delay, at whatever rate the session uses."""

    name = PROVIDER

    def __init__(self, sample_rate: int = 8000) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        self.sample_rate = sample_rate

    def process(self, pcm: bytes) -> bytes:
        if len(pcm) % 2:
            raise ValueError(f"pcm must be whole 16-bit samples, got {len(pcm)} bytes")
        return pcm
