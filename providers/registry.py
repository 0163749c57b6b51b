"""Provider names to factories, so settings can pick providers by name.

Adding a provider means adding one line to one of the tables below. Factories take keyword
options (a voice, a sample rate) and build an instance; nothing heavy happens at import time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

from session.interfaces import STT, TTS, VAD, Agent, NoiseFilter, TurnDetector

from .agent.demo import DemoAgent
from .agent.openai_chat import OpenAIChatAgent
from .agent.webhook import WebhookAgent
from .noise.passthrough import PassthroughFilter
from .noise.spectral_gate import SpectralGateFilter
from .stt.deepgram import DeepgramSTT
from .stt.openai_transcribe import OpenAITranscribeSTT
from .stt.pocketsphinx import PocketSphinxSTT
from .testing import InstantAgent, ScriptedSTT, ToneTTS
from .tts.deepgram_aura import DeepgramAuraTTS
from .tts.elevenlabs import ElevenLabsTTS
from .tts.espeak import ESpeakTTS
from .tts.openai_speech import OpenAISpeechTTS
from .turn.heuristic import HeuristicTurnDetector
from .vad.energy import EnergyVad
from .vad.silero import SileroVad
from .vad.webrtc import WebRtcVad

__all__ = [
    "AGENT_PROVIDERS",
    "DEFAULT_PROVIDERS",
    "NOISE_FILTERS",
    "STT_PROVIDERS",
    "TTS_PROVIDERS",
    "TURN_PROVIDERS",
    "VAD_PROVIDERS",
    "UnknownProviderError",
    "create_agent",
    "create_noise_filter",
    "create_stt",
    "create_tts",
    "create_turn_detector",
    "create_vad",
]

VAD_PROVIDERS: Final[dict[str, Callable[..., VAD]]] = {
    "webrtc": WebRtcVad,
    "energy": EnergyVad,
    "silero": SileroVad,
}
STT_PROVIDERS: Final[dict[str, Callable[..., STT]]] = {
    "pocketsphinx": PocketSphinxSTT,
    "deepgram": DeepgramSTT,
    "openai": OpenAITranscribeSTT,
    "scripted": ScriptedSTT,
}
TTS_PROVIDERS: Final[dict[str, Callable[..., TTS]]] = {
    "espeak": ESpeakTTS,
    "deepgram": DeepgramAuraTTS,
    "elevenlabs": ElevenLabsTTS,
    "openai": OpenAISpeechTTS,
    "tone": ToneTTS,
}
AGENT_PROVIDERS: Final[dict[str, Callable[..., Agent]]] = {
    "demo": DemoAgent,
    "webhook": WebhookAgent,
    "openai": OpenAIChatAgent,
    "instant": InstantAgent,
}
NOISE_FILTERS: Final[dict[str, Callable[..., NoiseFilter]]] = {
    "spectral": SpectralGateFilter,
    "passthrough": PassthroughFilter,
}
TURN_PROVIDERS: Final[dict[str, Callable[..., TurnDetector]]] = {"heuristic": HeuristicTurnDetector}

DEFAULT_PROVIDERS: Final[Mapping[str, str]] = {
    "vad": "webrtc",
    "stt": "pocketsphinx",
    "tts": "espeak",
    "agent": "demo",
}


class UnknownProviderError(ValueError):
    def __init__(self, kind: str, name: str, known: Mapping[str, object]) -> None:
        self.kind = kind
        self.name = name
        self.known = sorted(known)
        super().__init__(
            f"unknown {kind} provider {name!r}; known {kind} providers: {', '.join(self.known)}"
        )


_T = TypeVar("_T")


def _factory(kind: str, table: Mapping[str, Callable[..., _T]], name: str) -> Callable[..., _T]:
    try:
        return table[name]
    except KeyError:
        raise UnknownProviderError(kind, name, table) from None


def create_vad(name: str, sample_rate: int, **options: Any) -> VAD:
    """A fresh VAD: they keep per-call state, so each call gets its own."""
    return _factory("vad", VAD_PROVIDERS, name)(sample_rate=sample_rate, **options)


def create_stt(name: str, **options: Any) -> STT:
    """STT instances hold no per-call state (streams do), so one serves every call; the
    pocketsphinx decoder pool is process-wide whatever the number of instances."""
    return _factory("stt", STT_PROVIDERS, name)(**options)


def create_tts(name: str, **options: Any) -> TTS:
    """Options are the provider's own (for espeak: `voice`, `rate_wpm`)."""
    return _factory("tts", TTS_PROVIDERS, name)(**options)


def create_agent(name: str, **options: Any) -> Agent:
    return _factory("agent", AGENT_PROVIDERS, name)(**options)


def create_noise_filter(name: str, **options: Any) -> NoiseFilter | None:
    """None for "none": the session then skips filtering (and its resampling) entirely."""
    if name == "none":
        return None
    return _factory("noise filter", NOISE_FILTERS, name)(**options)


def create_turn_detector(name: str = "heuristic", **options: Any) -> TurnDetector:
    return _factory("turn", TURN_PROVIDERS, name)(**options)
