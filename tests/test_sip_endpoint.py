"""SipEndpoint, the user agent server: recorded SIPp calls replayed, and a tiny UAC built from
the codec wired back to back with it. All time-driven with a fake clock (T1=0.5 s, T2=4 s)."""

from __future__ import annotations

import random

import pytest

from telephony.sip.dialog import CallErrorKind, CallOperationError, CallState, EndReason
from telephony.sip.endpoint import (
    CallEnded,
    CallEstablished,
    IncomingCall,
    ProtocolError,
    ReInvite,
    ReInviteAcked,
    ReInviteCancelled,
    SipEndpoint,
    SipEvent,
)
from telephony.sip.message import (
    Address,
    Headers,
    SipErrorKind,
    SipRequest,
    SipResponse,
    build_response,
    new_branch,
    new_call_id,
    new_tag,
    parse_message,
)
from tests import sip_packets as pkt

GATEWAY = pkt.GATEWAY_ADDR
SIPP = pkt.SIPP_ADDR
ANSWER_SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"


def _endpoint() -> SipEndpoint:
    return SipEndpoint(*GATEWAY)


def _events(ep: SipEndpoint) -> list[SipEvent]:
    out = []
    while (event := ep.next_event()) is not None:
        out.append(event)
    return out


def _incoming(ep: SipEndpoint) -> IncomingCall:
    [event] = _events(ep)
    assert isinstance(event, IncomingCall)
    return event


def _sent(ep: SipEndpoint, now: float) -> list[tuple[SipResponse | SipRequest, Address]]:
    return [(parse_message(data), addr) for data, addr in ep.datagrams_to_send(now)]


def _responses(ep: SipEndpoint, now: float) -> list[SipResponse]:
    out = []
    for message, _ in _sent(ep, now):
        assert isinstance(message, SipResponse)
        out.append(message)
    return out


def _statuses(ep: SipEndpoint, now: float) -> list[int]:
    return [response.status for response in _responses(ep, now)]


def _run_timers(ep: SipEndpoint, end: float) -> list[tuple[float, SipResponse | SipRequest]]:
    """Service the endpoint's timer up to `end`: what went out, and when."""
    out: list[tuple[float, SipResponse | SipRequest]] = []
    while (at := ep.get_timer()) is not None and at <= end:
        ep.handle_timer(at)
        out.extend((at, message) for message, _ in _sent(ep, at))
    return out


def _sipp_call(ep: SipEndpoint, now: float = 0.0) -> str:
    """Replay SIPp's INVITE, answer it, replay its ACK; returns the gateway's To tag."""
    ep.receive_datagram(pkt.UAC_INVITE, SIPP, now)
    call = _events(ep)[0]
    assert isinstance(call, IncomingCall)
    ep.answer(call.call_id, ANSWER_SDP)
    ok = _responses(ep, now)[-1]
    assert ok.status == 200 and ok.to_tag is not None
    ep.receive_datagram(pkt.with_tag(pkt.UAC_ACK, ok.to_tag), SIPP, now + 0.01)
    assert _events(ep) == [CallEstablished(pkt.UAC_CALL_ID, None)]
    assert ep.datagrams_to_send(now + 0.01) == []
    return ok.to_tag


class Uac:
    """A minimal caller built from the codec: enough of a UAC to drive the endpoint."""

    def __init__(self, addr: Address = ("192.0.2.50", 5062), *, rport: bool = False) -> None:
        self.addr = addr
        self.rport = rport
        self.call_id = new_call_id(addr[0])
        self.tag = new_tag()
        self.cseq = 0
        self.remote_tag: str | None = None
        self.invite_branch = ""
        self.invite_cseq = 0

    def _request(
        self, method: str, *, branch: str | None = None, cseq: int | None = None, body: bytes = b""
    ) -> SipRequest:
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        via = f"SIP/2.0/UDP {self.addr[0]}:{self.addr[1]};branch={branch or new_branch()}"
        to = "<sip:+15551230000@gateway.example.com>"
        if self.remote_tag is not None and method != "CANCEL":
            to += f";tag={self.remote_tag}"
        headers = [
            ("Via", via + (";rport" if self.rport else "")),
            ("Max-Forwards", "70"),
            ("From", f'"Caller" <sip:caller@{self.addr[0]}>;tag={self.tag}'),
            ("To", to),
            ("Call-ID", self.call_id),
            ("CSeq", f"{cseq} {method}"),
            ("Contact", f"<sip:caller@{self.addr[0]}:{self.addr[1]}>"),
        ]
        if body:
            headers.append(("Content-Type", "application/sdp"))
        return SipRequest(method, "sip:+15551230000@gateway.example.com", Headers(headers), body)

    def invite(self, sdp: bytes | None = pkt.UAC_SDP) -> bytes:
        self.invite_branch = new_branch()
        request = self._request("INVITE", branch=self.invite_branch, body=sdp or b"")
        self.invite_cseq = request.cseq.number
        return request.serialize()

    def learn(self, response: SipResponse) -> None:
        if response.to_tag is not None:
            self.remote_tag = response.to_tag

    def ack(self, sdp: bytes = b"") -> bytes:
        """The ACK for a 2xx: a transaction of its own (new branch), the INVITE's CSeq."""
        return self._request("ACK", cseq=self.invite_cseq, body=sdp).serialize()

    def ack_failure(self) -> bytes:
        """The ACK for a 300-699: the INVITE's branch."""
        return self._request("ACK", branch=self.invite_branch, cseq=self.invite_cseq).serialize()

    def cancel(self) -> bytes:
        return self._request("CANCEL", branch=self.invite_branch, cseq=self.invite_cseq).serialize()

    def bye(self) -> bytes:
        return self._request("BYE").serialize()

    def reinvite(self, sdp: bytes | None) -> bytes:
        return self.invite(sdp)

    def request(self, method: str) -> bytes:
        return self._request(method).serialize()

    def answer(self, request: SipRequest, status: int = 200) -> bytes:
        return build_response(request, status).serialize()


