"""G.711 codecs against audioop's tables and a real phone recording."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from session.audio import audioop
from telephony.g711 import alaw_to_pcm, pcm_to_alaw, pcm_to_ulaw, ulaw_to_pcm
from tests.fixtures import PHONE_WAV

WAV = PHONE_WAV
WAVE_FORMAT_MULAW = 7


def _samples(pcm: bytes) -> tuple[int, ...]:
    return struct.unpack(f"<{len(pcm) // 2}h", pcm)


def _read_wav_chunks(path: Path) -> dict[bytes, bytes]:
    """The RIFF chunks of a WAV file by id, read by hand so the test trusts no WAV library."""
    raw = path.read_bytes()
    assert raw[:4] == b"RIFF" and raw[8:12] == b"WAVE"
    chunks: dict[bytes, bytes] = {}
    offset = 12
    while offset + 8 <= len(raw):
        chunk_id, size = struct.unpack_from("<4sI", raw, offset)
        chunks[chunk_id] = raw[offset + 8 : offset + 8 + size]
        offset += 8 + size + (size & 1)  # chunks are padded to even length
    return chunks


def test_every_ulaw_byte_survives_decode_and_encode() -> None:
    # 0x7F is μ-law's "negative zero": it decodes to 0, which encodes back as 0xFF.
    for byte in range(256):
        expected = 0xFF if byte == 0x7F else byte
        assert pcm_to_ulaw(ulaw_to_pcm(bytes([byte]))) == bytes([expected])


def test_every_alaw_byte_survives_decode_and_encode() -> None:
    codes = bytes(range(256))
    assert pcm_to_alaw(alaw_to_pcm(codes)) == codes


@pytest.mark.parametrize(
    ("encode", "decode"), [(pcm_to_ulaw, ulaw_to_pcm), (pcm_to_alaw, alaw_to_pcm)]
)
def test_pcm_round_trip_stays_within_quantisation_error(encode, decode) -> None:
    original = tuple(range(-32768, 32768, 97))
    pcm = struct.pack(f"<{len(original)}h", *original)
    encoded = encode(pcm)
    assert len(encoded) == len(original)  # one byte per sample
    decoded = _samples(decode(encoded))
    for before, after in zip(original, decoded, strict=True):
        # G.711 keeps about 4 significant bits: error under 1/16 of the magnitude (plus a floor).
        assert abs(before - after) <= max(abs(before) // 16, 16)


def test_ulaw_silence_byte_decodes_to_zero() -> None:
    assert all(abs(sample) <= 8 for sample in _samples(ulaw_to_pcm(b"\xff" * 160)))


def test_odd_length_pcm_is_rejected() -> None:
    with pytest.raises(ValueError, match="whole number"):
        pcm_to_ulaw(b"\x00\x00\x00")
    with pytest.raises(ValueError, match="whole number"):
        pcm_to_alaw(b"\x00")


def test_empty_input_gives_empty_output() -> None:
    assert ulaw_to_pcm(b"") == pcm_to_ulaw(b"") == alaw_to_pcm(b"") == pcm_to_alaw(b"") == b""


def test_real_phone_recording_decodes_to_speech() -> None:
    chunks = _read_wav_chunks(WAV)
    tag, channels, rate, _byte_rate, _align, bits = struct.unpack_from("<HHIIHH", chunks[b"fmt "])
    assert (tag, channels, rate, bits) == (WAVE_FORMAT_MULAW, 1, 8000, 8)
    ulaw = chunks[b"data"]
    assert 3.0 < len(ulaw) / rate < 3.6  # the fixture is 3.3 s

    pcm = ulaw_to_pcm(ulaw)

    assert len(pcm) == 2 * len(ulaw)
    # Speech: loud somewhere, and far from silent on average.
    assert audioop.max(pcm, 2) > 4000
    assert audioop.rms(pcm, 2) > 200
