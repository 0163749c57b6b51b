"""SIP ingress: INVITEs from a trunk or PBX become voice sessions, like Twilio calls do.

The call is routed on the dialled number (the Request-URI user) through the same routes, is
recorded in the same store with `transport="sip"`, and is listed and controlled through the
same API: hanging it up there ends the session, whose transport then sends the BYE.

Flow of one call: `IncomingCall` -> source check (403), draining (503 + Retry-After), offer
check (488) -> 180 -> route lookup and an RTP port -> 200 with our answer -> the session starts
at once, so providers connect while the ACK is on its way. An INVITE without SDP gets our
offer in the 200 and the ACK's answer settles the stream. `CallEnded` (BYE, CANCEL, no ACK)
ends the session; the session ending (API hangup, timeout, max duration) hangs up the call.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import socket
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from gateway.runtime import CallInfo, GatewayRuntime
from infra.settings import Settings
from session.errors import SessionError
from session.session import VoiceSession
from telephony.rtp_ports import RtpPortPool, RtpPortsExhausted
from telephony.rtp_transport import RtpTransport
from telephony.sdp import MediaParams, SdpError, SessionDescription, accept_answer, answer
from telephony.sdp import make_offer as sdp_offer
from telephony.sip import (
    CallEnded,
    CallEstablished,
    CallState,
    IncomingCall,
    ProtocolError,
    ReInvite,
    ReInviteAcked,
    SipEndpoint,
    SipEvent,
)
from telephony.sip.headers import parse_uri
from telephony.sip_server import SipServer, open_sip_server

__all__ = ["SipCalls", "advertised_address"]

log = logging.getLogger(__name__)

# Seconds a draining instance asks a trunk to wait before sending it calls again; trunks with
# several gateways try the next one at once.
DRAIN_RETRY_AFTER = 30
_LOOPBACK_HOSTS = ("localhost", "ip6-localhost")
_VISUAL_SEPARATORS = str.maketrans("", "", "-.()")


@dataclass(slots=True)
class _Call:
    incoming: IncomingCall
    session_id: str
    started_at: float = field(default_factory=time.monotonic)
    port: int | None = None
    transport: RtpTransport | None = None
    session: VoiceSession | None = None
    our_sdp: SessionDescription | None = None  # the last SDP we sent: re-INVITE versions follow
    our_offer: SessionDescription | None = None  # set while an offer of ours awaits its answer
    end_reason: str | None = None  # set when the SIP call ended (bye, cancelled, hangup...)
    ending: bool = False
    answered_at: float | None = None  # loop time of our 200 OK


class SipCalls:
    def __init__(self, runtime: GatewayRuntime, settings: Settings) -> None:
        self.runtime = runtime
        self.settings = settings
        self.public_host = settings.sip_public_host or advertised_address(settings.sip_host)
        self.ports = RtpPortPool(settings.sip_host, settings.rtp_port_min, settings.rtp_port_max)
        self.server: SipServer | None = None
        self.calls: dict[str, _Call] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watchdog: asyncio.Task[None] | None = None

    async def start(self) -> None:
        settings = self.settings
        endpoint = SipEndpoint(self.public_host, settings.sip_port)
        self.server = await open_sip_server(
            endpoint,
            self._on_event,
            settings.sip_host,
            settings.sip_port,
            reuse_port=settings.sip_shared_port,
        )
        log.info(
            "SIP listening on udp %s:%d (Contact and SDP address %s), RTP ports %d-%d",
            settings.sip_host,
            settings.sip_port,
            self.public_host,
            settings.rtp_port_min,
            settings.rtp_port_max,
        )
        if settings.rtp_timeout:
            self._watchdog = asyncio.ensure_future(self._watch_media(settings.rtp_timeout))
        if settings.sip_allowed_sources is None and not _is_loopback(settings.sip_host):
            log.warning(
                "SIP_ALLOWED_SOURCES is not set: INVITEs from ANY address reaching %s:%d are "
                "answered. Set it to your trunk's or PBX's addresses",
                settings.sip_host,
                settings.sip_port,
            )

    async def aclose(self) -> None:
        """Closes the listener once the runtime has ended the calls (their BYEs are out)."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for call in list(self.calls.values()):
            if call.transport is not None:
                call.transport.peer_closed("shutdown")
            self._release(call)
        if self.server is not None:
            self.server.close()

    # ------------------------------------------------------------- SIP events

    def _on_event(self, event: SipEvent) -> None:
        if isinstance(event, IncomingCall):
            self._incoming(event)
        elif isinstance(event, CallEstablished):
            self._established(event)
        elif isinstance(event, CallEnded):
            self._ended(event)
        elif isinstance(event, ReInvite):
            self._reinvite(event)
        elif isinstance(event, ReInviteAcked):
            self._reinvite_acked(event)
        elif isinstance(event, ProtocolError):
            self._protocol_error(event)

    def _incoming(self, event: IncomingCall) -> None:
        server = self._server
        source = event.remote_addr[0]
        if not self._allowed(source):
            log.warning(
                "SIP INVITE %s from %s refused (403): not in SIP_ALLOWED_SOURCES",
                event.call_id,
                source,
            )
            server.reject(event.call_id, 403, "Source not allowed")
            return
        if self.runtime.draining:
            log.info("SIP INVITE %s refused (503): this instance is draining", event.call_id)
            server.reject(event.call_id, 503, "Draining", retry_after=DRAIN_RETRY_AFTER)
            return
        try:
            offer = None if event.sdp_offer is None else SessionDescription.parse(event.sdp_offer)
            params = _provisional_params(offer)
        except SdpError as exc:
            log.warning("SIP INVITE %s refused (488): %s", event.call_id, exc)
            server.reject(event.call_id, 488, "Not Acceptable Here")
            return
        if params is None:
            log.warning(
                "SIP INVITE %s refused (488): no audio stream in PCMU or PCMA", event.call_id
            )
            server.reject(event.call_id, 488, "Not Acceptable Here")
            return
        call = _Call(event, session_id=f"sip-{secrets.token_hex(8)}")
        self.calls[event.call_id] = call
        server.ringing(event.call_id)
        self._spawn(self._setup(call, offer, params))

    async def _setup(
        self, call: _Call, offer: SessionDescription | None, params: MediaParams
    ) -> None:
        try:
            await self._answer_and_start(call, offer, params)
        except Exception:
            log.exception("SIP call %s failed to set up", call.session_id)
            self._reject_if_open(call, 500, "Server Internal Error")
            self._hangup(call)
            if call.transport is not None:
                call.transport.peer_closed("error")
            self._release(call)

    async def _answer_and_start(
        self, call: _Call, offer: SessionDescription | None, params: MediaParams
    ) -> None:
        incoming = call.incoming
        call_id = incoming.call_id
        dialled = _dialled(incoming.request_uri_user)
        route = await self.runtime.route_for(dialled)
        try:
            _, transport, port = await self.ports.open(
                lambda: RtpTransport(
                    params, label=call.session_id, on_close=lambda: self._session_closed(call)
                )
            )
        except (RtpPortsExhausted, OSError) as exc:
            log.error("SIP INVITE %s refused (503): %s", call_id, exc)
            self._reject_if_open(call, 503, "No media ports", retry_after=DRAIN_RETRY_AFTER)
            return
        call.port, call.transport = port, transport
        if call.end_reason is not None:  # CANCELled while we looked the route up
            transport.peer_closed(call.end_reason)
            self._release(call)
            return
        if offer is not None:
            sdp = answer(offer, local_ip=self.public_host, rtp_port=port).sdp
        else:
            sdp = sdp_offer(local_ip=self.public_host, rtp_port=port)
            call.our_offer = sdp
        call.our_sdp = sdp
        self._server.answer(call_id, sdp.serialize().encode())
        call.answered_at = asyncio.get_running_loop().time()
        info = CallInfo(
            session_id=call.session_id,
            transport="sip",
            call_sid=call_id,
            from_number=_user(incoming.from_uri),
            to_number=dialled,
        )
        try:
            call.session = await self.runtime.start_session(info, transport, route)
        except SessionError as exc:
            log.error("SIP call %s could not start: %s", call.session_id, exc)
            self._hangup(call)
            transport.peer_closed("error")
            self._release(call)
            return
        if call.end_reason is not None:
            # The caller hung up while the session was starting.
            self._spawn(self._end_session(call, call.end_reason))

    def _established(self, event: CallEstablished) -> None:
        call = self.calls.get(event.call_id)
        if call is None or call.our_offer is None:
            return
        try:
            params = self._take_answer(call, event.sdp)
        except SdpError as exc:
            log.warning("SIP call %s: bad answer in the ACK (%s): hanging up", call.session_id, exc)
            self._hangup(call)
            return
        if call.transport is not None:
            call.transport.update(params)

    def _ended(self, event: CallEnded) -> None:
        call = self.calls.get(event.call_id)
        if call is None:
            return  # refused before it became a call
        call.end_reason = event.reason.value
        if call.session is not None:
            self._spawn(self._end_session(call, call.end_reason))
        elif call.transport is not None:
            # The session is starting: `_answer_and_start` ends it once it has.
            call.transport.peer_closed(call.end_reason)
        # Before the RTP port is open `_answer_and_start` sees `end_reason` and stops.

    def _session_closed(self, call: _Call) -> None:
        """The session ended on our side (API hangup, timeout, max duration): BYE the caller.
        The endpoint reports that as `CallEnded(hangup)`, which ends the rest."""
        self._hangup(call)

    async def _watch_media(self, limit: float) -> None:
        """Hangs up calls whose caller has sent nothing for `limit` seconds: a peer that
        vanished without a BYE (crash, network loss) would otherwise hold the call, since
        the silence played in its place keeps the session going. Calls on hold are spared."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(5.0, limit / 4))
            now = loop.time()
            for call in list(self.calls.values()):
                transport = call.transport
                if transport is None or call.session is None or call.answered_at is None:
                    continue
                rtp = transport.rtp
                heard = rtp.last_received or call.answered_at
                if call.ending or not rtp.params.receives or now - heard < limit:
                    continue
                log.warning(
                    "SIP call %s: nothing from %s for %.0f s (RTP_TIMEOUT): hanging up",
                    call.session_id,
                    rtp.remote_addr or "the caller",
                    now - heard,
                )
                # Queued first, so the session's end reason is this one, not the BYE's.
                self._spawn(self._end_session(call, "media_timeout"))
                self._hangup(call)

    async def _end_session(self, call: _Call, reason: str) -> None:
        if call.ending or call.session is None:
            return
        call.ending = True
        if call.transport is not None:
            call.transport.peer_closed(reason)
        await self.runtime.end_call(call.session, reason, detail=self._media_summary(call))
        self._release(call)

    def _reinvite(self, event: ReInvite) -> None:
        call = self.calls.get(event.call_id)
        if call is None or call.transport is None or call.port is None or call.our_sdp is None:
            self._server.reject_reinvite(event.call_id, 491)  # not ready: "Request Pending"
            return
        version = int(call.our_sdp.origin.session_version) + 1
        session_id = int(call.our_sdp.origin.session_id)
        if event.sdp is None:
            sdp = sdp_offer(
                local_ip=self.public_host,
                rtp_port=call.port,
                session_id=session_id,
                session_version=version,
            )
            call.our_offer = call.our_sdp = sdp
            self._server.answer_reinvite(event.call_id, sdp.serialize().encode())
            return
        try:
            result = answer(
                SessionDescription.parse(event.sdp),
                local_ip=self.public_host,
                rtp_port=call.port,
                session_id=session_id,
                session_version=version,
            )
        except SdpError as exc:
            log.warning("SIP call %s: re-INVITE refused (488): %s", call.session_id, exc)
            self._server.reject_reinvite(event.call_id, 488)
            return
        if result.media is None:
            log.warning("SIP call %s: re-INVITE refused (488): no usable audio", call.session_id)
            self._server.reject_reinvite(event.call_id, 488)
            return
        call.transport.update(result.media)
        call.our_sdp = result.sdp
        log.info(
            "SIP call %s renegotiated: %s, %s",
            call.session_id,
            result.media.codec,
            result.media.direction,
        )
        self._server.answer_reinvite(event.call_id, result.sdp.serialize().encode())

    def _reinvite_acked(self, event: ReInviteAcked) -> None:
        call = self.calls.get(event.call_id)
        if call is None or call.our_offer is None:
            return
        try:
            params = self._take_answer(call, event.sdp)
        except SdpError as exc:
            log.warning("SIP call %s: bad answer to our re-offer (%s)", call.session_id, exc)
            return
        if call.transport is not None:
            call.transport.update(params)

    @staticmethod
    def _take_answer(call: _Call, sdp: bytes | None) -> MediaParams:
        """The stream the caller's answer (in an ACK) settles for the offer we sent."""
        assert call.our_offer is not None
        offer, call.our_offer = call.our_offer, None
        if sdp is None:
            raise SdpError("the ACK carries no SDP answer to our offer")
        return accept_answer(offer, SessionDescription.parse(sdp))

    def _protocol_error(self, event: ProtocolError) -> None:
        log.warning(
            "SIP protocol error from %s:%d (%s, answered %s): %s",
            *event.remote_addr,
            event.kind.value,
            event.status or "nothing",
            event.detail,
        )
        call = self.calls.get(event.call_id or "")
        if call is not None and call.session is not None:
            self.runtime.protocol_error(call.session_id, event.kind.value, event.detail)

    # ------------------------------------------------------------- helpers

    @property
    def _server(self) -> SipServer:
        assert self.server is not None, "SipCalls.start() first"
        return self.server

    def _allowed(self, host: str) -> bool:
        allowed = self.settings.sip_allowed_sources
        if allowed is None:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in allowed)

    def _hangup(self, call: _Call) -> None:
        state = self._server.endpoint.call_state(call.incoming.call_id)
        if state is not None and state is not CallState.ENDED:
            self._server.hangup(call.incoming.call_id)

    def _reject_if_open(
        self, call: _Call, status: int, reason: str, retry_after: int | None = None
    ) -> None:
        call_id = call.incoming.call_id
        if self._server.endpoint.call_state(call_id) in (CallState.OFFERED, CallState.RINGING):
            self._server.reject(call_id, status, reason, retry_after)
        self.calls.pop(call_id, None)

    def _release(self, call: _Call) -> None:
        if call.transport is not None:
            call.transport.listener = None  # the session holds the transport: no cycle left
        if call.port is not None:
            self.ports.release(call.port)
            call.port = None
        self.calls.pop(call.incoming.call_id, None)

    def _media_summary(self, call: _Call) -> str:
        """What the RTP leg carried: an event in the call's log (the ops view of audio
        quality) and a phrase for the call's end log line."""
        if call.transport is None:
            return ""
        stats = call.transport.rtp.stats
        params = call.transport.rtp.params
        remote = call.transport.rtp.remote_addr or params.remote_addr
        summary = {
            "codec": params.codec,
            "ptime_ms": params.ptime_ms,
            "remote": f"{remote[0]}:{remote[1]}",
            "packets_received": stats.received,
            "packets_sent": stats.sent,
            "packets_lost": stats.jitter.lost,
            "packets_late": stats.jitter.late,
            "malformed": stats.malformed,
            "seconds": round(time.monotonic() - call.started_at, 3),
        }
        self.runtime.writer.event(call.session_id, "media_stats", summary, time.time())
        return (
            f"SIP {call.incoming.call_id} {params.codec}/{params.ptime_ms} ms with "
            f"{summary['remote']}, RTP in {stats.received} (lost {stats.jitter.lost}) "
            f"out {stats.sent}"
        )

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("SIP call task failed", exc_info=task.exception())


