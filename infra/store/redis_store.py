"""The shared store on Redis (the ``redis.asyncio`` client).

Every change to a session goes through one Lua script (`_WRITE_SESSION`), so the record, its
indexes and its event log move together atomically and the "once ended, stays ended" rule
holds under concurrent writers. The write-behind path sends one script call per session in a
single pipeline per flush.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MasterDownError, OutOfMemoryError, ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from infra.store.base import (
    DEFAULT_EVENTS_CAP,
    DEFAULT_RETENTION,
    EventTuple,
    SessionRecord,
    SessionWrite,
    StoredEvent,
    StoreUnavailable,
    check_page,
    parse_seq,
    update_fields,
)
from infra.store.keys import DEFAULT_PREFIX, Keys

# One write for one session. ARGV[1] is JSON: sid, now, retention (0 = keep), cap, and
# optionally writer+seq (idempotent retries), record (all fields), fields (some fields),
# events ([kind, data-json, time]...), finish ([reason, at]). Values are strings already.
# Returns {applied: 1 | 0 no record | -1 duplicate, ended_now: 1 | 0}.
_WRITE_SESSION = """
local p = cjson.decode(ARGV[1])
local sid = p.sid
local skey = k_session(sid)
local ekey = k_events(sid)
local now = p.now
local retention = tonumber(p.retention)
local marker = nil
if p.writer then
  marker = "_w:" .. p.writer
  local last = tonumber(redis.call("HGET", skey, marker) or "0")
  if p.seq <= last then return {-1, 0} end
end

local TRACKED = {"from", "to", "instance", "started_at", "state", "ended_at", "end_reason"}
local exists = redis.call("EXISTS", skey) == 1
local old = {}
local raw = redis.call("HMGET", skey, unpack(TRACKED))
for i, name in ipairs(TRACKED) do old[name] = raw[i] or "" end

local function trim(key)
  if retention > 0 then
    redis.call("ZREMRANGEBYSCORE", key, "-inf", "(" .. (tonumber(now) - retention))
  end
end

local function index(r)
  local score = tonumber(r.started_at) or 0
  local zsets = {k_sessions}
  if r.from ~= "" then table.insert(zsets, k_index_number(r.from)) end
  if r.to ~= "" then table.insert(zsets, k_index_number(r.to)) end
  if r.instance ~= "" then table.insert(zsets, k_index_instance(r.instance)) end
  if r.state ~= "" then table.insert(zsets, k_index_state(r.state)) end
  for _, key in ipairs(zsets) do
    redis.call("ZADD", key, score, sid)
    trim(key)
  end
  if r.instance ~= "" and r.ended_at == "" then
    redis.call("SADD", k_instance_sessions(r.instance), sid)
  end
end

local function unindex(r)
  redis.call("ZREM", k_sessions, sid)
  if r.from ~= "" then redis.call("ZREM", k_index_number(r.from), sid) end
  if r.to ~= "" then redis.call("ZREM", k_index_number(r.to), sid) end
  if r.instance ~= "" then
    redis.call("ZREM", k_index_instance(r.instance), sid)
    redis.call("SREM", k_instance_sessions(r.instance), sid)
  end
  if r.state ~= "" then redis.call("ZREM", k_index_state(r.state), sid) end
end

local applied = 0
local ended_now = 0
local ended = old.ended_at ~= ""
if exists or p.record then
  applied = 1
  local changes = {}
  if p.record then for k, v in pairs(p.record) do changes[k] = v end end
  if p.fields then for k, v in pairs(p.fields) do changes[k] = v end end
  if ended then
    -- once ended, stays ended
    changes.state = nil
    changes.ended_at = nil
    changes.end_reason = nil
  end
  local new = {}
  for _, name in ipairs(TRACKED) do
    if changes[name] ~= nil then new[name] = changes[name] else new[name] = old[name] end
  end
  if new.state == "ended" and new.ended_at == "" then
    new.ended_at = changes.updated_at or now
    changes.ended_at = new.ended_at
  end
  if p.finish then
    if new.ended_at == "" then
      new.ended_at = p.finish[2]
      changes.ended_at = new.ended_at
    end
    if new.state ~= "ended" then
      new.state = "ended"
      changes.state = "ended"
    end
    if new.end_reason == "" and p.finish[1] ~= "" then
      new.end_reason = p.finish[1]
      changes.end_reason = new.end_reason
      ended_now = 1
    end
  end
  if changes.updated_at == nil or changes.updated_at == "" then changes.updated_at = now end
  changes.session_id = sid
  local args = {}
  for k, v in pairs(changes) do
    table.insert(args, k)
    table.insert(args, v)
  end
  redis.call("HSET", skey, unpack(args))

  local moved = not exists
  for _, name in ipairs(TRACKED) do
    if new[name] ~= old[name] then moved = true end
  end
  if moved then
    if exists then unindex(old) end
    index(new)
  end
  ended = new.ended_at ~= ""
  if marker then redis.call("HSET", skey, marker, p.seq) end
  if ended and retention > 0 then redis.call("EXPIRE", skey, math.ceil(retention)) end
