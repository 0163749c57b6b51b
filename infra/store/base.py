"""What the gateway keeps about calls, and the interface every store offers.

Two stores implement `Store`: `RedisStore` (shared by every instance; the production path) and
`MemoryStore` (the embedded single-instance default). One contract test suite runs against
both, so code above this layer cannot tell them apart except by scale.

Rules both stores follow:

- A record, once ended (``ended_at`` set), stays ended: later writes may update counters but
  cannot change ``state``, ``ended_at`` or ``end_reason``. The first end reason wins, and
  `Store.mark_ended` says whether this call was the one that set it, which is what makes
  reaping a lost instance exactly-once.
- Ended records and their events are kept for the store's retention, then dropped.
- Connection trouble (or a Redis that cannot take writes for now) surfaces as
  `StoreUnavailable` and nothing else, so callers can tell "try again later" from a bug.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol, TypedDict

END_STATE = "ended"
INSTANCE_LOST = "instance_lost"
DEFAULT_RETENTION = 7 * 24 * 3600.0
DEFAULT_EVENTS_CAP = 2000

# Python attribute -> field name in the stored hash (`from` is a Python keyword).
_STORED_NAME = {"from_number": "from", "to_number": "to"}
_FLOAT_FIELDS = frozenset({"started_at", "updated_at", "ended_at"})
_INT_FIELDS = frozenset({"turns", "interruptions", "errors"})
_OPTIONAL_FIELDS = frozenset({"updated_at", "ended_at", "end_reason"})
# Fields `update_session` may not touch: the id names the record, the end is `mark_ended`'s.
FIXED_FIELDS = frozenset({"session_id", "ended_at", "end_reason"})


class StoreUnavailable(Exception):
    """The store cannot be reached right now; the operation may be retried later."""


@dataclass(slots=True)
class SessionRecord:
    """One call as ops see it; stored as a hash of strings, typed here."""

    session_id: str
    state: str = "initial"
    call_sid: str = ""
    stream_sid: str = ""
    from_number: str = ""
    to_number: str = ""
    route: str = ""
    instance: str = ""
    transport: str = "twilio"  # "twilio" or "sip"
    started_at: float = field(default_factory=time.time)
    updated_at: float | None = None
    ended_at: float | None = None
    end_reason: str | None = None
    turns: int = 0
    interruptions: int = 0
    errors: int = 0

    @property
    def ended(self) -> bool:
        return self.ended_at is not None

    def to_redis(self) -> dict[str, str]:
        return encode_fields({f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def from_redis(cls, raw: Mapping[str, str]) -> SessionRecord:
        values: dict[str, Any] = {}
        for name in FIELD_NAMES:
            text = raw.get(_STORED_NAME.get(name, name))
            if text is None:
                continue
            values[name] = _decode(name, text)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """JSON shape for the API: the stored names (``from``, ``to``), typed values."""
        return {_STORED_NAME.get(f.name, f.name): getattr(self, f.name) for f in fields(self)}


FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(SessionRecord))


def stored_name(name: str) -> str:
    return _STORED_NAME.get(name, name)


def encode_fields(values: Mapping[str, Any]) -> dict[str, str]:
    """Python attribute names and typed values -> stored names and strings (validated)."""
    encoded: dict[str, str] = {}
    for name, value in values.items():
        if name not in FIELD_NAMES:
            raise TypeError(f"unknown session field {name!r}")
        if value is None:
            if name not in _OPTIONAL_FIELDS:
                raise TypeError(f"session field {name!r} cannot be None")
            text = ""
        elif name in _FLOAT_FIELDS:
            text = repr(float(value))
        elif name in _INT_FIELDS:
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"session field {name!r} must be an int, got {value!r}")
            text = str(value)
        else:
            if not isinstance(value, str):
                raise TypeError(f"session field {name!r} must be a str, got {value!r}")
            text = value
        encoded[stored_name(name)] = text
    return encoded


def _decode(name: str, text: str) -> Any:
    if name in _OPTIONAL_FIELDS and text == "":
        return None
    if name in _FLOAT_FIELDS:
        return float(text) if text else 0.0
    if name in _INT_FIELDS:
        return int(text) if text else 0
    return text


class StoredEvent(TypedDict):
    """One entry of a session's event log; ``seq`` is the stream id (``"<ms>-<n>"``)."""

    seq: str
    time: float
    kind: str
    data: dict[str, Any]


# (kind, data, time) as the session engine emits them.
EventTuple = tuple[str, Mapping[str, Any], float]


