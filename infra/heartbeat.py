"""Instance heartbeats, and the reaper that ends the calls of instances that stopped beating.

Every `interval` an instance refreshes its heartbeat (a key with a TTL) and looks for
registered instances whose heartbeat expired. Each such instance is claimed (``SET NX`` with a
TTL, so racing reapers mostly stay out of each other's way) and its live sessions are marked
ended with reason ``instance_lost``. The end itself is atomic in the store and only the first
end reason sticks, so even two reapers that both got through end each session exactly once,
and only the one that ended it appends the ``ended`` event.

An instance restarted under the same `INSTANCE_ID` reaps its own sessions from before it
started: no other instance would, since the heartbeat is alive again.

While the store is away the loop logs once, keeps its schedule and retries; it never crashes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

from infra.store.base import INSTANCE_LOST, Store, StoreUnavailable, cancel_and_wait

log = logging.getLogger(__name__)

InfoFn = Callable[[], Mapping[str, Any]]


class Heartbeat:
    def __init__(
        self,
        store: Store,
        instance_id: str,
        *,
        interval: float,
        ttl: float,
        info_fn: InfoFn | None = None,
    ) -> None:
        if ttl <= interval:
            raise ValueError("the heartbeat TTL must be longer than its interval")
        self.store = store
        self.instance_id = instance_id
        self.interval = interval
        self.ttl = ttl
        self.info_fn = info_fn
        self.started_at = time.time()
        self._task: asyncio.Task[None] | None = None
        self._healthy = True
        self._own_leftovers_reaped = False
        self._reap_after = 0.0  # monotonic time before which lost instances are not reaped

    @property
    def healthy(self) -> bool:
        """False while the last beat could not reach the store."""
        return self._healthy

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "instance": self.instance_id,
            "started_at": self.started_at,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "beat_at": time.time(),
        }
        if self.info_fn is not None:
            info.update(self.info_fn())
        return info

    async def beat(self) -> bool:
        """Refreshes this instance's heartbeat; False when the store is away."""
        try:
            await self.store.heartbeat(self.instance_id, self.info(), self.ttl)
        except StoreUnavailable as exc:
            if self._healthy:
                log.warning("heartbeat failed, will retry every %.1f s: %s", self.interval, exc)
            self._healthy = False
            return False
        if not self._healthy:
            log.info("heartbeat reaches the store again")
            # Every instance's heartbeat expired while the store was away, and the others
            # may not have beaten again yet: judge nobody lost until they have had a TTL.
            self._reap_after = time.monotonic() + self.ttl
        self._healthy = True
        return True

    async def reap(self) -> dict[str, list[str]]:
        """Ends the sessions of lost instances; returns {instance: sessions this call ended}."""
        reaped: dict[str, list[str]] = {}
        if not self._own_leftovers_reaped:
            reaped[self.instance_id] = await self._reap_own_leftovers()
            self._own_leftovers_reaped = True
        for lost in sorted(await self.store.lost_instances()):
            if lost == self.instance_id:
                continue  # we are alive: our next beat registers us again
            # The claim outlives one round so a slow reaper is not joined by the next one.
            if not await self.store.claim_reap(lost, self.instance_id, self.ttl):
                continue
            sessions = sorted(await self.store.sessions_of(lost))
            reaped[lost] = [sid for sid in sessions if await self._end(sid, lost)]
            await self.store.forget_instance(lost, sessions)
            if sessions:
                log.warning(
                    "instance %s lost its heartbeat; ended %d of its sessions",
                    lost,
                    len(reaped[lost]),
                )
        return {instance: ended for instance, ended in reaped.items() if ended}

    async def _reap_own_leftovers(self) -> list[str]:
        ended = []
        for sid in sorted(await self.store.sessions_of(self.instance_id)):
            record = await self.store.get_session(sid)
            stale = record is None or record.started_at < self.started_at
            if stale and await self._end(sid, self.instance_id):
                ended.append(sid)
        if ended:
            log.warning("ended %d sessions left over by this instance's last run", len(ended))
        return ended

    async def _end(self, session_id: str, lost: str) -> bool:
        now = time.time()
        if not await self.store.mark_ended(session_id, INSTANCE_LOST, now):
            return False  # ended already, by its own instance or another reaper
        data = {"reason": INSTANCE_LOST, "instance": lost, "reaped_by": self.instance_id}
        await self.store.add_events(session_id, [("ended", data, now)])
        return True

    async def tick(self) -> None:
        """One round: beat, then reap. Never raises for an unavailable store."""
        if not await self.beat() or time.monotonic() < self._reap_after:
            return
        try:
            await self.reap()
        except StoreUnavailable as exc:
            log.warning("lost-instance check failed, will retry: %s", exc)

    async def start(self) -> None:
        """Beats once now (so the instance is visible at once), then every `interval`."""
        if self._task is None:
            await self.tick()
            self._task = asyncio.create_task(self._run(), name="heartbeat")

    async def _run(self) -> None:
        next_at = time.monotonic()
        while True:
            # A fixed schedule, not sleep(interval) after the work: a slow round must not
            # stretch the gap between beats towards the TTL.
            next_at += self.interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            try:
                await self.tick()
            except Exception:
                log.exception("heartbeat round failed")
            # After a stall (a suspended process), beat once and go on, without catching up.
            next_at = max(next_at, time.monotonic() - self.interval)

    async def aclose(self, *, retire: bool = True) -> None:
        """Stops beating; `retire` removes the heartbeat so others reap what is left at once."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        if retire:
            try:
                await self.store.retire_instance(self.instance_id)
            except StoreUnavailable as exc:
                log.warning("could not retire heartbeat: %s", exc)
