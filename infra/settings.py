"""The gateway's one settings object: environment variables (and an optional `.env`).

The variable names are part of the interface (README, compose file, tests and ops scripts use
them). Everything is validated at start; a bad value stops the gateway with a message that
names the variable.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from dotenv import dotenv_values

DEFAULT_TWILIO_API_BASE_URL = "https://api.twilio.com"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")
DEFAULT_SIP_PORT = 5060
DEFAULT_RTP_PORT_MIN = 10000
DEFAULT_RTP_PORT_MAX = 20000

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class SettingsError(ValueError):
    """A setting has a value the gateway cannot run with; the message names the variable."""


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = ""
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = field(default=None, repr=False)
    twilio_api_base_url: str = DEFAULT_TWILIO_API_BASE_URL
    api_token: str = field(default="", repr=False)
    api_token_generated: bool = False
    redis_url: str | None = None
    instance_id: str = ""
    heartbeat_interval: float = 5.0
    heartbeat_ttl: float = 15.0
    drain_timeout: float = 3600.0
    stt_provider: str = "pocketsphinx"
    tts_provider: str = "espeak"
    vad_provider: str = "webrtc"
    agent_provider: str = "demo"
    noise_filter: str = "none"
    deepgram_api_key: str | None = field(default=None, repr=False)
    deepgram_url: str | None = None
    openai_api_key: str | None = field(default=None, repr=False)
    openai_base_url: str | None = None
    elevenlabs_api_key: str | None = field(default=None, repr=False)
    elevenlabs_url: str | None = None
    agent_webhook_url: str | None = None
    agent_webhook_secret: str | None = field(default=None, repr=False)
    silero_model_path: str | None = None
    log_level: str = "INFO"
    log_format: str = "text"
    sip_host: str = "127.0.0.1"
    sip_port: int = DEFAULT_SIP_PORT  # 0: no SIP listener
    sip_allowed_sources: tuple[IpNetwork, ...] | None = None  # None: any source
    sip_public_host: str | None = None  # None: the bound address
    rtp_port_min: int = DEFAULT_RTP_PORT_MIN
    rtp_port_max: int = DEFAULT_RTP_PORT_MAX
    rtp_timeout: float = 60.0  # seconds without a packet from the caller; 0: never
    sip_shared_port: bool = False  # set for `serve --workers`: the workers share SIP_PORT

    @property
    def signatures_enforced(self) -> bool:
        return bool(self.twilio_auth_token)

    @property
    def sip_enabled(self) -> bool:
        return self.sip_port != 0


def _read_env(env: Mapping[str, str] | None, dotenv_path: Path | None) -> dict[str, str]:
    merged: dict[str, str] = {}
    path = dotenv_path if dotenv_path is not None else Path(".env")
    if path.is_file():
        merged.update({k: v for k, v in dotenv_values(path).items() if v is not None})
    merged.update(os.environ if env is None else env)  # the real environment wins over .env
    return merged


def _positive_float(values: Mapping[str, str], name: str, default: float) -> float:
    raw = values.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise SettingsError(f"{name} must be greater than 0, got {raw!r}")
    return value


def _seconds_or_off(values: Mapping[str, str], name: str, default: float) -> float:
    """Seconds, or 0 to turn the thing off."""
    raw = values.get(name, "").strip()
    if raw in ("0", "0.0"):
        return 0.0
    return _positive_float(values, name, default)


def _choice(values: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    raw = values.get(name, "").strip() or default
    normalised = raw.upper() if name == "LOG_LEVEL" else raw.lower()
    if normalised not in allowed:
        raise SettingsError(f"{name} must be one of {', '.join(allowed)}; got {raw!r}")
    return normalised


def _http_url(name: str, raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SettingsError(f"{name} must be an http:// or https:// URL, got {raw!r}")
    return raw.rstrip("/")


def _secret(values: Mapping[str, str], name: str) -> str | None:
    return values.get(name, "").strip() or None


def _optional_url(values: Mapping[str, str], name: str, schemes: tuple[str, ...]) -> str | None:
    raw = values.get(name, "").strip()
    if not raw:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in schemes or not parts.netloc:
        allowed = ", ".join(f"{s}://" for s in schemes)
        raise SettingsError(f"{name} must be a URL starting with {allowed}; got {raw!r}")
    return raw.rstrip("/")


def _port(values: Mapping[str, str], name: str, default: int, *, zero_ok: bool = False) -> int:
    raw = values.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a port number, got {raw!r}") from None
    low = 0 if zero_ok else 1
    if not low <= value <= 65535:
        raise SettingsError(f"{name} must be between {low} and 65535, got {raw!r}")
    return value


def _networks(values: Mapping[str, str], name: str) -> tuple[IpNetwork, ...] | None:
    raw = values.get(name, "").strip()
    if not raw:
        return None
    networks: list[IpNetwork] = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise SettingsError(
                f"{name} must be comma-separated addresses or CIDRs (e.g. 203.0.113.0/24), "
                f"got {item!r}"
            ) from None
    if not networks:
        raise SettingsError(f"{name} lists no address; unset it to accept any source")
    return tuple(networks)


def _rtp_range(values: Mapping[str, str]) -> tuple[int, int]:
    low = _port(values, "RTP_PORT_MIN", DEFAULT_RTP_PORT_MIN)
    high = _port(values, "RTP_PORT_MAX", DEFAULT_RTP_PORT_MAX)
    # RTP takes even ports (RFC 3550 section 11), so a range needs one even port at least.
    if high < low or (high == low and low % 2):
        raise SettingsError(
            f"RTP_PORT_MIN..RTP_PORT_MAX ({low}..{high}) must hold at least one even port"
        )
    return low, high


def load_settings(
    *,
    host: str | None = None,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    dotenv_path: Path | None = None,
) -> Settings:
    """Builds validated settings; `host`/`port` come from the command line."""
    values = _read_env(env, dotenv_path)
    host = host or "127.0.0.1"
    port = 8000 if port is None else port
    if not 0 < port < 65536:
        raise SettingsError(f"--port must be between 1 and 65535, got {port}")

    public_url = values.get("PUBLIC_URL", "").strip()
    public_url = _http_url("PUBLIC_URL", public_url) if public_url else f"http://{host}:{port}"

    redis_url = values.get("REDIS_URL", "").strip() or None
    if redis_url and urlsplit(redis_url).scheme not in ("redis", "rediss", "unix"):
        # The URL is not echoed back: it may carry a password.
        raise SettingsError("REDIS_URL must be a redis://, rediss:// or unix:// URL")

    api_token = values.get("API_TOKEN", "").strip()
    generated = not api_token
    if generated:
        api_token = secrets.token_urlsafe(24)

    heartbeat_interval = _positive_float(values, "HEARTBEAT_INTERVAL", 5.0)
    heartbeat_ttl = _positive_float(values, "HEARTBEAT_TTL", 15.0)
    if heartbeat_ttl <= heartbeat_interval:
        raise SettingsError(
            f"HEARTBEAT_TTL ({heartbeat_ttl}) must be longer than HEARTBEAT_INTERVAL "
            f"({heartbeat_interval}), or every instance looks dead between two beats"
        )

    api_base = values.get("TWILIO_API_BASE_URL", "").strip()
    rtp_port_min, rtp_port_max = _rtp_range(values)
    return Settings(
        host=host,
        port=port,
        public_url=public_url,
        twilio_account_sid=values.get("TWILIO_ACCOUNT_SID", "").strip() or None,
        twilio_auth_token=values.get("TWILIO_AUTH_TOKEN", "").strip() or None,
        twilio_api_base_url=_http_url("TWILIO_API_BASE_URL", api_base)
        if api_base
        else DEFAULT_TWILIO_API_BASE_URL,
        api_token=api_token,
        api_token_generated=generated,
        redis_url=redis_url,
        instance_id=values.get("INSTANCE_ID", "").strip()
        or f"{socket.gethostname()}-{os.getpid()}",
        heartbeat_interval=heartbeat_interval,
        heartbeat_ttl=heartbeat_ttl,
        drain_timeout=_positive_float(values, "DRAIN_TIMEOUT", 3600.0),
        stt_provider=values.get("STT_PROVIDER", "").strip() or "pocketsphinx",
        tts_provider=values.get("TTS_PROVIDER", "").strip() or "espeak",
        vad_provider=values.get("VAD_PROVIDER", "").strip() or "webrtc",
        agent_provider=values.get("AGENT_PROVIDER", "").strip() or "demo",
        noise_filter=values.get("NOISE_FILTER", "").strip() or "none",
        deepgram_api_key=_secret(values, "DEEPGRAM_API_KEY"),
        deepgram_url=_optional_url(values, "DEEPGRAM_URL", ("ws", "wss", "http", "https")),
        openai_api_key=_secret(values, "OPENAI_API_KEY"),
        openai_base_url=_optional_url(values, "OPENAI_BASE_URL", ("http", "https")),
        elevenlabs_api_key=_secret(values, "ELEVENLABS_API_KEY"),
        elevenlabs_url=_optional_url(values, "ELEVENLABS_URL", ("http", "https")),
        agent_webhook_url=_optional_url(values, "AGENT_WEBHOOK_URL", ("http", "https")),
        agent_webhook_secret=_secret(values, "AGENT_WEBHOOK_SECRET"),
        silero_model_path=values.get("SILERO_MODEL_PATH", "").strip() or None,
        log_level=_choice(values, "LOG_LEVEL", "INFO", LOG_LEVELS),
        log_format=_choice(values, "LOG_FORMAT", "text", LOG_FORMATS),
        sip_host=values.get("SIP_HOST", "").strip() or host,
        sip_port=_port(values, "SIP_PORT", DEFAULT_SIP_PORT, zero_ok=True),
        sip_allowed_sources=_networks(values, "SIP_ALLOWED_SOURCES"),
        sip_public_host=values.get("SIP_PUBLIC_HOST", "").strip() or None,
        rtp_port_min=rtp_port_min,
        rtp_port_max=rtp_port_max,
        rtp_timeout=_seconds_or_off(values, "RTP_TIMEOUT", 60.0),
    )