def _uac_call(ep: SipEndpoint, uac: Uac, now: float = 0.0, sdp: bytes | None = pkt.UAC_SDP) -> str:
    ep.receive_datagram(uac.invite(sdp), uac.addr, now)
    call = _events(ep)[0]
    assert isinstance(call, IncomingCall)
    ep.answer(call.call_id, ANSWER_SDP)
    ok = _responses(ep, now)[-1]
    uac.learn(ok)
    ep.receive_datagram(uac.ack(), uac.addr, now + 0.05)
    assert isinstance(_events(ep)[0], CallEstablished)
    return call.call_id


# -- the recorded SIPp uac call ------------------------------------------------------------------


def test_recorded_sipp_call() -> None:
    ep = _endpoint()
    ep.receive_datagram(pkt.UAC_INVITE, SIPP, 0.0)
    [(trying, addr)] = _sent(ep, 0.0)
    assert isinstance(trying, SipResponse)
    assert (trying.status, addr) == (100, SIPP)  # at once, before the application acts
    assert trying.to_tag is None
    assert _events(ep) == [
        IncomingCall(
            call_id=pkt.UAC_CALL_ID,
            from_uri="sip:sipp@127.0.0.1:5061",
            to_uri="sip:service@127.0.0.1:5070",
            request_uri_user="service",
            sdp_offer=pkt.UAC_SDP,
            remote_addr=SIPP,
        )
    ]
    assert ep.call_state(pkt.UAC_CALL_ID) is CallState.OFFERED

    ep.ringing(pkt.UAC_CALL_ID)
    ep.answer(pkt.UAC_CALL_ID, ANSWER_SDP)
    ringing, ok = _responses(ep, 0.2)
    assert ringing.status == 180 and ok.status == 200
    assert ringing.to_tag == ok.to_tag and ok.to_tag is not None
    assert ringing.headers.get("Contact") == "<sip:gateway@127.0.0.1:5070>"
    assert ok.headers.get("Contact") == "<sip:gateway@127.0.0.1:5070>"
    assert ok.content_type == "application/sdp" and ok.body == ANSWER_SDP
    assert ok.headers.get("Allow") == "INVITE, ACK, BYE, CANCEL, OPTIONS"
    assert ok.headers.get("Via") == "SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-12980-1-0"
    assert ok.cseq.number == 1 and ok.call_id == pkt.UAC_CALL_ID
    assert ep.call_state(pkt.UAC_CALL_ID) is CallState.ANSWERED

    ep.receive_datagram(pkt.with_tag(pkt.UAC_ACK, ok.to_tag), SIPP, 0.3)
    assert _events(ep) == [CallEstablished(pkt.UAC_CALL_ID, None)]
    assert ep.datagrams_to_send(0.3) == []

    ep.receive_datagram(pkt.with_tag(pkt.UAC_BYE, ok.to_tag), SIPP, 5.0)
    [bye_ok] = _responses(ep, 5.0)
    assert (bye_ok.status, bye_ok.cseq.method) == (200, "BYE")
    assert _events(ep) == [CallEnded(pkt.UAC_CALL_ID, EndReason.BYE)]
    assert ep.call_state(pkt.UAC_CALL_ID) is CallState.ENDED

    # Nothing is retransmitted after the ACK; the call and transactions are gone after 64*T1.
    assert all(message.status == 200 for _, message in _run_timers(ep, 100.0))
    assert ep.get_timer() is None
    assert ep.call_state(pkt.UAC_CALL_ID) is None


def test_recorded_pcap_and_pbx_invites_are_offered() -> None:
    ep = _endpoint()
    ep.receive_datagram(pkt.UAC_PCAP_INVITE, SIPP, 0.0)
    ep.receive_datagram(pkt.PBX_INVITE, pkt.PBX_SOURCE, 0.0)
    pcap, pbx = _events(ep)
    assert isinstance(pcap, IncomingCall) and pcap.sdp_offer == pkt.UAC_PCAP_SDP
    assert isinstance(pbx, IncomingCall)
    assert pbx.request_uri_user == "+15551230000"
    assert pbx.from_uri == "sip:+15559870000@pbx.example.com"
    assert pbx.remote_addr == pkt.PBX_SOURCE
    assert _statuses(ep, 0.0) == [100, 100]


# -- retransmitted requests ------------------------------------------------------------------------


