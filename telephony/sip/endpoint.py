"""`SipEndpoint`: the gateway's SIP user agent server over UDP, as a sans-I/O connection object.

The shape is h11's and aioquic's. Datagrams go in with `receive_datagram(data, addr, now)`;
typed events come out of `next_event()`; bytes to send come out of `datagrams_to_send(now)` as
(datagram, address) pairs; one timer is exposed as `get_timer()` (an absolute time on the same
clock as `now`, or None) and serviced by `handle_timer(now)`. The application answers calls with
`ringing`, `answer`, `reject`, `hangup`, `answer_reinvite` and `reject_reinvite`. An asyncio
adapter calls `datagrams_to_send` and re-arms the timer after every one of these.

Application calls do not take a clock: they change the call's state at once (so a second
`answer` fails straight away), and the sending, with the timers it starts, happens at the next
call that brings `now` (`datagrams_to_send`, `receive_datagram` or `handle_timer`), before
anything else is processed. While such work waits, `get_timer()` returns 0.0: due now.

Behaviour, RFC 3261 as a UAS:

- INVITE: 100 Trying at once and `IncomingCall`; then 180 (`ringing`), a 200 with SDP and a
  Contact (`answer`) retransmitted until the ACK (§13.3.1.4; no ACK after 64*T1: BYE and
  `CallEnded(no_ack)`), or a 300-699 (`reject`, with Retry-After if given).
- ACK for the 2xx: `CallEstablished`, carrying the ACK's SDP when the INVITE had no offer.
- BYE: 200 and `CallEnded(bye)`. CANCEL before the final response: 200 to the CANCEL, 487 to
  the INVITE, `CallEnded(cancelled)`. OPTIONS: 200 with Allow.
- re-INVITE on a confirmed call: `ReInvite`; `answer_reinvite` (2xx, reliable like the first)
  or `reject_reinvite`; the ACK gives `ReInviteAcked`.
- 481 for a request in an unknown dialog, 405 with Allow for other methods, 416 for a non-SIP
  Request-URI, 420 for a Require we do not support, 415 for a non-SDP body, 500 with Retry-After
  for an INVITE overlapping another (§14.2), 482 for an INVITE reusing a live Call-ID.
- Retransmitted requests are answered by their transaction and never reach the application
  twice. Responses follow the top Via with received/rport (§18.2.2, RFC 3581).
- A malformed datagram is answered 400 when Via, Call-ID and CSeq could be read (never for an
  ACK), else dropped; either way a `ProtocolError` event says what was wrong. Nothing the
  network sends raises out of `receive_datagram`.

Every `IncomingCall` is followed by exactly one `CallEnded`, whoever ends the call.
"""

from __future__ import annotations

import logging
import secrets
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from telephony.sip.dialog import (
    Call,
    CallErrorKind,
    CallInput,
    CallOperationError,
    CallState,
    Dialog,
    EndReason,
    ReInviteState,
    Reliable2xx,
)
from telephony.sip.headers import format_host, parse_uri, parse_via, split_values
from telephony.sip.message import (
    Address,
    SipErrorKind,
    SipParseError,
    SipRequest,
    SipResponse,
    apply_rport,
    build_response,
    new_branch,
    new_tag,
    parse_message,
    response_address,
)
from telephony.sip.transaction import (
    DEFAULT_TIMERS,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    SipTimers,
    TransactionKey,
    cancelled_key,
    client_transaction_key,
    transaction_key,
)

__all__ = [
    "ALLOWED_METHODS",
    "CallEnded",
    "CallEstablished",
    "IncomingCall",
    "ProtocolError",
    "ReInvite",
    "ReInviteAcked",
    "ReInviteCancelled",
    "SipEndpoint",
    "SipEvent",
]

logger = logging.getLogger(__name__)

