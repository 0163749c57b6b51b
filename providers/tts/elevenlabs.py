"""ElevenLabs speech synthesis, streamed over HTTP.

Wire protocol (https://elevenlabs.io/docs/api-reference/text-to-speech/stream):
``POST {base}/v1/text-to-speech/{voice_id}/stream?output_format=FORMAT`` with the ``xi-api-key``
header and a JSON body ``{"text", "model_id", "voice_settings"?}``. The answer is raw audio in
FORMAT, sent with chunked transfer encoding while it is generated
(https://elevenlabs.io/docs/api-reference/streaming), so each piece is passed on as it arrives.

Errors (https://elevenlabs.io/docs/eleven-api/resources/errors) are JSON with a ``detail``
property: an object with ``message`` and ``status`` (legacy) or ``code`` — 401
``invalid_api_key``, 429 ``concurrent_limit_exceeded`` / ``rate_limit_exceeded`` — or, for a
request that fails validation (422), a list of ``{"loc", "msg", "type"}`` entries. The vendor's
message is quoted in the raised `ProviderError`; the key never is.

Output formats: ``pcm_*`` is 16-bit little-endian PCM at the named rate, passed through.
``ulaw_8000`` (the default) is G.711 μ-law at 8 kHz, the phone's own format: the session's TTS
interface carries PCM, so it is decoded here (one table look-up per sample), and a μ-law
transport encodes it again without loss (only the sign of silence can flip). Handing the μ-law
bytes straight to the transport would need the session to carry encoded audio, which it does
not yet.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final
from urllib.parse import quote

import httpx

from providers.http_errors import connection_error, status_error
from session.audio import SAMPLE_WIDTH, audioop
from session.errors import ErrorCode, ProviderError

__all__ = ["OUTPUT_FORMATS", "ElevenLabsTTS"]

PROVIDER: Final = "elevenlabs"
DEFAULT_BASE_URL: Final = "https://api.elevenlabs.io"
DEFAULT_MODEL: Final = "eleven_flash_v2_5"  # the low-latency model, meant for live calls
DEFAULT_VOICE: Final = "JBFqnCBsd6RMkjVDRZzb"  # "George", a premade voice every account has
DEFAULT_FORMAT: Final = "ulaw_8000"

# Output format -> sample rate of the PCM this provider yields for it. mp3 and opus are left
# out on purpose: decoding them would need a codec library on the hot path.
OUTPUT_FORMATS: Final[Mapping[str, int]] = {
    "ulaw_8000": 8000,
    "pcm_8000": 8000,
    "pcm_16000": 16000,
    "pcm_22050": 22050,
    "pcm_24000": 24000,
    "pcm_44100": 44100,
}

_MAX_MESSAGE: Final = 300  # characters of a vendor message worth quoting


class ElevenLabsTTS:
    """One voice on ElevenLabs. Instances hold an HTTP connection pool: share one per process
    (or per call) and `aclose()` it when done."""

    name = PROVIDER

    def __init__(
        self,
        api_key: str,
        base_url: str | None = None,
        *,
        voice_id: str = DEFAULT_VOICE,
        model_id: str = DEFAULT_MODEL,
        output_format: str = DEFAULT_FORMAT,
        voice_settings: Mapping[str, Any] | None = None,
        timeout: float = 10.0,
    ) -> None:
        if not api_key:
            raise ValueError("api_key: an ElevenLabs API key is required")
        if output_format not in OUTPUT_FORMATS:
            raise ValueError(
                f"output_format must be one of {', '.join(OUTPUT_FORMATS)}, got {output_format!r}"
            )
        if not voice_id:
            raise ValueError("voice_id must not be empty")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self._api_key = api_key
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self.voice_id = voice_id
        self.model_id = model_id
        self.output_format = output_format
        self.voice_settings = dict(voice_settings) if voice_settings else None
        self.timeout = timeout
        self.sample_rate: int = OUTPUT_FORMATS[output_format]
        self._ulaw = output_format.startswith("ulaw_")
        self._client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return (
            f"ElevenLabsTTS(base_url={self.base_url!r}, voice_id={self.voice_id!r}, "
            f"model_id={self.model_id!r}, output_format={self.output_format!r})"
        )

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout))
        return self._client

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        """Yields 16-bit PCM at `sample_rate` as the audio arrives; nothing for blank text."""
        if not text.strip():
            return
        url = f"{self.base_url}/v1/text-to-speech/{quote(self.voice_id, safe='')}/stream"
        body: dict[str, Any] = {"text": text, "model_id": self.model_id}
        if self.voice_settings:
            body["voice_settings"] = self.voice_settings
        headers = {"xi-api-key": self._api_key, "accept": "audio/*"}
        carry = b""  # an odd byte left over: a PCM sample can straddle two network chunks
        try:
            async with self._http().stream(
                "POST",
                url,
                params={"output_format": self.output_format},
                headers=headers,
                json=body,
            ) as response:
                if response.status_code >= 300:
                    await response.aread()
                    raise self._status_error(response)
                async for data in response.aiter_bytes():
                    if self._ulaw:
                        yield audioop.ulaw2lin(data, SAMPLE_WIDTH)
                        continue
                    data = carry + data
                    cut = len(data) - len(data) % SAMPLE_WIDTH
                    carry = data[cut:]
                    if cut:
                        yield data[:cut]
        except ProviderError:
            raise
        except httpx.TransportError as exc:
            raise connection_error(PROVIDER, exc, within=self.timeout, redact=self._redact) from exc
        except httpx.HTTPError as exc:  # e.g. a body that does not decode
            raise ProviderError(
                ErrorCode.PROVIDER_ERROR,
                PROVIDER,
                f"{type(exc).__name__}: {self._redact(str(exc))}",
                cause=exc,
            ) from exc

    def _status_error(self, response: httpx.Response) -> ProviderError:
        status = response.status_code
        message = f"HTTP {status}: {self._redact(vendor_message(response.content))}"
        return status_error(PROVIDER, status, message, response.headers)

    def _redact(self, text: str) -> str:
        # Vendors do not echo keys, but a message is quoted verbatim: be sure.
        return text.replace(self._api_key, "[redacted]")


def vendor_message(body: bytes) -> str:
    """The human part of an ElevenLabs error body, whatever its shape."""
    try:
        payload = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip()[:_MAX_MESSAGE] or "(empty body)"
    detail = payload.get("detail", payload) if isinstance(payload, dict) else payload
    if isinstance(detail, dict):
        message = str(detail.get("message") or detail.get("msg") or "")
        tag = detail.get("code") or detail.get("status")
        text = f"{tag}: {message}" if tag and message else message or str(tag or detail)
    elif isinstance(detail, list):  # request validation: one entry per bad field
        parts = []
        for entry in detail:
            if isinstance(entry, dict):
                where = ".".join(str(part) for part in entry.get("loc", ()))
                parts.append(f"{where}: {entry.get('msg', '')}" if where else str(entry))
            else:
                parts.append(str(entry))
        text = "; ".join(parts)
    else:
        text = str(detail)
    return text[:_MAX_MESSAGE]
