"""What every request handler shares: settings, providers, the store, live calls, and how a
call starts, runs under its route, and ends."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.provider_wiring import ProviderCatalog, ProviderSet
from infra.commands import CommandBus
from infra.heartbeat import Heartbeat
from infra.routes import DEFAULT_NUMBER, DEFAULT_ROUTE, Route, RouteError
from infra.settings import Settings
from infra.store import SessionRecord, Store, StoreUnavailable, StoreWriter, open_store
from session.config import Config
from session.interfaces import Transport, TransportListener
from session.session import SessionEvent, VoiceSession
from telephony.twilio.messages import Start
from telephony.twilio.rest import TwilioRest
from telephony.twilio.signature import SignatureChecker
from telephony.twilio.transport import TwilioTransport
from telephony.twilio.twiml import stream_url_for

log = logging.getLogger(__name__)

DEFAULT_GREETING = "Hello! How can I help?"
# Session events whose counters the record carries, so lists show them without the log.
_COUNTED = {"user_turn": "turns", "interrupted": "interruptions", "error": "errors"}


class CallTransport(Transport, Protocol):
    """A session transport the gateway wires up: it is told which session listens to it."""

    listener: TransportListener | None


@dataclass(frozen=True, slots=True)
class CallInfo:
    """Who is calling whom, over what: what the record and the session metadata carry."""

    session_id: str
    transport: str  # "twilio" or "sip"
    call_sid: str  # Twilio's CallSid, or the SIP Call-ID
    from_number: str = ""
    to_number: str = ""
    stream_sid: str = ""


class GatewayRuntime:
    def __init__(self, settings: Settings, catalog: ProviderCatalog, store: Store) -> None:
        self.settings = settings
        self.catalog = catalog
        self.store = store
        self.instance_id = settings.instance_id
        self.writer = StoreWriter(store)
        self.heartbeat = Heartbeat(
            store,
            self.instance_id,
            interval=settings.heartbeat_interval,
            ttl=settings.heartbeat_ttl,
            info_fn=lambda: {"live_calls": len(self.live)},
        )
        self.bus = CommandBus(store, self.instance_id)
        self.live: dict[str, VoiceSession] = {}
        self.signature_checker = (
            SignatureChecker(settings.twilio_auth_token) if settings.twilio_auth_token else None
        )
        self.twilio_rest = (
            TwilioRest(
                settings.twilio_account_sid,
                settings.twilio_auth_token,
                settings.twilio_api_base_url,
            )
            if settings.twilio_account_sid and settings.twilio_auth_token
            else None
        )
        self.stream_url = stream_url_for(settings.public_url)
        self._call_timers: dict[str, asyncio.TimerHandle] = {}
        self.draining = False  # set on the first SIGTERM: new calls are refused
        self.no_calls = asyncio.Event()  # set while this instance carries no call
        self.no_calls.set()

    @classmethod
    def from_settings(cls, settings: Settings) -> GatewayRuntime:
        """Builds the shared providers; a bad provider setting fails here, at start."""
        return cls(settings, ProviderCatalog(settings), open_store(settings.redis_url))

    @property
    def providers(self) -> ProviderSet:
        """The providers calls get when their route names none of its own."""
        return self.catalog.default

    # ----------------------------------------------------------------- lifecycle

    async def start(self, command_handler: Any) -> None:
        self.writer.start()
        await self.heartbeat.start()
        await self.bus.start(command_handler)

    async def aclose(self) -> None:
        for session in list(self.live.values()):
            await self.end_call(session, "shutdown")
        await self.bus.aclose()
        await self.heartbeat.aclose()
        await self.writer.aclose()
        await self.catalog.aclose()
        if self.twilio_rest is not None:
            await self.twilio_rest.aclose()
        await self.store.close()

    @property
    def degraded(self) -> bool:
        """The store is away: calls go on, records catch up when it is back."""
        return not (self.writer.healthy and self.heartbeat.healthy)

    # ----------------------------------------------------------------- routes

    async def route_for(self, number: str) -> Route:
        """The route for a dialled number; with the store away, the built-in default."""
        try:
            for key in (number, DEFAULT_NUMBER):
                if key and (data := await self.store.get_route(key)) is not None:
                    return Route.from_dict(data)
        except StoreUnavailable:
            log.warning("store unavailable: call to %s uses the built-in default route", number)
        except RouteError as exc:
            log.error("stored route for %s is invalid (%s): using the default", number, exc)
        return DEFAULT_ROUTE

    # ----------------------------------------------------------------- calls

    async def call_answered(
        self, call_sid: str, from_number: str, to_number: str, route: str
    ) -> None:
        """The voice webhook took the call. Written straight to the store, not through the
        writer: the media stream may land on another instance, which then owns the record."""
        record = SessionRecord(
            session_id=call_sid,
            call_sid=call_sid,
            from_number=from_number,
            to_number=to_number,
            route=route,
            instance=self.instance_id,
        )
        try:
            await self.store.put_session(record)
            await self.store.add_events(
                call_sid, [("call_answered", {"from": from_number}, time.time())]
            )
        except StoreUnavailable:
            log.warning("store unavailable: call %s is recorded when its stream starts", call_sid)

    async def start_call(self, start: Start, transport: TwilioTransport) -> VoiceSession:
        """A Twilio media stream started: its call runs under the route of the dialled number
        (or the route the webhook named)."""
        params = start.custom_parameters
        call = CallInfo(
            session_id=start.call_sid,
            transport="twilio",
            call_sid=start.call_sid,
            stream_sid=start.stream_sid,
            from_number=params.get("from", ""),
            to_number=params.get("to", ""),
        )
        route = await self.route_for(params.get("route") or call.to_number)
        return await self.start_session(call, transport, route)

    async def start_session(
        self, call: CallInfo, transport: CallTransport, route: Route
    ) -> VoiceSession:
        """Runs a call leg (Twilio or SIP) as a voice session: recorded, greeted, bounded by
        the route's limits. Raises `SessionError` when the session cannot start."""
        providers = self.catalog.for_route(route)
        metadata = {
            "call_sid": call.call_sid,
            "stream_sid": call.stream_sid,
            "from": call.from_number,
            "to": call.to_number,
            "route": route.number,
            "transport": call.transport,
        }
        config = dataclasses.replace(
            Config(session_id=call.session_id), **route.limits.config_overrides()
        )
        session = VoiceSession(
            transport=transport,
            stt=providers.stt,
            tts=providers.tts,
            vad=providers.make_vad(transport.sample_rate),
            agent=providers.agent,
            turn_detector=providers.turn_detector,
            noise_filter=providers.make_noise_filter(),
            config=config,
            metadata=metadata,
        )
        self.writer.started(
            SessionRecord(
                session_id=session.session_id,
                state=session.state.value,
                call_sid=call.call_sid,
                stream_sid=call.stream_sid,
                from_number=call.from_number,
                to_number=call.to_number,
                route=route.number,
                instance=self.instance_id,
                transport=call.transport,
            )
        )
        self.live[session.session_id] = session
        self.no_calls.clear()
        session.on_event(self._recorder(session.session_id))
        transport.listener = session
        log.info(
            "call %s started (%s): from %s to %s, route %s",
            call.session_id,
            call.transport,
            call.from_number or "?",
            call.to_number or "?",
            route.number,
        )
        try:
            await session.start()
        except Exception:
            await self.end_call(session, "error")
            raise
        loop = asyncio.get_running_loop()
        self._call_timers[session.session_id] = loop.call_later(
            route.limits.max_call_seconds,
            lambda: asyncio.ensure_future(self.end_call(session, "max_duration")),
        )
        greeting = route.greeting or getattr(providers.agent, "greeting", None)
        session.say(greeting or DEFAULT_GREETING)
        return session

    def _recorder(self, session_id: str) -> Any:
        writer = self.writer
        counts = dict.fromkeys(_COUNTED.values(), 0)

        def on_event(event: SessionEvent) -> None:
            if event.kind == "transcript" and not event.data.get("is_final"):
                return  # interim hypotheses would crowd the capped log out of what matters
            writer.event(session_id, event.kind, event.data, event.time)
            if event.kind == "state":
                writer.session_updated(session_id, state=event.data["new"])
            elif event.kind in _COUNTED:
                name = _COUNTED[event.kind]
                counts[name] += 1
                writer.session_updated(session_id, **{name: counts[name]})
            elif event.kind == "ended":
                writer.ended(session_id, event.data.get("reason", "ended"), event.time)

        return on_event

    def protocol_error(self, session_id: str, kind: str, message: str) -> None:
        self.writer.event(
            session_id, "protocol_error", {"kind": kind, "message": message}, time.time()
        )

    async def end_call(self, session: VoiceSession, reason: str, detail: str = "") -> None:
        """Ends the session and forgets it; `detail` (the transport's summary) joins the
        call's one end-of-call log line."""
        timer = self._call_timers.pop(session.session_id, None)
        if timer is not None:
            timer.cancel()
        await session.stop(reason)
        removed = self.live.pop(session.session_id, None)
        if not self.live:
            self.no_calls.set()
        if removed is not None:
            log.info(
                "call %s ended: %s, %d turns, %d interruptions%s",
                session.session_id,
                session.end_reason,
                session.metrics.turns,
                session.metrics.interruptions,
                f"; {detail}" if detail else "",
            )
