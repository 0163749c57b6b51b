import base64
import json
import time

import numpy as np
import pytest

from providers.vad.energy import EnergyVad
from session.audio import audioop
from session.interfaces import VAD
from tests.fixtures import PHONE_WAV, RECORDED_CALL, wav_ulaw

PHONE_RATE = 8000
FRAME_BYTES = 320  # 20 ms at 8 kHz


def call_frames() -> list[bytes]:
    """The recorded call as 20 ms frames of 8 kHz PCM, as Twilio delivered them."""
    frames = []
    for line in RECORDED_CALL.read_text().splitlines():
        message = json.loads(line)
        if message["event"] == "media":
            frames.append(audioop.ulaw2lin(base64.b64decode(message["media"]["payload"]), 2))
    return frames


def phone_pcm() -> bytes:
    """The real phone WAV (8 kHz μ-law, format tag 7) as 8 kHz PCM."""
    return audioop.ulaw2lin(wav_ulaw(PHONE_WAV), 2)


def with_noise(frames: list[bytes], rms: float, seed: int = 1) -> list[bytes]:
    """The same frames with white noise of the given RMS added (300 ≈ -41 dBFS)."""
    rng = np.random.default_rng(seed)
    noisy = []
    for frame in frames:
        samples = np.frombuffer(frame, dtype=np.int16) + rng.normal(0.0, rms, len(frame) // 2)
        noisy.append(np.clip(samples, -32768, 32767).astype(np.int16).tobytes())
    return noisy


def frames_between(start_s: float, end_s: float) -> slice:
    return slice(int(start_s * 50), int(end_s * 50))


def test_is_a_vad() -> None:
    vad: VAD = EnergyVad()
    assert (vad.name, vad.sample_rate, vad.frame_bytes) == ("energy", 8000, FRAME_BYTES)


def test_recorded_call_has_speech_and_silence() -> None:
    vad = EnergyVad()
    decisions = [vad.is_speech(frame) for frame in call_frames()]
    assert not any(decisions[:200])  # μ-law digital silence, then ~4 s of quiet line
    speech = decisions[frames_between(8.3, 9.9)]
    assert sum(speech) > 0.9 * len(speech)
    assert not any(decisions[frames_between(5.6, 7.9)])  # the pause between the two phrases
    assert 100 < sum(decisions) < 250, sum(decisions)


def test_noisy_line_adapts_where_a_fixed_detector_would_not() -> None:
    # The line hiss is raised from -71 dBFS to about -41 dBFS: louder than the quiet ends of
    # the caller's words. The floor follows, and the pauses stay silent.
    vad = EnergyVad()
    decisions = [vad.is_speech(frame) for frame in with_noise(call_frames(), rms=300.0)]
    assert -45.0 < vad.noise_floor_db < -38.0
    pauses = decisions[:200] + decisions[frames_between(5.6, 7.9)]
    assert sum(pauses) == 0
    speech = decisions[frames_between(8.3, 9.9)]
    assert sum(speech) > 0.6 * len(speech), sum(speech)


def test_real_phone_recording_has_speech() -> None:
    pcm = phone_pcm()
    vad = EnergyVad()
    decisions = [vad.is_speech(pcm[i : i + FRAME_BYTES]) for i in range(0, len(pcm) - 319, 320)]
    assert not any(decisions[:5])
    assert sum(decisions) > 40  # "... how are you": over 0.8 s of voiced audio


def test_digital_silence_is_never_speech_and_does_not_pull_the_floor_down() -> None:
    vad = EnergyVad()
    hiss = with_noise([bytes(FRAME_BYTES)] * 100, rms=30.0)  # about -61 dBFS
    for frame in hiss[:50]:
        assert not vad.is_speech(frame)
    floor = vad.noise_floor_db
    for _ in range(200):
        assert not vad.is_speech(bytes(FRAME_BYTES))
    assert vad.noise_floor_db == floor
    assert not any(vad.is_speech(frame) for frame in hiss[50:])


def test_min_level_gates_quiet_sounds_on_a_silent_line() -> None:
    vad = EnergyVad(min_level_db=-40.0)
    quiet = with_noise([bytes(FRAME_BYTES)] * 50, rms=2.0)  # a very clean line
    for frame in quiet:
        vad.is_speech(frame)
    tone = (np.sin(np.arange(160) * 0.3) * 200).astype(np.int16).tobytes()  # -47 dBFS
    assert not vad.is_speech(tone)  # far above the floor, but below the absolute minimum
    loud = (np.sin(np.arange(160) * 0.3) * 2000).astype(np.int16).tobytes()  # -27 dBFS
    assert vad.is_speech(loud)


def test_instances_keep_their_own_floor() -> None:
    noisy_line, clean_line = EnergyVad(), EnergyVad()
    for frame in with_noise([bytes(FRAME_BYTES)] * 50, rms=1000.0):
        noisy_line.is_speech(frame)
    for frame in with_noise([bytes(FRAME_BYTES)] * 50, rms=10.0):
        clean_line.is_speech(frame)
    voice = (np.sin(np.arange(160) * 0.3) * 3000).astype(np.int16).tobytes()  # -23 dBFS
    assert clean_line.is_speech(voice)
    assert not noisy_line.is_speech(voice)  # only ~7 dB above that line's -31 dBFS hiss


def test_frame_size_follows_rate_and_duration() -> None:
    assert EnergyVad(sample_rate=16000, frame_ms=30).frame_bytes == 960
    assert EnergyVad(sample_rate=48000, frame_ms=10).frame_bytes == 960


def test_wrong_frame_size_raises() -> None:
    with pytest.raises(ValueError, match="320 bytes"):
        EnergyVad().is_speech(bytes(318))


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"sample_rate": 11025}, "sample_rate"),
        ({"frame_ms": 25}, "frame_ms"),
        ({"threshold_db": 0.0}, "threshold_db"),
        ({"min_level_db": 3.0}, "min_level_db"),
        ({"hysteresis_db": 10.0}, "hysteresis_db"),
        ({"floor_window_ms": 100}, "floor_window_ms"),
    ],
)
def test_invalid_arguments_name_the_argument(kwargs: dict[str, float], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        EnergyVad(**kwargs)  # type: ignore[arg-type]


def test_cost_per_frame() -> None:
    frames = call_frames()
    vad = EnergyVad()
    start = time.perf_counter()
    for _ in range(5):
        for frame in frames:
            vad.is_speech(frame)
    per_frame_us = (time.perf_counter() - start) / (5 * len(frames)) * 1e6
    print(f"energy VAD: {per_frame_us:.1f} µs per 20 ms frame")
    assert per_frame_us < 100  # ~3 µs here; generous for a loaded CI machine
