"""A reply generated before the end of the turn is confirmed, kept until the turn decides."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from session.interfaces import AgentContext


class PreemptiveReply:
    """Collects the agent's text for `key` (the normalised transcript it answers).

    `stream()` replays what was collected so far and then follows the generation live, so a
    hit loses nothing and waits for nothing already produced.
    """

    def __init__(self, key: str, ctx: AgentContext) -> None:
        self.key = key
        self.ctx = ctx
        self.pieces: list[str] = []
        self.finished = False
        self.task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def collect(self, source: AsyncIterator[str]) -> None:
        try:
            async for piece in source:
                self.pieces.append(piece)
                self._changed.set()
        finally:
            self.finished = True
            self._changed.set()

    async def stream(self) -> AsyncIterator[str]:
        sent = 0
        while True:
            while sent < len(self.pieces):
                yield self.pieces[sent]
                sent += 1
            if self.finished:
                return
            self._changed.clear()
            if sent == len(self.pieces) and not self.finished:
                await self._changed.wait()

    def cancel(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
