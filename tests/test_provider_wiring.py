"""Providers chosen by settings alone, with errors that name the missing variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.provider_wiring import ProviderCatalog, ProviderConfigError, build_providers
from infra.routes import Route
from infra.settings import load_settings
from providers.registry import UnknownProviderError
from session.fallback import FallbackTTS


def settings(**env: str):
    return load_settings(env=env, dotenv_path=Path("/nonexistent/.env"))


def test_the_default_stack_is_offline() -> None:
    providers = build_providers(settings())
    assert (providers.stt.name, providers.tts.name) == ("pocketsphinx", "espeak")
    assert providers.make_vad(8000).sample_rate == 8000
    assert providers.make_noise_filter() is None


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"STT_PROVIDER": "deepgram"}, "DEEPGRAM_API_KEY"),
        ({"TTS_PROVIDER": "deepgram"}, "DEEPGRAM_API_KEY"),
        ({"STT_PROVIDER": "openai"}, "OPENAI_API_KEY"),
        ({"TTS_PROVIDER": "espeak,openai"}, "OPENAI_API_KEY"),
        ({"AGENT_PROVIDER": "openai"}, "OPENAI_API_KEY"),
        ({"TTS_PROVIDER": "elevenlabs"}, "ELEVENLABS_API_KEY"),
        ({"AGENT_PROVIDER": "webhook"}, "AGENT_WEBHOOK_URL"),
        ({"VAD_PROVIDER": "silero"}, "SILERO_MODEL_PATH"),
    ],
)
def test_a_provider_without_its_credentials_is_refused_at_start(
    env: dict[str, str], variable: str
) -> None:
    with pytest.raises(ProviderConfigError, match=variable):
        build_providers(settings(**env))


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(UnknownProviderError, match="espeak"):
        build_providers(settings(TTS_PROVIDER="nope"))
    with pytest.raises(ProviderConfigError, match="STT_PROVIDER names no provider"):
        build_providers(settings(STT_PROVIDER=" , "))


def test_noise_filter_and_vad_by_name() -> None:
    providers = build_providers(settings(NOISE_FILTER="spectral", VAD_PROVIDER="energy"))
    assert providers.make_noise_filter().name == "spectral"  # type: ignore[union-attr]
    assert providers.make_vad(8000).name == "energy"
    with pytest.raises(UnknownProviderError, match="noise filter"):
        build_providers(settings(NOISE_FILTER="rnnoise"))


def test_a_comma_separated_list_is_a_fallback_chain() -> None:
    providers = build_providers(settings(TTS_PROVIDER="espeak, espeak"))
    assert isinstance(providers.tts, FallbackTTS)


def test_a_route_overrides_providers_voice_and_language() -> None:
    catalog = ProviderCatalog(settings(OPENAI_API_KEY="k"))
    assert catalog.for_route(None) is catalog.default
    assert catalog.for_route(Route(number="default")) is catalog.default
    route = Route(number="+14155550100", stt="openai", tts="espeak", voice="en-gb")
    providers = catalog.for_route(route)
    assert providers is catalog.for_route(route)  # built once, shared by the route's calls
    assert providers.stt.name == "openai" and providers.stt.language == "en"  # type: ignore[attr-defined]
    assert providers.tts.voice == "en-gb"  # type: ignore[attr-defined]
