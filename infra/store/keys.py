"""The Redis key schema: every key the gateway reads or writes is named here and nowhere else.

All keys share one namespace prefix (default ``vg:``) so several deployments can share a Redis
and ops can find the gateway's data with ``SCAN MATCH vg:*``. The store's Lua script builds its
keys from the same templates (`Keys.lua_prelude`), so this table stays the single source.

=====================================  ==========  =============================================
key                                    type        what it holds
=====================================  ==========  =============================================
``vg:session:{session_id}``            hash        the session record (`SessionRecord` fields,
                                                   all strings; ``from``/``to`` are the numbers;
                                                   ``_w:{writer}`` = last batch of that writer,
                                                   so a retried batch is applied once). Expires
                                                   `retention` seconds after the call ended.
``vg:events:{session_id}``             stream      the session's event log, fields ``kind``,
                                                   ``data`` (JSON), ``time`` (epoch seconds);
                                                   capped with ``XADD MAXLEN ~ 2000``; the stream
                                                   id is the event's ``seq``. Same expiry.
``vg:sessions``                        zset        every session, scored by ``started_at``
``vg:index:state:{state}``             zset        sessions in that state, by ``started_at``
``vg:index:number:{number}``           zset        sessions from or to that number
``vg:index:instance:{instance_id}``    zset        every session an instance has run
``vg:instance:{instance_id}:sessions`` set         the live (not ended) sessions of an instance;
                                                   what the lost-instance reaper ends
``vg:instance:{instance_id}``          string      heartbeat: JSON (started_at, pid, host, live
                                                   calls...), TTL = ``HEARTBEAT_TTL``
``vg:instances``                       set         instances that have beaten and not been
                                                   reaped or retired
``vg:reap:{instance_id}``              string      claim of the instance reaping a lost one
                                                   (``SET NX`` with a TTL)
``vg:routes``                          hash        routing rules: number -> route JSON
``vg:cmd:{instance_id}``               channel     pub/sub commands for one instance:
                                                   ``{request_id, reply_to, command}``
``vg:reply:{request_id}``              list        the reply to one command (JSON), 30 s TTL
=====================================  ==========  =============================================

Index entries older than `retention` (by ``started_at``) are trimmed as new sessions arrive
and ignored by listings, so the indexes never outlive the records they point to. The schema
assumes one Redis (or a Sentinel-managed primary): the Lua script touches keys it derives
itself, which Redis Cluster would refuse.
"""

from __future__ import annotations

import re
import string

DEFAULT_PREFIX = "vg:"

_PREFIX_RE = re.compile(r"[A-Za-z0-9_.:\-]{0,64}")

# name -> template below the prefix; the methods of `Keys` and the Lua helpers use these.
TEMPLATES: dict[str, str] = {
    "session": "session:{session_id}",
    "events": "events:{session_id}",
    "sessions": "sessions",
    "index_state": "index:state:{state}",
    "index_number": "index:number:{number}",
    "index_instance": "index:instance:{instance_id}",
    "instance_sessions": "instance:{instance_id}:sessions",
    "instance": "instance:{instance_id}",
    "instances": "instances",
    "reap": "reap:{instance_id}",
    "routes": "routes",
    "command": "cmd:{instance_id}",
    "reply": "reply:{request_id}",
}


class Keys:
    """Key names under one prefix."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        # The prefix is pasted into Lua source; a closed alphabet keeps that safe.
        if not _PREFIX_RE.fullmatch(prefix):
            raise ValueError(f"store key prefix must match {_PREFIX_RE.pattern}, got {prefix!r}")
        self.prefix = prefix

    def _key(self, name: str, **parts: str) -> str:
        return self.prefix + TEMPLATES[name].format(**parts)

    def session(self, session_id: str) -> str:
        return self._key("session", session_id=session_id)

    def events(self, session_id: str) -> str:
        return self._key("events", session_id=session_id)

    @property
    def sessions(self) -> str:
        return self._key("sessions")

    def index_state(self, state: str) -> str:
        return self._key("index_state", state=state)

    def index_number(self, number: str) -> str:
        return self._key("index_number", number=number)

    def index_instance(self, instance_id: str) -> str:
        return self._key("index_instance", instance_id=instance_id)

    def instance_sessions(self, instance_id: str) -> str:
        return self._key("instance_sessions", instance_id=instance_id)

    def instance(self, instance_id: str) -> str:
        return self._key("instance", instance_id=instance_id)

    @property
    def instances(self) -> str:
        return self._key("instances")

    def reap(self, instance_id: str) -> str:
        return self._key("reap", instance_id=instance_id)

    @property
    def routes(self) -> str:
        return self._key("routes")

    def command(self, instance_id: str) -> str:
        return self._key("command", instance_id=instance_id)

    def reply(self, request_id: str) -> str:
        return self._key("reply", request_id=request_id)

    def lua_prelude(self) -> str:
        """Lua definitions of the same keys: ``k_<name>(part)`` functions, or constants."""
        lines = [f'local P = "{self.prefix}"']
        for name, template in TEMPLATES.items():
            pieces = ["P"]
            params = 0
            for literal, field, _, _ in string.Formatter().parse(template):
                if literal:
                    pieces.append(f'"{literal}"')
                if field:
                    pieces.append("a")
                    params += 1
            expr = " .. ".join(pieces)
            if params:
                lines.append(f"local function k_{name}(a) return {expr} end")
            else:
                lines.append(f"local k_{name} = {expr}")
        return "\n".join(lines) + "\n"
