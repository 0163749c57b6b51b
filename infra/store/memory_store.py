"""The embedded store: the single-instance default when ``REDIS_URL`` is unset.

Same semantics as `RedisStore` (the shared contract tests run on both), kept in this process:
records as the same string hashes, event logs with stream-style ids, TTLs by the monotonic
clock. Commands can only reach instances sharing this object, which in production means
the instance itself. Besides the retention, at most `max_ended` ended sessions are kept, since
this memory is the gateway's own.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from infra.store.base import (
    DEFAULT_EVENTS_CAP,
    DEFAULT_RETENTION,
    END_STATE,
    EventTuple,
    SessionRecord,
    SessionWrite,
    StoredEvent,
    check_page,
    parse_seq,
    update_fields,
)

_TRACKED = ("from", "to", "instance", "started_at", "state", "ended_at", "end_reason")


def _json_copy(value: Mapping[str, Any], *, strict: bool = False) -> dict[str, Any]:
    # Round-trips through JSON like Redis does, so callers cannot share mutable state with
    # the store and odd values fail (routes) or stringify (events, info) the same way.
    if strict:
        return orjson.loads(orjson.dumps(dict(value)))
    return orjson.loads(orjson.dumps(dict(value), default=str, option=orjson.OPT_NON_STR_KEYS))


class _MemorySubscription:
    def __init__(self, store: MemoryStore, instance_id: str) -> None:
        self._store = store
        self._instance_id = instance_id
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def get(self) -> dict[str, Any]:
        return await self.queue.get()

    async def close(self) -> None:
        self._store._subscribers.get(self._instance_id, set()).discard(self)


class MemoryStore:
    """`Store` in this process's memory."""

    def __init__(
        self,
        *,
        retention: float = DEFAULT_RETENTION,
        events_cap: int = DEFAULT_EVENTS_CAP,
        max_ended: int = 1000,
    ) -> None:
        self.retention = retention
        self.events_cap = events_cap
        self.max_ended = max_ended
        self._records: dict[str, dict[str, str]] = {}
        self._events: dict[str, deque[StoredEvent]] = {}
        self._last_seq: dict[str, tuple[int, int]] = {}
        self._ended: OrderedDict[str, float] = OrderedDict()  # session -> monotonic deadline
        self._live: dict[str, set[str]] = {}  # instance -> live sessions, as in Redis
        self._heartbeats: dict[str, tuple[dict[str, Any], float]] = {}
        self._instances: set[str] = set()
        self._claims: dict[str, float] = {}
        self._routes: dict[str, dict[str, Any]] = {}
        self._subscribers: dict[str, set[_MemorySubscription]] = {}
        self._replies: dict[str, tuple[list[dict[str, Any]], float]] = {}
        self._reply_pushed: asyncio.Condition | None = None

    # -- sessions ---------------------------------------------------------------------------

    def _purge(self) -> None:
        now = time.monotonic()
        while self._ended:
            session_id, deadline = next(iter(self._ended.items()))
            if deadline > now and len(self._ended) <= self.max_ended:
                break
            del self._ended[session_id]
            self._records.pop(session_id, None)
            self._events.pop(session_id, None)
            self._last_seq.pop(session_id, None)

    def _apply(self, write: SessionWrite, now: str) -> tuple[int, int]:
        """The same steps as the Redis store's Lua script, on the same string hashes."""
        sid = write.session_id
        hashed = self._records.get(sid)
        marker = f"_w:{write.writer}" if write.writer else None
        if marker and hashed is not None and write.seq <= int(hashed.get(marker, "0")):
            return -1, 0

        if write.record is not None and write.record.session_id != sid:
            raise ValueError("record.session_id differs from the write's session_id")
        changes: dict[str, str] = {}
        if write.record is not None:
            changes.update(write.record.to_redis())
        if write.fields:
            changes.update(update_fields(write.fields))

        applied = ended_now = 0
        old = {name: (hashed or {}).get(name, "") for name in _TRACKED}
        ended = old["ended_at"] != ""
        if hashed is not None or write.record is not None:
            applied = 1
            if ended:
                for name in ("state", "ended_at", "end_reason"):
                    changes.pop(name, None)
            new = {name: changes.get(name, old[name]) for name in _TRACKED}
            if new["state"] == END_STATE and new["ended_at"] == "":
                new["ended_at"] = changes["ended_at"] = changes.get("updated_at") or now
            if write.end is not None:
                reason, at = write.end
                if new["ended_at"] == "":
                    new["ended_at"] = changes["ended_at"] = repr(float(at))
                if new["state"] != END_STATE:
                    new["state"] = changes["state"] = END_STATE
                if new["end_reason"] == "" and reason:
                    new["end_reason"] = changes["end_reason"] = reason
                    ended_now = 1
            if not changes.get("updated_at"):
                changes["updated_at"] = now
            changes["session_id"] = sid
            moved = hashed is None or new != old
            if hashed is None:
                hashed = self._records[sid] = {}
            hashed.update(changes)
            if marker:
                hashed[marker] = str(write.seq)
            ended = new["ended_at"] != ""
            if moved:  # the live set changes only with the indexed fields, as in Redis
                self._live.get(old["instance"], set()).discard(sid)
                if new["instance"] and not ended:
                    self._live.setdefault(new["instance"], set()).add(sid)
            if ended and sid not in self._ended:
                self._ended[sid] = time.monotonic() + (self.retention or math.inf)

        if write.events:
            log = self._events.get(sid)
            if log is None:
                log = self._events[sid] = deque(maxlen=self.events_cap)
            for kind, data, at in write.events:
                seq = self._next_seq(sid)
                log.append({"seq": seq, "time": float(at), "kind": kind, "data": _json_copy(data)})
        return applied, ended_now

    def _next_seq(self, session_id: str) -> str:
        ms = int(time.time() * 1000)
        last_ms, last_n = self._last_seq.get(session_id, (0, -1))
        seq = (ms, 0) if ms > last_ms else (last_ms, last_n + 1)
        self._last_seq[session_id] = seq
        return f"{seq[0]}-{seq[1]}"

    def _write_one(self, write: SessionWrite) -> tuple[int, int]:
        result = self._apply(write, repr(time.time()))
        self._purge()
        return result

    async def write(self, writes: Sequence[SessionWrite]) -> None:
        for write in writes:
            self._apply(write, repr(time.time()))
        self._purge()

    async def put_session(self, record: SessionRecord) -> None:
        self._write_one(SessionWrite(record.session_id, record=record))

    async def update_session(self, session_id: str, **fields: Any) -> bool:
        applied, _ = self._write_one(SessionWrite(session_id, fields=fields))
        return applied == 1

    async def mark_ended(self, session_id: str, reason: str, at: float) -> bool:
        _, ended_now = self._write_one(SessionWrite(session_id, end=(reason, at)))
        return ended_now == 1

    async def add_events(self, session_id: str, events: Sequence[EventTuple]) -> None:
        if events:
            self._write_one(SessionWrite(session_id, events=list(events)))

    async def get_session(self, session_id: str) -> SessionRecord | None:
        self._purge()
        hashed = self._records.get(session_id)
        return SessionRecord.from_redis(hashed) if hashed else None

    async def list_sessions(
        self,
        *,
        state: str | None = None,
        number: str | None = None,
        instance: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> tuple[list[SessionRecord], int]:
        check_page(offset, limit)
        self._purge()
        cutoff = time.time() - self.retention if self.retention else -math.inf
        ranked: list[tuple[float, str]] = []
        for sid, hashed in self._records.items():
            started = float(hashed.get("started_at") or 0)
            if started < cutoff:
                continue
            if state and hashed.get("state") != state:
                continue
            if number and number not in (hashed.get("from"), hashed.get("to")):
                continue
            if instance and hashed.get("instance") != instance:
                continue
            ranked.append((started, sid))
        ranked.sort(reverse=True)
        page = ranked[offset : offset + limit]
        return [SessionRecord.from_redis(self._records[sid]) for _, sid in page], len(ranked)

    async def events(
        self, session_id: str, after: str | None = None, limit: int = 100
    ) -> list[StoredEvent]:
        check_page(0, limit)
        self._purge()
        floor = parse_seq(after) if after is not None else None
        out: list[StoredEvent] = []
        for event in self._events.get(session_id, ()):
            if floor is not None and parse_seq(event["seq"]) <= floor:
                continue
            out.append({**event, "data": _json_copy(event["data"])})
            if len(out) == limit:
                break
        return out

    # -- instances --------------------------------------------------------------------------

    def _beating(self, instance_id: str) -> bool:
        beat = self._heartbeats.get(instance_id)
        if beat is None:
            return False
        if beat[1] <= time.monotonic():
            del self._heartbeats[instance_id]
            return False
        return True

    async def heartbeat(self, instance_id: str, info: Mapping[str, Any], ttl: float) -> None:
        self._heartbeats[instance_id] = (_json_copy(info), time.monotonic() + ttl)
        self._instances.add(instance_id)

    async def live_instances(self) -> set[str]:
        return {i for i in self._instances if self._beating(i)}

    async def lost_instances(self) -> set[str]:
        return {i for i in self._instances if not self._beating(i)}

    async def instance_info(self, instance_id: str) -> dict[str, Any] | None:
        if not self._beating(instance_id):
            return None
        return _json_copy(self._heartbeats[instance_id][0])

    async def claim_reap(self, instance_id: str, claimant: str, ttl: float) -> bool:
        now = time.monotonic()
        if self._claims.get(instance_id, 0.0) > now:
            return False
        self._claims[instance_id] = now + ttl
        return True

    async def forget_instance(self, instance_id: str, session_ids: Sequence[str]) -> bool:
        if self._beating(instance_id):
            return False
        live = self._live.get(instance_id, set())
        live.difference_update(session_ids)
        if live:
            return False
        self._live.pop(instance_id, None)
        self._instances.discard(instance_id)
        return True

    async def retire_instance(self, instance_id: str) -> None:
        self._heartbeats.pop(instance_id, None)

    async def sessions_of(self, instance_id: str) -> set[str]:
        return set(self._live.get(instance_id, ()))

    # -- routes -----------------------------------------------------------------------------

    async def get_route(self, number: str) -> dict[str, Any] | None:
        route = self._routes.get(number)
        return _json_copy(route) if route is not None else None

    async def put_route(self, number: str, route: Mapping[str, Any]) -> None:
        self._routes[number] = _json_copy(route, strict=True)

    async def delete_route(self, number: str) -> bool:
        return self._routes.pop(number, None) is not None

    async def list_routes(self) -> dict[str, dict[str, Any]]:
        return {number: _json_copy(self._routes[number]) for number in sorted(self._routes)}

    # -- commands ---------------------------------------------------------------------------

    async def publish_command(self, instance_id: str, message: Mapping[str, Any]) -> int:
        encoded = orjson.dumps(dict(message))  # fails like Redis's client would, listener or not
        subscribers = self._subscribers.get(instance_id, set())
        for subscription in subscribers:
            subscription.queue.put_nowait(orjson.loads(encoded))
        return len(subscribers)

    async def subscribe_commands(self, instance_id: str) -> _MemorySubscription:
        subscription = _MemorySubscription(self, instance_id)
        self._subscribers.setdefault(instance_id, set()).add(subscription)
        return subscription

    def _condition(self) -> asyncio.Condition:
        if self._reply_pushed is None:
            self._reply_pushed = asyncio.Condition()
        return self._reply_pushed

    def _pop_reply(self, request_id: str) -> dict[str, Any] | None:
        entry = self._replies.get(request_id)
        if entry is None:
            return None
        replies, deadline = entry
        if deadline <= time.monotonic() or not replies:
            del self._replies[request_id]
            return None
        reply = replies.pop(0)
        if not replies:
            del self._replies[request_id]
        return reply

    async def push_reply(self, request_id: str, reply: Mapping[str, Any], ttl: float) -> None:
        now = time.monotonic()
        for rid, (_, deadline) in list(self._replies.items()):
            if deadline <= now:
                del self._replies[rid]  # nobody waited: let it expire like the Redis list
        replies, _ = self._replies.get(request_id, ([], 0.0))
        replies.append(_json_copy(reply))
        self._replies[request_id] = (replies, now + ttl)
        condition = self._condition()
        async with condition:
            condition.notify_all()

    async def wait_reply(self, request_id: str, seconds: float) -> dict[str, Any] | None:
        condition = self._condition()
        async with condition:
            try:
                async with asyncio.timeout(seconds):
                    while (reply := self._pop_reply(request_id)) is None:
                        await condition.wait()
            except TimeoutError:
                return None
        return reply

    # -- lifecycle --------------------------------------------------------------------------

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        for subscribers in self._subscribers.values():
            subscribers.clear()
