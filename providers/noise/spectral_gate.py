"""Stationary-noise suppression by spectral gating, in numpy (no model, no native library).

The signal is cut into 32 ms frames with 50 % overlap (short-time Fourier transform, square-root
Hann window on both analysis and synthesis, which overlap-add back to the input exactly when
nothing is changed). Each frequency bin gets a gain between `1` (keep) and a floor
(`reduction_db` below): bins that stand well above the line's noise in that band pass, bins at
the noise level are attenuated.

Noise profile: per bin, the minimum of the smoothed power spectrum over the last ~1.5 s
(minimum statistics, Martin 2001), i.e. what the quietest recent frames held in that band, scaled
up by a fixed factor because a minimum underestimates the mean. Speech rarely fills one band for
1.5 s, so the estimate follows the noise and keeps up with noise that changes slowly (fans, car,
hiss); it does nothing for sudden noises (a door, a cough), which no profile captures.

Gain: the Wiener rule on a "decision-directed" a-priori SNR (Ephraim & Malah 1984), which
smooths the SNR over time for bins near the noise level. A plain per-frame gate opens and
closes isolated bins at random in the noise and leaves "musical noise", tinkling tones that
harm recognition more than the hiss did.

Latency: the output is the input delayed by `latency_samples` = one frame less one sample
(31.9 ms at 8 kHz): one hop of overlap-add, since a sample is final only once both frames
covering it are processed, plus up to one hop of waiting for a whole hop of input. That fixed
delay is what lets `process` return exactly as many samples as it was given for any chunk
size; the first `latency_samples` of a call come out as zeros.
"""

from __future__ import annotations

from typing import Final

import numpy as np

__all__ = ["SpectralGateFilter"]

PROVIDER: Final = "spectral"
SAMPLE_RATES: Final = (8000, 16000, 24000, 32000, 48000)
FRAME_MS: Final = 32
NOISE_WINDOW_S: Final = 1.5
NOISE_BLOCKS: Final = 6  # the window is tracked as block minima: O(bins) per frame
SMOOTHING: Final = 0.8  # power smoothing before the minimum is taken (about 5 frames)
# Mean over minimum of the smoothed power of Gaussian noise with the settings above (measured
# on white noise): turns the minimum into an estimate of the noise's mean power per bin.
MINIMUM_BIAS: Final = 2.2
DECISION_DIRECTED: Final = 0.98  # weight of the previous frame's SNR estimate
# Frames quieter than this (mean square of 16-bit samples) are digital silence: they would drag
# the noise estimate to zero and leave the next real noise unsuppressed for a whole window.
SILENT_POWER: Final = 1.0


class SpectralGateFilter:
    """Suppresses stationary background noise. One instance per call: the profile is per line."""

    name = PROVIDER

    def __init__(
        self,
        sample_rate: int = 8000,
        reduction_db: float = 18.0,
        over_subtraction: float = 1.5,
    ) -> None:
        if sample_rate not in SAMPLE_RATES:
            raise ValueError(f"sample_rate must be one of {SAMPLE_RATES}, got {sample_rate}")
        if not 0.0 < reduction_db <= 60.0:
            raise ValueError(f"reduction_db must be in (0, 60] dB, got {reduction_db}")
        if not 0.5 <= over_subtraction <= 5.0:
            raise ValueError(f"over_subtraction must be in [0.5, 5], got {over_subtraction}")
        self.sample_rate = sample_rate
        self.reduction_db = reduction_db
        self.over_subtraction = over_subtraction
        self.frame = sample_rate * FRAME_MS // 1000
        self.hop = self.frame // 2
        self.latency_samples = self.frame - 1
        bins = self.frame // 2 + 1
        self._window = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(self.frame) / self.frame))
        self._gain_floor = 10.0 ** (-reduction_db / 20.0)
        # Input: the last frame's worth of samples; the first `frame - hop` start as silence.
        self._analysis = np.zeros(self.frame)
        self._pending = np.zeros(0)  # input not yet a whole hop
        self._overlap = np.zeros(self.frame - self.hop)
        # Output samples ready to hand out, led by the fixed delay that absorbs chunking.
        self._ready = bytearray((self.hop - 1) * 2)
        self._smoothed = np.zeros(bins)
        self._block_min = np.full(bins, np.inf)
        self._block_frames = max(1, round(NOISE_WINDOW_S * sample_rate / self.hop / NOISE_BLOCKS))
        self._block_count = 0
        self._blocks: list[np.ndarray] = []
        self._past_min = np.full(bins, np.inf)
        self._noise = np.ones(bins)
        self._last_snr = np.zeros(bins)  # the previous frame's cleaned power over the noise
        self._seen_sound = False

    @property
    def latency_ms(self) -> float:
        return 1000.0 * self.latency_samples / self.sample_rate

    def process(self, pcm: bytes) -> bytes:
        """Filters one chunk of any length; returns the same number of (delayed) samples."""
        if len(pcm) % 2:
            raise ValueError(f"pcm must be whole 16-bit samples, got {len(pcm)} bytes")
        if not pcm:
            return b""
        samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
        pending = np.concatenate((self._pending, samples)) if len(self._pending) else samples
        hop = self.hop
        hops = len(pending) // hop
        if hops:
            out = np.empty(hops * hop)
            for i in range(hops):
                out[i * hop : (i + 1) * hop] = self._step(pending[i * hop : (i + 1) * hop])
            self._ready += np.clip(np.rint(out), -32768, 32767).astype(np.int16).tobytes()
        self._pending = pending[hops * hop :].copy()
        result = bytes(self._ready[: len(pcm)])
        del self._ready[: len(pcm)]
        return result

    def _step(self, fresh: np.ndarray) -> np.ndarray:
        """Takes one hop of input; returns one hop of finished output."""
        hop = self.hop
        analysis = self._analysis
        analysis[:-hop] = analysis[hop:]
        analysis[-hop:] = fresh
        spectrum = np.fft.rfft(analysis * self._window)
        power = np.square(np.abs(spectrum))
        if float(np.dot(fresh, fresh)) >= SILENT_POWER * hop:
            self._track_noise(power)
        if self._seen_sound:
            posterior = power / self._noise
            prior = np.maximum(posterior - 1.0, 0.0)
            prior *= 1.0 - DECISION_DIRECTED
            prior += DECISION_DIRECTED * self._last_snr
            gain = prior / (prior + 1.0)
            np.maximum(gain, self._gain_floor, out=gain)
            self._last_snr = gain * gain * posterior
            spectrum *= gain
        frame = np.fft.irfft(spectrum, self.frame)
        frame *= self._window
        frame[: self.frame - hop] += self._overlap
        self._overlap = frame[hop:]
        return frame[:hop]

    def _track_noise(self, power: np.ndarray) -> None:
        smoothed = self._smoothed
        if not self._seen_sound:
            self._seen_sound = True
            smoothed[:] = power  # start from the first sound rather than from zero
        else:
            smoothed *= SMOOTHING
            smoothed += (1.0 - SMOOTHING) * power
        np.minimum(self._block_min, smoothed, out=self._block_min)
        self._block_count += 1
        if self._block_count == self._block_frames:
            self._blocks.append(self._block_min.copy())
            if len(self._blocks) >= NOISE_BLOCKS:
                del self._blocks[0]
            self._past_min = np.minimum.reduce(self._blocks)
            self._block_min.fill(np.inf)
            self._block_count = 0
        # What the gain divides by: the noise estimate, over-subtracted, never zero.
        self._noise = np.minimum(self._past_min, self._block_min)
        self._noise *= MINIMUM_BIAS * self.over_subtraction
        self._noise += 1e-3
