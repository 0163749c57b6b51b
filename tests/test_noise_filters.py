import random
import time

import numpy as np
import pytest

from providers.noise.passthrough import PassthroughFilter
from providers.noise.spectral_gate import SpectralGateFilter
from providers.vad.webrtc import WebRtcVad
from session.interfaces import NoiseFilter
from tests.test_vad_energy import call_frames

FRAME_BYTES = 320  # 20 ms at 8 kHz, what the session feeds


def level_db(samples: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(samples.astype(np.float64) ** 2) + 1e-9))


def feed(noise_filter: NoiseFilter, pcm: bytes, chunk: int = FRAME_BYTES) -> bytes:
    return b"".join(noise_filter.process(pcm[i : i + chunk]) for i in range(0, len(pcm), chunk))


@pytest.fixture(scope="module")
def clean() -> np.ndarray:
    return np.frombuffer(b"".join(call_frames()), dtype=np.int16).astype(np.float64)


@pytest.fixture(scope="module")
def noisy(clean: np.ndarray) -> np.ndarray:
    """The recorded call with white noise at about -41 dBFS over its -71 dBFS line."""
    rng = np.random.default_rng(2)
    return np.clip(clean + rng.normal(0.0, 300.0, len(clean)), -32768, 32767).astype(np.int16)


def test_passthrough_returns_its_input() -> None:
    passthrough: NoiseFilter = PassthroughFilter()
    pcm = bytes(range(256)) * 5
    assert passthrough.process(pcm) == pcm
    assert (PassthroughFilter.name, PassthroughFilter(16000).sample_rate) == ("none", 16000)
    with pytest.raises(ValueError, match="16-bit"):
        passthrough.process(b"\x01\x02\x03")
    with pytest.raises(ValueError, match="sample_rate"):
        PassthroughFilter(0)


def test_spectral_gate_declares_itself() -> None:
    gate: NoiseFilter = SpectralGateFilter()
    assert (SpectralGateFilter.name, gate.sample_rate) == ("spectral", 8000)
    assert SpectralGateFilter().latency_samples == 255
    assert SpectralGateFilter(sample_rate=16000).latency_ms == pytest.approx(31.94, abs=0.01)


def test_noise_is_suppressed_on_the_recorded_call(clean: np.ndarray, noisy: np.ndarray) -> None:
    gate = SpectralGateFilter()
    out = np.frombuffer(feed(gate, noisy.tobytes()), dtype=np.int16).astype(np.float64)
    out = out[gate.latency_samples :]  # line the output up with the input
    reference, before = clean[: len(out)], noisy[: len(out)].astype(np.float64)

    def snr(signal: np.ndarray) -> float:
        return float(10 * np.log10(np.sum(reference**2) / np.sum((signal - reference) ** 2)))

    snr_in, snr_out = snr(before), snr(out)

    # Noise floor in the pauses (after ~1 s to learn the line), speech level where a VAD hears
    # the clean call.
    pauses = [*range(60, 200), *range(280, 400)]
    vad = WebRtcVad()
    talking = [i for i, frame in enumerate(call_frames()) if vad.is_speech(frame)]
    talking = [i for i in talking if (i + 1) * 160 <= len(out)]

    def mean_level(signal: np.ndarray, frames: list[int]) -> float:
        return float(np.mean([level_db(signal[i * 160 : (i + 1) * 160]) for i in frames]))

    floor_in, floor_out = mean_level(before, pauses), mean_level(out, pauses)
    speech_clean, speech_out = mean_level(reference, talking), mean_level(out, talking)
    print(
        f"spectral gate: SNR {snr_in:.1f} -> {snr_out:.1f} dB, pause floor {floor_in:.1f} -> "
        f"{floor_out:.1f} dB, speech {speech_clean:.1f} (clean) / {speech_out:.1f} dB (out)"
    )
    assert snr_out - snr_in > 4.0  # 14.9 -> 21.0 dB when measured
    assert floor_in - floor_out > 12.0  # 17.7 dB less noise in the pauses
    assert abs(speech_out - speech_clean) < 3.0  # the voice itself keeps its level