end

if p.events then
  for _, e in ipairs(p.events) do
    redis.call("XADD", ekey, "MAXLEN", "~", p.cap, "*", "kind", e[1], "data", e[2], "time", e[3])
  end
end
if ended and retention > 0 then redis.call("EXPIRE", ekey, math.ceil(retention)) end
return {applied, ended_now}
"""

# Drops a lost instance's reaped sessions, and the instance itself once it has none left,
# unless it has started beating again meanwhile.
_FORGET_INSTANCE = """
local id = ARGV[1]
if redis.call("EXISTS", k_instance(id)) == 1 then return 0 end
local live = k_instance_sessions(id)
for i = 2, #ARGV do redis.call("SREM", live, ARGV[i]) end
if redis.call("SCARD", live) > 0 then return 0 end
redis.call("SREM", k_instances, id)
return 1
"""

_CONNECTION_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)
# Answers from a Redis that cannot take writes for now (a replica mid-failover, maxmemory):
# worth retrying like a lost connection, unlike a bad command.
_TRANSIENT_ERRORS = (ReadOnlyError, OutOfMemoryError, MasterDownError)


@contextmanager
def _unavailable() -> Iterator[None]:
    try:
        yield
    except (*_CONNECTION_ERRORS, *_TRANSIENT_ERRORS) as exc:
        # redis-py's messages name host and port, never the password.
        raise StoreUnavailable(f"redis unavailable: {exc}") from exc


def _time_text(at: float) -> str:
    return repr(float(at))


def _json(value: Mapping[str, Any]) -> str:
    # Never fails on odd values: one unserialisable event must not sink a whole flush.
    return orjson.dumps(dict(value), default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def _event_text(events: Sequence[EventTuple]) -> list[list[str]]:
    return [[kind, _json(data), _time_text(at)] for kind, data, at in events]


def _stored_event(seq: str, entry: Mapping[str, str]) -> StoredEvent:
    return {
        "seq": seq,
        "time": float(entry.get("time", 0) or 0),
        "kind": entry.get("kind", ""),
        "data": orjson.loads(entry.get("data", "{}") or "{}"),
    }


class _RedisSubscription:
    def __init__(self, pubsub: PubSub) -> None:
        self._pubsub = pubsub

    async def get(self) -> dict[str, Any]:
        while True:
            with _unavailable():
                message = await self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=None
                )
            if message is None or message.get("type") != "message":
                continue
            try:
                decoded = orjson.loads(message["data"])
            except orjson.JSONDecodeError:
                continue  # not ours: the channel is only written by CommandBus
            if isinstance(decoded, dict):
                return decoded

    async def close(self) -> None:
        with suppress(*_CONNECTION_ERRORS):
            await self._pubsub.aclose()


class RedisStore:
    """`Store` on one Redis server (or a Sentinel-managed primary)."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        retention: float = DEFAULT_RETENTION,
        events_cap: int = DEFAULT_EVENTS_CAP,
        socket_timeout: float = 5.0,
    ) -> None:
        self.keys = Keys(prefix)
        self.retention = retention
        self.events_cap = events_cap
        # One quick retry covers the stale pooled connections after a Redis restart; longer
        # outages must surface fast, since every caller has its own retry policy.
        options: dict[str, Any] = {
            "decode_responses": True,
            "socket_connect_timeout": 2.0,
            "socket_keepalive": True,
            "retry": Retry(ExponentialBackoff(cap=0.1, base=0.02), 1),
        }
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_timeout=socket_timeout, **options
        )
        # BLPOP holds its connection for the whole wait, longer than socket_timeout allows.
        self._blocking: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_timeout=None, **options
        )
        prelude = self.keys.lua_prelude()
        self._write_script = self.client.register_script(prelude + _WRITE_SESSION)
        self._forget_script = self.client.register_script(prelude + _FORGET_INSTANCE)

    # -- sessions ---------------------------------------------------------------------------

    def _payload(self, write: SessionWrite, now: float) -> str:
        body: dict[str, Any] = {
            "sid": write.session_id,
            "now": _time_text(now),
            "retention": self.retention or 0,
            "cap": self.events_cap,
        }
        if write.writer:
            body["writer"] = write.writer
            body["seq"] = write.seq
        if write.record is not None:
            if write.record.session_id != write.session_id:
                raise ValueError("record.session_id differs from the write's session_id")
            body["record"] = write.record.to_redis()
        if write.fields:
            body["fields"] = update_fields(write.fields)
        if write.events:
            body["events"] = _event_text(write.events)
        if write.end is not None:
            reason, at = write.end
            body["finish"] = [reason, _time_text(at)]
        return orjson.dumps(body).decode()

    async def _write_one(self, write: SessionWrite) -> list[int]:
        payload = self._payload(write, time.time())
        with _unavailable():
            return await self._write_script(args=[payload])

    async def write(self, writes: Sequence[SessionWrite]) -> None:
        if not writes:
            return
        now = time.time()
        payloads = [self._payload(w, now) for w in writes]  # validate before sending anything
        with _unavailable():
            async with self.client.pipeline(transaction=False) as pipe:
                for payload in payloads:
                    await self._write_script(args=[payload], client=pipe)
                await pipe.execute()

    async def put_session(self, record: SessionRecord) -> None:
        await self._write_one(SessionWrite(record.session_id, record=record))

    async def update_session(self, session_id: str, **fields: Any) -> bool:
        applied, _ = await self._write_one(SessionWrite(session_id, fields=fields))
        return applied == 1

    async def mark_ended(self, session_id: str, reason: str, at: float) -> bool:
        _, ended_now = await self._write_one(SessionWrite(session_id, end=(reason, at)))
        return ended_now == 1

    async def add_events(self, session_id: str, events: Sequence[EventTuple]) -> None:
        if events:
            await self._write_one(SessionWrite(session_id, events=list(events)))

    async def get_session(self, session_id: str) -> SessionRecord | None:
        with _unavailable():
            raw = await self.client.hgetall(self.keys.session(session_id))
        return SessionRecord.from_redis(raw) if raw else None

    def _cutoff(self) -> float:
        return time.time() - self.retention if self.retention else -math.inf

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
        k = self.keys
        indexes = [
            key
            for key, wanted in (
                (k.index_state(state or ""), state),
                (k.index_number(number or ""), number),
                (k.index_instance(instance or ""), instance),
            )
            if wanted
        ] or [k.sessions]
        cutoff = self._cutoff()
        with _unavailable():
            if len(indexes) == 1:
                async with self.client.pipeline(transaction=True) as pipe:
                    pipe.zcount(indexes[0], cutoff, "+inf")
                    pipe.zrevrangebyscore(indexes[0], "+inf", cutoff, start=offset, num=limit)
                    total, ids = await pipe.execute()
            else:
                scored = await self.client.zinter(indexes, aggregate="MAX", withscores=True)
                ranked = sorted(
                    ((score, sid) for sid, score in scored if score >= cutoff), reverse=True
                )
                total = len(ranked)
                ids = [sid for _, sid in ranked[offset : offset + limit]]
            records = []
            if ids:
                async with self.client.pipeline(transaction=False) as pipe:
                    for sid in ids:
                        pipe.hgetall(k.session(sid))
                    records = [SessionRecord.from_redis(raw) for raw in await pipe.execute() if raw]
        return records, int(total)

    async def events(
        self, session_id: str, after: str | None = None, limit: int = 100
    ) -> list[StoredEvent]:
        check_page(0, limit)
        start = "-"
        if after is not None:
            ms, n = parse_seq(after)
            start = f"({ms}-{n}"
        with _unavailable():
            entries = await self.client.xrange(
                self.keys.events(session_id), min=start, max="+", count=limit
            )
        return [_stored_event(seq, entry) for seq, entry in entries]

    # -- instances --------------------------------------------------------------------------

    async def heartbeat(self, instance_id: str, info: Mapping[str, Any], ttl: float) -> None:
        value = _json(info)
        with _unavailable():
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.set(self.keys.instance(instance_id), value, px=max(1, round(ttl * 1000)))
                pipe.sadd(self.keys.instances, instance_id)
                await pipe.execute()

    async def _registered(self) -> tuple[list[str], list[int]]:
        with _unavailable():
            ids = sorted(await self.client.smembers(self.keys.instances))
            if not ids:
                return [], []
            async with self.client.pipeline(transaction=False) as pipe:
                for instance_id in ids:
                    pipe.exists(self.keys.instance(instance_id))
                return ids, await pipe.execute()

    async def live_instances(self) -> set[str]:
        ids, alive = await self._registered()
        return {i for i, a in zip(ids, alive, strict=True) if a}

    async def lost_instances(self) -> set[str]:
        ids, alive = await self._registered()
        return {i for i, a in zip(ids, alive, strict=True) if not a}

    async def instance_info(self, instance_id: str) -> dict[str, Any] | None:
        with _unavailable():
            raw = await self.client.get(self.keys.instance(instance_id))
        return orjson.loads(raw) if raw else None

    async def claim_reap(self, instance_id: str, claimant: str, ttl: float) -> bool:
        with _unavailable():
            won = await self.client.set(
                self.keys.reap(instance_id), claimant, nx=True, px=max(1, round(ttl * 1000))
            )
        return bool(won)

    async def forget_instance(self, instance_id: str, session_ids: Sequence[str]) -> bool:
        with _unavailable():
            dropped = await self._forget_script(args=[instance_id, *session_ids])
        return dropped == 1

    async def retire_instance(self, instance_id: str) -> None:
        with _unavailable():
            await self.client.delete(self.keys.instance(instance_id))

    async def sessions_of(self, instance_id: str) -> set[str]:
        with _unavailable():
            return set(await self.client.smembers(self.keys.instance_sessions(instance_id)))

    # -- routes -----------------------------------------------------------------------------

    async def get_route(self, number: str) -> dict[str, Any] | None:
        with _unavailable():
            raw = await self.client.hget(self.keys.routes, number)
        return orjson.loads(raw) if raw else None

    async def put_route(self, number: str, route: Mapping[str, Any]) -> None:
        value = orjson.dumps(dict(route)).decode()
        with _unavailable():
            await self.client.hset(self.keys.routes, number, value)

    async def delete_route(self, number: str) -> bool:
        with _unavailable():
            return bool(await self.client.hdel(self.keys.routes, number))

    async def list_routes(self) -> dict[str, dict[str, Any]]:
        with _unavailable():
            raw = await self.client.hgetall(self.keys.routes)
        return {number: orjson.loads(value) for number, value in sorted(raw.items())}

    # -- commands ---------------------------------------------------------------------------

    async def publish_command(self, instance_id: str, message: Mapping[str, Any]) -> int:
        value = orjson.dumps(dict(message)).decode()
        with _unavailable():
            return int(await self.client.publish(self.keys.command(instance_id), value))

    async def subscribe_commands(self, instance_id: str) -> _RedisSubscription:
        pubsub = self.client.pubsub()
        try:
            with _unavailable():
                await pubsub.subscribe(self.keys.command(instance_id))
        except BaseException:
            await pubsub.aclose()
            raise
        return _RedisSubscription(pubsub)

    async def push_reply(self, request_id: str, reply: Mapping[str, Any], ttl: float) -> None:
        key = self.keys.reply(request_id)
        value = _json(reply)
        with _unavailable():
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.rpush(key, value)
                pipe.pexpire(key, max(1, round(ttl * 1000)))
                await pipe.execute()

    async def wait_reply(self, request_id: str, seconds: float) -> dict[str, Any] | None:
        with _unavailable():
            popped = await self._blocking.blpop([self.keys.reply(request_id)], timeout=seconds)
        if popped is None:
            return None
        return orjson.loads(popped[1])

    # -- lifecycle --------------------------------------------------------------------------

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (*_CONNECTION_ERRORS, ResponseError):
            return False

    async def close(self) -> None:
        await self.client.aclose()
        await self._blocking.aclose()
