"""Fixtures shared across test modules."""

from tests.test_session_telemetry import otel  # noqa: F401 (an OpenTelemetry SDK in memory)