def test_output_length_equals_input_length_for_any_chunking(noisy: np.ndarray) -> None:
    pcm = noisy[: 8000 * 3].tobytes()
    reference = feed(SpectralGateFilter(), pcm)
    rng = random.Random(7)
    gate = SpectralGateFilter()
    pieces = []
    pos = 0
    while pos < len(pcm):
        size = 2 * rng.choice([0, 1, 3, 80, 127, 128, 129, 160, 255, 256, 1000, 4001])
        chunk = pcm[pos : pos + size]
        out = gate.process(chunk)
        assert len(out) == len(chunk)
        pieces.append(out)
        pos += len(chunk)
    assert b"".join(pieces) == reference  # chunking changes nothing but the call pattern


def test_a_clean_signal_comes_out_delayed_by_the_stated_latency() -> None:
    # Tone bursts (200 ms on, 300 ms off) over faint hiss: loud, and never steady long enough
    # to be taken for noise (a tone held for seconds would be, and would be gated: hum is).
    t = np.arange(8000 * 3) / 8000
    bursts = (t * 1000) % 500 < 200
    rng = np.random.default_rng(3)
    pcm = 3000 * np.sin(2 * np.pi * 440 * t) * bursts + rng.normal(0.0, 20.0, len(t))
    pcm = pcm.astype(np.int16)
    gate = SpectralGateFilter()
    out = np.frombuffer(feed(gate, pcm.tobytes()), dtype=np.int16).astype(np.float64)
    latency = gate.latency_samples
    assert not np.any(out[:latency])
    source = pcm.astype(np.float64)
    lags = range(latency - 8, latency + 9)
    match = [float(np.dot(out[lag : lag + 16000], source[:16000])) for lag in lags]
    assert lags[int(np.argmax(match))] == latency
    aligned, source = out[latency:], source[: len(out) - latency]
    inside = ((t * 1000) % 500 > 30) & ((t * 1000) % 500 < 170)  # away from the edges
    inside = inside[: len(aligned)] & (t[: len(aligned)] > 1.0)
    error_db = level_db(aligned[inside] - source[inside]) - level_db(source[inside])
    assert error_db < -15.0, error_db  # -20.8 dB when measured: passed nearly unchanged


def test_silence_stays_silence() -> None:
    gate = SpectralGateFilter()
    assert feed(gate, bytes(16000)) == bytes(16000)
    rng = np.random.default_rng(4)
    hiss = rng.normal(0.0, 200.0, 8000).astype(np.int16).tobytes()
    feed(gate, hiss)
    tail = feed(gate, bytes(16000))
    assert not any(tail[2 * (gate.latency_samples + gate.hop) :])  # only the hiss's tail


def test_calls_keep_their_own_noise_profile(noisy: np.ndarray) -> None:
    rng = np.random.default_rng(5)
    other = rng.normal(0.0, 2000.0, len(noisy)).astype(np.int16).tobytes()
    first, second = noisy.tobytes(), other
    alone = feed(SpectralGateFilter(), first)
    a, b = SpectralGateFilter(), SpectralGateFilter()
    mixed = []
    for i in range(0, len(first), FRAME_BYTES):
        mixed.append(a.process(first[i : i + FRAME_BYTES]))
        b.process(second[i : i + FRAME_BYTES])
    assert b"".join(mixed) == alone


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"sample_rate": 11025}, "sample_rate"),
        ({"reduction_db": 0.0}, "reduction_db"),
        ({"over_subtraction": 10.0}, "over_subtraction"),
    ],
)
def test_invalid_arguments_name_the_argument(kwargs: dict[str, float], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        SpectralGateFilter(**kwargs)  # type: ignore[arg-type]


def test_odd_byte_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="16-bit"):
        SpectralGateFilter().process(b"\x00\x00\x00")


def test_cost_per_frame(noisy: np.ndarray) -> None:
    pcm = noisy.tobytes()
    gate = SpectralGateFilter()
    start = time.perf_counter()
    feed(gate, pcm)
    per_frame_us = (time.perf_counter() - start) / (len(pcm) / FRAME_BYTES) * 1e6
    print(f"spectral gate: {per_frame_us:.0f} µs per 20 ms frame at 8 kHz")
    assert per_frame_us < 2000