def test_retransmitted_invite_is_answered_from_the_transaction() -> None:
    ep = _endpoint()
    ep.receive_datagram(pkt.UAC_INVITE, SIPP, 0.0)
    ep.receive_datagram(pkt.UAC_INVITE, SIPP, 0.5)
    assert _statuses(ep, 0.5) == [100, 100]
    ep.ringing(pkt.UAC_CALL_ID)
    assert _statuses(ep, 0.6) == [180]
    ep.receive_datagram(pkt.UAC_INVITE, SIPP, 1.5)
    assert _statuses(ep, 1.5) == [180]  # the latest provisional
    ep.answer(pkt.UAC_CALL_ID, ANSWER_SDP)
    assert _statuses(ep, 1.6) == [200]
    ep.receive_datagram(pkt.UAC_INVITE, SIPP, 1.7)
    assert _statuses(ep, 1.7) == []  # absorbed (RFC 6026): the 2xx has its own retransmission
    assert [type(event) for event in _events(ep)] == [IncomingCall]


def test_retransmitted_bye_is_answered_once_and_ends_the_call_once() -> None:
    ep = _endpoint()
    tag = _sipp_call(ep)
    bye = pkt.with_tag(pkt.UAC_BYE, tag)
    for now in (1.0, 1.5, 2.5):
        ep.receive_datagram(bye, SIPP, now)
    assert _statuses(ep, 2.5) == [200, 200, 200]
    assert _events(ep) == [CallEnded(pkt.UAC_CALL_ID, EndReason.BYE)]


def test_retransmitted_ack_is_absorbed() -> None:
    ep = _endpoint()
    tag = _sipp_call(ep)
    ep.receive_datagram(pkt.with_tag(pkt.UAC_ACK, tag), SIPP, 0.6)
    assert _events(ep) == [] and ep.datagrams_to_send(0.6) == []


# -- the 2xx until its ACK (§13.3.1.4) -------------------------------------------------------------


def test_200_retransmitted_at_t1_doubling_to_t2_until_the_ack() -> None:
    ep = _endpoint()
    ep.receive_datagram(pkt.UAC_INVITE, SIPP, 0.0)
    _events(ep)
    ep.answer(pkt.UAC_CALL_ID, ANSWER_SDP)
    [_, ok] = _responses(ep, 10.0)
    resent = _run_timers(ep, 25.9)
    # Sent at 10.0, then after T1, 2T1, 4T1, then every T2 (capped).
    assert [at - 10.0 for at, _ in resent] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5]
    assert all(message == ok for _, message in resent)
    assert ok.to_tag is not None
    ep.receive_datagram(pkt.with_tag(pkt.UAC_ACK, ok.to_tag), SIPP, 26.0)
    assert _events(ep) == [CallEstablished(pkt.UAC_CALL_ID, None)]
    assert all(not isinstance(m, SipResponse) or m.status != 200 for _, m in _run_timers(ep, 60))


def test_no_ack_after_64_t1_sends_bye_and_ends_the_call() -> None:
    ep = _endpoint()
    uac = Uac()
    ep.receive_datagram(uac.invite(), uac.addr, 0.0)
    call = _events(ep)[0]
    assert isinstance(call, IncomingCall)
    ep.answer(call.call_id, ANSWER_SDP)
    ok = _responses(ep, 0.0)[-1]
    sent = _run_timers(ep, 32.0)
    assert [at for at, m in sent if isinstance(m, SipResponse)] == [
        0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5,
    ]  # fmt: skip
    [(at, bye)] = [(at, m) for at, m in sent if isinstance(m, SipRequest)]
    assert at == 32.0
    assert _events(ep) == [CallEnded(call.call_id, EndReason.NO_ACK)]
    assert bye.method == "BYE"
    assert bye.to_tag == uac.tag and bye.from_tag == ok.to_tag
    assert bye.uri == f"sip:caller@{uac.addr[0]}:{uac.addr[1]}"
    # The BYE is retransmitted (Timer E) until its 200 arrives.
    again = _run_timers(ep, 33.6)
    assert [m for _, m in again] == [bye, bye]
    ep.receive_datagram(uac.answer(bye), uac.addr, 34.0)
    assert _events(ep) == []
    assert all(not isinstance(m, SipRequest) for _, m in _run_timers(ep, 100.0))


def test_hangup_before_the_ack_waits_for_it() -> None:
    ep = _endpoint()
    uac = Uac()
    ep.receive_datagram(uac.invite(), uac.addr, 0.0)
    call_id = _incoming(ep).call_id
    ep.answer(call_id, ANSWER_SDP)
    uac.learn(_responses(ep, 0.0)[-1])
    ep.hangup(call_id)
    assert _events(ep) == [CallEnded(call_id, EndReason.HANGUP)]
    assert ep.datagrams_to_send(0.1) == []  # §15: no BYE before the ACK
    ep.receive_datagram(uac.ack(), uac.addr, 0.2)
    [(bye, addr)] = _sent(ep, 0.2)
    assert isinstance(bye, SipRequest) and bye.method == "BYE" and addr == uac.addr
    assert _events(ep) == []  # the call had already ended for the application


def test_hangup_before_an_ack_that_never_comes() -> None:
    ep = _endpoint()
    ep.receive_datagram(pkt.UAC_INVITE, SIPP, 0.0)
    _incoming(ep)
    ep.answer(pkt.UAC_CALL_ID, ANSWER_SDP)
    ep.hangup(pkt.UAC_CALL_ID)
    assert _events(ep) == [CallEnded(pkt.UAC_CALL_ID, EndReason.HANGUP)]
    _sent(ep, 0.0)
    sent = _run_timers(ep, 32.0)
    assert [at for at, m in sent if isinstance(m, SipRequest) and m.method == "BYE"] == [32.0]
    assert _events(ep) == []  # one CallEnded per call, however it ends


# -- CANCEL ----------------------------------------------------------------------------------------


