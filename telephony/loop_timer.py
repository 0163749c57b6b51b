"""The one timer a sans-I/O connection asks for, kept on the asyncio loop.

Protocol objects say when they next need `handle_timer` (`get_timer()`: an absolute time on
the loop's clock, or None). Their adapters re-arm this after every input; arming the same time
again costs nothing, which matters at 50 packets a second per call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["LoopTimer"]


class LoopTimer:
    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback: Callable[[], None] | None = callback
        self._handle: asyncio.TimerHandle | None = None
        self._at: float | None = None

    def arm(self, when: float | None) -> None:
        """Fire at `when` (loop time; in the past: as soon as possible), or never for None."""
        if when == self._at and self._handle is not None:
            return
        self.cancel()
        if when is not None and self._callback is not None:
            self._at = when
            self._handle = self._loop.call_at(when, self._fire)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None
        self._at = None

    def close(self) -> None:
        """Never fire again; drops the callback, which usually refers back to the owner."""
        self.cancel()
        self._callback = None

    def _fire(self) -> None:
        self._handle = None
        self._at = None
        if self._callback is not None:
            self._callback()
