"""Silero VAD on onnxruntime, with the real model from the `silero-vad` wheel on PyPI.

The wheel depends on torch, so it is never installed: the fixture downloads it without its
dependencies, takes the ONNX file out, and keeps it in a cache under the temp directory.
"""

import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import pytest

from providers.vad import silero
from providers.vad.silero import SileroVad, load_session
from session.audio import StreamingResampler
from session.errors import ErrorCode, ProviderError
from session.interfaces import VAD
from tests.test_vad_energy import call_frames, frames_between, phone_pcm, with_noise

SILERO_WHEEL = "silero-vad==6.2.3"
MODEL_IN_WHEEL = "silero_vad/data/silero_vad.onnx"
CACHE = Path(tempfile.gettempdir()) / "voice-gateway-test-models" / "silero-vad-6.2.3"


@pytest.fixture(scope="session")
def model_path() -> str:
    pytest.importorskip("onnxruntime", reason="onnxruntime is optional (the 'silero' extra)")
    model = CACHE / "silero_vad.onnx"
    if model.is_file():
        return str(model)
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as download:
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet"]
        result = subprocess.run(
            [*pip, SILERO_WHEEL, "-d", download],
            capture_output=True,
            text=True,
            timeout=180,
        )
        wheels = list(Path(download).glob("silero_vad-*.whl"))
        if result.returncode != 0 or not wheels:
            pytest.skip(f"cannot download {SILERO_WHEEL} from PyPI: {result.stderr.strip()}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            data = wheel.read(MODEL_IN_WHEEL)
    partial = model.with_suffix(f".{os.getpid()}.part")
    partial.write_bytes(data)
    partial.replace(model)  # atomic: a concurrent run never sees half a file
    return str(model)


def decide(vad: SileroVad, pcm_frames: list[bytes]) -> list[bool]:
    return [vad.is_speech(frame) for frame in pcm_frames]


def test_is_a_vad(model_path: str) -> None:
    vad: VAD = SileroVad(model_path)
    assert (vad.name, vad.sample_rate, vad.frame_bytes) == ("silero", 8000, 320)


def test_recorded_call_has_speech_and_silence(model_path: str) -> None:
    decisions = decide(SileroVad(model_path), call_frames())
    assert not any(decisions[:200])  # μ-law digital silence, then ~4 s of quiet line
    speech = decisions[frames_between(8.3, 9.9)]
    assert sum(speech) > 0.9 * len(speech)
    assert not any(decisions[frames_between(5.6, 7.9)])  # the pause between the phrases
    assert 100 < sum(decisions) < 250, sum(decisions)


def test_noisy_line_keeps_pauses_silent(model_path: str) -> None:
    decisions = decide(SileroVad(model_path), with_noise(call_frames(), rms=1000.0))  # -31 dBFS
    assert not any(decisions[:200] + decisions[frames_between(5.6, 7.9)])
    speech = decisions[frames_between(8.3, 9.9)]
    assert sum(speech) > 0.9 * len(speech)


def test_real_phone_recording_has_speech(model_path: str) -> None:
    pcm = phone_pcm()
    decisions = decide(
        SileroVad(model_path), [pcm[i : i + 320] for i in range(0, len(pcm) - 319, 320)]
    )
    assert not any(decisions[:5])
    assert sum(decisions) > 60


def test_sixteen_kilohertz_with_thirty_ms_frames(model_path: str) -> None:
    pcm = StreamingResampler(8000, 16000).process(b"".join(call_frames()))
    vad = SileroVad(model_path, sample_rate=16000, frame_ms=30)
    assert (vad.frame_bytes, vad.window) == (960, 512)
    decisions = decide(vad, [pcm[i : i + 960] for i in range(0, len(pcm) - 959, 960)])
    per_second = 1000 // 30
    assert not any(decisions[: 4 * per_second])
    speech = decisions[int(8.3 * per_second) : int(9.9 * per_second)]
    assert sum(speech) > 0.9 * len(speech)


def test_no_decision_before_the_first_window(model_path: str) -> None:
    vad = SileroVad(model_path)
    loud = call_frames()[int(9.0 * 50)]
    assert not vad.is_speech(loud)  # 160 of the 256 samples a window needs
    assert vad.probability == 0.0


def test_calls_keep_their_own_state(model_path: str) -> None:
    frames = call_frames()
    talking = frames[frames_between(8.0, 10.0)]
    quiet = frames[frames_between(6.0, 8.0)]
    alone_talking = decide(SileroVad(model_path), talking)
    alone_quiet = decide(SileroVad(model_path), quiet)
    a, b = SileroVad(model_path), SileroVad(model_path)
    interleaved = [(a.is_speech(x), b.is_speech(y)) for x, y in zip(talking, quiet, strict=True)]
    assert [d for d, _ in interleaved] == alone_talking
    assert [d for _, d in interleaved] == alone_quiet
    assert any(alone_talking) and not any(alone_quiet)


def test_one_session_per_process_shared_across_threads(model_path: str) -> None:
    first, second = SileroVad(model_path), SileroVad(model_path)
    assert first._session is second._session is load_session(model_path)
    options = first._session.get_session_options()
    assert options.intra_op_num_threads == 1
    frames = call_frames()[frames_between(7.5, 10.5)]
    expected = decide(SileroVad(model_path), frames)
    results: list[list[bool]] = [[], []]

    def run(slot: int) -> None:
        results[slot] = decide(SileroVad(model_path), frames)

    threads = [threading.Thread(target=run, args=(slot,)) for slot in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [expected, expected]


def test_reset_forgets_the_call(model_path: str) -> None:
    frames = call_frames()[frames_between(8.0, 9.0)]
    vad = SileroVad(model_path)
    first = decide(vad, frames)
    vad.reset()
    assert decide(vad, frames) == first


def test_missing_model_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "silero_vad.onnx"
    with pytest.raises(ValueError, match=re.escape(str(missing))):
        SileroVad(str(missing))


def test_invalid_model_file_names_the_path(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="onnxruntime is optional (the 'silero' extra)")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a protobuf" * 10)
    with pytest.raises(ValueError, match=re.escape(str(junk))):
        SileroVad(str(junk))


def test_without_onnxruntime_the_error_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing(name: str) -> object:
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(silero.importlib, "import_module", missing)
    model = tmp_path / "silero_vad.onnx"
    model.write_bytes(b"not loaded: onnxruntime is missing first")
    with pytest.raises(ProviderError) as caught:
        SileroVad(str(model))
    assert caught.value.code == ErrorCode.INVALID_CONFIG
    assert not caught.value.retryable
    assert "onnxruntime" in str(caught.value) and "silero" in str(caught.value)


def test_wrong_frame_size_raises(model_path: str) -> None:
    with pytest.raises(ValueError, match="320 bytes"):
        SileroVad(model_path).is_speech(bytes(480))


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"sample_rate": 48000}, "sample_rate"),
        ({"frame_ms": 25}, "frame_ms"),
        ({"threshold": 1.0}, "threshold"),
        ({"threshold": 0.0}, "threshold"),
    ],
)
def test_invalid_arguments_name_the_argument(
    model_path: str, kwargs: dict[str, float], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        SileroVad(model_path, **kwargs)  # type: ignore[arg-type]


def test_cost_per_frame(model_path: str) -> None:
    frames = call_frames()
    vad = SileroVad(model_path)
    start = time.perf_counter()
    decide(vad, frames)
    per_frame_us = (time.perf_counter() - start) / len(frames) * 1e6
    print(f"silero VAD: {per_frame_us:.0f} µs per 20 ms frame at 8 kHz")
    assert per_frame_us < 2000
