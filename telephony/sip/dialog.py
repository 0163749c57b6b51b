"""One call as the user agent server sees it: its dialog (RFC 3261 §12) and its life cycle.

`Dialog` holds what identifies the call and what the gateway needs to send requests in it (the
BYE): tags, remote target, route set, CSeq counters. `Call` holds where the call stands, as two
state machines with one table each:

- the call itself (`_CALL`): offered (INVITE received, 100 sent), ringing, answered (2xx sent,
  waiting for the ACK), confirmed, ended;
- a re-INVITE on a confirmed call (`_REINVITE`): idle, offered to the application, answered
  (2xx sent, waiting for its ACK).

A (state, input) pair missing from a table is an operation that does not fit the call: the
endpoint raises `CallOperationError` when the application asked for it, and ignores it (or
answers with an error status) when the network did.

`Reliable2xx` is the retransmission of a 2xx to an INVITE, which belongs to the UAS core rather
than to the transaction (§13.3.1.4): resent at T1, 2*T1, 4*T1... capped at T2 until the ACK
arrives, given up after 64*T1.

Pure state, no I/O: the endpoint drives all of it and does the sending.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum, auto
from typing import Final

from telephony.sip.headers import format_host, parse_name_addr, parse_uri
from telephony.sip.message import DEFAULT_PORT, Address, Headers, SipRequest
from telephony.sip.transaction import DEFAULT_TIMERS, SipTimers, TransactionKey

__all__ = [
    "Call",
    "CallErrorKind",
    "CallInput",
    "CallOperationError",
    "CallState",
    "Dialog",
    "EndReason",
    "ReInviteState",
    "Reliable2xx",
]


class CallState(Enum):
    OFFERED = auto()  # INVITE received, 100 sent, waiting for the application
    RINGING = auto()  # 180 sent
    ANSWERED = auto()  # 2xx sent, waiting for the ACK
    CONFIRMED = auto()  # ACK received: media flows
    ENDED = auto()  # BYE, CANCEL, rejection or hang-up: kept a while to absorb stragglers


class ReInviteState(Enum):
    IDLE = auto()
    OFFERED = auto()  # re-INVITE passed to the application, no final response yet
    ANSWERED = auto()  # 2xx sent, waiting for its ACK


class CallInput(Enum):
    # from the application
    RING = auto()
    ANSWER = auto()
    REJECT = auto()
    HANGUP = auto()
    ANSWER_REINVITE = auto()
    REJECT_REINVITE = auto()
    # from the network or the clock
    CANCEL = auto()
    BYE = auto()
    ACK = auto()
    NO_ACK = auto()
    REINVITE = auto()


class EndReason(StrEnum):
    BYE = "bye"  # the caller hung up
    CANCELLED = "cancelled"  # the caller gave up before the answer
    NO_ACK = "no_ack"  # the 2xx was never acknowledged (§13.3.1.4): BYE sent
    HANGUP = "hangup"  # the application hung up (BYE, or 480 before the answer)
    REJECTED = "rejected"  # the application answered with a 300-699


_C = CallState
_I = CallInput

_CALL: Final[dict[tuple[CallState, CallInput], CallState]] = {
    (_C.OFFERED, _I.RING): _C.RINGING,
    (_C.OFFERED, _I.ANSWER): _C.ANSWERED,
    (_C.OFFERED, _I.REJECT): _C.ENDED,
    (_C.OFFERED, _I.HANGUP): _C.ENDED,
    (_C.OFFERED, _I.CANCEL): _C.ENDED,
    (_C.OFFERED, _I.BYE): _C.ENDED,  # BYE on the early dialog (§15.1.2): 487 to the INVITE
    (_C.RINGING, _I.RING): _C.RINGING,
    (_C.RINGING, _I.ANSWER): _C.ANSWERED,
    (_C.RINGING, _I.REJECT): _C.ENDED,
    (_C.RINGING, _I.HANGUP): _C.ENDED,
    (_C.RINGING, _I.CANCEL): _C.ENDED,
    (_C.RINGING, _I.BYE): _C.ENDED,
    (_C.ANSWERED, _I.ACK): _C.CONFIRMED,
    (_C.ANSWERED, _I.NO_ACK): _C.ENDED,
    (_C.ANSWERED, _I.BYE): _C.ENDED,  # the ACK was lost or overtaken
    (_C.ANSWERED, _I.HANGUP): _C.ENDED,  # BYE waits for the ACK (§15)
    (_C.CONFIRMED, _I.BYE): _C.ENDED,
    (_C.CONFIRMED, _I.HANGUP): _C.ENDED,
    (_C.CONFIRMED, _I.NO_ACK): _C.ENDED,  # a re-INVITE's 2xx was never acknowledged
}

_R = ReInviteState

_REINVITE: Final[dict[tuple[ReInviteState, CallInput], ReInviteState]] = {
    (_R.IDLE, _I.REINVITE): _R.OFFERED,
    (_R.OFFERED, _I.ANSWER_REINVITE): _R.ANSWERED,
    (_R.OFFERED, _I.REJECT_REINVITE): _R.IDLE,
    (_R.OFFERED, _I.CANCEL): _R.IDLE,
    (_R.OFFERED, _I.BYE): _R.IDLE,
    (_R.OFFERED, _I.HANGUP): _R.IDLE,
    (_R.ANSWERED, _I.ACK): _R.IDLE,
    (_R.ANSWERED, _I.NO_ACK): _R.IDLE,
    (_R.ANSWERED, _I.BYE): _R.IDLE,
    (_R.ANSWERED, _I.HANGUP): _R.IDLE,
}


class CallErrorKind(StrEnum):
    UNKNOWN_CALL = "unknown_call"  # no such Call-ID (never seen, or long gone)
    WRONG_STATE = "wrong_state"  # the operation does not fit where the call stands
    BAD_ARGUMENT = "bad_argument"


class CallOperationError(Exception):
    """The application asked for something the call cannot do now. Nothing was changed."""

    def __init__(self, kind: CallErrorKind, detail: str) -> None:
        super().__init__(kind, detail)
        self.kind = kind
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.detail}"


@dataclass(slots=True)
class Dialog:
    """§12.1.1, the UAS side: built from the INVITE and the tag the gateway chose."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_party: str  # the INVITE's To plus our tag: From of the requests we send
    remote_party: str  # the INVITE's From: To of the requests we send
    remote_target: str  # the caller's Contact URI, refreshed by re-INVITEs (§12.2.2)
    route_set: tuple[str, ...]  # the INVITE's Record-Route values, in order
    remote_cseq: int
    source: Address  # where the INVITE came from
    symmetric: bool  # the caller asked for rport: it listens where it sends from
    local_cseq: int = 0  # §12.1.1: empty for the UAS until it sends a request

    @classmethod
    def from_invite(cls, invite: SipRequest, local_tag: str, source: Address) -> Dialog:
        contact = invite.contact
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=invite.from_tag or "",
            local_party=f"{invite.headers.get('To')};tag={local_tag}",
            remote_party=invite.headers.get("From") or "",
            remote_target=contact.uri if contact is not None else invite.uri,
            route_set=tuple(invite.headers.get_all("Record-Route")),
            remote_cseq=invite.cseq.number,
            source=source,
            symmetric=invite.top_via.has_rport,
        )

    def matches(self, request: SipRequest) -> bool:
        """§12.2.2: same Call-ID, our tag in To, theirs in From."""
        return (
            request.call_id == self.call_id
            and request.to_tag == self.local_tag
            and (request.from_tag or "") == self.remote_tag
        )

    def refresh_target(self, request: SipRequest) -> None:
        """A re-INVITE is a target refresh request (§12.2.2): its Contact replaces ours."""
        contact = request.contact
        if contact is not None:
            self.remote_target = contact.uri

    def new_request(
        self,
        method: str,
        *,
        host: str,
        port: int,
        branch: str,
        contact: str,
        user_agent: str | None = None,
    ) -> SipRequest:
        """A request within the dialog (§12.2.1.1), CSeq one above the last we sent."""
        self.local_cseq += 1
        uri = self.remote_target
        routes = list(self.route_set)
        if routes and not _is_loose(routes[0]):
            # Strict routing (RFC 2543 proxies): the first route becomes the Request-URI and the
            # remote target goes last in the Route set.
            uri = parse_name_addr(routes[0]).uri
            routes = [*routes[1:], f"<{self.remote_target}>"]
        headers: list[tuple[str, str]] = [
            ("Via", f"SIP/2.0/UDP {format_host(host, port)};branch={branch};rport"),
            ("Max-Forwards", "70"),
            ("From", self.local_party),
            ("To", self.remote_party),
            ("Call-ID", self.call_id),
            ("CSeq", f"{self.local_cseq} {method}"),
            *(("Route", route) for route in routes),
            ("Contact", contact),
        ]
        if user_agent:
            headers.append(("User-Agent", user_agent))
        return SipRequest(method, uri, Headers(headers))

    def destination(self) -> Address:
        """Where requests in the dialog go over UDP.

        The first route when there is a route set (a proxy recorded itself), else the remote
        target; but a caller that asked for rport is reached where it sent from, since behind a
        NAT its Contact is often a private address. A host name comes back unresolved: the I/O
        layer resolves it.
        """
        if not self.route_set and self.symmetric:
            return self.source
        target = parse_name_addr(self.route_set[0]).uri if self.route_set else self.remote_target
        try:
            uri = parse_uri(target)
        except ValueError:
            return self.source
        return uri.host, uri.port or DEFAULT_PORT


