"""What every request handler shares: settings, providers, live calls, and how a call starts."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from gateway.calls import CallRegistry
from gateway.provider_wiring import ProviderCatalog, ProviderSet
from infra.settings import Settings
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
    catalog: ProviderCatalog
    calls: CallRegistry = field(default_factory=CallRegistry)
    signature_checker: SignatureChecker | None = None
    stream_url: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> GatewayRuntime:
        """Builds the shared providers; a bad provider setting fails here, at start."""
        return cls(
            settings=settings,
            catalog=ProviderCatalog(settings),
            signature_checker=SignatureChecker(settings.twilio_auth_token)
            if settings.twilio_auth_token
            else None,
            stream_url=stream_url_for(settings.public_url),
        )

    @property
    def providers(self) -> ProviderSet:
        """The providers calls get when their route names none of its own."""
        return self.catalog.default

    async def start_call(self, start: Start, transport: TwilioTransport) -> VoiceSession:
        params = start.custom_parameters
        metadata = {
            "call_sid": start.call_sid,
            "stream_sid": start.stream_sid,
            "from": params.get("from", ""),
            "to": params.get("to", ""),
            "route": params.get("route", "default"),
        }
        providers = self.providers
        session = VoiceSession(
            transport=transport,
            stt=providers.stt,
            tts=providers.tts,
            vad=providers.make_vad(transport.sample_rate),
            agent=providers.agent,
            turn_detector=providers.turn_detector,
            noise_filter=providers.make_noise_filter(),
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
        session.say(getattr(providers.agent, "greeting", None) or DEFAULT_GREETING)
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
