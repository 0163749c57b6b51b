"""Fixtures shared across test modules."""

import gc
from collections.abc import Iterator

import pytest

from tests.test_session_telemetry import otel  # noqa: F401 (an OpenTelemetry SDK in memory)


@pytest.fixture
def no_collector() -> Iterator[None]:
    """The cyclic garbage collector off for one test: what outlives an ended call, stream or
    session is then held by a reference cycle (or a real leak), which in the gateway would
    wait for one of the collector's rare full collections."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
