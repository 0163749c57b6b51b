"""Text to speech with OpenAI's speech endpoint (gpt-4o-mini-tts, tts-1), streamed as raw PCM.

The audio is requested as `response_format: "pcm"`: headerless 24 kHz 16-bit signed
little-endian mono samples, the only uncompressed format the endpoint streams without a
container, so bytes go to the session as they arrive with no decoding. Network reads do not
respect sample boundaries; an odd trailing byte is held back until its partner arrives.

Wire protocol, as documented by OpenAI:
https://platform.openai.com/docs/api-reference/audio/createSpeech
(`POST /v1/audio/speech`, JSON `model`, `input` (at most 4096 characters), `voice`,
`response_format`, optional `instructions` and `speed` 0.25..4.0; the body is the audio), and
the output formats in https://platform.openai.com/docs/guides/text-to-speech. Errors as in
https://platform.openai.com/docs/guides/error-codes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, Final

from providers.openai_api import OpenAIHTTP

__all__ = ["OpenAISpeechTTS"]

PROVIDER: Final = "openai"
DEFAULT_MODEL: Final = "gpt-4o-mini-tts"
DEFAULT_VOICE: Final = "alloy"
SAMPLE_RATE: Final = 24000  # fixed by the API for "pcm"
MAX_INPUT_CHARS: Final = 4096
MIN_SPEED: Final = 0.25
MAX_SPEED: Final = 4.0


class OpenAISpeechTTS:
    """An OpenAI voice. `instructions` (tone, accent, pace) work with gpt-4o-mini-tts only."""

    name = PROVIDER
    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        api_key: str,
        base_url: str | None = None,
        model: str = DEFAULT_MODEL,
        voice: str = DEFAULT_VOICE,
        *,
        instructions: str | None = None,
        speed: float | None = None,
        timeout: float = 10.0,
    ) -> None:
        if not model or not voice:
            raise ValueError("model and voice must be named")
        if speed is not None and not MIN_SPEED <= speed <= MAX_SPEED:
            raise ValueError(f"speed must be {MIN_SPEED}..{MAX_SPEED}, got {speed}")
        self.model = model
        self.voice = voice
        self.instructions = instructions or None
        self.speed = speed
        self._http = OpenAIHTTP(PROVIDER, api_key, base_url, timeout)

    def __repr__(self) -> str:
        return (
            f"OpenAISpeechTTS(model={self.model!r}, voice={self.voice!r}, "
            f"base_url={self._http.base_url!r})"
        )

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        """Yields 24 kHz PCM chunks, each a whole number of samples, as the server sends them."""
        for part in _input_parts(text.strip(), MAX_INPUT_CHARS):
            async with self._http.stream("/audio/speech", json=self._body(part)) as response:
                odd = b""
                async for data in response.aiter_bytes():
                    if odd:
                        data = odd + data
                    cut = len(data) - len(data) % 2
                    odd = data[cut:]
                    if cut:
                        yield data[:cut]
                # A complete response holds whole samples; a stray last byte is not audio.

    def _body(self, text: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "input": text,
            "voice": self.voice,
            "response_format": "pcm",
        }
        if self.instructions:
            body["instructions"] = self.instructions
        if self.speed is not None:
            body["speed"] = self.speed
        return body

    async def aclose(self) -> None:
        await self._http.aclose()


def _input_parts(text: str, limit: int) -> Iterator[str]:
    """`text` in pieces the API accepts, cut at the last space before the limit where one is."""
    while len(text) > limit:
        cut = text.rfind(" ", 0, limit + 1)
        if cut <= 0:
            cut = limit
        yield text[:cut].rstrip()
        text = text[cut:].lstrip()
    if text:
        yield text
