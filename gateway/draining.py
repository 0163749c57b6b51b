"""Deploys drop no calls: the first SIGTERM drains, the second (or the deadline) ends calls.

Uvicorn's own SIGTERM handling closes every websocket at once (close code 1012), which would
hang up every caller. So while the app runs, the first SIGTERM or SIGINT only starts draining:
readiness goes false, new calls are refused with 503 (Twilio then tries the fallback URL), and
calls in progress go on. When the last one ends, or `DRAIN_TIMEOUT` passes, or a second signal
comes, the remaining calls are ended by the gateway and uvicorn's handler is run to exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from types import FrameType
from typing import Any

from gateway.runtime import GatewayRuntime

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Drainer:
    def __init__(self, runtime: GatewayRuntime, deadline: float) -> None:
        self.runtime = runtime
        self.deadline = deadline
        self._previous: dict[int, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._signals = 0

    def install(self) -> None:
        """Wraps the server's signal handlers; a no-op off the main thread (embedded use)."""
        if threading.current_thread() is not threading.main_thread():
            return
        self._loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self._signals += 1
        assert self._loop is not None
        if self._signals == 1:
            self._loop.call_soon_threadsafe(self._start, sig, frame)
        else:
            self._loop.call_soon_threadsafe(self._finish_now, sig, frame)

    def _start(self, sig: int, frame: FrameType | None) -> None:
        self.runtime.draining = True
        log.warning(
            "draining: %d calls in progress, new calls refused; exiting when they end "
            "(at most %.0f s; signal again to end them now)",
            len(self.runtime.live),
            self.deadline,
        )
        self._task = asyncio.ensure_future(self._drain(sig, frame))

    async def _drain(self, sig: int, frame: FrameType | None) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.runtime.no_calls.wait(), self.deadline)
        await self._end_calls("drain deadline" if self.runtime.live else "drained")
        self._exit(sig, frame)

    def _finish_now(self, sig: int, frame: FrameType | None) -> None:
        if self._task is not None:
            self._task.cancel()

        async def finish() -> None:
            await self._end_calls("second signal")
            self._exit(sig, frame)

        self._task = asyncio.ensure_future(finish())

    async def _end_calls(self, why: str) -> None:
        live = list(self.runtime.live.values())
        if live:
            log.warning("ending %d calls (%s)", len(live), why)
        await asyncio.gather(*(self.runtime.end_call(s, "shutdown") for s in live))

    def _exit(self, sig: int, frame: FrameType | None) -> None:
        previous = self._previous.get(sig)
        self.uninstall()
        if callable(previous):
            previous(sig, frame)
        else:
            signal.raise_signal(sig)