def _provisional_params(offer: SessionDescription | None) -> MediaParams | None:
    """The stream to open the RTP port with: the offer's, or (no offer) a placeholder that
    sends nothing until the ACK's answer or the caller's first packet says where to."""
    if offer is None:
        return MediaParams(codec="PCMU", payload_type=0, remote_addr=("0.0.0.0", 0))
    return answer(offer, local_ip="0.0.0.0", rtp_port=0).media


def _dialled(user: str | None) -> str:
    """The Request-URI user as a route key: user parameters (";npdi", ";rn=") and the visual
    separators of RFC 3966 dropped, so "+1-415-555-0100;npdi" routes as "+14155550100"."""
    if not user:
        return ""
    number = user.partition(";")[0]
    return number.translate(_VISUAL_SEPARATORS) if number.startswith("+") else number


def _user(uri: str) -> str:
    try:
        return parse_uri(uri).user or ""
    except ValueError:
        return ""


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def advertised_address(bind_host: str) -> str:
    """The address peers reach us at when SIP_PUBLIC_HOST is unset: the bound one, or for a
    wildcard bind the address of the interface with the default route."""
    if bind_host not in ("0.0.0.0", "::", ""):
        return bind_host
    family = socket.AF_INET6 if bind_host == "::" else socket.AF_INET
    probe = ("2001:db8::1", 9) if family == socket.AF_INET6 else ("192.0.2.1", 9)
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect(probe)  # UDP connect sends nothing; it only picks the route
            address = str(sock.getsockname()[0])
    except OSError:
        address = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    log.warning(
        "SIP bound to %s without SIP_PUBLIC_HOST: advertising %s in Contact and SDP",
        bind_host,
        address,
    )
    return address