def test_recorded_cancel() -> None:
    ep = _endpoint()
    ep.receive_datagram(pkt.CANCEL_INVITE, SIPP, 0.0)
    call = _events(ep)[0]
    assert isinstance(call, IncomingCall) and call.sdp_offer is None
    ep.ringing(call.call_id)
    _, ringing = _responses(ep, 0.1)
    ep.receive_datagram(pkt.CANCEL, SIPP, 1.0)
    cancel_ok, terminated = _responses(ep, 1.0)
    assert (cancel_ok.status, cancel_ok.cseq.method) == (200, "CANCEL")
    assert (terminated.status, terminated.cseq.method) == (487, "INVITE")
    assert terminated.reason == "Request Terminated"
    assert cancel_ok.to_tag == terminated.to_tag == ringing.to_tag  # §9.2
    assert _events(ep) == [CallEnded(pkt.CANCEL_CALL_ID, EndReason.CANCELLED)]
    # The 487 is retransmitted (Timer G) until SIPp's ACK, which is absorbed.
    assert [m.status for _, m in _run_timers(ep, 2.0) if isinstance(m, SipResponse)] == [487]
    assert terminated.to_tag is not None
    ep.receive_datagram(pkt.with_tag(pkt.CANCEL_ACK, terminated.to_tag), SIPP, 2.1)
    assert _events(ep) == [] and ep.datagrams_to_send(2.1) == []
    assert _run_timers(ep, 10.0) == []
    with pytest.raises(CallOperationError) as info:
        ep.answer(call.call_id, ANSWER_SDP)
    assert info.value.kind is CallErrorKind.WRONG_STATE


def test_cancel_for_an_unknown_transaction_gets_481() -> None:
    ep = _endpoint()
    ep.receive_datagram(pkt.CANCEL, SIPP, 0.0)
    assert _statuses(ep, 0.0) == [481]


def test_cancel_after_the_200_changes_nothing() -> None:
    ep = _endpoint()
    uac = Uac()
    ep.receive_datagram(uac.invite(), uac.addr, 0.0)
    call_id = _incoming(ep).call_id
    ep.answer(call_id, ANSWER_SDP)
    _responses(ep, 0.0)
    ep.receive_datagram(uac.cancel(), uac.addr, 0.1)
    assert _statuses(ep, 0.1) == [200]
    assert _events(ep) == []
    assert ep.call_state(call_id) is CallState.ANSWERED


# -- other methods ---------------------------------------------------------------------------------


def test_options_with_rport_behind_a_nat() -> None:
    ep = _endpoint()
    nat = ("198.51.100.4", 61000)
    ep.receive_datagram(pkt.OPTIONS_RPORT, nat, 0.0)
    [(ok, addr)] = _sent(ep, 0.0)
    assert isinstance(ok, SipResponse) and ok.status == 200
    assert addr == nat  # RFC 3581: back where it came from, not to the Via's 127.0.0.1:5061
    assert ok.top_via.received == "198.51.100.4" and ok.top_via.rport == 61000
    assert ok.headers.get("Allow") == "INVITE, ACK, BYE, CANCEL, OPTIONS"
    assert ok.headers.get("Accept") == "application/sdp"
    assert ok.to_tag is not None
    assert _events(ep) == []


def test_invite_with_rport_answers_and_hangs_up_through_the_nat() -> None:
    ep = _endpoint()
    ep.receive_datagram(pkt.PBX_INVITE, pkt.PBX_SOURCE, 0.0)
    _events(ep)
    ep.answer(pkt.PBX_CALL_ID, ANSWER_SDP)
    sent = _sent(ep, 0.0)
    assert [addr for _, addr in sent] == [pkt.PBX_SOURCE, pkt.PBX_SOURCE]
    ok = sent[-1][0]
    assert isinstance(ok, SipResponse)
    assert ok.top_via.received == pkt.PBX_SOURCE[0] and ok.top_via.rport == pkt.PBX_SOURCE[1]
    assert ok.headers.get_all("Record-Route") == ["<sip:10.0.0.1;lr>"]  # §12.1.1


def test_in_dialog_request_for_an_unknown_dialog_gets_481() -> None:
    ep = _endpoint()
    ep.receive_datagram(pkt.UAC_BYE, SIPP, 0.0)
    [response] = _responses(ep, 0.0)
    assert response.status == 481 and response.reason == "Call/Transaction Does Not Exist"
    [error] = _events(ep)
    assert isinstance(error, ProtocolError)
    assert (error.kind, error.status, error.call_id) == (
        SipErrorKind.UNKNOWN_DIALOG,
        481,
        pkt.UAC_CALL_ID,
    )


def test_wrong_tag_on_a_live_call_gets_481() -> None:
    ep = _endpoint()
    _sipp_call(ep)
    ep.receive_datagram(pkt.with_tag(pkt.UAC_BYE, "not-ours"), SIPP, 1.0)
    assert _statuses(ep, 1.0) == [481]
    assert ep.call_state(pkt.UAC_CALL_ID) is CallState.CONFIRMED


@pytest.mark.parametrize("method", ["SUBSCRIBE", "MESSAGE", "REGISTER", "INFO", "UPDATE"])
def test_unsupported_methods_get_405_with_allow(method: str) -> None:
    ep = _endpoint()
    uac = Uac()
    ep.receive_datagram(uac.request(method), uac.addr, 0.0)
    [response] = _responses(ep, 0.0)
    assert response.status == 405
    assert response.headers.get("Allow") == "INVITE, ACK, BYE, CANCEL, OPTIONS"
    assert _events(ep) == []


