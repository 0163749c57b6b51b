"""The one HTTP status -> typed error table every HTTP provider uses."""

import pytest

from providers.http_errors import retry_after, status_error
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