ALLOWED_METHODS: Final = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS")
_ALLOW: Final = ", ".join(ALLOWED_METHODS)
_SDP: Final = "application/sdp"
# §14.2: "a Retry-After header field with a randomly chosen value of between 0 and 10 seconds".
_RETRY_AFTER_MAX: Final = 10


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IncomingCall:
    call_id: str
    from_uri: str
    to_uri: str
    request_uri_user: str | None  # the dialled number: what calls are routed on
    sdp_offer: bytes | None  # None for an INVITE without SDP: `answer` then sends the offer
    remote_addr: Address  # where the INVITE came from


@dataclass(frozen=True, slots=True)
class CallEstablished:
    call_id: str
    sdp: bytes | None  # the ACK's body: the answer, when the 200 carried the offer


@dataclass(frozen=True, slots=True)
class CallEnded:
    call_id: str
    reason: EndReason


@dataclass(frozen=True, slots=True)
class ReInvite:
    call_id: str
    sdp: bytes | None  # None: the caller wants an offer in `answer_reinvite`


@dataclass(frozen=True, slots=True)
class ReInviteAcked:
    call_id: str
    sdp: bytes | None  # the answer, when the re-INVITE had no offer


@dataclass(frozen=True, slots=True)
class ReInviteCancelled:
    call_id: str


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """Something the peer sent that breaks the protocol. `status` is what it was answered with
    (400, 481, 500), or None when the datagram was dropped."""

    kind: SipErrorKind
    detail: str
    remote_addr: Address
    call_id: str | None = None
    status: int | None = None


SipEvent = (
    IncomingCall
    | CallEstablished
    | CallEnded
    | ReInvite
    | ReInviteAcked
    | ReInviteCancelled
    | ProtocolError
)

_ServerTransaction = InviteServerTransaction | NonInviteServerTransaction