def _is_loose(route: str) -> bool:
    try:
        return parse_uri(parse_name_addr(route).uri).loose_route
    except ValueError:
        return True


class Reliable2xx:
    """§13.3.1.4: a 2xx to an INVITE, resent until its ACK arrives or 64*T1 has passed."""

    __slots__ = ("_give_up_at", "_interval", "_next_at", "_timers", "addr", "cseq", "data")

    def __init__(
        self, data: bytes, addr: Address, cseq: int, now: float, timers: SipTimers = DEFAULT_TIMERS
    ) -> None:
        self.data = data
        self.addr = addr
        self.cseq = cseq  # the ACK for this 2xx carries the INVITE's CSeq number
        self._timers = timers
        self._interval = timers.t1
        self._next_at = now + timers.t1
        self._give_up_at = now + timers.timeout

    def deadline(self) -> float:
        return min(self._next_at, self._give_up_at)

    def fire(self, now: float) -> bool:
        """True: resend `data` now. False: 64*T1 passed without an ACK; stop."""
        if now >= self._give_up_at:
            return False
        self._interval = min(2 * self._interval, self._timers.t2)
        self._next_at = now + self._interval
        return True


class Call:
    """One incoming call: its dialog, both state machines and what is pending on them."""

    __slots__ = (
        "bye_on_ack",
        "dialog",
        "end_reason",
        "invite_key",
        "linger_until",
        "pending_2xx",
        "reinvite",
        "reinvite_key",
        "state",
    )

    def __init__(self, dialog: Dialog, invite_key: TransactionKey) -> None:
        self.dialog = dialog
        self.invite_key = invite_key
        self.state = CallState.OFFERED
        self.reinvite = ReInviteState.IDLE
        self.reinvite_key: TransactionKey | None = None
        self.pending_2xx: Reliable2xx | None = None
        # Hung up before the ACK: §15 holds the BYE until the ACK (or the 2xx gives up).
        self.bye_on_ack = False
        self.end_reason: EndReason | None = None
        self.linger_until: float | None = None

    @property
    def call_id(self) -> str:
        return self.dialog.call_id

    def advance(self, event: CallInput) -> bool:
        """Apply `event` to the call machine; False (and no change) when it does not fit."""
        next_state = _CALL.get((self.state, event))
        if next_state is None:
            return False
        self.state = next_state
        return True

    def allows_reinvite(self, event: CallInput) -> bool:
        return self.state is CallState.CONFIRMED and (self.reinvite, event) in _REINVITE

    def advance_reinvite(self, event: CallInput) -> bool:
        next_state = _REINVITE.get((self.reinvite, event))
        if next_state is None:
            return False
        self.reinvite = next_state
        if next_state is ReInviteState.IDLE:
            self.reinvite_key = None
        return True

    def deadline(self) -> float | None:
        if self.pending_2xx is not None:
            return self.pending_2xx.deadline()
        return self.linger_until
