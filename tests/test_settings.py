"""Settings: defaults, the environment over .env, and errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.settings import SettingsError, load_settings

NO_DOTENV = Path("/nonexistent/.env")


def test_defaults_run_offline_with_a_generated_api_token() -> None:
    settings = load_settings(env={}, dotenv_path=NO_DOTENV)
    assert settings.public_url == "http://127.0.0.1:8000"
    assert (settings.stt_provider, settings.tts_provider) == ("pocketsphinx", "espeak")
    assert (settings.vad_provider, settings.agent_provider) == ("webrtc", "demo")
    assert settings.api_token and settings.api_token_generated
    assert not settings.signatures_enforced
    assert settings.heartbeat_interval == 5 and settings.heartbeat_ttl == 15


def test_public_url_follows_host_and_port_unless_set() -> None:
    assert load_settings(host="0.0.0.0", port=9000, env={}, dotenv_path=NO_DOTENV).public_url == (
        "http://0.0.0.0:9000"
    )
    env = {"PUBLIC_URL": "https://voice.example.com/"}
    assert load_settings(env=env, dotenv_path=NO_DOTENV).public_url == "https://voice.example.com"


def test_dotenv_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("API_TOKEN=from-file\nTTS_PROVIDER=tone\n")
    settings = load_settings(env={"TTS_PROVIDER": "espeak"}, dotenv_path=dotenv)
    assert settings.api_token == "from-file" and not settings.api_token_generated
    assert settings.tts_provider == "espeak"


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"PUBLIC_URL": "voice.example.com"}, "PUBLIC_URL"),
        ({"HEARTBEAT_INTERVAL": "soon"}, "HEARTBEAT_INTERVAL"),
        ({"HEARTBEAT_TTL": "-1"}, "HEARTBEAT_TTL"),
        ({"HEARTBEAT_INTERVAL": "10", "HEARTBEAT_TTL": "5"}, "HEARTBEAT_TTL"),
        ({"LOG_LEVEL": "chatty"}, "LOG_LEVEL"),
        ({"DRAIN_TIMEOUT": "0"}, "DRAIN_TIMEOUT"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({"REDIS_URL": "http://localhost"}, "REDIS_URL"),
        ({"TWILIO_API_BASE_URL": "api.twilio.com"}, "TWILIO_API_BASE_URL"),
        ({"DEEPGRAM_URL": "ftp://x"}, "DEEPGRAM_URL"),
        ({"OPENAI_BASE_URL": "localhost:8080"}, "OPENAI_BASE_URL"),
        ({"ELEVENLABS_URL": "x"}, "ELEVENLABS_URL"),
        ({"AGENT_WEBHOOK_URL": "ws://x"}, "AGENT_WEBHOOK_URL"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError, match=names):
        load_settings(env=env, dotenv_path=NO_DOTENV)


def test_bad_port_is_refused() -> None:
    with pytest.raises(SettingsError, match="--port"):
        load_settings(port=70000, env={}, dotenv_path=NO_DOTENV)


def test_secrets_stay_out_of_repr_and_errors() -> None:
    env = {
        "TWILIO_AUTH_TOKEN": "tw-secret",
        "API_TOKEN": "api-secret",
        "DEEPGRAM_API_KEY": "dg-secret",
        "OPENAI_API_KEY": "oa-secret",
        "ELEVENLABS_API_KEY": "el-secret",
        "AGENT_WEBHOOK_SECRET": "wh-secret",
    }
    text = repr(load_settings(env=env, dotenv_path=NO_DOTENV))
    for secret in env.values():
        assert secret not in text
    with pytest.raises(SettingsError) as info:
        load_settings(env={"REDIS_URL": "http://user:hunter2@host"}, dotenv_path=NO_DOTENV)
    assert "hunter2" not in str(info.value)
