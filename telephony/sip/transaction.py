"""SIP transactions over UDP (RFC 3261 §17, with the RFC 6026 "Accepted" state): sans-I/O.

A transaction owns the reliability of one request/response exchange: it resends the last
response when the request is retransmitted, retransmits what UDP may have lost, and gives up on
time. It never touches a socket or a clock: methods take `now` (seconds, any monotonic origin)
and return the bytes to send to `addr`; `deadline()` says when `handle_timer(now)` is next due.

Three machines, each a table below of (state, input) -> (next state, action):

- INVITE server (§17.2.1): Proceeding, then Completed on a 300-699 (Timer G resends it with the
  interval doubling up to T2, Timer H gives up after 64*T1), Confirmed on the ACK (Timer I absorbs
  further ACKs), Terminated. A 2xx moves to Accepted (RFC 6026 §7.1) instead of terminating at
  once, so a retransmitted INVITE is absorbed rather than mistaken for a new call; the 2xx itself
  is retransmitted by the dialog layer until the ACK (§13.3.1.4), since that ACK is not part of
  this transaction.
- Non-INVITE server (§17.2.2): Trying, Proceeding, Completed (Timer J absorbs retransmissions for
  64*T1), Terminated.
- Non-INVITE client (§17.1.2), for the BYE the gateway sends: Timer E retransmits (T1 doubling to
  T2; T2 once a provisional arrived), Timer F gives up after 64*T1, Timer K absorbs retransmitted
  responses for T4.

A pair missing from a table is either ignored (network input, e.g. a stray ACK while still in
Proceeding) or a `TransactionError` (the transaction user asked for something impossible, e.g. a
second final response): local mistakes raise, remote ones never do.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, auto
from typing import ClassVar, Final

from telephony.sip.message import BRANCH_MAGIC, Address, SipRequest, SipResponse

__all__ = [
    "DEFAULT_TIMERS",
    "InviteServerTransaction",
    "NonInviteClientTransaction",
    "NonInviteServerTransaction",
    "SipTimers",
    "TransactionError",
    "TransactionKey",
    "TxState",
    "cancelled_key",
    "client_transaction_key",
    "transaction_key",
]

TransactionKey = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SipTimers:
    """The base timer values of §17.1.1.1/§17.1.2.2 (seconds); every other timer derives from
    them. Tests may shrink them; production keeps the RFC defaults."""

    t1: float = 0.5  # round-trip estimate
    t2: float = 4.0  # longest retransmission interval for non-INVITE requests and INVITE responses
    t4: float = 5.0  # longest a message stays in the network

    @property
    def timeout(self) -> float:
        """64*T1: Timers B, F, H, J and L, and the 2xx-without-ACK limit of §13.3.1.4."""
        return 64 * self.t1


DEFAULT_TIMERS: Final = SipTimers()


class TransactionError(Exception):
    """The transaction user asked for a transition the state machine does not have."""


class TxState(Enum):
    TRYING = auto()
    PROCEEDING = auto()
    COMPLETED = auto()
    CONFIRMED = auto()
    ACCEPTED = auto()  # RFC 6026: a 2xx was sent; absorbing INVITE retransmissions
    TERMINATED = auto()


class _In(Enum):
    REQUEST = auto()  # a retransmission of the transaction's request
    ACK = auto()
    PROVISIONAL = auto()  # 1xx, sent (server) or received (client)
    SUCCESS = auto()  # 2xx
    FAILURE = auto()  # 300-699
    TIMER_E = auto()
    TIMER_F = auto()
    TIMER_G = auto()
    TIMER_H = auto()
    TIMER_I = auto()
    TIMER_J = auto()
    TIMER_K = auto()
    TIMER_L = auto()


class _Do(Enum):
    SEND = auto()  # transmit the new response (and remember it as the last one)
    RESEND = auto()  # transmit the last message again
    ABSORB = auto()  # nothing to send, nothing to pass up
    PASS = auto()  # hand the input to the transaction user
    FAIL = auto()  # tell the transaction user it timed out


_S = TxState
_Table = dict[tuple[TxState, _In], tuple[TxState, _Do]]

# §17.2.1 Figure 7, with RFC 6026's Accepted state replacing "2xx -> Terminated".
_INVITE_SERVER: Final[_Table] = {
    (_S.PROCEEDING, _In.REQUEST): (_S.PROCEEDING, _Do.RESEND),  # latest provisional
    (_S.PROCEEDING, _In.PROVISIONAL): (_S.PROCEEDING, _Do.SEND),
    (_S.PROCEEDING, _In.SUCCESS): (_S.ACCEPTED, _Do.SEND),
    (_S.PROCEEDING, _In.FAILURE): (_S.COMPLETED, _Do.SEND),
    (_S.ACCEPTED, _In.REQUEST): (_S.ACCEPTED, _Do.ABSORB),
    (_S.ACCEPTED, _In.SUCCESS): (_S.ACCEPTED, _Do.SEND),  # the TU's 2xx retransmissions
    (_S.ACCEPTED, _In.ACK): (_S.ACCEPTED, _Do.PASS),  # a peer reusing the branch for its 2xx ACK
    (_S.ACCEPTED, _In.TIMER_L): (_S.TERMINATED, _Do.ABSORB),
    (_S.COMPLETED, _In.REQUEST): (_S.COMPLETED, _Do.RESEND),
    (_S.COMPLETED, _In.TIMER_G): (_S.COMPLETED, _Do.RESEND),
    (_S.COMPLETED, _In.ACK): (_S.CONFIRMED, _Do.ABSORB),
    (_S.COMPLETED, _In.TIMER_H): (_S.TERMINATED, _Do.FAIL),
    (_S.CONFIRMED, _In.REQUEST): (_S.CONFIRMED, _Do.ABSORB),
    (_S.CONFIRMED, _In.ACK): (_S.CONFIRMED, _Do.ABSORB),
    (_S.CONFIRMED, _In.TIMER_I): (_S.TERMINATED, _Do.ABSORB),
}

# §17.2.2 Figure 8.
_NON_INVITE_SERVER: Final[_Table] = {
    (_S.TRYING, _In.REQUEST): (_S.TRYING, _Do.ABSORB),  # nothing sent yet to resend
    (_S.TRYING, _In.PROVISIONAL): (_S.PROCEEDING, _Do.SEND),
    (_S.TRYING, _In.SUCCESS): (_S.COMPLETED, _Do.SEND),
    (_S.TRYING, _In.FAILURE): (_S.COMPLETED, _Do.SEND),
    (_S.PROCEEDING, _In.REQUEST): (_S.PROCEEDING, _Do.RESEND),
    (_S.PROCEEDING, _In.PROVISIONAL): (_S.PROCEEDING, _Do.SEND),
    (_S.PROCEEDING, _In.SUCCESS): (_S.COMPLETED, _Do.SEND),
    (_S.PROCEEDING, _In.FAILURE): (_S.COMPLETED, _Do.SEND),
    (_S.COMPLETED, _In.REQUEST): (_S.COMPLETED, _Do.RESEND),
    (_S.COMPLETED, _In.TIMER_J): (_S.TERMINATED, _Do.ABSORB),
}

# §17.1.2.2 Figure 6.
_NON_INVITE_CLIENT: Final[_Table] = {
    (_S.TRYING, _In.TIMER_E): (_S.TRYING, _Do.RESEND),
    (_S.TRYING, _In.PROVISIONAL): (_S.PROCEEDING, _Do.PASS),
    (_S.TRYING, _In.SUCCESS): (_S.COMPLETED, _Do.PASS),
    (_S.TRYING, _In.FAILURE): (_S.COMPLETED, _Do.PASS),
    (_S.TRYING, _In.TIMER_F): (_S.TERMINATED, _Do.FAIL),
    (_S.PROCEEDING, _In.TIMER_E): (_S.PROCEEDING, _Do.RESEND),
    (_S.PROCEEDING, _In.PROVISIONAL): (_S.PROCEEDING, _Do.PASS),
    (_S.PROCEEDING, _In.SUCCESS): (_S.COMPLETED, _Do.PASS),
    (_S.PROCEEDING, _In.FAILURE): (_S.COMPLETED, _Do.PASS),
    (_S.PROCEEDING, _In.TIMER_F): (_S.TERMINATED, _Do.FAIL),
    (_S.COMPLETED, _In.PROVISIONAL): (_S.COMPLETED, _Do.ABSORB),
    (_S.COMPLETED, _In.SUCCESS): (_S.COMPLETED, _Do.ABSORB),
    (_S.COMPLETED, _In.FAILURE): (_S.COMPLETED, _Do.ABSORB),
    (_S.COMPLETED, _In.TIMER_K): (_S.TERMINATED, _Do.ABSORB),
}


def transaction_key(request: SipRequest) -> TransactionKey:
    """The server transaction a request belongs to (§17.2.3).

    With an RFC 3261 branch: branch, sent-by and method, where an ACK counts as the INVITE it
    acknowledges (so the ACK for a non-2xx finds its transaction) and a CANCEL keeps its own
    method (so it gets its own transaction, while `cancelled_key` finds the INVITE's).
    RFC 2543 peers send no unique branch: their requests are keyed on Call-ID, From tag, CSeq
    number and top Via instead; the To tag and Request-URI are left out because an ACK's To tag
    is the one the gateway added.
    """
    via = request.top_via
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch
    if branch is not None and branch.startswith(BRANCH_MAGIC):
        return (branch, via.sent_by, method)
    cseq = request.cseq.number
    return ("rfc2543", request.call_id, request.from_tag or "", str(cseq), via.serialize(), method)


def cancelled_key(cancel: SipRequest) -> TransactionKey:
    """The key of the INVITE transaction a CANCEL targets (§9.2): the CANCEL's, method INVITE."""
    return (*transaction_key(cancel)[:-1], "INVITE")


def client_transaction_key(branch: str, method: str) -> TransactionKey:
    """§17.1.3: a response matches the client transaction with its top Via branch and CSeq
    method."""
    return (branch, method)


def _response_input(status: int) -> _In:
    if status < 200:
        return _In.PROVISIONAL
    return _In.SUCCESS if status < 300 else _In.FAILURE


class _Transaction:
    """What the three machines share: state, table walk, named timers, the last message."""

    __slots__ = ("_last", "_timers", "addr", "key", "state", "timed_out", "timers")
    _TABLE: ClassVar[_Table]

    def __init__(
        self, key: TransactionKey, addr: Address, state: TxState, timers: SipTimers
    ) -> None:
        self.key = key
        self.addr = addr
        self.state = state
        self.timers = timers
        self.timed_out = False  # Timer H or F fired: the peer never answered
        self._last: bytes | None = None
        self._timers: dict[_In, float] = {}

    @property
    def terminated(self) -> bool:
        return self.state is TxState.TERMINATED

    def deadline(self) -> float | None:
        return min(self._timers.values(), default=None)

    def handle_timer(self, now: float) -> list[bytes]:
        """Fire every timer due by `now`, oldest first; returns what to (re)send to `addr`."""
        out: list[bytes] = []
        while self._timers:
            timer, due = min(self._timers.items(), key=lambda item: item[1])
            if due > now:
                break
            del self._timers[timer]
            step = self._TABLE.get((self.state, timer))
            if step is None:
                continue  # a timer of a state already left
            next_state, action = step
            if action is _Do.RESEND and self._last is not None:
                out.append(self._last)
                self._rearm(timer, now)
            elif action is _Do.FAIL:
                self.timed_out = True
            self._enter(next_state, now)
        return out

    def _step(self, event: _In) -> tuple[TxState, _Do] | None:
        return self._TABLE.get((self.state, event))

    def _enter(self, state: TxState, now: float) -> None:
        if state is self.state:
            return
        self.state = state
        self._timers.clear()  # every timer belongs to the state it was started in
        self._on_enter(state, now)

    def _on_enter(self, state: TxState, now: float) -> None:
        raise NotImplementedError

    def _rearm(self, timer: _In, now: float) -> None:
        """Reset a retransmission timer after it fired."""
        raise NotImplementedError


class _ServerTransaction(_Transaction):
    __slots__ = ("_interval", "request")

    def __init__(
        self,
        request: SipRequest,
        addr: Address,
        timers: SipTimers = DEFAULT_TIMERS,
        *,
        state: TxState,
    ) -> None:
        super().__init__(transaction_key(request), addr, state, timers)
        self.request = request  # after apply_rport: what responses are built from
        self._interval = timers.t1

    @property
    def final_sent(self) -> bool:
        return self.state not in (TxState.TRYING, TxState.PROCEEDING)

    def respond(self, response: SipResponse, now: float) -> bytes:
        """Record a response from the transaction user; returns the bytes to send to `addr`."""
        step = self._step(_response_input(response.status))
        if step is None:
            raise TransactionError(
                f"cannot send {response.status} for {self.request.method} in state "
                f"{self.state.name}"
            )
        data = response.serialize()
        self._last = data
        self._enter(step[0], now)
        return data

    def receive_request(self, now: float) -> bytes | None:
        """A retransmission of the request: the bytes to resend, or None to absorb it."""
        step = self._step(_In.REQUEST)
        if step is None:
            return None
        self._enter(step[0], now)
        return self._last if step[1] is _Do.RESEND else None


class InviteServerTransaction(_ServerTransaction):
    """§17.2.1 with RFC 6026: one incoming INVITE (initial or re-INVITE)."""

    __slots__ = ()
    _TABLE = _INVITE_SERVER

    def __init__(
        self, request: SipRequest, addr: Address, timers: SipTimers = DEFAULT_TIMERS
    ) -> None:
        super().__init__(request, addr, timers, state=TxState.PROCEEDING)

    def receive_ack(self, now: float) -> bool:
        """An ACK matched to this transaction. True when it must go to the transaction user: an
        ACK for a 2xx that reused the INVITE's branch. The ACK for a non-2xx stops Timer G."""
        step = self._step(_In.ACK)
        if step is None:
            return False
        self._enter(step[0], now)
        return step[1] is _Do.PASS

    def _on_enter(self, state: TxState, now: float) -> None:
        t = self.timers
        if state is TxState.COMPLETED:
            self._interval = t.t1
            self._timers[_In.TIMER_G] = now + t.t1
            self._timers[_In.TIMER_H] = now + t.timeout
        elif state is TxState.CONFIRMED:
            self._timers[_In.TIMER_I] = now + t.t4
        elif state is TxState.ACCEPTED:
            self._timers[_In.TIMER_L] = now + t.timeout

    def _rearm(self, timer: _In, now: float) -> None:
        self._interval = min(2 * self._interval, self.timers.t2)
        self._timers[timer] = now + self._interval


class NonInviteServerTransaction(_ServerTransaction):
    """§17.2.2: BYE, CANCEL, OPTIONS and everything answered with an error."""

    __slots__ = ()
    _TABLE = _NON_INVITE_SERVER

    def __init__(
        self, request: SipRequest, addr: Address, timers: SipTimers = DEFAULT_TIMERS
    ) -> None:
        super().__init__(request, addr, timers, state=TxState.TRYING)

    def _on_enter(self, state: TxState, now: float) -> None:
        if state is TxState.COMPLETED:
            self._timers[_In.TIMER_J] = now + self.timers.timeout

    def _rearm(self, timer: _In, now: float) -> None:  # pragma: no cover - no resend timers
        pass


class NonInviteClientTransaction(_Transaction):
    """§17.1.2: a request the gateway sends (BYE), retransmitted until a final response."""

    __slots__ = ("_f_at", "_interval", "method")
    _TABLE = _NON_INVITE_CLIENT

    def __init__(
        self,
        request: SipRequest,
        addr: Address,
        now: float,
        timers: SipTimers = DEFAULT_TIMERS,
    ) -> None:
        branch = request.top_via.branch or ""
        super().__init__(
            client_transaction_key(branch, request.method), addr, TxState.TRYING, timers
        )
        self.method = request.method
        self._last = request.serialize()
        self._interval = timers.t1
        self._f_at = now + timers.timeout  # Timer F runs across Trying and Proceeding
        self._timers[_In.TIMER_E] = now + timers.t1
        self._timers[_In.TIMER_F] = self._f_at

    @property
    def data(self) -> bytes:
        """The request as first sent."""
        assert self._last is not None
        return self._last

    def receive_response(self, response: SipResponse, now: float) -> bool:
        """True when the response is news for the transaction user, False for a retransmission
        or one arriving after the transaction ended."""
        step = self._step(_response_input(response.status))
        if step is None:
            return False
        self._enter(step[0], now)
        return step[1] is _Do.PASS

    def _on_enter(self, state: TxState, now: float) -> None:
        if state is TxState.PROCEEDING:
            # §17.1.2.2: once a provisional arrived, retransmit every T2, still bounded by F.
            self._timers[_In.TIMER_E] = now + self.timers.t2
            self._timers[_In.TIMER_F] = self._f_at
        elif state is TxState.COMPLETED:
            self._timers[_In.TIMER_K] = now + self.timers.t4

    def _rearm(self, timer: _In, now: float) -> None:
        if self.state is TxState.PROCEEDING:
            self._interval = self.timers.t2
        else:
            self._interval = min(2 * self._interval, self.timers.t2)
        self._timers[timer] = now + self._interval