def test_require_of_an_unsupported_extension_gets_420() -> None:
    ep = _endpoint()
    data = pkt.UAC_INVITE.replace(
        b"Max-Forwards: 70", b"Require: 100rel, timer\r\nMax-Forwards: 70"
    )
    ep.receive_datagram(data, SIPP, 0.0)
    [response] = _responses(ep, 0.0)
    assert response.status == 420 and response.headers.get("Unsupported") == "100rel, timer"
    assert _events(ep) == []


def test_non_sip_request_uri_gets_416_and_non_sdp_body_415() -> None:
    ep = _endpoint()
    ep.receive_datagram(pkt.UAC_INVITE.replace(b"INVITE sip:service@", b"INVITE tel:"), SIPP, 0)
    assert _statuses(ep, 0.0) == [416]
    other = pkt.UAC_PCAP_INVITE.replace(b"application/sdp", b"application/isup")
    ep.receive_datagram(other, SIPP, 0.0)
    [response] = _responses(ep, 0.0)
    assert response.status == 415 and response.headers.get("Accept") == "application/sdp"
    assert _events(ep) == []


def test_invite_without_contact_gets_400() -> None:
    ep = _endpoint()
    ep.receive_datagram(
        pkt.UAC_INVITE.replace(b"Contact: sip:sipp@127.0.0.1:5061\r\n", b""), SIPP, 0
    )
    assert _statuses(ep, 0.0) == [400]
    [error] = _events(ep)
    assert isinstance(error, ProtocolError) and error.kind is SipErrorKind.MISSING_HEADER


def test_new_invite_reusing_a_live_call_id_gets_482() -> None:
    ep = _endpoint()
    ep.receive_datagram(pkt.UAC_INVITE, SIPP, 0.0)
    forked = pkt.UAC_INVITE.replace(b"branch=z9hG4bK-12980-1-0", b"branch=z9hG4bK-other")
    ep.receive_datagram(forked, SIPP, 0.1)
    assert _statuses(ep, 0.1) == [100, 482]
    assert len(_events(ep)) == 1


def test_crlf_keepalive_is_ignored() -> None:
    ep = _endpoint()
    ep.receive_datagram(b"\r\n\r\n", SIPP, 0.0)
    assert _events(ep) == [] and ep.datagrams_to_send(0.0) == []


# -- malformed datagrams ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (pkt.NO_FROM, SipErrorKind.MISSING_HEADER),
        (pkt.CSEQ_METHOD_MISMATCH, SipErrorKind.BAD_CSEQ),
        (pkt.CONTENT_LENGTH_TOO_LONG, SipErrorKind.BAD_CONTENT_LENGTH),
        (pkt.BAD_HEADER_LINE, SipErrorKind.BAD_HEADER),
    ],
)
def test_malformed_but_answerable_gets_400(data: bytes, kind: SipErrorKind) -> None:
    ep = _endpoint()
    ep.receive_datagram(data, ("10.9.8.7", 5061), 0.0)
    # Raw bytes: a 400 to a request without From has no From either.
    [(data, addr)] = ep.datagrams_to_send(0.0)
    assert data.startswith(b"SIP/2.0 400 Bad Request\r\n")
    assert addr == ("10.9.8.7", 5061)  # received: the Via said 127.0.0.1
    assert b";received=10.9.8.7\r\n" in data
    assert b"\r\nCall-ID: 1-12980@127.0.0.1\r\n" in data
    assert b'\r\nWarning: 399 127.0.0.1 "' in data
    [error] = _events(ep)
    assert isinstance(error, ProtocolError)
    assert (error.kind, error.status, error.call_id) == (kind, 400, pkt.UAC_CALL_ID)


@pytest.mark.parametrize(
    "data",
    [pkt.NO_VIA, pkt.NO_CALL_ID, pkt.BAD_START_LINE, pkt.GARBAGE, pkt.MALFORMED_ACK],
)
def test_malformed_unanswerable_is_dropped(data: bytes) -> None:
    ep = _endpoint()
    ep.receive_datagram(data, SIPP, 0.0)
    assert ep.datagrams_to_send(0.0) == []
    [error] = _events(ep)
    assert isinstance(error, ProtocolError) and error.status is None


