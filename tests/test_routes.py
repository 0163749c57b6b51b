"""Routing rules: validation that names the field, the JSON round trip, and resolution order."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import pytest

from infra.routes import DEFAULT_ROUTE, Route, RouteError, RouteLimits, resolve
from providers.registry import AGENT_PROVIDERS, STT_PROVIDERS, TTS_PROVIDERS, VAD_PROVIDERS
from session.config import Config

KNOWN = {
    "agent": set(AGENT_PROVIDERS),
    "stt": set(STT_PROVIDERS),
    "tts": set(TTS_PROVIDERS),
    "vad": set(VAD_PROVIDERS),
}
FULL = {
    "number": "+14155550100",
    "agent": "webhook",
    "stt": "deepgram",
    "tts": "elevenlabs",
    "vad": "silero",
    "voice": "Rachel",
    "greeting": "Thanks for calling Acme. How can I help?",
    "language": "en-GB",
    "limits": {"max_call_seconds": 600, "inactivity_timeout": 45.5, "max_turn_seconds": 30},
}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"number": "14155550100"}, "number"),
        ({"number": "+1415"}, "number"),
        ({"number": "Default"}, "number"),
        ({"number": 14155550100}, "number"),
        ({"agent": ""}, "agent"),
        ({"agent": "Web Hook"}, "agent"),
        ({"stt": 3}, "stt"),
        ({"tts": ""}, "tts"),
        ({"vad": "WebRTC"}, "vad"),
        ({"voice": ""}, "voice"),
        ({"voice": "v" * 129}, "voice"),
        ({"greeting": "   "}, "greeting"),
        ({"greeting": ["hi"]}, "greeting"),
        ({"greeting": "x" * 2001}, "greeting"),
        ({"language": "english"}, "language"),
        ({"language": "en_US"}, "language"),
        ({"language": ""}, "language"),
        ({"limits": 60}, "limits"),
        ({"limits": None}, "limits"),
        ({"limits": {"max_call_seconds": 0}}, "limits.max_call_seconds"),
        ({"limits": {"max_call_seconds": 86401}}, "limits.max_call_seconds"),
        ({"limits": {"max_call_seconds": 60.5}}, "limits.max_call_seconds"),
        ({"limits": {"max_call_seconds": True}}, "limits.max_call_seconds"),
        ({"limits": {"max_call_seconds": "60"}}, "limits.max_call_seconds"),
        ({"limits": {"inactivity_timeout": 0.5}}, "limits.inactivity_timeout"),
        ({"limits": {"inactivity_timeout": 86401}}, "limits.inactivity_timeout"),
        ({"limits": {"inactivity_timeout": math.nan}}, "limits.inactivity_timeout"),
        ({"limits": {"max_turn_seconds": 0}}, "limits.max_turn_seconds"),
        ({"limits": {"max_turn_seconds": 3601}}, "limits.max_turn_seconds"),
        ({"limits": {"max_calls": 3}}, "limits.max_calls"),
        ({"agnet": "demo"}, "agnet"),
    ],
)
def test_each_bad_field_is_named(change: dict[str, Any], field: str) -> None:
    with pytest.raises(RouteError) as caught:
        Route.from_dict({**FULL, **change})
    assert caught.value.field == field
    assert repr(field) in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_a_missing_number_or_a_non_object_is_refused() -> None:
    with pytest.raises(RouteError) as caught:
        Route.from_dict({"agent": "demo"})
    assert caught.value.field == "number"
    with pytest.raises(RouteError) as caught:
        Route.from_dict(["+14155550100"])
    assert caught.value.field == "route"


def test_errors_say_what_is_allowed() -> None:
    with pytest.raises(RouteError, match="allowed: number, agent, stt, tts, vad, voice"):
        Route.from_dict({**FULL, "agnet": "demo"})
    with pytest.raises(RouteError, match="from 1 to 86400"):
        Route.from_dict({**FULL, "limits": {"max_call_seconds": 0}})
    with pytest.raises(RouteError, match='or "default"'):
        Route.from_dict({**FULL, "number": "sales"})


def test_provider_names_are_checked_against_the_known_ones() -> None:
    with pytest.raises(RouteError) as caught:
        Route.from_dict({**FULL, "tts": "polly"}, known=KNOWN)
    assert caught.value.field == "tts"
    assert "polly" in str(caught.value)
    assert "elevenlabs, espeak" in str(caught.value)  # the allowed names, sorted

    route = Route(number="default", agent="mystery")
    route.validate_names({"stt": {"deepgram"}})  # kinds not given are not checked
    with pytest.raises(RouteError, match="known: demo"):
        route.validate_names({"agent": {"demo"}})


def test_defaults_use_known_providers_and_leave_the_rest_to_the_gateway() -> None:
    route = Route.from_dict({"number": "default"}, known=KNOWN)
    assert route == DEFAULT_ROUTE
    assert (route.agent, route.stt, route.tts, route.vad) == (None, None, None, None)
    assert (route.voice, route.greeting, route.language) == (None, None, "en-US")
    assert route.limits == RouteLimits(3600, 1800, 120)


def test_partial_limits_keep_the_other_defaults() -> None:
    route = Route.from_dict({"number": "default", "limits": {"max_call_seconds": 90}})
    assert route.limits == RouteLimits(max_call_seconds=90)


def test_round_trip_through_json() -> None:
    route = Route.from_dict(FULL, known=KNOWN)
    data = json.loads(json.dumps(route.to_dict()))
    assert data == FULL
    assert Route.from_dict(data) == route
    assert Route.from_dict(DEFAULT_ROUTE.to_dict()) == DEFAULT_ROUTE


def test_direct_construction_validates_and_routes_are_frozen() -> None:
    with pytest.raises(RouteError) as caught:
        Route(number="+14155550100", limits=RouteLimits(max_turn_seconds=0.5))
    assert caught.value.field == "limits.max_turn_seconds"
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_ROUTE.agent = "webhook"  # type: ignore[misc]


@pytest.mark.parametrize(
    "limits", [RouteLimits(), RouteLimits(1, 1, 1), RouteLimits(86400, 86400, 3600)]
)
def test_limits_always_make_a_valid_session_config(limits: RouteLimits) -> None:
    config = dataclasses.replace(Config(), **limits.config_overrides())
    assert config.timeout == limits.inactivity_timeout
    assert config.max_turn_duration == limits.max_turn_seconds


def test_resolve_prefers_the_exact_number_then_default_then_built_in() -> None:
    sales = Route(number="+14155550100", agent="webhook")
    fallback = Route(number="default", agent="openai")

    routes = {sales.number: sales, fallback.number: fallback}
    assert resolve(routes, "+14155550100") is sales
    assert resolve(routes, "+14155550199") is fallback
    assert resolve({sales.number: sales}, "+14155550199") is DEFAULT_ROUTE
    assert resolve({}, "anything") is DEFAULT_ROUTE
