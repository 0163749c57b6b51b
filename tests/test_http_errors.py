"""The one HTTP status -> typed error table every HTTP provider uses, and the errors of a
request that got no answer."""

import httpx
import pytest

from providers.http_errors import connection_error, retry_after, status_error
from session.errors import ErrorCode


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (401, ErrorCode.AUTHENTICATION_ERROR, False),
        (403, ErrorCode.AUTHENTICATION_ERROR, False),
        (400, ErrorCode.PROVIDER_ERROR, False),
        (422, ErrorCode.PROVIDER_ERROR, False),
        (429, ErrorCode.PROVIDER_ERROR, True),
        (500, ErrorCode.PROVIDER_ERROR, True),
        (503, ErrorCode.PROVIDER_ERROR, True),
    ],
)
def test_status_table(status: int, code: ErrorCode, retryable: bool) -> None:
    error = status_error("vendor", status, f"HTTP {status}", {"Retry-After": "2"})
    assert (error.code, error.retryable, error.provider) == (code, retryable, "vendor")
    assert error.retry_after == (2.0 if retryable else None)


def test_retry_after_takes_seconds_only() -> None:
    assert retry_after("1.5") == 1.5
    assert retry_after("Wed, 21 Oct 2026 07:28:00 GMT") is None
    assert retry_after("-3") is None and retry_after(None) is None


def test_a_timeout_names_the_limit_and_a_lost_connection_is_retryable() -> None:
    timeout = connection_error("vendor", httpx.ReadTimeout("slow"), within=2.5)
    assert timeout.code is ErrorCode.TIMEOUT and "no answer within 2.5 s (ReadTimeout)" in str(
        timeout
    )
    assert "timed out (ConnectTimeout)" in str(connection_error("v", httpx.ConnectTimeout("x")))
    lost = connection_error(
        "vendor",
        httpx.RemoteProtocolError("peer closed, key sk-secret"),
        redact=lambda text: text.replace("sk-secret", "[redacted]"),
    )
    assert (lost.code, lost.retryable) == (ErrorCode.NETWORK_ERROR, True)
    assert "[redacted]" in str(lost) and "sk-secret" not in str(lost)