def test_malformed_response_is_dropped() -> None:
    ep = _endpoint()
    ep.receive_datagram(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP x\r\n\r\n", SIPP, 0.0)
    assert ep.datagrams_to_send(0.0) == []
    assert [type(event) for event in _events(ep)] == [ProtocolError]


def test_malformed_datagrams_do_not_harm_a_live_call() -> None:
    ep = _endpoint()
    tag = _sipp_call(ep)
    rng = random.Random(6)
    packets = [pkt.UAC_INVITE, pkt.UAC_BYE, pkt.CANCEL, pkt.OPTIONS_RPORT, pkt.PBX_INVITE]
    for i in range(500):
        data = bytearray(rng.choice(packets))
        for _ in range(rng.randint(1, 6)):
            pos = rng.randrange(len(data))
            if rng.random() < 0.5:
                data[pos] = rng.randrange(256)
            else:
                del data[pos : pos + rng.randint(1, 40)]
        ep.receive_datagram(bytes(data), ("203.0.113.99", 5000 + i), 1.0 + i / 1000)
    for event in _events(ep):
        assert not (isinstance(event, ProtocolError) and event.kind is SipErrorKind.INTERNAL)
    ep.datagrams_to_send(2.0)
    assert ep.call_state(pkt.UAC_CALL_ID) is CallState.CONFIRMED
    # A fresh branch: a mangled copy of the recorded BYE may have claimed the recorded one.
    bye = pkt.with_tag(pkt.UAC_BYE, tag).replace(b"z9hG4bK-12980-1-7", b"z9hG4bK-12980-1-8")
    ep.receive_datagram(bye, SIPP, 3.0)
    assert CallEnded(pkt.UAC_CALL_ID, EndReason.BYE) in _events(ep)


# -- re-INVITE ------------------------------------------------------------------------------------


def test_recorded_reinvite_for_hold() -> None:
    ep = _endpoint()
    tag = _sipp_call(ep)
    ep.receive_datagram(pkt.with_tag(pkt.UAC_REINVITE, tag), SIPP, 5.0)
    assert _statuses(ep, 5.0) == [100]
    assert _events(ep) == [ReInvite(pkt.UAC_CALL_ID, pkt.UAC_REINVITE_HOLD_SDP)]
    held = ANSWER_SDP + b"a=recvonly\r\n"
    ep.answer_reinvite(pkt.UAC_CALL_ID, held)
    [ok] = _responses(ep, 5.1)
    assert (ok.status, ok.cseq.number, ok.body, ok.to_tag) == (200, 2, held, tag)
    assert [at for at, _ in _run_timers(ep, 6.0)] == [5.6]  # reliable like the first 2xx
    ep.receive_datagram(pkt.with_tag(pkt.UAC_REINVITE_ACK, tag), SIPP, 6.2)
    assert _events(ep) == [ReInviteAcked(pkt.UAC_CALL_ID, None)]
    assert [m for _, m in _run_timers(ep, 10.0) if isinstance(m, SipResponse)] == []
    assert ep.call_state(pkt.UAC_CALL_ID) is CallState.CONFIRMED


def test_reinvite_without_sdp_gets_its_answer_in_the_ack() -> None:
    ep = _endpoint()
    uac = Uac()
    call_id = _uac_call(ep, uac)
    ep.receive_datagram(uac.reinvite(None), uac.addr, 1.0)
    assert _events(ep) == [ReInvite(call_id, None)]
    ep.answer_reinvite(call_id, ANSWER_SDP)
    _responses(ep, 1.0)
    ep.receive_datagram(uac.ack(pkt.UAC_SDP), uac.addr, 1.1)
    assert _events(ep) == [ReInviteAcked(call_id, pkt.UAC_SDP)]


def test_rejected_reinvite_keeps_the_call() -> None:
    ep = _endpoint()
    uac = Uac()
    call_id = _uac_call(ep, uac)
    ep.receive_datagram(uac.reinvite(pkt.UAC_PCAP_SDP), uac.addr, 1.0)
    _events(ep)
    ep.reject_reinvite(call_id)
    assert _statuses(ep, 1.0) == [100, 488]
    ep.receive_datagram(uac.ack_failure(), uac.addr, 1.1)
    assert _events(ep) == []
    assert ep.call_state(call_id) is CallState.CONFIRMED
    ep.receive_datagram(uac.reinvite(pkt.UAC_SDP), uac.addr, 2.0)
    assert isinstance(_events(ep)[0], ReInvite)


def test_overlapping_reinvite_gets_500_with_retry_after() -> None:
    ep = _endpoint()
    uac = Uac()
    call_id = _uac_call(ep, uac)
    ep.receive_datagram(uac.reinvite(pkt.UAC_SDP), uac.addr, 1.0)
    ep.receive_datagram(uac.reinvite(pkt.UAC_SDP), uac.addr, 1.1)
    statuses = _responses(ep, 1.1)
    assert [r.status for r in statuses] == [100, 500]
    assert 0 <= int(statuses[1].headers.get("Retry-After") or "x") <= 10
    assert _events(ep) == [ReInvite(call_id, pkt.UAC_SDP)]


def test_cancelled_reinvite() -> None:
    ep = _endpoint()
    uac = Uac()
    call_id = _uac_call(ep, uac)
    ep.receive_datagram(uac.reinvite(pkt.UAC_SDP), uac.addr, 1.0)
    ep.receive_datagram(uac.cancel(), uac.addr, 1.2)
    assert _statuses(ep, 1.2) == [100, 200, 487]
    assert _events(ep) == [ReInvite(call_id, pkt.UAC_SDP), ReInviteCancelled(call_id)]
    with pytest.raises(CallOperationError):
        ep.answer_reinvite(call_id, ANSWER_SDP)
    assert ep.call_state(call_id) is CallState.CONFIRMED


def test_out_of_order_cseq_gets_500() -> None:
    ep = _endpoint()
    uac = Uac()
    _uac_call(ep, uac)
    uac.cseq = 10
    ep.receive_datagram(uac.request("OPTIONS"), uac.addr, 1.0)
    uac.cseq = 3
    ep.receive_datagram(uac.bye(), uac.addr, 1.1)
    assert _statuses(ep, 1.1) == [200, 500]
    [error] = _events(ep)
    assert isinstance(error, ProtocolError) and error.kind is SipErrorKind.OUT_OF_ORDER


# -- the application's side ---------------------------------------------------------------------


def test_hangup_sends_bye_in_the_dialog_and_absorbs_its_200() -> None:
    ep = _endpoint()
    tag = _sipp_call(ep)
    ep.hangup(pkt.UAC_CALL_ID)
    assert _events(ep) == [CallEnded(pkt.UAC_CALL_ID, EndReason.HANGUP)]
    [(bye, addr)] = _sent(ep, 10.0)
    assert isinstance(bye, SipRequest) and addr == SIPP  # the remote Contact
    assert bye.method == "BYE" and bye.uri == "sip:sipp@127.0.0.1:5061"
    assert bye.call_id == pkt.UAC_CALL_ID
    assert bye.from_tag == tag and bye.to_tag == "12980SIPpTag001"
    assert bye.headers.get("From") == f"service <sip:service@127.0.0.1:5070>;tag={tag}"
    assert bye.headers.get("To") == "sipp <sip:sipp@127.0.0.1:5061>;tag=12980SIPpTag001"
    assert (bye.cseq.number, bye.cseq.method) == (1, "BYE")
    assert bye.top_via.branch is not None and bye.top_via.branch.startswith("z9hG4bK")
    assert bye.top_via.sent_by == "127.0.0.1:5070" and bye.top_via.has_rport
    assert bye.max_forwards == 70
    assert bye.contact is not None and bye.contact.uri == "sip:gateway@127.0.0.1:5070"
    # Retransmitted at T1, 2T1... until the 200, which is absorbed.
    assert [at for at, _ in _run_timers(ep, 11.6)] == [10.5, 11.5]
    ep.receive_datagram(build_response(bye, 200).serialize(), SIPP, 11.7)
    assert _events(ep) == [] and ep.datagrams_to_send(11.7) == []
    ep.hangup(pkt.UAC_CALL_ID)  # already ended: harmless
    assert _events(ep) == [] and ep.datagrams_to_send(11.8) == []
    assert [m for _, m in _run_timers(ep, 100.0) if isinstance(m, SipRequest)] == []
    assert ep.get_timer() is None
    with pytest.raises(CallOperationError) as info:  # forgotten after 64*T1
        ep.hangup(pkt.UAC_CALL_ID)
    assert info.value.kind is CallErrorKind.UNKNOWN_CALL


def test_bye_without_any_response_stops_after_64_t1() -> None:
    ep = _endpoint()
    _sipp_call(ep)
    ep.hangup(pkt.UAC_CALL_ID)
    assert _events(ep) == [CallEnded(pkt.UAC_CALL_ID, EndReason.HANGUP)]
    _sent(ep, 0.0)
    sent = [at for at, m in _run_timers(ep, 100.0) if isinstance(m, SipRequest)]
    assert sent == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert _events(ep) == []


def test_bye_goes_through_the_record_route_proxy() -> None:
    ep = _endpoint()
    invite = pkt.UAC_INVITE.replace(
        b"Max-Forwards: 70", b"Record-Route: <sip:192.0.2.80:5080;lr>\r\nMax-Forwards: 70"
    )
    ep.receive_datagram(invite, ("192.0.2.80", 5080), 0.0)
    _events(ep)
    ep.answer(pkt.UAC_CALL_ID, ANSWER_SDP)
    ok = _responses(ep, 0.0)[-1]
    assert ok.to_tag is not None
    ep.receive_datagram(pkt.with_tag(pkt.UAC_ACK, ok.to_tag), ("192.0.2.80", 5080), 0.1)
    ep.hangup(pkt.UAC_CALL_ID)
    [(bye, addr)] = _sent(ep, 1.0)
    assert addr == ("192.0.2.80", 5080)
    assert isinstance(bye, SipRequest)
    assert bye.uri == "sip:sipp@127.0.0.1:5061"  # loose routing keeps the remote target
    assert bye.headers.get_all("Route") == ["<sip:192.0.2.80:5080;lr>"]


def test_hangup_before_answer_sends_480() -> None:
    ep = _endpoint()
    ep.receive_datagram(pkt.UAC_INVITE, SIPP, 0.0)
    _events(ep)
    ep.hangup(pkt.UAC_CALL_ID)
    assert _statuses(ep, 0.0) == [100, 480]
    assert _events(ep) == [CallEnded(pkt.UAC_CALL_ID, EndReason.HANGUP)]


@pytest.mark.parametrize(
    ("status", "reason", "retry_after", "phrase"),
    [
        (403, None, None, "Forbidden"),
        (486, None, None, "Busy Here"),
        (503, "Draining", 30, "Draining"),
    ],
)
def test_reject(status: int, reason: str | None, retry_after: int | None, phrase: str) -> None:
    ep = _endpoint()
    uac = Uac()
    ep.receive_datagram(uac.invite(), uac.addr, 0.0)
    call_id = _incoming(ep).call_id
    ep.reject(call_id, status, reason, retry_after=retry_after)
    assert _events(ep) == [CallEnded(call_id, EndReason.REJECTED)]
    _, final = _responses(ep, 0.0)
    assert (final.status, final.reason) == (status, phrase)
    assert final.to_tag is not None
    expected = str(retry_after) if retry_after is not None else None
    assert final.headers.get("Retry-After") == expected
    # Timer G until the ACK, which stops it.
    assert [at for at, _ in _run_timers(ep, 1.6)] == [0.5, 1.5]
    uac.learn(final)
    ep.receive_datagram(uac.ack_failure(), uac.addr, 1.7)
    assert _run_timers(ep, 6.0) == [] and _events(ep) == []


def test_operations_that_do_not_fit_raise() -> None:
    ep = _endpoint()
    with pytest.raises(CallOperationError) as info:
        ep.answer("nope", ANSWER_SDP)
    assert info.value.kind is CallErrorKind.UNKNOWN_CALL
    ep.receive_datagram(pkt.UAC_INVITE, SIPP, 0.0)
    with pytest.raises(CallOperationError) as info:
        ep.reject(pkt.UAC_CALL_ID, 200)
    assert info.value.kind is CallErrorKind.BAD_ARGUMENT
    with pytest.raises(CallOperationError):
        ep.answer_reinvite(pkt.UAC_CALL_ID, ANSWER_SDP)
    ep.answer(pkt.UAC_CALL_ID, ANSWER_SDP)
    for operation in (
        lambda: ep.answer(pkt.UAC_CALL_ID, ANSWER_SDP),
        lambda: ep.ringing(pkt.UAC_CALL_ID),
        lambda: ep.reject(pkt.UAC_CALL_ID, 486),
    ):
        with pytest.raises(CallOperationError) as info:
            operation()
        assert info.value.kind is CallErrorKind.WRONG_STATE
    assert _statuses(ep, 0.0) == [100, 200]  # the failed calls sent nothing


def test_application_work_waits_for_a_clock() -> None:
    ep = _endpoint()
    ep.receive_datagram(pkt.UAC_INVITE, SIPP, 0.0)
    ep.datagrams_to_send(0.0)
    ep.answer(pkt.UAC_CALL_ID, ANSWER_SDP)
    assert ep.get_timer() == 0.0  # due now: the 200 has not gone out yet
    [(ok, _)] = _sent(ep, 7.0)
    assert isinstance(ok, SipResponse) and ok.status == 200
    assert ep.get_timer() == 7.5  # the retransmission timer started when it was sent


def test_bye_before_the_answer_ends_the_early_dialog() -> None:
    ep = _endpoint()
    ep.receive_datagram(pkt.UAC_INVITE, SIPP, 0.0)
    ep.ringing(pkt.UAC_CALL_ID)
    ringing = _responses(ep, 0.0)[-1]
    assert ringing.to_tag is not None
    ep.receive_datagram(pkt.with_tag(pkt.UAC_BYE, ringing.to_tag), SIPP, 1.0)
    assert _statuses(ep, 1.0) == [200, 487]
    events = _events(ep)
    assert events[-1] == CallEnded(pkt.UAC_CALL_ID, EndReason.BYE)


def test_crossing_byes() -> None:
    ep = _endpoint()
    tag = _sipp_call(ep)
    ep.hangup(pkt.UAC_CALL_ID)
    _sent(ep, 1.0)
    ep.receive_datagram(pkt.with_tag(pkt.UAC_BYE, tag), SIPP, 1.05)
    assert _statuses(ep, 1.05) == [200]
    assert _events(ep) == [CallEnded(pkt.UAC_CALL_ID, EndReason.HANGUP)]


# -- two peers back to back over a lossy wire ------------------------------------------------------


def test_back_to_back_call_survives_lost_packets() -> None:
    """The UAC answers every 200 with an ACK and every BYE with a 200; the wire drops the first
    200 and the first ACK. Retransmissions recover both; the application sees each event once."""
    ep = _endpoint()
    uac = Uac(rport=True)
    dropped = {"200 INVITE": 1, "ACK": 1}
    events: list[SipEvent] = []
    now = 0.0

    def uac_send(data: bytes) -> None:
        message = parse_message(data)
        assert isinstance(message, SipRequest)
        if dropped.get(message.method, 0):
            dropped[message.method] -= 1
            return
        ep.receive_datagram(data, uac.addr, now)

    def deliver() -> None:
        for data, addr in ep.datagrams_to_send(now):
            assert addr == uac.addr
            message = parse_message(data)
            if isinstance(message, SipResponse):
                label = f"{message.status} {message.cseq.method}"
                if dropped.get(label, 0):
                    dropped[label] -= 1
                    continue
                uac.learn(message)
                if message.status == 200 and message.cseq.method == "INVITE":
                    uac_send(uac.ack())
            else:
                assert message.method == "BYE"
                ep.receive_datagram(uac.answer(message), uac.addr, now)
        while (event := ep.next_event()) is not None:
            events.append(event)
            if isinstance(event, IncomingCall):
                ep.ringing(event.call_id)
                ep.answer(event.call_id, ANSWER_SDP)
            elif isinstance(event, CallEstablished):
                ep.hangup(event.call_id)

    uac_send(uac.invite())
    deliver()
    while (at := ep.get_timer()) is not None and at < 100:
        now = max(at, now)
        ep.handle_timer(now)
        deliver()
    assert events == [
        IncomingCall(
            call_id=uac.call_id,
            from_uri=f"sip:caller@{uac.addr[0]}",
            to_uri="sip:+15551230000@gateway.example.com",
            request_uri_user="+15551230000",
            sdp_offer=pkt.UAC_SDP,
            remote_addr=uac.addr,
        ),
        CallEstablished(uac.call_id, None),
        CallEnded(uac.call_id, EndReason.HANGUP),
    ]
    assert dropped == {"200 INVITE": 0, "ACK": 0}
    assert ep.get_timer() is None  # every transaction and the call cleaned up
