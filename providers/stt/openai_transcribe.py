"""Speech to text with OpenAI's transcription endpoint (gpt-4o-mini-transcribe, whisper-1).

The endpoint takes a whole audio file and answers with its text, so this is a batch recogniser
(`streaming = False`): the session cuts the call's audio into clips at the VAD's pauses and hands
each one to `transcribe` (see `session.chunking`). Each clip goes up as a 16-bit mono WAV file
built in memory, at the rate this recogniser declares; the default 16 kHz is what the models
work at, and 8 kHz halves the upload for phone audio, which holds nothing above 4 kHz anyway.

Wire protocol, as documented by OpenAI:
https://platform.openai.com/docs/api-reference/audio/createTranscription
(`POST /v1/audio/transcriptions`, multipart form: `file`, `model`, `response_format=json`,
optional `language` and `prompt`; the JSON answer carries `text`), and the speech-to-text guide
https://platform.openai.com/docs/guides/speech-to-text. Errors as in
https://platform.openai.com/docs/guides/error-codes.
"""

from __future__ import annotations

import io
import wave
from typing import Final

from providers.openai_api import OpenAIHTTP
from session.errors import ErrorCode, ProviderError

__all__ = ["OpenAITranscribeSTT", "wav_bytes"]

PROVIDER: Final = "openai"
DEFAULT_MODEL: Final = "gpt-4o-mini-transcribe"
SAMPLE_RATES: Final = (8000, 16000, 24000)
# OpenAI rejects shorter files (400, "audio_too_short"); such a sliver between two VAD cuts
# holds no word, and a rejected request would read as a failed recogniser.
MIN_CLIP_SECONDS: Final = 0.1


def wav_bytes(pcm: bytes, sample_rate: int) -> bytes:
    """A complete RIFF/WAVE file holding 16-bit mono `pcm`."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm)
    return out.getvalue()


class OpenAITranscribeSTT:
    """Transcribes clips with OpenAI. One instance serves every call (it holds no call state)."""

    name = PROVIDER
    streaming = False

    def __init__(
        self,
        api_key: str,
        base_url: str | None = None,
        model: str = DEFAULT_MODEL,
        *,
        language: str | None = None,
        prompt: str | None = None,
        sample_rate: int = 16000,
        timeout: float = 15.0,
    ) -> None:
        if sample_rate not in SAMPLE_RATES:
            raise ValueError(f"sample_rate must be one of {SAMPLE_RATES}, got {sample_rate}")
        if not model:
            raise ValueError("model must be named")
        self.model = model
        self.language = language or None  # ISO-639-1 ("en"): better accuracy and latency
        self.prompt = prompt or None  # vocabulary hints: names, products, the call's topic
        self.sample_rate = sample_rate
        self._min_bytes = int(MIN_CLIP_SECONDS * sample_rate) * 2
        self._http = OpenAIHTTP(PROVIDER, api_key, base_url, timeout)

    def __repr__(self) -> str:
        return (
            f"OpenAITranscribeSTT(model={self.model!r}, sample_rate={self.sample_rate}, "
            f"base_url={self._http.base_url!r})"
        )

    async def transcribe(self, pcm: bytes) -> str:
        """The text of one clip of 16-bit mono PCM at `sample_rate` ("" for a clip too short)."""
        pcm = pcm[: len(pcm) - len(pcm) % 2]
        if len(pcm) < self._min_bytes:
            return ""
        form = {"model": self.model, "response_format": "json"}
        if self.language:
            form["language"] = self.language
        if self.prompt:
            form["prompt"] = self.prompt
        # The file name's extension is how the API tells the format: it must say .wav.
        files = {"file": ("clip.wav", wav_bytes(pcm, self.sample_rate), "audio/wav")}
        response = await self._http.post("/audio/transcriptions", data=form, files=files)
        try:
            text = response.json()["text"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ProviderError(
                ErrorCode.PROVIDER_ERROR,
                PROVIDER,
                "the transcription response has no text field",
                cause=exc,
            ) from exc
        if not isinstance(text, str):
            raise ProviderError(
                ErrorCode.PROVIDER_ERROR, PROVIDER, "the transcription text is not a string"
            )
        return text.strip()

    async def aclose(self) -> None:
        await self._http.aclose()
