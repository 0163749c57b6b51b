import pytest

from providers import registry
from providers.agent.demo import DemoAgent
from providers.stt.pocketsphinx import PocketSphinxSTT
from providers.tts.espeak import ESpeakTTS
from providers.turn.heuristic import HeuristicTurnDetector
from providers.vad.webrtc import WebRtcVad


def test_every_default_provider_builds() -> None:
    defaults = registry.DEFAULT_PROVIDERS
    assert defaults == {"vad": "webrtc", "stt": "pocketsphinx", "tts": "espeak", "agent": "demo"}
    vad = registry.create_vad(defaults["vad"], sample_rate=8000)
    assert isinstance(vad, WebRtcVad)
    assert vad.sample_rate == 8000
    assert isinstance(registry.create_stt(defaults["stt"]), PocketSphinxSTT)
    tts = registry.create_tts(defaults["tts"])
    assert isinstance(tts, ESpeakTTS)
    assert tts.sample_rate == 22050
    assert isinstance(registry.create_agent(defaults["agent"]), DemoAgent)
    assert isinstance(registry.create_turn_detector(), HeuristicTurnDetector)


def test_tables_hold_the_default_names() -> None:
    assert "webrtc" in registry.VAD_PROVIDERS
    assert "pocketsphinx" in registry.STT_PROVIDERS
    assert "espeak" in registry.TTS_PROVIDERS
    assert "demo" in registry.AGENT_PROVIDERS
    assert "heuristic" in registry.TURN_PROVIDERS


def test_pocketsphinx_instances_share_the_decoder_pool_and_vads_are_per_call() -> None:
    first, second = registry.create_stt("pocketsphinx"), registry.create_stt("pocketsphinx")
    assert first.pool is second.pool  # type: ignore[attr-defined]
    assert registry.create_vad("webrtc", 8000) is not registry.create_vad("webrtc", 8000)


def test_noise_filter_none_means_no_filter() -> None:
    assert registry.create_noise_filter("none") is None
    with pytest.raises(registry.UnknownProviderError, match="noise filter"):
        registry.create_noise_filter("nope")


def test_options_reach_the_provider() -> None:
    tts = registry.create_tts("espeak", voice="en-gb", rate_wpm=200)
    assert isinstance(tts, ESpeakTTS)
    assert (tts.voice, tts.rate_wpm) == ("en-gb", 200)
    vad = registry.create_vad("webrtc", 16000, aggressiveness=3)
    assert vad.frame_bytes == 640


@pytest.mark.parametrize(
    ("create", "known"),
    [
        (lambda: registry.create_vad("nope", 8000), "webrtc"),
        (lambda: registry.create_stt("nope"), "pocketsphinx"),
        (lambda: registry.create_tts("nope"), "espeak"),
        (lambda: registry.create_agent("nope"), "demo"),
        (lambda: registry.create_turn_detector("nope"), "heuristic"),
    ],
)
def test_unknown_names_raise_with_the_known_list(create, known: str) -> None:
    with pytest.raises(registry.UnknownProviderError, match=f"known .* providers: .*{known}"):
        create()


def test_unknown_provider_error_is_a_value_error() -> None:
    with pytest.raises(ValueError) as caught:
        registry.create_tts("nope")
    assert isinstance(caught.value, registry.UnknownProviderError)
    assert caught.value.known == sorted(registry.TTS_PROVIDERS)
    assert caught.value.name == "nope"
