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
        ({"SIP_PORT": "sip"}, "SIP_PORT"),
        ({"SIP_PORT": "70000"}, "SIP_PORT"),
        ({"SIP_ALLOWED_SOURCES": "10.0.0.0/8, trunk.example.com"}, "SIP_ALLOWED_SOURCES"),
        ({"SIP_ALLOWED_SOURCES": " , "}, "SIP_ALLOWED_SOURCES"),
        ({"RTP_PORT_MIN": "0"}, "RTP_PORT_MIN"),
        ({"RTP_PORT_MAX": "65536"}, "RTP_PORT_MAX"),
        ({"RTP_PORT_MIN": "20000", "RTP_PORT_MAX": "10000"}, "RTP_PORT_MIN"),
        ({"RTP_PORT_MIN": "10001", "RTP_PORT_MAX": "10001"}, "even port"),
        ({"RTP_TIMEOUT": "-5"}, "RTP_TIMEOUT"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError, match=names):
        load_settings(env=env, dotenv_path=NO_DOTENV)


def test_sip_defaults_follow_the_http_host_and_can_be_set() -> None:
    settings = load_settings(host="0.0.0.0", env={}, dotenv_path=NO_DOTENV)
    assert (settings.sip_host, settings.sip_port, settings.sip_enabled) == ("0.0.0.0", 5060, True)
    assert settings.sip_allowed_sources is None and settings.sip_public_host is None
    assert (settings.rtp_port_min, settings.rtp_port_max) == (10000, 20000)
    env = {
        "SIP_HOST": "10.1.2.3",
        "SIP_PORT": "5080",
        "SIP_ALLOWED_SOURCES": "203.0.113.7, 198.51.100.0/24,2001:db8::/32",
        "SIP_PUBLIC_HOST": "sip.example.com",
        "RTP_PORT_MIN": "30000",
        "RTP_PORT_MAX": "30010",
    }
    settings = load_settings(env=env, dotenv_path=NO_DOTENV)
    assert (settings.sip_host, settings.sip_port) == ("10.1.2.3", 5080)
    assert [str(n) for n in settings.sip_allowed_sources or ()] == [
        "203.0.113.7/32",
        "198.51.100.0/24",
        "2001:db8::/32",
    ]
    assert settings.sip_public_host == "sip.example.com"
    assert (settings.rtp_port_min, settings.rtp_port_max) == (30000, 30010)
    assert not load_settings(env={"SIP_PORT": "0"}, dotenv_path=NO_DOTENV).sip_enabled
    assert settings.rtp_timeout == 60
    assert load_settings(env={"RTP_TIMEOUT": "0"}, dotenv_path=NO_DOTENV).rtp_timeout == 0


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
