"""What every request handler shares: settings, providers, live calls, and how a call starts."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from gateway.calls import CallRegistry
from infra.settings import Settings
from providers import registry as providers
from session.config import Config
from session.session import VoiceSession
from telephony.twilio.messages import Start
from telephony.twilio.signature import SignatureChecker
from telephony.twilio.transport import TwilioTransport
from telephony.twilio.twiml import stream_url_for

log = logging.getLogger(__name__)

DEFAULT_GREETING = "Hello! How can I help?"


@dataclass
class GatewayRuntime:
    settings: Settings
    calls: CallRegistry = field(default_factory=CallRegistry)
    stt: Any = None
    tts: Any = None
    agent: Any = None
    turn_detector: Any = None
    signature_checker: SignatureChecker | None = None
    stream_url: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> GatewayRuntime:
        """Builds the shared providers; an unknown provider name fails here, at start."""
        # The VAD is per call; building one now checks its name before the first call does.
        providers.create_vad(settings.vad_provider, TwilioTransport.sample_rate)
        return cls(
            settings=settings,
            stt=providers.create_stt(settings.stt_provider),
            tts=providers.create_tts(settings.tts_provider),
            agent=providers.create_agent(settings.agent_provider),
            turn_detector=providers.create_turn_detector(),
            signature_checker=SignatureChecker(settings.twilio_auth_token)
            if settings.twilio_auth_token
            else None,
            stream_url=stream_url_for(settings.public_url),
        )

    async def start_call(self, start: Start, transport: TwilioTransport) -> VoiceSession:
        params = start.custom_parameters
        metadata = {
            "call_sid": start.call_sid,
            "stream_sid": start.stream_sid,
            "from": params.get("from", ""),
            "to": params.get("to", ""),
            "route": params.get("route", "default"),
        }
        session = VoiceSession(
            transport=transport,
            stt=self.stt,
            tts=self.tts,
            vad=providers.create_vad(self.settings.vad_provider, transport.sample_rate),
            agent=self.agent,
            turn_detector=self.turn_detector,
            config=Config(session_id=start.call_sid),
            metadata=metadata,
        )
        record = self.calls.record(session.session_id)
        record.call_sid = start.call_sid
        record.stream_sid = start.stream_sid
        record.from_number = metadata["from"]
        record.to_number = metadata["to"]
        record.route = metadata["route"]
        self.calls.attach(session)
        transport.listener = session
        log.info(
            "call %s started: from %s to %s, route %s",
            start.call_sid,
            metadata["from"] or "?",
            metadata["to"] or "?",
            metadata["route"],
        )
        await session.start()
        session.say(getattr(self.agent, "greeting", None) or DEFAULT_GREETING)
        return session

    async def end_call(self, session: VoiceSession, reason: str) -> None:
        await session.stop(reason)
        self.calls.detach(session)
        log.info(
            "call %s ended: %s, %d turns, %d interruptions",
            session.session_id,
            session.end_reason,
            session.metrics.turns,
            session.metrics.interruptions,
        )
