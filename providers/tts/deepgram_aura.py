"""Deepgram Aura speech synthesis over its REST API, streamed as it is produced.

Wire protocol (https://developers.deepgram.com/reference/text-to-speech-api/speak,
https://developers.deepgram.com/docs/tts-media-output-settings,
https://developers.deepgram.com/docs/streaming-the-audio-output,
https://developers.deepgram.com/docs/errors):
`POST https://api.deepgram.com/v1/speak?model=aura-2-thalia-en&encoding=linear16&sample_rate=8000
&container=none` with the JSON body `{"text": "..."}` and `Authorization: Token <key>`. With
`container=none` the response body is raw 16-bit little-endian PCM, sent as it is synthesised,
so the first chunk can play before the rest exists. Errors are JSON, in one of two shapes:
`{"err_code", "err_msg", "request_id"}` or `{"category", "message", "details", "request_id"}`.

Asking for 8 kHz linear16 means phone calls need no resampling here at all; Deepgram offers
linear16 at 8, 16, 24, 32 and 48 kHz.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import httpx

from providers.http_errors import connection_error, status_error
from session.errors import ProviderError

__all__ = ["DeepgramAuraTTS"]

PROVIDER: Final = "deepgram"
DEFAULT_URL: Final = "https://api.deepgram.com"
SPEAK_PATH: Final = "/v1/speak"
SAMPLE_RATES: Final = (8000, 16000, 24000, 32000, 48000)


class DeepgramAuraTTS:
    """Aura voice. One instance serves every call; it holds one pooled HTTP client.

    `base_url` is the API root (`https://api.deepgram.com` by default); `ws(s)://` roots are
    accepted too, so one `DEEPGRAM_URL` serves this and the recogniser.
    """

    name = PROVIDER

    def __init__(
        self,
        api_key: str,
        base_url: str | None = None,
        *,
        model: str = "aura-2-thalia-en",
        sample_rate: int = 8000,
        connect_timeout: float = 5.0,
        read_timeout: float = 15.0,
    ) -> None:
        if not api_key:
            raise ValueError("api_key: a Deepgram API key is required")
        if sample_rate not in SAMPLE_RATES:
            raise ValueError(
                f"sample_rate must be one of {', '.join(map(str, SAMPLE_RATES))}, got {sample_rate}"
            )
        self._api_key = api_key
        self.base_url = base_url
        self.model = model
        self.sample_rate: int = sample_rate
        self._timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
        self._client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return (
            f"DeepgramAuraTTS(model={self.model!r}, sample_rate={self.sample_rate}, "
            f"base_url={self.base_url!r})"
        )

    @property
    def url(self) -> str:
        return _speak_endpoint(self.base_url)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None or self._client.is_closed:
            self._client = httpx.AsyncClient(timeout=self._timeout)
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        """Yields PCM at `sample_rate` as Deepgram sends it, never splitting a sample."""
        if not text.strip():
            return
        params = {
            "model": self.model,
            "encoding": "linear16",
            "sample_rate": str(self.sample_rate),
            "container": "none",
        }
        headers = {"Authorization": f"Token {self._api_key}"}
        try:
            async with self._http().stream(
                "POST", self.url, params=params, headers=headers, json={"text": text}
            ) as response:
                if response.status_code >= 400:
                    body = await response.aread()
                    raise _status_error(response, body)
                carry = b""  # an odd trailing byte waits for the rest of its sample
                async for chunk in response.aiter_bytes():
                    if carry:
                        chunk = carry + chunk
                    cut = len(chunk) - len(chunk) % 2
                    carry = chunk[cut:]
                    if cut:
                        yield chunk[:cut]
        except ProviderError:
            raise
        except httpx.TransportError as exc:
            raise connection_error(PROVIDER, exc) from exc


def _speak_endpoint(base_url: str | None) -> str:
    parts = urlsplit((base_url or DEFAULT_URL).rstrip("/"))
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    path = parts.path if parts.path not in ("", "/") else SPEAK_PATH
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def _status_error(response: httpx.Response, body: bytes) -> ProviderError:
    status = response.status_code
    detail = _error_detail(body)
    message = f"HTTP {status}" + (f": {detail}" if detail else "")
    return status_error(PROVIDER, status, message, response.headers)


def _error_detail(body: bytes) -> str:
    """Deepgram's message from either error shape, or the start of a non-JSON body."""
    try:
        payload = json.loads(body) if body else None
    except ValueError:
        return body[:200].decode("utf-8", "replace")
    if not isinstance(payload, dict):
        return ""
    for key in ("err_msg", "message", "details", "err_code", "category"):
        value = payload.get(key)
        if isinstance(value, str) and value:
            return value[:300]
    return ""
