"""HTTP access to OpenAI-style APIs, shared by the OpenAI recogniser, synthesiser and agent.

The base URL, the bearer key, one lazily made `httpx.AsyncClient` per provider instance, and the
mapping of HTTP statuses and socket failures onto typed `ProviderError`s.

Authentication (`Authorization: Bearer <key>`) and the error body
`{"error": {"message", "type", "param", "code"}}`:
https://platform.openai.com/docs/api-reference/authentication and
https://platform.openai.com/docs/guides/error-codes
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final

import httpx

from session.errors import ErrorCode, ProviderError

__all__ = ["DEFAULT_BASE_URL", "OpenAIHTTP", "retry_after", "vendor_message"]

PROVIDER: Final = "openai"
DEFAULT_BASE_URL: Final = "https://api.openai.com/v1"
CONNECT_TIMEOUT: Final = 5.0  # a server that takes longer to accept is better reported quickly
MAX_MESSAGE_CHARS: Final = 300  # of a vendor's error text quoted in our errors


class OpenAIHTTP:
    """One provider instance's HTTP access to an OpenAI-style API.

    The client is made on first use and belongs to the event loop it was made on: a caller on
    another loop (a later test, a CLI run) gets a new one, since an httpx connection pool cannot
    cross loops. Every failure leaves as a `ProviderError` naming `provider`, with the API key
    scrubbed from any text a server sent back.
    """

    def __init__(self, provider: str, api_key: str, base_url: str | None, timeout: float) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive seconds, got {timeout}")
        self.provider = provider
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self._api_key = api_key
        # `timeout` bounds each wait (connect, each read, each write), not the whole request:
        # a reply that keeps streaming may take longer overall.
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT))
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"OpenAIHTTP(provider={self.provider!r}, base_url={self.base_url!r})"

    def _get_client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client.is_closed or self._loop is not loop:
            # Local compatible servers (Ollama, LM Studio) need no key: send no header then.
            headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
            self._client = httpx.AsyncClient(
                base_url=self.base_url, headers=headers, timeout=self._timeout
            )
            self._loop = loop
        return self._client

    @asynccontextmanager
    async def stream(self, path: str, **request: Any) -> AsyncIterator[httpx.Response]:
        """POSTs to `path` and yields the response once its status says success.

        Transport failures while the caller reads the body inside the `async with` are typed
        here too, so a connection dropped mid-stream surfaces as a NETWORK_ERROR.
        """
        try:
            async with self._get_client().stream("POST", path, **request) as response:
                if response.is_error:
                    body = await response.aread()
                    raise self.status_error(response.status_code, body, response.headers)
                yield response
        except httpx.HTTPError as exc:
            raise self.transport_error(path, exc) from exc

    async def post(self, path: str, **request: Any) -> httpx.Response:
        """POSTs to `path` and returns the successful response with its body read."""
        async with self.stream(path, **request) as response:
            await response.aread()
            return response

    def status_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> ProviderError:
        message = f"HTTP {status}: {self.redact(vendor_message(body))}"
        if status in (401, 403):
            return ProviderError(
                ErrorCode.AUTHENTICATION_ERROR, self.provider, message, retryable=False
            )
        if status == 408:
            return ProviderError(ErrorCode.TIMEOUT, self.provider, message, retryable=True)
        # 409 is OpenAI's "try again" for a resource busy with another request.
        if status in (409, 429) or status >= 500:
            return ProviderError(
                ErrorCode.PROVIDER_ERROR,
                self.provider,
                message,
                retryable=True,
                retry_after=retry_after(headers),
            )
        # Anything else is about the request itself: sending it again cannot help.
        return ProviderError(ErrorCode.PROVIDER_ERROR, self.provider, message, retryable=False)

    def transport_error(self, path: str, exc: httpx.HTTPError) -> ProviderError:
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        message = self.redact(f"POST {path}: {detail}")
        if isinstance(exc, httpx.TimeoutException):
            code = ErrorCode.TIMEOUT
        elif isinstance(exc, httpx.TransportError):
            code = ErrorCode.NETWORK_ERROR
        else:  # an undecodable body and the like: most likely a one-off
            code = ErrorCode.PROVIDER_ERROR
        return ProviderError(code, self.provider, message, retryable=True, cause=exc)

    def redact(self, text: str) -> str:
        # OpenAI masks keys it quotes, but a proxy or a compatible server may not.
        return text.replace(self._api_key, "***") if self._api_key else text

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        # A client from a loop that is gone cannot be closed from here; dropping it is all
        # that is left (its sockets went with that loop).
        if running is self._loop:
            await client.aclose()


def vendor_message(body: bytes) -> str:
    """The human part of an error body: OpenAI's `error.message`, or what a look-alike sent."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, str) and error:  # Ollama: {"error": "..."}
            return clip_message(error)
        if isinstance(error, dict):
            for key in ("message", "detail"):  # OpenAI and vLLM; FastAPI-style servers
                value = error.get(key)
                if isinstance(value, str) and value:
                    return clip_message(value)
                if value:
                    return clip_message(json.dumps(value))
    text = body.decode("utf-8", "replace").strip()
    return clip_message(text) if text else "no error message in the response"


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asked us to wait, from `retry-after-ms` or `Retry-After`."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(float(millis) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:  # the HTTP-date form
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def clip_message(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


# ----------------------------------------------------------------------------- the agent
