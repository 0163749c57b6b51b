"""G.711 codecs: μ-law and A-law to and from 16-bit little-endian PCM, sample rate unchanged.

One G.711 byte is one sample, so 160 bytes (20 ms at 8 kHz) decode to 320 bytes of PCM.
"""

from __future__ import annotations

from session.audio import SAMPLE_WIDTH, audioop

__all__ = ["alaw_to_pcm", "pcm_to_alaw", "pcm_to_ulaw", "ulaw_to_pcm"]


def ulaw_to_pcm(data: bytes) -> bytes:
    return audioop.ulaw2lin(data, SAMPLE_WIDTH)


def pcm_to_ulaw(pcm: bytes) -> bytes:
    _check_whole_samples(pcm)
    return audioop.lin2ulaw(pcm, SAMPLE_WIDTH)


def alaw_to_pcm(data: bytes) -> bytes:
    return audioop.alaw2lin(data, SAMPLE_WIDTH)


def pcm_to_alaw(pcm: bytes) -> bytes:
    _check_whole_samples(pcm)
    return audioop.lin2alaw(pcm, SAMPLE_WIDTH)


def _check_whole_samples(pcm: bytes) -> None:
    # audioop raises its own audioop.error here; a ValueError is what callers expect.
    if len(pcm) % SAMPLE_WIDTH:
        raise ValueError(f"PCM length {len(pcm)} is not a whole number of 16-bit samples")
