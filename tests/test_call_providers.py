"""A Twilio call through the real gateway with each provider, chosen by configuration alone.

Cloud providers talk to local fake servers that speak their documented protocols; the call
itself is the caller simulator against a real uvicorn server, as in test_call_path.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.caller import CallReport, run_call
from tests.fakes.agent_webhook_server import SECRET, run_fake_agent
from tests.fakes.deepgram_server import FakeDeepgram, run_fake_deepgram
from tests.fakes.elevenlabs_server import run_fake_elevenlabs
from tests.fakes.openai_server import run_fake_openai
from tests.gateway_server import run_gateway

API_TOKEN = "test-api-token"


@pytest.fixture(scope="module")
def deepgram() -> Iterator[FakeDeepgram]:
    with run_fake_deepgram() as fake:
        yield fake


@pytest.fixture(scope="module")
def fakes(deepgram: FakeDeepgram) -> Iterator[dict[str, str]]:
    with run_fake_openai() as openai, run_fake_elevenlabs() as eleven, run_fake_agent() as agent:
        yield {
            "DEEPGRAM_API_KEY": "test-key",
            "DEEPGRAM_URL": deepgram.url,
            "OPENAI_API_KEY": "test-key",
            "OPENAI_BASE_URL": openai.url,
            "ELEVENLABS_API_KEY": "test-key",
            "ELEVENLABS_URL": eleven.url,
            "AGENT_WEBHOOK_URL": agent.url,
            "AGENT_WEBHOOK_SECRET": SECRET,
        }


async def one_call(env: dict[str, str], lines: list[str]) -> CallReport:
    with run_gateway(env) as gateway:
        report = await run_call(gateway.url, lines, api_token=API_TOKEN, printer=None)
        names = (gateway.runtime.providers.stt.name, gateway.runtime.providers.tts.name)
    assert report.ok, (names, report.errors)
    return report


async def test_energy_vad_and_spectral_noise_filter_by_configuration(
    fakes: dict[str, str],
) -> None:
    env = {**fakes, "VAD_PROVIDER": "energy", "NOISE_FILTER": "spectral"}
    report = await one_call(env, ["hello how are you today"])
    assert report.turns[0].transcripts and report.turns[0].agent_text


@pytest.mark.parametrize(
    ("stt", "tts", "agent"),
    [
        ("openai", "espeak", "demo"),
        ("deepgram", "espeak", "demo"),
        ("scripted", "deepgram", "demo"),
        ("scripted", "openai", "demo"),
        ("scripted", "elevenlabs", "demo"),
        ("scripted", "tone", "instant"),
        ("scripted", "espeak", "webhook"),
        ("scripted", "espeak", "openai"),
        ("openai,pocketsphinx", "elevenlabs,espeak", "demo"),
    ],
)
async def test_each_provider_carries_a_call(
    fakes: dict[str, str], deepgram: FakeDeepgram, stt: str, tts: str, agent: str
) -> None:
    deepgram.next_transcripts.extend(["hello how are you today"] * 3)
    env = {**fakes, "STT_PROVIDER": stt, "TTS_PROVIDER": tts, "AGENT_PROVIDER": agent}
    report = await one_call(env, ["hello how are you today"])
    assert report.greeting_audio_seconds > 0.3
    turn = report.turns[0]
    assert turn.transcripts and turn.transcripts[0].strip()
    assert turn.agent_text and turn.reply_audio_seconds > 0.1
