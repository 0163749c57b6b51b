"""Write-behind of session state, so the media path never waits on the store.

The call path calls `StoreWriter`'s synchronous methods, which only touch in-process queues.
A background task flushes them every `interval` (about 100 ms): all updates of one session
since the last flush become one write, and every session's writes go to the store in one
pipeline. When the store is away, everything stays queued and is retried with backoff; a call
keeps talking while Redis restarts, and its record is complete once Redis is back.

Writes are idempotent across retries: each flush is a numbered batch, and the store skips a
batch it already applied (a reply lost with the connection must not double the events). A batch
that failed is resent unchanged before anything newer, so each session's events keep their
order. While the store is away, each session queues at most `max_events` newer events besides
the batch in flight; beyond that the oldest are dropped and counted. Record updates are never
dropped: the writer keeps the full record of each live session it started and rewrites it, so
even a Redis that restarted empty gets the records of live calls back on their next update.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from time import monotonic
from time import time as wall_clock
from typing import Any

from infra.store.base import (
    DEFAULT_EVENTS_CAP,
    EventTuple,
    SessionRecord,
    SessionWrite,
    Store,
    StoreUnavailable,
    cancel_and_wait,
    update_fields,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WriterBacklog:
    sessions: int  # sessions with changes not yet in the store
    events: int  # events not yet in the store
    dropped_events: int  # oldest events dropped from full queues, since start
    failed_writes: int  # batches the store rejected outright (not retried), since start


@dataclass(slots=True)
class _Pending:
    record: SessionRecord | None = None  # the full record to write, when it changed
    fields: dict[str, Any] = field(default_factory=dict)
    events: deque[EventTuple] = field(default_factory=deque)
    end: tuple[str, float] | None = None


class StoreWriter:
    def __init__(
        self,
        store: Store,
        *,
        interval: float = 0.1,
        max_events: int = DEFAULT_EVENTS_CAP,
        backoff_max: float = 5.0,
        write_timeout: float = 5.0,
    ) -> None:
        self.store = store
        self.interval = interval
        self.max_events = max_events
        self.backoff_max = backoff_max
        self.write_timeout = write_timeout
        # Names this writer's batches in the store, for idempotent retries.
        self.writer_id = uuid.uuid4().hex[:12]
        self._records: dict[str, SessionRecord] = {}  # live sessions started here
        self._pending: dict[str, _Pending] = {}
        self._inflight: list[SessionWrite] | None = None
        self._seq = 0
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._healthy = True
        self._unhealthy_since = 0.0
        self._dropped_events = 0
        self._failed_writes = 0

    # -- the call path: synchronous, in-process only ------------------------------------------

    def _pending_for(self, session_id: str) -> _Pending:
        pending = self._pending.get(session_id)
        if pending is None:
            pending = self._pending[session_id] = _Pending()
        return pending

    def started(self, record: SessionRecord) -> None:
        """A new session: its full record is written first."""
        record = dataclasses.replace(record)
        if record.updated_at is None:
            record.updated_at = wall_clock()
        record.to_redis()  # a bad field fails here, in the caller, not in the flush
        self._records[record.session_id] = record
        pending = self._pending_for(record.session_id)
        pending.record = record
        pending.fields.clear()  # older than the full record, which supersedes them

    def session_updated(self, session_id: str, **fields: Any) -> None:
        """Some fields changed (Python names); merged with other changes since the last flush."""
        update_fields(fields)  # a bad name or type fails in the caller, not in the flush
        fields.setdefault("updated_at", wall_clock())
        pending = self._pending_for(session_id)
        record = self._records.get(session_id)
        if record is None:
            pending.fields.update(fields)
            return
        for name, value in fields.items():
            setattr(record, name, value)
        pending.record = record

    def event(self, session_id: str, kind: str, data: Mapping[str, Any], time: float) -> None:
        events = self._pending_for(session_id).events
        if len(events) >= self.max_events:
            events.popleft()
            self._dropped_events += 1
        events.append((kind, data, time))

    def ended(self, session_id: str, reason: str, at: float) -> None:
        pending = self._pending_for(session_id)
        if pending.end is None:  # the first reason wins, as in the store
            pending.end = (reason, at)

    def forget(self, session_id: str) -> None:
        """This instance no longer owns the session (it ended elsewhere, or moved): stop keeping
        its record. What is queued is still written; later updates go as plain fields."""
        self._records.pop(session_id, None)

    # -- state for /readyz ----------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """False while writes are failing to reach the store."""
        return self._healthy

    @property
    def backlog(self) -> WriterBacklog:
        writes = list(self._inflight or [])
        sessions = {w.session_id for w in writes} | set(self._pending)
        events = sum(len(w.events) for w in writes)
        events += sum(len(p.events) for p in self._pending.values())
        return WriterBacklog(len(sessions), events, self._dropped_events, self._failed_writes)

    # -- flushing -------------------------------------------------------------------------------

    def _take(self) -> list[SessionWrite]:
        self._seq += 1
        writes = []
        for session_id, pending in self._pending.items():
            record = pending.record
            if pending.end is not None:
                self._records.pop(session_id, None)  # later updates go as plain fields
            writes.append(
                SessionWrite(
                    session_id,
                    # A copy, so a retry resends exactly this batch.
                    record=dataclasses.replace(record) if record is not None else None,
                    fields=pending.fields,
                    events=list(pending.events),
                    end=pending.end,
                    writer=self.writer_id,
                    seq=self._seq,
                )
            )
        self._pending = {}
        return writes

    async def flush(self) -> bool:
        """Writes what is queued; True when nothing is left, False when the store is away."""
        async with self._lock:
            for _ in range(3):  # bounded: the call path may keep adding while we write
                if self._inflight is None:
                    if not self._pending:
                        break
                    self._inflight = self._take()
                try:
                    async with asyncio.timeout(self.write_timeout):
                        await self.store.write(self._inflight)
                except (StoreUnavailable, TimeoutError) as exc:
                    self._set_unhealthy(exc)
                    return False
                except Exception:
                    # Not a connectivity problem: retrying would fail forever and hold up
                    # every later write, so this batch is given up, loudly.
                    self._failed_writes += 1
                    log.exception(
                        "session store rejected a write of %d sessions; dropped",
                        len(self._inflight),
                    )
                self._inflight = None
                self._set_healthy()
            return self._inflight is None and not self._pending

    def _set_unhealthy(self, exc: BaseException) -> None:
        if self._healthy:
            self._healthy = False
            self._unhealthy_since = monotonic()
            backlog = self.backlog
            log.warning(
                "session store unavailable (%s); queuing writes (%d sessions, %d events)",
                exc or type(exc).__name__,
                backlog.sessions,
                backlog.events,
            )

    def _set_healthy(self) -> None:
        if not self._healthy:
            self._healthy = True
            log.info(
                "session store back after %.1f s; queued writes flushed",
                monotonic() - self._unhealthy_since,
            )

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Starts the background flush (needs a running event loop)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="store-writer")

    async def _run(self) -> None:
        delay = self.interval
        while True:
            await asyncio.sleep(delay)
            try:
                ok = await self.flush()
            except Exception:  # never let the flusher die: the call path depends on it
                log.exception("store writer flush failed")
                ok = False
            delay = self.interval if ok else min(self.backoff_max, max(delay * 2, self.interval))

    async def aclose(self, grace: float = 5.0) -> bool:
        """Stops the background flush and writes what it can within `grace` seconds."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        deadline = monotonic() + grace
        while (remaining := deadline - monotonic()) > 0:
            try:
                async with asyncio.timeout(remaining):
                    if await self.flush():
                        return True
                    await asyncio.sleep(min(0.2, max(0.0, deadline - monotonic())))
            except TimeoutError:
                break
        backlog = self.backlog
        if backlog.sessions:
            log.error(
                "store writer closed with %d sessions (%d events) unwritten",
                backlog.sessions,
                backlog.events,
            )
        return False
