"""Which providers a call gets, from settings: names, options, credentials, fallback lists.

`STT_PROVIDER=deepgram,pocketsphinx` is a fallback list: the first that works serves the call,
and a failed one is tried again later (session.fallback). Each cloud provider needs its key;
a missing one is reported at start with the variable's name, not at the first call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from infra.routes import Route
from infra.settings import Settings
from providers import registry
from session.fallback import FallbackAgent, FallbackSTT, FallbackTTS
from session.interfaces import STT, TTS, VAD, Agent, NoiseFilter, TurnDetector


class ProviderConfigError(ValueError):
    """A provider is named without what it needs; the message names the variable."""


def _need(value: str | None, variable: str, kind: str, name: str) -> str:
    if not value:
        raise ProviderConfigError(f"{kind}_PROVIDER={name} needs {variable} to be set")
    return value


def _options(kind: str, name: str, settings: Settings) -> dict[str, Any]:
    """The keyword options each provider's factory takes, from settings."""
    upper = kind.upper()
    if name == "deepgram" and kind in ("stt", "tts"):
        key = _need(settings.deepgram_api_key, "DEEPGRAM_API_KEY", upper, name)
        return {"api_key": key, "base_url": settings.deepgram_url}
    if name == "openai" and kind in ("stt", "tts", "agent"):
        key = _need(settings.openai_api_key, "OPENAI_API_KEY", upper, name)
        return {"api_key": key, "base_url": settings.openai_base_url}
    if name == "elevenlabs" and kind == "tts":
        key = _need(settings.elevenlabs_api_key, "ELEVENLABS_API_KEY", upper, name)
        return {"api_key": key, "base_url": settings.elevenlabs_url}
    if name == "webhook" and kind == "agent":
        url = _need(settings.agent_webhook_url, "AGENT_WEBHOOK_URL", upper, name)
        secret = settings.agent_webhook_secret
        return {"url": url, "headers": {"Authorization": f"Bearer {secret}"} if secret else None}
    if name == "silero" and kind == "vad":
        return {"model_path": _need(settings.silero_model_path, "SILERO_MODEL_PATH", upper, name)}
    return {}


def _names(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


@dataclass
class ProviderSet:
    """Shared providers for every call, and factories for the per-call ones."""

    stt: STT
    tts: TTS
    agent: Agent
    turn_detector: TurnDetector
    make_vad: Callable[[int], VAD]
    make_noise_filter: Callable[[], NoiseFilter | None]
    members: tuple[object, ...] = ()  # every instance built, fallback members included

    async def aclose(self) -> None:
        """Closes the providers' connection pools (HTTP clients) at shutdown."""
        for provider in self.members:
            close = getattr(provider, "aclose", None)
            if close is not None:
                await close()


_VOICE_OPTION = {
    "espeak": "voice",
    "openai": "voice",
    "elevenlabs": "voice_id",
    "deepgram": "model",
}


def _route_options(kind: str, name: str, voice: str | None, language: str | None) -> dict[str, Any]:
    """A route's voice and language, in the option each provider calls them by."""
    options: dict[str, Any] = {}
    if kind == "tts" and voice and name in _VOICE_OPTION:
        options[_VOICE_OPTION[name]] = voice
    if kind == "stt" and language and name in ("deepgram", "openai"):
        # Deepgram takes BCP-47 as is; OpenAI's transcription wants ISO-639-1.
        options["language"] = language if name == "deepgram" else language.split("-")[0]
    return options


def build_providers(
    settings: Settings,
    *,
    stt: str | None = None,
    tts: str | None = None,
    vad: str | None = None,
    agent: str | None = None,
    voice: str | None = None,
    language: str | None = None,
) -> ProviderSet:
    """Providers from settings; the keyword arguments are a route's overrides."""
    stt_names = _names(stt or settings.stt_provider)
    tts_names = _names(tts or settings.tts_provider)
    agent_names = _names(agent or settings.agent_provider)
    for kind, names in (("STT", stt_names), ("TTS", tts_names), ("AGENT", agent_names)):
        if not names:
            raise ProviderConfigError(f"{kind}_PROVIDER names no provider")

    def options(kind: str, name: str) -> dict[str, Any]:
        return {**_options(kind, name, settings), **_route_options(kind, name, voice, language)}

    stts = [registry.create_stt(n, **options("stt", n)) for n in stt_names]
    ttss = [registry.create_tts(n, **options("tts", n)) for n in tts_names]
    agents = [registry.create_agent(n, **options("agent", n)) for n in agent_names]

    vad_name = vad or settings.vad_provider
    vad_options = _options("vad", vad_name, settings)

    def make_vad(sample_rate: int) -> VAD:
        return registry.create_vad(vad_name, sample_rate, **vad_options)

    make_vad(8000)  # a bad VAD name or option fails now, not at the first call

    noise_name = settings.noise_filter

    def make_noise_filter() -> NoiseFilter | None:
        return registry.create_noise_filter(noise_name)

    make_noise_filter()
    return ProviderSet(
        stt=stts[0] if len(stts) == 1 else FallbackSTT(stts),
        tts=ttss[0] if len(ttss) == 1 else FallbackTTS(ttss),
        agent=agents[0] if len(agents) == 1 else FallbackAgent(agents),
        turn_detector=registry.create_turn_detector(),
        make_vad=make_vad,
        make_noise_filter=make_noise_filter,
        members=(*stts, *ttss, *agents),
    )


class ProviderCatalog:
    """The default providers, and those of each route, built once and shared by its calls."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.default = build_providers(settings)
        self._by_route: dict[tuple[str | None, ...], ProviderSet] = {}

    def for_route(self, route: Route | None) -> ProviderSet:
        if route is None:
            return self.default
        key = (route.stt, route.tts, route.vad, route.agent, route.voice, route.language)
        if not any(key[:5]):
            return self.default
        found = self._by_route.get(key)
        if found is None:
            found = self._by_route[key] = build_providers(
                self._settings,
                stt=route.stt,
                tts=route.tts,
                vad=route.vad,
                agent=route.agent,
                voice=route.voice,
                language=route.language,
            )
        return found

    async def aclose(self) -> None:
        for providers in (self.default, *self._by_route.values()):
            await providers.aclose()
