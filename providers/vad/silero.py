"""Voice activity detection with the Silero VAD neural model on onnxruntime (optional).

Silero VAD v5/v6 (https://github.com/snakers4/silero-vad, MIT) is a small recurrent network
exported to ONNX. Its graph, as `InferenceSession.get_inputs()` / `get_outputs()` show it:

    input  float32 [batch, context + window]   PCM scaled to [-1, 1)
    state  float32 [2, batch, 128]             recurrent state, zeros at the start of a stream
    sr     int64   scalar                      8000 or 16000
    output float32 [batch, 1]                  speech probability of the window
    stateN float32 [2, batch, 128]             the state to pass with the next window

A window is 256 samples at 8 kHz (32 ms) or 512 at 16 kHz, and each one is preceded by the last
32 (64 at 16 kHz) samples of the previous window as context; the reference wrapper in the
`silero-vad` package (`silero_vad/utils_vad.py`, `OnnxWrapper.__call__`) does the same. The
graph accepts other lengths and returns a plausible but wrong number, so the sizes are fixed
here rather than inferred.

The session hands the VAD 20 or 30 ms frames, which do not divide into 32 ms windows: PCM is
buffered, every whole window is run as soon as it is complete, and `is_speech` answers with the
probability of the latest window (False until the first one is complete, 32 ms into the call).

One `InferenceSession` per model file per process is shared by every call (its `run` is
thread-safe); what belongs to a call, the recurrent state, context and sample buffer, lives in
the `SileroVad` instance as numpy arrays. onnxruntime is imported only when a `SileroVad` is
made, so the gateway runs without it unless this provider is chosen.
Model file: `silero_vad/data/silero_vad.onnx` inside the `silero-vad` wheel on PyPI.
"""

from __future__ import annotations

import importlib
import threading
from pathlib import Path
from typing import Any, Final

import numpy as np

from session.audio import SAMPLE_WIDTH
from session.errors import ErrorCode, ProviderError

__all__ = ["SileroVad", "load_session"]

PROVIDER: Final = "silero"
WINDOW_SAMPLES: Final = {8000: 256, 16000: 512}
CONTEXT_SAMPLES: Final = {8000: 32, 16000: 64}
FRAME_MS: Final = (10, 20, 30, 32)
STATE_SHAPE: Final = (2, 1, 128)
INPUTS: Final = ("input", "state", "sr")
OUTPUTS: Final = ("output", "stateN")
FULL_SCALE: Final = 32768.0

_sessions: dict[Path, Any] = {}
_sessions_lock = threading.Lock()


def _onnxruntime() -> Any:
    try:
        return importlib.import_module("onnxruntime")
    except ImportError as exc:
        raise ProviderError(
            ErrorCode.INVALID_CONFIG,
            PROVIDER,
            "onnxruntime is not installed; install the gateway's 'silero' extra",
            retryable=False,
            cause=exc,
        ) from exc


def load_session(model_path: str | Path) -> Any:
    """The process-wide `InferenceSession` for a Silero v5+ model file, loaded once."""
    path = Path(model_path).expanduser().resolve()
    with _sessions_lock:
        session = _sessions.get(path)
        if session is not None:
            return session
        if not path.is_file():
            raise ValueError(f"Silero VAD model file not found: {path}")
        ort = _onnxruntime()
        options = ort.SessionOptions()
        # One call's windows are tiny; threads would only contend with the other calls.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: the model's initializer warnings are noise
        try:
            session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own types for unreadable models
            raise ValueError(f"not a loadable ONNX model: {path}: {exc}") from exc
        inputs = tuple(i.name for i in session.get_inputs())
        outputs = tuple(o.name for o in session.get_outputs())
        if sorted(inputs) != sorted(INPUTS) or sorted(outputs) != sorted(OUTPUTS):
            raise ValueError(
                f"not a Silero VAD v5+ model: {path} has inputs {inputs} and outputs "
                f"{outputs}, expected {INPUTS} and {OUTPUTS}"
            )
        _sessions[path] = session
        return session


class SileroVad:
    """Speech/non-speech per frame from Silero's probability. One instance per call."""

    name = PROVIDER

    def __init__(
        self,
        model_path: str,
        sample_rate: int = 8000,
        threshold: float = 0.5,
        frame_ms: int = 20,
    ) -> None:
        if sample_rate not in WINDOW_SAMPLES:
            raise ValueError(
                f"sample_rate must be one of {tuple(WINDOW_SAMPLES)}, got {sample_rate}"
            )
        if frame_ms not in FRAME_MS:
            raise ValueError(f"frame_ms must be one of {FRAME_MS}, got {frame_ms}")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self._session = load_session(model_path)
        self.model_path = str(model_path)
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        self.frame_bytes = sample_rate * frame_ms // 1000 * SAMPLE_WIDTH
        self.threshold = threshold
        self.window = WINDOW_SAMPLES[sample_rate]
        context = CONTEXT_SAMPLES[sample_rate]
        # [context | window]: the window part is filled as frames arrive, then run as one input.
        self._input = np.zeros((1, context + self.window), dtype=np.float32)
        self._filled = 0  # samples of the current window received so far
        self._state = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._sr = np.array(sample_rate, dtype=np.int64)
        self._context = context
        self.probability = 0.0  # the latest window's, for logs and tuning

    def is_speech(self, frame: bytes) -> bool:
        if len(frame) != self.frame_bytes:
            raise ValueError(
                f"frame must be {self.frame_bytes} bytes ({self.frame_ms} ms of 16-bit PCM at "
                f"{self.sample_rate} Hz), got {len(frame)}"
            )
        samples = np.frombuffer(frame, dtype=np.int16)
        window = self._input[0, self._context :]
        taken = 0
        while taken < len(samples):
            n = min(self.window - self._filled, len(samples) - taken)
            window[self._filled : self._filled + n] = samples[taken : taken + n]
            self._filled += n
            taken += n
            if self._filled == self.window:
                self._run()
        return self.probability >= self.threshold

    def reset(self) -> None:
        """Forgets the call so far (as at construction)."""
        self._input[:] = 0.0
        self._filled = 0
        self._state[:] = 0.0
        self.probability = 0.0

    def _run(self) -> None:
        window = self._input[0, self._context :]
        window *= 1.0 / FULL_SCALE
        try:
            output, state = self._session.run(
                list(OUTPUTS), {"input": self._input, "state": self._state, "sr": self._sr}
            )
        except Exception as exc:
            raise ProviderError(ErrorCode.VAD_FAILED, PROVIDER, str(exc)) from exc
        self.probability = float(output[0, 0])
        self._state = state
        self._input[0, : self._context] = window[-self._context :]
        self._filled = 0
