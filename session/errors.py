"""Typed session errors: every failure the engine reports carries a stable code.

The codes are part of the public interface (events, the REST API and logs carry their string
values), so they never change once published. `classify` is the one place where foreign
exceptions (timeouts, socket errors, HTTP client errors) are mapped onto them, so retry
policies can look at `SessionError.retryable` instead of guessing from exception types.
"""

from __future__ import annotations

import asyncio
from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    INVALID_CONFIG = "invalid_config"
    INVALID_STATE = "invalid_state"
    SESSION_NOT_ACTIVE = "session_not_active"
    SESSION_ALREADY_ACTIVE = "session_already_active"
    SESSION_NOT_FOUND = "session_not_found"
    TIMEOUT = "timeout"
    PROVIDER_ERROR = "provider_error"
    NETWORK_ERROR = "network_error"
    AUTHENTICATION_ERROR = "authentication_error"
    INVALID_AUDIO_FORMAT = "invalid_audio_format"
    AGENT_ERROR = "agent_error"
    TRANSPORT_ERROR = "transport_error"
    CONTEXT_CANCELED = "context_canceled"

    # Older names, kept so existing call sites read as before. Equal values make them aliases:
    # `ErrorCode.STT_FAILED is ErrorCode.PROVIDER_ERROR`, and iteration lists each code once.
    STT_FAILED = "provider_error"
    TTS_FAILED = "provider_error"
    VAD_FAILED = "provider_error"
    AGENT_FAILED = "agent_error"
    TRANSPORT_FAILED = "transport_error"
    CANCELLED = "context_canceled"


# Failures that say nothing about the request itself: the same call may well work next time.
RETRYABLE_CODES: frozenset[ErrorCode] = frozenset(
    {
        ErrorCode.TIMEOUT,
        ErrorCode.PROVIDER_ERROR,
        ErrorCode.NETWORK_ERROR,
        ErrorCode.TRANSPORT_ERROR,
        ErrorCode.AGENT_ERROR,
    }
)


class SessionError(Exception):
    """An error with a code the caller can branch on; `retryable` guides retry policies.

    `retryable` defaults from the code (see `RETRYABLE_CODES`). `cause` becomes `__cause__`,
    so tracebacks show the original failure just as `raise ... from cause` would.
    `retry_after` is the wait, in seconds, a remote service asked for (HTTP 429/503), if any.
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        retryable: bool | None = None,
        cause: BaseException | None = None,
        retry_after: float | None = None,
    ) -> None:
        code = ErrorCode(code)
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message
        self.retryable = code in RETRYABLE_CODES if retryable is None else retryable
        self.retry_after = retry_after
        if cause is not None:
            self.__cause__ = cause

    @property
    def cause(self) -> BaseException | None:
        # Read through `__cause__` so `raise SessionError(...) from exc` is seen here too.
        return self.__cause__


class ProviderError(SessionError):
    """Raised by providers; the provider name travels with it for logs and metrics."""

    def __init__(
        self,
        code: ErrorCode,
        provider: str,
        message: str,
        *,
        retryable: bool | None = None,
        cause: BaseException | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            code,
            f"{provider}: {message}",
            retryable=retryable,
            cause=cause,
            retry_after=retry_after,
        )
        self.provider = provider


_FILESYSTEM_ERRORS = (
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)


def classify(exc: BaseException, default: ErrorCode) -> SessionError:
    """Maps any exception onto a `SessionError`, chaining `exc` as its cause.

    A `SessionError` is returned unchanged. `asyncio.CancelledError` maps to
    `CONTEXT_CANCELED` so it can be reported, but the caller must still re-raise the
    cancellation itself: swallowing it would break task cancellation. An HTTP status on the
    exception decides next (401/403: authentication, 429/5xx: retryable provider error), then
    a timeout or OS-level network error (any OSError but the file-system ones) anywhere in
    its cause chain. Anything else gets
    `default`, with the retryability that code carries.
    """
    if isinstance(exc, SessionError):
        return exc
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, asyncio.CancelledError):
        return SessionError(ErrorCode.CONTEXT_CANCELED, text, retryable=False, cause=exc)
    status = _http_status(exc)
    if status in (401, 403):
        return SessionError(ErrorCode.AUTHENTICATION_ERROR, text, retryable=False, cause=exc)
    if status is not None and (status == 429 or 500 <= status <= 599):
        return SessionError(
            ErrorCode.PROVIDER_ERROR,
            text,
            retryable=True,
            cause=exc,
            retry_after=_retry_after(exc),
        )
    for link in _chain(exc):
        # Before OSError: TimeoutError is one of its subclasses.
        if isinstance(link, TimeoutError):
            return SessionError(ErrorCode.TIMEOUT, text, cause=exc)
        # ConnectionError and socket errors are OSErrors; a missing model file is not a network
        # failure, and retrying it would only delay the real message.
        if isinstance(link, OSError) and not isinstance(link, _FILESYSTEM_ERRORS):
            return SessionError(ErrorCode.NETWORK_ERROR, text, cause=exc)
    return SessionError(default, text, cause=exc)


def _chain(exc: BaseException, limit: int = 8) -> list[BaseException]:
    """`exc` and the exceptions it was raised from, nearest first.

    HTTP and websocket clients wrap socket errors in their own types (httpx.ConnectError is
    not an OSError, but it is raised while handling one), so the cause of a wrapper says
    what kind of failure it was without `session/` importing any client library.
    """
    links: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and len(links) < limit and link not in links:
        links.append(link)
        link = link.__cause__ or link.__context__
    return links


def _http_status(exc: BaseException) -> int | None:
    # Client libraries disagree on where the status lives: on the exception itself
    # (`status_code`, `status`) or on the response it carries (httpx, websockets).
    response = getattr(exc, "response", None)
    for owner, attr in ((exc, "status_code"), (exc, "status"), (response, "status_code")):
        value = getattr(owner, attr, None)
        if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
            return value
    return None


def _retry_after(exc: BaseException) -> float | None:
    value: Any = getattr(exc, "retry_after", None)
    if value is None:
        headers = getattr(getattr(exc, "response", None), "headers", None)
        value = _header(headers, "retry-after") or _header(headers, "Retry-After")
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None  # absent, or an HTTP date: not worth parsing for a retry hint
    return seconds if seconds >= 0 else None


def _header(headers: Any, name: str) -> Any:
    try:
        return headers.get(name) if headers is not None else None
    except Exception:  # a foreign object that only looks like a mapping
        return None
