"""Where the shared real-call recordings live: `shared/fixtures/` beside the repository."""

import struct
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
RECORDED_CALL = FIXTURES / "twilio-recorded-call.jsonl"
PHONE_WAV = FIXTURES / "real-phone-how-are-you.wav"


def wav_ulaw(path: Path = PHONE_WAV) -> bytes:
    """The data chunk of a RIFF/WAVE file holding 8 kHz mono μ-law (format tag 7)."""
    data = path.read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    pos = 12
    fmt_tag = None
    while pos + 8 <= len(data):
        chunk_id, size = struct.unpack_from("<4sI", data, pos)
        body = data[pos + 8 : pos + 8 + size]
        if chunk_id == b"fmt ":
            fmt_tag, channels, rate = struct.unpack_from("<HHI", body)
            assert (fmt_tag, channels, rate) == (7, 1, 8000)
        elif chunk_id == b"data":
            assert fmt_tag == 7
            return body
        pos += 8 + size + (size & 1)
    raise AssertionError("no data chunk")