class SipEndpoint:
    """The gateway's user agent server on one UDP socket. See the module docstring."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        user: str = "gateway",
        user_agent: str | None = "voice-gateway",
        timers: SipTimers = DEFAULT_TIMERS,
    ) -> None:
        """`host` and `port` are what peers reach us at: written into Via and Contact."""
        self.host = host
        self.port = port
        self.timers = timers
        self.user_agent = user_agent
        self.contact = f"<sip:{user}@{format_host(host, port)}>"
        self._events: deque[SipEvent] = deque()
        self._outbox: list[tuple[bytes, Address]] = []
        self._later_work: list[Callable[[float], None]] = []
        self._server_tx: dict[TransactionKey, _ServerTransaction] = {}
        self._client_tx: dict[TransactionKey, NonInviteClientTransaction] = {}
        self._calls: dict[str, Call] = {}

    # -- the connection interface --------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: tuple[Any, ...], now: float) -> None:
        """Take in one UDP datagram from `addr` (an IPv6 4-tuple is fine)."""
        source: Address = (str(addr[0]), int(addr[1]))
        self._run_later(now)
        if not data.strip(b" \t\r\n"):
            return  # CRLF keep-alive (RFC 5626 §4.4.1): nothing to answer
        try:
            self._receive(data, source, now)
        except Exception as exc:  # a bug here must not take down the other calls
            logger.exception("SIP datagram from %s:%s crashed the handler", *source)
            self._events.append(
                ProtocolError(SipErrorKind.INTERNAL, f"{type(exc).__name__}: {exc}", source)
            )

    def next_event(self) -> SipEvent | None:
        return self._events.popleft() if self._events else None

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        self._run_later(now)
        out, self._outbox = self._outbox, []
        return out

    def get_timer(self) -> float | None:
        """When `handle_timer` is next due, on the `now` clock; None when nothing is pending."""
        if self._later_work:
            return 0.0
        deadlines = [
            d
            for d in (
                *(tx.deadline() for tx in self._server_tx.values()),
                *(tx.deadline() for tx in self._client_tx.values()),
                *(call.deadline() for call in self._calls.values()),
            )
            if d is not None
        ]
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> None:
        self._run_later(now)
        for key, tx in list(self._server_tx.items()):
            self._fire(tx, now)
            if tx.terminated:
                del self._server_tx[key]
        for key, client in list(self._client_tx.items()):
            self._fire(client, now)
            if client.terminated:
                del self._client_tx[key]
        for call_id, call in list(self._calls.items()):
            pending = call.pending_2xx
            if pending is not None and pending.deadline() <= now:
                if pending.fire(now):
                    self._send(pending.data, pending.addr)
                else:
                    call.pending_2xx = None
                    self._no_ack(call, now)
            if (
                call.state is CallState.ENDED
                and call.pending_2xx is None
                and call.linger_until is not None
                and call.linger_until <= now
            ):
                del self._calls[call_id]

    def call_state(self, call_id: str) -> CallState | None:
        call = self._calls.get(call_id)
        return call.state if call is not None else None

    # -- the application's operations ----------------------------------------------------------

    def ringing(self, call_id: str) -> None:
        """Send 180 Ringing."""
        call = self._call(call_id)
        self._advance(call, CallInput.RING, "ringing")
        self._later(lambda now: self._respond_invite(call, 180, now))

    def answer(self, call_id: str, sdp_answer: bytes) -> None:
        """Send 200 OK with `sdp_answer` (the offer, when the INVITE had none) and a Contact,
        retransmitted until the ACK."""
        call = self._call(call_id)
        self._advance(call, CallInput.ANSWER, "answer")
        self._later(lambda now: self._send_2xx(call, call.invite_key, sdp_answer, now))

    def reject(
        self, call_id: str, status: int, reason: str | None = None, retry_after: int | None = None
    ) -> None:
        """Answer the INVITE with a final 300-699 (403, 486, 503 + Retry-After when draining)."""
        if not 300 <= status <= 699:
            raise CallOperationError(
                CallErrorKind.BAD_ARGUMENT, f"reject needs a 300-699 status, got {status}"
            )
        if retry_after is not None and retry_after < 0:
            raise CallOperationError(CallErrorKind.BAD_ARGUMENT, "retry_after must be >= 0")
        call = self._call(call_id)
        self._advance(call, CallInput.REJECT, "reject")
        extra = [("Retry-After", str(retry_after))] if retry_after is not None else []
        self._later(lambda now: self._respond_invite(call, status, now, reason, extra))
        self._end(call, EndReason.REJECTED, None)

    def hangup(self, call_id: str) -> None:
        """End the call from our side: BYE once answered (held until the ACK, §15), 480 before.

        Hanging up a call that already ended does nothing: the caller may have beaten us to it.
        """
        call = self._call(call_id)
        if call.state is CallState.ENDED:
            return
        before = call.state
        self._advance(call, CallInput.HANGUP, "hangup")
        reinvite_pending = call.reinvite is ReInviteState.OFFERED
        reinvite_key = call.reinvite_key
        call.advance_reinvite(CallInput.HANGUP)
        if before in (CallState.OFFERED, CallState.RINGING):
            self._later(lambda now: self._respond_invite(call, 480, now))
        elif before is CallState.ANSWERED:
            call.bye_on_ack = True
        else:

            def bye(now: float) -> None:
                if reinvite_pending and reinvite_key is not None:
                    self._respond_key(reinvite_key, 487, now, call.dialog.local_tag)
                call.pending_2xx = None  # a re-INVITE's 2xx: the BYE supersedes it
                self._send_bye(call, now)

            self._later(bye)
        self._end(call, EndReason.HANGUP, None)

    def answer_reinvite(self, call_id: str, sdp: bytes) -> None:
        """Accept a re-INVITE with 200 OK and `sdp`, retransmitted until its ACK."""
        call = self._call(call_id)
        key = call.reinvite_key
        if not call.allows_reinvite(CallInput.ANSWER_REINVITE) or key is None:
            raise self._wrong_state(call, "answer_reinvite")
        call.advance_reinvite(CallInput.ANSWER_REINVITE)
        self._later(lambda now: self._send_2xx(call, key, sdp, now))

    def reject_reinvite(self, call_id: str, status: int = 488, reason: str | None = None) -> None:
        """Refuse a re-INVITE (488 Not Acceptable Here by default); the call goes on as it was."""
        if not 300 <= status <= 699:
            raise CallOperationError(
                CallErrorKind.BAD_ARGUMENT, f"reject_reinvite needs a 300-699 status, got {status}"
            )
        call = self._call(call_id)
        key = call.reinvite_key
        if not call.allows_reinvite(CallInput.REJECT_REINVITE) or key is None:
            raise self._wrong_state(call, "reject_reinvite")
        call.advance_reinvite(CallInput.REJECT_REINVITE)
        self._later(lambda now: self._respond_key(key, status, now, call.dialog.local_tag, reason))

    # -- inbound -------------------------------------------------------------------------------

    def _receive(self, data: bytes, source: Address, now: float) -> None:
        try:
            message = parse_message(data)
        except SipParseError as err:
            self._malformed(err, source, now)
            return
        if isinstance(message, SipResponse):
            self._on_response(message, now)
            return
        request = apply_rport(message, source)
        if request.method == "ACK":
            self._on_ack(request, now)
            return
        key = transaction_key(request)
        tx = self._server_tx.get(key)
        if tx is not None:
            resend = tx.receive_request(now)  # a retransmission: answered, never passed up
            if resend is not None:
                self._send(resend, tx.addr)
            return
        self._on_request(request, key, source, now)

    def _malformed(self, err: SipParseError, source: Address, now: float) -> None:
        partial = err.partial
        status: int | None = None
        call_id: str | None = None
        if partial is not None:
            call_id = partial.headers.get("Call-ID")
            if partial.method != "ACK" and _answerable(partial):
                request = apply_rport(partial, source)
                warning = _warning(self.host, err.detail)
                response = build_response(
                    request,
                    400,
                    to_tag=new_tag(),
                    headers=[("Warning", warning), *self._server_header()],
                )
                self._send(response.serialize(), response_address(request))
                status = 400
        self._events.append(ProtocolError(err.kind, err.detail, source, call_id, status))

    def _on_response(self, response: SipResponse, now: float) -> None:
        branch = response.top_via.branch
        if branch is None:
            return
        key = client_transaction_key(branch, response.cseq.method)
        client = self._client_tx.get(key)
        if client is None:
            return  # a late retransmission, or not ours: responses are never answered
        # The only requests we send are BYEs; their outcome changes nothing for the call,
        # which ended when the BYE was decided.
        client.receive_response(response, now)
        if client.terminated:
            del self._client_tx[key]

    def _on_request(
        self, request: SipRequest, key: TransactionKey, source: Address, now: float
    ) -> None:
        addr = response_address(request)
        tx: _ServerTransaction
        if request.method == "INVITE":
            tx = InviteServerTransaction(request, addr, self.timers)
        else:
            tx = NonInviteServerTransaction(request, addr, self.timers)
        self._server_tx[key] = tx
        method = request.method
        if method not in ALLOWED_METHODS:
            self._respond(tx, 405, now, new_tag(), headers=[("Allow", _ALLOW)])
            return
        try:
            parse_uri(request.uri)
        except ValueError:
            self._respond(tx, 416, now, new_tag())
            return
        if method != "CANCEL":
            required = [
                opt for value in request.headers.get_all("Require") for opt in split_values(value)
            ]
            if required:  # no extension is supported (no 100rel, no timer)
                self._respond(
                    tx, 420, now, new_tag(), headers=[("Unsupported", ", ".join(required))]
                )
                return
        if method == "CANCEL":
            self._on_cancel(tx, request, now)
            return
        if request.to_tag is not None:
            call = self._calls.get(request.call_id)
            if call is None or not call.dialog.matches(request):
                self._respond(tx, 481, now, None)
                self._events.append(
                    ProtocolError(
                        SipErrorKind.UNKNOWN_DIALOG,
                        f"{method} for a dialog that does not exist",
                        source,
                        request.call_id,
                        481,
                    )
                )
                return
            self._on_in_dialog(call, tx, request, source, now)
            return
        if method == "INVITE":
            self._on_invite(tx, request, source, now)
        elif method == "OPTIONS":
            self._respond_options(tx, now, new_tag())
        else:  # a BYE without a To tag cannot name a dialog
            self._respond(tx, 481, now, new_tag())

    def _on_invite(
        self, tx: _ServerTransaction, request: SipRequest, source: Address, now: float
    ) -> None:
        call_id = request.call_id
        if call_id in self._calls:
            # §8.2.2.2: the same request by another path (a fork merging back), or a peer
            # reusing a live Call-ID: either way not a new call.
            self._respond(tx, 482, now, new_tag())
            return
        if request.contact is None:
            # §8.1.1.8: without a Contact there is nowhere to send the BYE.
            self._respond(tx, 400, now, new_tag(), reason="Missing Contact")
            self._events.append(
                ProtocolError(
                    SipErrorKind.MISSING_HEADER, "INVITE without Contact", source, call_id, 400
                )
            )
            return
        if not self._acceptable_body(tx, request, now):
            return
        call = Call(Dialog.from_invite(request, new_tag(), source), tx.key)
        self._calls[call_id] = call
        self._respond(tx, 100, now, None)  # §17.2.1: at once, to stop the INVITE retransmissions
        self._events.append(
            IncomingCall(
                call_id=call_id,
                from_uri=request.from_.uri,
                to_uri=request.to.uri,
                request_uri_user=parse_uri(request.uri).user,
                sdp_offer=request.body or None,
                remote_addr=source,
            )
        )

    def _on_in_dialog(
        self,
        call: Call,
        tx: _ServerTransaction,
        request: SipRequest,
        source: Address,
        now: float,
    ) -> None:
        dialog = call.dialog
        cseq = request.cseq.number
        if cseq < dialog.remote_cseq:
            # §12.2.2: a request older than one already seen is out of order.
            self._respond(tx, 500, now, None, reason="Out Of Order")
            self._events.append(
                ProtocolError(
                    SipErrorKind.OUT_OF_ORDER,
                    f"{request.method} CSeq {cseq} below {dialog.remote_cseq}",
                    source,
                    call.call_id,
                    500,
                )
            )
            return
        dialog.remote_cseq = cseq
        if request.method == "BYE":
            self._on_bye(call, tx, now)
        elif call.state is CallState.ENDED:
            self._respond(tx, 481, now, None)
        elif request.method == "INVITE":
            self._on_reinvite(call, tx, request, now)
        else:
            self._respond_options(tx, now, None)

    def _on_bye(self, call: Call, tx: _ServerTransaction, now: float) -> None:
        self._respond(tx, 200, now, None)
        if call.state is CallState.ENDED:
            return  # our BYE crossed theirs, or a new BYE after the end: 200 is all it needs
        if call.state in (CallState.OFFERED, CallState.RINGING):
            # §15.1.2: requests pending on the dialog still get an answer.
            self._respond_key(call.invite_key, 487, now, call.dialog.local_tag)
        if call.reinvite is ReInviteState.OFFERED and call.reinvite_key is not None:
            self._respond_key(call.reinvite_key, 487, now, call.dialog.local_tag)
        call.advance_reinvite(CallInput.BYE)
        call.pending_2xx = None
        call.bye_on_ack = False
        call.advance(CallInput.BYE)
        self._end(call, EndReason.BYE, now)

    def _on_reinvite(
        self, call: Call, tx: _ServerTransaction, request: SipRequest, now: float
    ) -> None:
        if not call.allows_reinvite(CallInput.REINVITE):
            # §14.2: an INVITE while another is unanswered or unacknowledged.
            retry = str(secrets.randbelow(_RETRY_AFTER_MAX + 1))
            self._respond(tx, 500, now, None, headers=[("Retry-After", retry)])
            return
        if not self._acceptable_body(tx, request, now):
            return
        call.dialog.refresh_target(request)
        call.advance_reinvite(CallInput.REINVITE)
        call.reinvite_key = tx.key
        self._respond(tx, 100, now, None)
        self._events.append(ReInvite(call.call_id, request.body or None))

    def _on_cancel(self, tx: _ServerTransaction, request: SipRequest, now: float) -> None:
        invite_tx = self._server_tx.get(cancelled_key(request))
        call = self._calls.get(request.call_id)
        if not isinstance(invite_tx, InviteServerTransaction):
            self._respond(tx, 481, now, new_tag())
            return
        # §9.2: the same To tag as the INVITE's responses.
        tag = call.dialog.local_tag if call is not None else new_tag()
        self._respond(tx, 200, now, tag)
        if invite_tx.final_sent:
            return  # too late: the INVITE has its final response, the CANCEL changes nothing
        self._respond(invite_tx, 487, now, tag)
        if call is None:
            return
        if invite_tx.key == call.invite_key and call.advance(CallInput.CANCEL):
            self._end(call, EndReason.CANCELLED, now)
        elif invite_tx.key == call.reinvite_key and call.advance_reinvite(CallInput.CANCEL):
            self._events.append(ReInviteCancelled(call.call_id))

    def _on_ack(self, request: SipRequest, now: float) -> None:
        tx = self._server_tx.get(transaction_key(request))
        if isinstance(tx, InviteServerTransaction) and not tx.receive_ack(now):
            return  # the ACK for a non-2xx: it only stops the transaction's retransmissions
        call = self._calls.get(request.call_id)
        if call is None or not call.dialog.matches(request):
            return  # a stray or late ACK: ACKs are never answered
        pending = call.pending_2xx
        if pending is None or request.cseq.number != pending.cseq:
            return  # a retransmitted ACK
        call.pending_2xx = None
        sdp = request.body or None
        if call.state is CallState.ANSWERED:
            call.advance(CallInput.ACK)
            self._events.append(CallEstablished(call.call_id, sdp))
        elif call.state is CallState.CONFIRMED and call.advance_reinvite(CallInput.ACK):
            self._events.append(ReInviteAcked(call.call_id, sdp))
        if call.bye_on_ack:
            call.bye_on_ack = False
            self._send_bye(call, now)

    def _no_ack(self, call: Call, now: float) -> None:
        """§13.3.1.4: 64*T1 without an ACK for our 2xx: the session ends with a BYE."""
        call.bye_on_ack = False
        call.advance_reinvite(CallInput.NO_ACK)
        was_live = call.advance(CallInput.NO_ACK)
        self._send_bye(call, now)
        if was_live:
            self._end(call, EndReason.NO_ACK, now)

    # -- outbound ------------------------------------------------------------------------------

    def _send(self, data: bytes, addr: Address) -> None:
        self._outbox.append((data, addr))

    def _respond(
        self,
        tx: _ServerTransaction,
        status: int,
        now: float,
        to_tag: str | None,
        *,
        reason: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> bytes:
        response = build_response(
            tx.request,
            status,
            reason,
            to_tag=to_tag if status > 100 else None,  # §17.2.1: no tag on 100 Trying
            headers=[*headers, *self._server_header()],
            body=body,
        )
        data = tx.respond(response, now)
        self._send(data, tx.addr)
        return data

    def _respond_key(
        self,
        key: TransactionKey,
        status: int,
        now: float,
        to_tag: str,
        reason: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        tx = self._server_tx.get(key)
        if tx is not None and not tx.final_sent:
            self._respond(tx, status, now, to_tag, reason=reason, headers=headers)

    def _respond_invite(
        self,
        call: Call,
        status: int,
        now: float,
        reason: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        extra = list(headers)
        if 100 < status < 200:
            # A 18x with a tag creates an early dialog: Contact and Record-Route (§12.1.1).
            extra = [*self._dialog_headers(call.invite_key), *extra]
        self._respond_key(call.invite_key, status, now, call.dialog.local_tag, reason, extra)
        if status >= 300:
            self._linger(call, now)

    def _send_2xx(self, call: Call, key: TransactionKey, sdp: bytes, now: float) -> None:
        tx = self._server_tx.get(key)
        if tx is None or tx.final_sent:
            return
        data = self._respond(
            tx,
            200,
            now,
            call.dialog.local_tag,
            headers=[
                *self._dialog_headers(key),
                ("Allow", _ALLOW),
                ("Content-Type", _SDP),
            ],
            body=sdp,
        )
        call.pending_2xx = Reliable2xx(data, tx.addr, tx.request.cseq.number, now, self.timers)

    def _send_bye(self, call: Call, now: float) -> None:
        request = call.dialog.new_request(
            "BYE",
            host=self.host,
            port=self.port,
            branch=new_branch(),
            contact=self.contact,
            user_agent=self.user_agent,
        )
        client = NonInviteClientTransaction(request, call.dialog.destination(), now, self.timers)
        self._client_tx[client.key] = client
        self._send(client.data, client.addr)
        self._linger(call, now)

    def _respond_options(self, tx: _ServerTransaction, now: float, to_tag: str | None) -> None:
        self._respond(tx, 200, now, to_tag, headers=[("Allow", _ALLOW), ("Accept", _SDP)])

    def _acceptable_body(self, tx: _ServerTransaction, request: SipRequest, now: float) -> bool:
        if request.body and request.content_type != _SDP:
            self._respond(tx, 415, now, new_tag(), headers=[("Accept", _SDP)])
            return False
        return True

    def _dialog_headers(self, key: TransactionKey) -> list[tuple[str, str]]:
        tx = self._server_tx.get(key)
        record_route = tx.request.headers.get_all("Record-Route") if tx is not None else []
        return [("Contact", self.contact), *(("Record-Route", value) for value in record_route)]

    def _server_header(self) -> list[tuple[str, str]]:
        return [("Server", self.user_agent)] if self.user_agent else []

    # -- bookkeeping ---------------------------------------------------------------------------

    def _later(self, work: Callable[[float], None]) -> None:
        self._later_work.append(work)

    def _run_later(self, now: float) -> None:
        while self._later_work:
            work, self._later_work = self._later_work, []
            for item in work:
                item(now)

    def _end(self, call: Call, reason: EndReason, now: float | None) -> None:
        call.end_reason = reason
        if now is not None:
            self._linger(call, now)
        else:
            self._later(lambda at: self._linger(call, at))
        self._events.append(CallEnded(call.call_id, reason))

    def _linger(self, call: Call, now: float) -> None:
        """Keep an ended call 64*T1 past its last message, so late requests on the dialog (a
        crossing BYE, a retransmitted ACK) still find it rather than getting 481."""
        until = now + self.timers.timeout
        if call.linger_until is None or call.linger_until < until:
            call.linger_until = until

    def _fire(self, tx: _ServerTransaction | NonInviteClientTransaction, now: float) -> None:
        deadline = tx.deadline()
        if deadline is not None and deadline <= now:
            for data in tx.handle_timer(now):
                self._send(data, tx.addr)

    def _call(self, call_id: str) -> Call:
        call = self._calls.get(call_id)
        if call is None:
            raise CallOperationError(CallErrorKind.UNKNOWN_CALL, f"no call {call_id[:60]!r}")
        return call

    def _advance(self, call: Call, event: CallInput, operation: str) -> None:
        if not call.advance(event):
            raise self._wrong_state(call, operation)

    def _wrong_state(self, call: Call, operation: str) -> CallOperationError:
        state = call.state.name.lower()
        if call.state is CallState.CONFIRMED:
            state = f"{state}, re-INVITE {call.reinvite.name.lower()}"
        return CallOperationError(
            CallErrorKind.WRONG_STATE, f"cannot {operation} call {call.call_id[:60]!r}: {state}"
        )


def _answerable(request: SipRequest) -> bool:
    """Whether a 400 can be built and addressed (§8.2.6): readable top Via, Call-ID, CSeq."""
    if not request.headers.get("Call-ID") or not request.headers.get("CSeq"):
        return False
    try:
        parse_via(request.headers.get("Via") or "")
    except ValueError:
        return False
    return True


def _warning(host: str, detail: str) -> str:
    # §20.43: 399 is the miscellaneous warning; the text is a quoted string.
    text = "".join(ch if ch.isprintable() and ch not in '"\\' else "?" for ch in detail)[:120]
    return f'399 {format_host(host)} "{text}"'
