"""Live calls on this instance and the recent event log of each.

This is the single-instance registry the HTTP layer reads; the shared Redis store replaces the
records part when several instances run.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from session.session import SessionEvent, VoiceSession

MAX_EVENTS_PER_CALL = 2000
MAX_RECORDS = 1000


@dataclass(slots=True)
class CallRecord:
    session_id: str
    call_sid: str = ""
    stream_sid: str = ""
    from_number: str = ""
    to_number: str = ""
    route: str = ""
    state: str = "initial"
    call_status: str = ""
    started_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    end_reason: str | None = None
    events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_EVENTS_PER_CALL))
    next_seq: int = 1

    def summary(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "call_sid": self.call_sid,
            "stream_sid": self.stream_sid,
            "from": self.from_number,
            "to": self.to_number,
            "route": self.route,
            "state": self.state,
            "call_status": self.call_status,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "end_reason": self.end_reason,
        }


class CallRegistry:
    def __init__(self) -> None:
        self.live: dict[str, VoiceSession] = {}
        self._records: OrderedDict[str, CallRecord] = OrderedDict()

    def record(self, session_id: str) -> CallRecord:
        rec = self._records.get(session_id)
        if rec is None:
            rec = self._records[session_id] = CallRecord(session_id=session_id)
            while len(self._records) > MAX_RECORDS:
                oldest = next(iter(self._records))
                if oldest in self.live:
                    break
                del self._records[oldest]
        return rec

    def get(self, session_id: str) -> CallRecord | None:
        return self._records.get(session_id)

    def records(self) -> list[CallRecord]:
        return list(self._records.values())

    def add_event(self, session_id: str, kind: str, data: dict[str, Any], at: float) -> None:
        rec = self.record(session_id)
        rec.events.append({"seq": rec.next_seq, "time": at, "kind": kind, "data": data})
        rec.next_seq += 1
        if kind == "state":
            rec.state = data["new"]
        elif kind == "ended":
            rec.ended_at = at
            rec.end_reason = data.get("reason")

    def events_after(self, session_id: str, after: int) -> tuple[list[dict[str, Any]], int]:
        rec = self._records[session_id]
        events = [e for e in rec.events if e["seq"] > after]
        return events, rec.next_seq - 1

    def attach(self, session: VoiceSession) -> None:
        self.live[session.session_id] = session
        session_id = session.session_id

        def on_event(event: SessionEvent) -> None:
            self.add_event(session_id, event.kind, event.data, event.time)

        session.on_event(on_event)

    def detach(self, session: VoiceSession) -> None:
        self.live.pop(session.session_id, None)
