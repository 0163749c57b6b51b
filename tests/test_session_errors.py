"""Session error codes, retryability, cause chaining and the mapping of foreign exceptions."""

from __future__ import annotations

import asyncio
import errno
import socket
import traceback

import httpx
import pytest

from session.errors import RETRYABLE_CODES, ErrorCode, ProviderError, SessionError, classify

PUBLISHED = {
    "INVALID_CONFIG": "invalid_config",
    "INVALID_STATE": "invalid_state",
    "SESSION_NOT_ACTIVE": "session_not_active",
    "SESSION_ALREADY_ACTIVE": "session_already_active",
    "SESSION_NOT_FOUND": "session_not_found",
    "TIMEOUT": "timeout",
    "PROVIDER_ERROR": "provider_error",
    "NETWORK_ERROR": "network_error",
    "AUTHENTICATION_ERROR": "authentication_error",
    "INVALID_AUDIO_FORMAT": "invalid_audio_format",
    "AGENT_ERROR": "agent_error",
    "TRANSPORT_ERROR": "transport_error",
    "CONTEXT_CANCELED": "context_canceled",
}

ALIASES = {
    "STT_FAILED": ErrorCode.PROVIDER_ERROR,
    "TTS_FAILED": ErrorCode.PROVIDER_ERROR,
    "VAD_FAILED": ErrorCode.PROVIDER_ERROR,
    "AGENT_FAILED": ErrorCode.AGENT_ERROR,
    "TRANSPORT_FAILED": ErrorCode.TRANSPORT_ERROR,
    "CANCELLED": ErrorCode.CONTEXT_CANCELED,
}


@pytest.mark.parametrize(("name", "value"), PUBLISHED.items())
def test_every_published_code_has_its_exact_value(name: str, value: str) -> None:
    code = ErrorCode[name]
    assert code.value == value
    assert code == value and str(code) == value
    assert ErrorCode(value) is code


def test_iteration_lists_each_published_code_once() -> None:
    assert [code.name for code in ErrorCode] == list(PUBLISHED)


@pytest.mark.parametrize(("alias", "canonical"), ALIASES.items())
def test_old_names_are_aliases_of_the_new_codes(alias: str, canonical: ErrorCode) -> None:
    assert getattr(ErrorCode, alias) is canonical
    assert ErrorCode[alias] is canonical


def test_retryable_codes() -> None:
    assert {
        ErrorCode.TIMEOUT,
        ErrorCode.PROVIDER_ERROR,
        ErrorCode.NETWORK_ERROR,
        ErrorCode.TRANSPORT_ERROR,
        ErrorCode.AGENT_ERROR,
    } == RETRYABLE_CODES


@pytest.mark.parametrize("code", list(ErrorCode))
def test_retryable_defaults_from_the_code_and_can_be_overridden(code: ErrorCode) -> None:
    assert SessionError(code, "x").retryable is (code in RETRYABLE_CODES)
    assert SessionError(code, "x", retryable=True).retryable is True
    assert SessionError(code, "x", retryable=False).retryable is False


def test_session_error_message_and_fields() -> None:
    error = SessionError(ErrorCode.INVALID_STATE, "cannot say() in state ended")
    assert str(error) == "invalid_state: cannot say() in state ended"
    assert error.code is ErrorCode.INVALID_STATE
    assert error.message == "cannot say() in state ended"
    assert error.cause is None and error.retry_after is None


def test_provider_error_keeps_its_call_shape() -> None:
    error = ProviderError(ErrorCode.STT_FAILED, "pocketsphinx", "decoder died", retryable=False)
    assert isinstance(error, SessionError)
    assert error.code is ErrorCode.PROVIDER_ERROR
    assert error.provider == "pocketsphinx"
    assert str(error) == "provider_error: pocketsphinx: decoder died"
    assert error.retryable is False
    assert ProviderError(ErrorCode.TTS_FAILED, "espeak", "boom").retryable is True
    assert ProviderError(ErrorCode.INVALID_AUDIO_FORMAT, "espeak", "8 bit").retryable is False


def test_cause_is_chained_like_raise_from() -> None:
    root = ConnectionResetError("peer reset")
    error = ProviderError(ErrorCode.PROVIDER_ERROR, "deepgram", "stream lost", cause=root)
    assert error.cause is root and error.__cause__ is root
    with pytest.raises(ProviderError) as caught:
        raise error
    rendered = "".join(traceback.format_exception(caught.value))
    assert "ConnectionResetError: peer reset" in rendered
    assert "direct cause of the following exception" in rendered


def test_raise_from_is_visible_as_cause() -> None:
    root = ValueError("bad")
    with pytest.raises(SessionError) as caught:
        try:
            raise root
        except ValueError as exc:
            raise SessionError(ErrorCode.AGENT_ERROR, "agent broke") from exc
    assert caught.value.cause is root


class StatusError(Exception):
    def __init__(self, *, status_code: object = None, status: object = None, **extra: object):
        super().__init__(f"HTTP {status_code or status}")
        if status_code is not None:
            self.status_code = status_code
        if status is not None:
            self.status = status
        self.__dict__.update(extra)