@dataclass(slots=True)
class SessionWrite:
    """Everything one flush writes for one session, applied atomically and in this order:
    the full record, field updates, events, the end.

    ``writer``/``seq`` make a retried write idempotent: the store remembers the last ``seq``
    applied per writer and skips a write it has already seen (a reply lost to a dropped
    connection must not double the events).
    """

    session_id: str
    record: SessionRecord | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    events: list[EventTuple] = field(default_factory=list)
    end: tuple[str, float] | None = None
    writer: str = ""
    seq: int = 0


class CommandSubscription(Protocol):
    """Messages published to one instance's command channel."""

    async def get(self) -> dict[str, Any]:
        """The next message; raises `StoreUnavailable` when the subscription broke."""
        ...

    async def close(self) -> None: ...


class Store(Protocol):
    # Sessions
    async def put_session(self, record: SessionRecord) -> None:
        """Creates or replaces a record (an ended record stays ended)."""
        ...

    async def update_session(self, session_id: str, **fields: Any) -> bool:
        """Sets some fields (Python names); False when there is no such record."""
        ...

    async def get_session(self, session_id: str) -> SessionRecord | None: ...

    async def list_sessions(
        self,
        *,
        state: str | None = None,
        number: str | None = None,
        instance: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> tuple[list[SessionRecord], int]:
        """Newest first; ``number`` matches ``from`` or ``to``; returns (page, total)."""
        ...

    async def add_events(self, session_id: str, events: Sequence[EventTuple]) -> None: ...

    async def events(
        self, session_id: str, after: str | None = None, limit: int = 100
    ) -> list[StoredEvent]:
        """Events with ``seq`` strictly after ``after``, oldest first."""
        ...

    async def mark_ended(self, session_id: str, reason: str, at: float) -> bool:
        """Ends a record; True only for the call that set its end reason."""
        ...

    async def write(self, writes: Sequence[SessionWrite]) -> None:
        """The write-behind path: many sessions' changes in one round trip."""
        ...

    # Instances
    async def heartbeat(self, instance_id: str, info: Mapping[str, Any], ttl: float) -> None: ...

    async def live_instances(self) -> set[str]: ...

    async def instance_info(self, instance_id: str) -> dict[str, Any] | None: ...

    async def lost_instances(self) -> set[str]:
        """Registered instances whose heartbeat has expired."""
        ...

    async def claim_reap(self, instance_id: str, claimant: str, ttl: float) -> bool: ...

    async def forget_instance(self, instance_id: str, session_ids: Sequence[str]) -> bool:
        """Drops reaped sessions from a lost instance, and the instance once it has none.

        Does nothing if the instance is beating again; True when it was dropped."""
        ...

    async def retire_instance(self, instance_id: str) -> None:
        """Removes this instance's heartbeat at a clean shutdown."""
        ...

    async def sessions_of(self, instance_id: str) -> set[str]:
        """The live sessions of an instance."""
        ...

    # Routes
    async def get_route(self, number: str) -> dict[str, Any] | None: ...

    async def put_route(self, number: str, route: Mapping[str, Any]) -> None: ...

    async def delete_route(self, number: str) -> bool: ...

    async def list_routes(self) -> dict[str, dict[str, Any]]: ...

    # Commands between instances
    async def publish_command(self, instance_id: str, message: Mapping[str, Any]) -> int:
        """Returns how many subscribers received it (0: nobody listens)."""
        ...

    async def subscribe_commands(self, instance_id: str) -> CommandSubscription: ...

    async def push_reply(self, request_id: str, reply: Mapping[str, Any], ttl: float) -> None: ...

    async def wait_reply(self, request_id: str, seconds: float) -> dict[str, Any] | None:
        """Waits up to `seconds` for the reply; None when none came."""
        ...

    # Lifecycle
    async def ping(self) -> bool:
        """True when the store answers; never raises."""
        ...

    async def close(self) -> None: ...


_SEQ_RE = re.compile(r"(\d+)(?:-(\d+))?")


def parse_seq(seq: str) -> tuple[int, int]:
    """A stream id (``"<ms>-<n>"``, or just ``"<ms>"``) as a comparable pair."""
    match = _SEQ_RE.fullmatch(seq)
    if match is None:
        raise ValueError(f"not an event seq: {seq!r}")
    return int(match[1]), int(match[2] or 0)


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancels a background task and waits until it has ended.

    One cancel is not always enough on Python 3.11: ``asyncio.wait_for`` (which redis-py uses
    inside its commands) swallows a cancellation that lands just as the awaited call completes,
    and the task carries on. So the cancel is repeated until the task is done.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not warn about it


def check_page(offset: int, limit: int) -> None:
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")


def update_fields(fields: Mapping[str, Any]) -> dict[str, str]:
    """Validates `update_session` fields and encodes them."""
    for name in fields:
        if name in FIXED_FIELDS:
            raise TypeError(f"session field {name!r} cannot be updated")
    return encode_fields(fields)
