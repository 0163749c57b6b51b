"""Routing rules: what a call to a given number gets (agent, providers, voice, greeting, limits).

Ops edit routes through the API and the CLI, so a route arrives as JSON and every mistake must
come back naming the field and what it accepts. The checks that need no outside knowledge run
when a `Route` is built; provider names are checked by `validate_names` against the names the
caller passes in, so this module does not import `providers/` (infra sits below it).

A field left as None means "the gateway's setting" (for providers) or "the agent's own" (for
the greeting); a call to a number with no route of its own gets the "default" route, and
without one the built-in `DEFAULT_ROUTE`.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final

__all__ = [
    "DEFAULT_NUMBER",
    "DEFAULT_ROUTE",
    "PROVIDER_KINDS",
    "Route",
    "RouteError",
    "RouteLimits",
    "is_route_number",
    "resolve",
]

DEFAULT_NUMBER: Final = "default"
PROVIDER_KINDS: Final = ("agent", "stt", "tts", "vad")

_E164 = re.compile(r"\+[1-9][0-9]{7,14}")
# BCP 47 as ops write it: a 2-3 letter language, then optional script/region/variant subtags.
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*")
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_MAX_VOICE = 128
_MAX_GREETING = 2000
_MAX_SECONDS = 86400
# Config.max_turn_duration's own range, so a valid route always makes a valid session Config.
_MAX_TURN_RANGE = (1, 3600)


class RouteError(ValueError):
    """A route value ops must fix; `field` is its path in the JSON ("limits.max_call_seconds")."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"route field {field!r} {message}")


def is_route_number(number: str) -> bool:
    """True for the numbers a route can be keyed by: E.164 or "default"."""
    return number == DEFAULT_NUMBER or _E164.fullmatch(number) is not None


@dataclass(frozen=True, slots=True)
class RouteLimits:
    """Per-call limits, seconds. `inactivity_timeout` becomes the session's `Config.timeout`
    and `max_turn_seconds` its `Config.max_turn_duration`."""

    max_call_seconds: int = 3600
    inactivity_timeout: float = 1800
    max_turn_seconds: float = 120

    def __post_init__(self) -> None:
        _check_int("limits.max_call_seconds", self.max_call_seconds, 1, _MAX_SECONDS)
        _check_seconds("limits.inactivity_timeout", self.inactivity_timeout, 1, _MAX_SECONDS)
        _check_seconds("limits.max_turn_seconds", self.max_turn_seconds, *_MAX_TURN_RANGE)

    @classmethod
    def from_dict(cls, data: object) -> RouteLimits:
        if not isinstance(data, Mapping):
            raise RouteError("limits", f"must be an object, got {_show(data)}")
        _reject_unknown(data, cls, prefix="limits.")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def config_overrides(self) -> dict[str, float]:
        """Keyword arguments for `dataclasses.replace(session_config, ...)`."""
        return {
            "timeout": float(self.inactivity_timeout),
            "max_turn_duration": float(self.max_turn_seconds),
        }


@dataclass(frozen=True, slots=True)
class Route:
    """What calls to `number` get. Built directly or with `from_dict`; both validate."""

    number: str
    agent: str | None = None
    stt: str | None = None
    tts: str | None = None
    vad: str | None = None
    voice: str | None = None
    greeting: str | None = None
    language: str = "en-US"
    limits: RouteLimits = field(default_factory=RouteLimits)

    def __post_init__(self) -> None:
        if not isinstance(self.number, str) or not is_route_number(self.number):
            raise RouteError(
                "number",
                f'must be an E.164 number (+ and 8-15 digits) or "default", got '
                f"{_show(self.number)}",
            )
        for kind in ("agent", "stt", "tts", "vad"):
            _check_name(kind, getattr(self, kind), optional=True)
        _check_text("voice", self.voice, _MAX_VOICE)
        _check_text("greeting", self.greeting, _MAX_GREETING)
        if not isinstance(self.language, str) or _LANGUAGE.fullmatch(self.language) is None:
            raise RouteError(
                "language",
                f'must be a BCP-47 language tag like "en-US", got {_show(self.language)}',
            )
        if not isinstance(self.limits, RouteLimits):
            raise RouteError("limits", f"must be RouteLimits, got {_show(self.limits)}")

    @classmethod
    def from_dict(
        cls, data: object, *, known: Mapping[str, Collection[str]] | None = None
    ) -> Route:
        """A route from its JSON form. Missing fields take their defaults; unknown ones are an
        error (a typo must not silently fall back to a default). With `known`, provider names
        are checked too (see `validate_names`)."""
        if not isinstance(data, Mapping):
            raise RouteError("route", f"must be an object, got {_show(data)}")
        _reject_unknown(data, cls)
        if "number" not in data:
            raise RouteError("number", 'is required (an E.164 number or "default")')
        values = dict(data)
        if "limits" in values:
            values["limits"] = RouteLimits.from_dict(values["limits"])
        route = cls(**values)
        if known is not None:
            route.validate_names(known)
        return route

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["limits"] = self.limits.to_dict()
        return data

    def validate_names(self, known: Mapping[str, Collection[str]]) -> None:
        """Checks provider names against `known` ({"agent": {...}, "stt": {...}, ...}); a kind
        missing from `known` is not checked. None (the gateway's setting) always passes."""
        for kind in PROVIDER_KINDS:
            name = getattr(self, kind)
            names = known.get(kind)
            if name is None or names is None or name in names:
                continue
            allowed = ", ".join(sorted(names)) or "(none)"
            raise RouteError(kind, f"names an unknown {kind} provider {name!r}; known: {allowed}")


def _reject_unknown(data: Mapping[Any, Any], cls: type, prefix: str = "") -> None:
    allowed = [f.name for f in fields(cls)]
    for key in data:
        if key not in allowed:
            raise RouteError(
                f"{prefix}{key}", f"is not a route field; allowed: {', '.join(allowed)}"
            )


def _check_name(name: str, value: object, *, optional: bool) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or _NAME.fullmatch(value) is None:
        expected = "a provider name" + (" or null for the gateway's setting" if optional else "")
        raise RouteError(
            name, f"must be {expected} (lowercase letters, digits, _ . -), got {_show(value)}"
        )


def _check_text(name: str, value: object, max_length: int) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not value.strip() or len(value) > max_length:
        raise RouteError(
            name,
            f"must be non-empty text of at most {max_length} characters, or null; got "
            f"{_show(value)}",
        )


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RouteError(
            name, f"must be a whole number of seconds from {low} to {high}, got {_show(value)}"
        )


def _check_seconds(name: str, value: object, low: float, high: float) -> None:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not low <= value <= high:  # type: ignore[operator]
        raise RouteError(
            name, f"must be a number of seconds from {low} to {high}, got {_show(value)}"
        )


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# Built last: constructing a Route runs the checks above.
DEFAULT_ROUTE: Final = Route(number=DEFAULT_NUMBER)


def resolve(routes: Mapping[str, Route], to_number: str) -> Route:
    """The route for a call to `to_number`: its own, else the "default" route, else the
    built-in default."""
    route = routes.get(to_number)
    if route is None:
        route = routes.get(DEFAULT_NUMBER, DEFAULT_ROUTE)
    return route