def _from(cause: BaseException, wrapper: Exception) -> Exception:
    """`wrapper` as a client library raises it: while handling `cause`."""
    try:
        try:
            raise cause
        except BaseException:
            raise wrapper from None
    except Exception as exc:
        return exc


def _httpx_status_error(status: int, headers: dict[str, str] | None = None) -> Exception:
    request = httpx.Request("POST", "https://api.example.test/v1/speech")
    response = httpx.Response(status, headers=headers, request=request)
    return httpx.HTTPStatusError("failed", request=request, response=response)


CLASSIFY_TABLE: list[tuple[str, BaseException, ErrorCode, bool]] = [
    ("TimeoutError", TimeoutError(), ErrorCode.TIMEOUT, True),
    # asyncio.TimeoutError is the builtin since 3.11: one row covers both.
    (
        "ConnectionRefusedError",
        ConnectionRefusedError(111, "refused"),
        ErrorCode.NETWORK_ERROR,
        True,
    ),
    ("ConnectionResetError", ConnectionResetError("reset"), ErrorCode.NETWORK_ERROR, True),
    ("socket.gaierror", socket.gaierror(-2, "unknown host"), ErrorCode.NETWORK_ERROR, True),
    ("OSError", OSError(errno.ENETUNREACH, "unreachable"), ErrorCode.NETWORK_ERROR, True),
    ("FileNotFoundError", FileNotFoundError("model.bin"), ErrorCode.AGENT_ERROR, True),
    ("CancelledError", asyncio.CancelledError(), ErrorCode.CONTEXT_CANCELED, False),
    ("status_code 401", StatusError(status_code=401), ErrorCode.AUTHENTICATION_ERROR, False),
    ("status 403", StatusError(status=403), ErrorCode.AUTHENTICATION_ERROR, False),
    ("status_code 429", StatusError(status_code=429), ErrorCode.PROVIDER_ERROR, True),
    ("status 500", StatusError(status=500), ErrorCode.PROVIDER_ERROR, True),
    ("status_code 503", StatusError(status_code=503), ErrorCode.PROVIDER_ERROR, True),
    ("status_code 404", StatusError(status_code=404), ErrorCode.AGENT_ERROR, True),
    ("status as text", StatusError(status="failed"), ErrorCode.AGENT_ERROR, True),
    ("httpx 401", _httpx_status_error(401), ErrorCode.AUTHENTICATION_ERROR, False),
    ("httpx 502", _httpx_status_error(502), ErrorCode.PROVIDER_ERROR, True),
    (
        "httpx.ConnectError raised while handling a refusal",
        _from(ConnectionRefusedError(111, "refused"), httpx.ConnectError("connect failed")),
        ErrorCode.NETWORK_ERROR,
        True,
    ),
    (
        "httpx.ReadTimeout raised while handling a timeout",
        _from(TimeoutError(), httpx.ReadTimeout("read timed out")),
        ErrorCode.TIMEOUT,
        True,
    ),
    ("ValueError", ValueError("bad reply"), ErrorCode.AGENT_ERROR, True),
    ("RuntimeError", RuntimeError("model unavailable"), ErrorCode.AGENT_ERROR, True),
]


@pytest.mark.parametrize(
    ("exc", "code", "retryable"),
    [row[1:] for row in CLASSIFY_TABLE],
    ids=[row[0] for row in CLASSIFY_TABLE],
)
def test_classify(exc: BaseException, code: ErrorCode, retryable: bool) -> None:
    error = classify(exc, ErrorCode.AGENT_ERROR)
    assert error.code is code
    assert error.retryable is retryable
    assert error.cause is exc
    assert type(exc).__name__ in error.message


def test_classify_unknown_errors_take_the_default_codes_retryability() -> None:
    error = classify(ValueError("odd frame"), ErrorCode.INVALID_AUDIO_FORMAT)
    assert error.code is ErrorCode.INVALID_AUDIO_FORMAT and not error.retryable


def test_classify_passes_session_errors_through() -> None:
    error = ProviderError(ErrorCode.INVALID_CONFIG, "espeak", "no such voice")
    assert classify(error, ErrorCode.PROVIDER_ERROR) is error


@pytest.mark.parametrize(
    ("exc", "retry_after"),
    [
        (StatusError(status_code=429, retry_after=2.5), 2.5),
        (StatusError(status_code=503, retry_after="4"), 4.0),
        (StatusError(status_code=429), None),
        (_httpx_status_error(429, {"Retry-After": "7"}), 7.0),
        (_httpx_status_error(503, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}), None),
    ],
)
def test_classify_copies_retry_after(exc: Exception, retry_after: float | None) -> None:
    assert classify(exc, ErrorCode.PROVIDER_ERROR).retry_after == retry_after


def test_classify_does_not_swallow_cancellation_itself() -> None:
    # The result only describes the cancellation; raising stays the caller's job.
    cancelled = asyncio.CancelledError()
    error = classify(cancelled, ErrorCode.AGENT_ERROR)
    assert error.code is ErrorCode.CONTEXT_CANCELED
    assert error.code is ErrorCode.CANCELLED
    assert error.cause is cancelled
