"""How an HTTP status from a vendor, or a request that got no answer, becomes a typed error
the session can act on.

401/403 will not get better by retrying; 429 and 5xx usually do, after the wait the vendor
names in Retry-After; any other 4xx means the request itself is wrong. A connection refused,
reset or closed mid-body is worth another try.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import httpx

from session.errors import ErrorCode, ProviderError


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header; an HTTP date is not worth parsing for a hint."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and seconds >= 0 else None


def status_error(
    provider: str,
    status: int,
    message: str,
    headers: Mapping[str, str],
    *,
    cause: BaseException | None = None,
) -> ProviderError:
    if status in (401, 403):
        return ProviderError(
            ErrorCode.AUTHENTICATION_ERROR, provider, message, retryable=False, cause=cause
        )
    if status == 429 or status >= 500:
        return ProviderError(
            ErrorCode.PROVIDER_ERROR,
            provider,
            message,
            retryable=True,
            retry_after=retry_after(headers.get("retry-after") or headers.get("Retry-After")),
            cause=cause,
        )
    return ProviderError(ErrorCode.PROVIDER_ERROR, provider, message, retryable=False, cause=cause)


def connection_error(
    provider: str,
    exc: httpx.TransportError,
    *,
    within: float | None = None,
    redact: Callable[[str], str] = str,
) -> ProviderError:
    """A request that got no complete answer: timed out (`within` seconds, when one limit
    applies) or refused, reset or closed before the body was complete. The session retries
    only what was not spoken yet, so a failure mid-reply is retryable too."""
    name = type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        limit = f"no answer within {within:g} s" if within is not None else "timed out"
        return ProviderError(ErrorCode.TIMEOUT, provider, f"{limit} ({name})", cause=exc)
    return ProviderError(
        ErrorCode.NETWORK_ERROR,
        provider,
        f"connection failed: {name}: {redact(str(exc))}",
        retryable=True,
        cause=exc,
    )
