import base64
import json

import pytest

from providers.vad.webrtc import WebRtcVad
from session.audio import audioop
from tests.fixtures import RECORDED_CALL

CALL = RECORDED_CALL


def call_frames() -> list[bytes]:
    """The recorded call as 20 ms frames of 8 kHz PCM, as Twilio delivered them."""
    frames = []
    for line in CALL.read_text().splitlines():
        message = json.loads(line)
        if message["event"] == "media":
            frames.append(audioop.ulaw2lin(base64.b64decode(message["media"]["payload"]), 2))
    return frames


def test_recorded_call_has_speech_and_silence() -> None:
    vad = WebRtcVad()
    frames = call_frames()
    decisions = [vad.is_speech(frame) for frame in frames]
    assert not any(decisions[:50])  # the call opens with a second of 0xFF μ-law silence
    speech = sum(decisions)
    # The person talks for roughly 3.5 s of the 12.3 s.
    assert 100 < speech < 400, speech
    assert len(frames) - speech > 200


def test_frame_size_follows_rate_and_duration() -> None:
    assert WebRtcVad().frame_bytes == 320
    assert WebRtcVad(sample_rate=16000, frame_ms=30).frame_bytes == 960
    assert WebRtcVad(sample_rate=48000, frame_ms=10).frame_bytes == 960


def test_wrong_frame_size_raises() -> None:
    vad = WebRtcVad()
    with pytest.raises(ValueError, match="320 bytes"):
        vad.is_speech(bytes(318))


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"sample_rate": 11025}, "sample_rate"),
        ({"frame_ms": 25}, "frame_ms"),
        ({"aggressiveness": 4}, "aggressiveness"),
        ({"aggressiveness": -1}, "aggressiveness"),
    ],
)
def test_invalid_arguments_name_the_argument(kwargs: dict[str, int], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        WebRtcVad(**kwargs)


def test_instance_describes_itself() -> None:
    vad = WebRtcVad(sample_rate=16000, aggressiveness=3)
    assert (vad.name, vad.sample_rate, vad.aggressiveness) == ("webrtc", 16000, 3)
