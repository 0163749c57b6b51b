"""Speech handles: one per thing the agent says, awaitable until the caller has heard it."""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

_ids = itertools.count(1)


@dataclass(slots=True)
class Segment:
    """A sentence sent to the caller, closed by a playout mark."""

    mark: str
    text: str
    played: bool = False
    settled: bool = False  # the transport has reported this mark, played or not


class SayHandle:
    """Tracks one reply or `say()` from queueing to the end of its playout.

    `wait_for_playout()` returns once the transport reports that the caller heard the last
    sentence, or once the speech is interrupted or cancelled. `heard_text` is what the
    caller actually heard, from playout marks.
    """

    def __init__(
        self, *, allow_interruptions: bool, source: str, cancel_hook: Callable[[SayHandle], None]
    ) -> None:
        self.id = f"sp{next(_ids)}"
        self.allow_interruptions = allow_interruptions
        self.source = source  # "say", "reply" or "apology"
        self.segments: list[Segment] = []
        self.pending: deque[str] = deque()  # sentences generated but not yet sent as audio
        self.interrupted = False
        self.generation_done = False
        self.audio_started = False
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._cancel_hook = cancel_hook

    @property
    def done(self) -> bool:
        return self._done.done()

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments)

    @property
    def heard_text(self) -> str:
        return " ".join(s.text for s in self.segments if s.played)

    async def wait_for_playout(self) -> None:
        await asyncio.shield(self._done)

    def cancel(self) -> None:
        """Stops the speech: unplayed audio is cleared and the handle reports interrupted."""
        if not self.done:
            self._cancel_hook(self)

    def all_settled(self) -> bool:
        return self.generation_done and all(s.settled for s in self.segments)

    def _finish(self, *, interrupted: bool) -> None:
        if not self.done:
            self.interrupted = interrupted
            self._done.set_result(None)
