"""Typed session errors: every failure the engine reports carries a stable code."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    INVALID_STATE = "invalid_state"
    INVALID_CONFIG = "invalid_config"
    STT_FAILED = "stt_failed"
    TTS_FAILED = "tts_failed"
    VAD_FAILED = "vad_failed"
    AGENT_FAILED = "agent_failed"
    TRANSPORT_FAILED = "transport_failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"


class SessionError(Exception):
    """An error with a code the caller can branch on; `retryable` guides retry policies."""

    def __init__(self, code: ErrorCode, message: str, *, retryable: bool = False) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message
        self.retryable = retryable


class ProviderError(SessionError):
    """Raised by providers; the provider name travels with it for logs and metrics."""

    def __init__(
        self, code: ErrorCode, provider: str, message: str, *, retryable: bool = True
    ) -> None:
        super().__init__(code, f"{provider}: {message}", retryable=retryable)
        self.provider = provider
