"""SIP message codec: recorded SIPp packets, compact forms, malformed input, §8.2.6 responses,
rport/received (RFC 3581), and the header-value grammar."""

from __future__ import annotations

import pytest

from telephony.sip.headers import (
    parse_cseq,
    parse_name_addr,
    parse_uri,
    parse_via,
    split_values,
)
from telephony.sip.message import (
    Headers,
    SipErrorKind,
    SipParseError,
    SipRequest,
    SipResponse,
    apply_rport,
    build_response,
    new_branch,
    new_call_id,
    new_tag,
    parse_message,
    response_address,
)
from tests import sip_packets as pkt


def _request(data: bytes) -> SipRequest:
    message = parse_message(data)
    assert isinstance(message, SipRequest)
    return message


def _bye(old: bytes, new: bytes) -> bytes:
    return pkt.UAC_BYE.replace(old, new)


def _error(data: bytes) -> SipParseError:
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    return info.value


# -- recorded packets ----------------------------------------------------------------------------


def test_sipp_invite_fields() -> None:
    invite = _request(pkt.UAC_INVITE)
    assert invite.method == "INVITE"
    assert invite.uri == "sip:service@127.0.0.1:5070"
    assert invite.call_id == pkt.UAC_CALL_ID
    assert (invite.cseq.number, invite.cseq.method) == (1, "INVITE")
    assert invite.top_via.branch == "z9hG4bK-12980-1-0"
    assert invite.top_via.sent_by == "127.0.0.1:5061"
    assert invite.top_via.transport == "UDP"
    assert invite.from_tag == "12980SIPpTag001"
    assert invite.from_.display == "sipp"
    assert invite.from_.uri == "sip:sipp@127.0.0.1:5061"
    assert invite.to_tag is None
    assert invite.to.uri == "sip:service@127.0.0.1:5070"
    assert invite.contact is not None and invite.contact.uri == "sip:sipp@127.0.0.1:5061"
    assert invite.max_forwards == 70
    assert invite.content_type == "application/sdp"
    assert invite.body == pkt.UAC_SDP
    assert invite.headers.get("subject") == "Performance Test"


def test_recorded_packets_serialise_back_byte_for_byte() -> None:
    # SIPp pads its Content-Length; everything else comes back exactly as recorded.
    for packet in (pkt.UAC_ACK, pkt.UAC_BYE, pkt.CANCEL, pkt.CANCEL_ACK, pkt.OPTIONS_RPORT):
        assert _request(packet).serialize() == packet
    assert _request(pkt.UAC_INVITE).serialize() == pkt.UAC_INVITE.replace(
        b"Content-Length:   129", b"Content-Length: 129"
    )


@pytest.mark.parametrize(
    "packet",
    [pkt.UAC_INVITE, pkt.UAC_PCAP_INVITE, pkt.PBX_INVITE, pkt.COMPACT_INVITE, pkt.UAC_REINVITE],
)
def test_round_trip(packet: bytes) -> None:
    message = parse_message(packet)
    assert parse_message(message.serialize()) == message


def test_pbx_invite_with_record_route_and_display_name() -> None:
    invite = _request(pkt.PBX_INVITE)
    assert parse_uri(invite.uri).user == "+15551230000"
    assert invite.from_.display == "Alice Doe"
    assert invite.from_.uri == "sip:+15559870000@pbx.example.com"
    assert invite.headers.get_all("Record-Route") == ["<sip:10.0.0.1;lr>"]
    assert invite.top_via.has_rport and invite.top_via.rport is None
    assert invite.body == pkt.PBX_SDP


def test_response_round_trip() -> None:
    invite = _request(pkt.UAC_INVITE)
    ok = build_response(invite, 200, to_tag="t1", body=b"v=0\r\n")
    parsed = parse_message(ok.serialize())
    assert isinstance(parsed, SipResponse)
    assert (parsed.status, parsed.reason) == (200, "OK")
    assert parsed.to_tag == "t1"
    assert parsed.body == b"v=0\r\n"
    assert parsed.headers.without("Content-Length") == ok.headers


# -- header names and multiple values --------------------------------------------------------------


def test_compact_forms_expand_and_names_are_case_insensitive() -> None:
    invite = _request(pkt.COMPACT_INVITE)
    assert invite.call_id == "compact-1@192.0.2.20"
    assert invite.from_tag == "ph1"
    assert invite.top_via.sent_by == "192.0.2.20:5062"
    assert invite.contact is not None and invite.contact.uri == "sip:phone@192.0.2.20:5062"
    assert invite.content_type == "application/sdp"
    assert invite.body == pkt.UAC_SDP
    for name in ("Supported", "supported", "SUPPORTED", "k"):
        assert invite.headers.get(name) == "replaces"
    # Serialised with the full names.
    assert b"\r\nCall-ID: compact-1@192.0.2.20\r\n" in invite.serialize()


def test_multiple_via_values_keep_their_order() -> None:
    data = pkt.UAC_BYE.replace(
        b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-12980-1-7\r\n",
        b"Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp1, SIP/2.0/UDP 10.0.0.1:5062"
        b";branch=z9hG4bKp2\r\n"
        b"v: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-12980-1-7\r\n",
    )
    bye = _request(data)
    assert [via.branch for via in bye.vias] == ["z9hG4bKp1", "z9hG4bKp2", "z9hG4bK-12980-1-7"]
    assert bye.top_via.host == "proxy.example.com" and bye.top_via.port is None
    response = build_response(bye, 200)
    assert response.headers.get_all("Via") == bye.headers.get_all("Via")


def test_folded_header_lines_are_joined() -> None:
    data = pkt.UAC_BYE.replace(b"Subject: Performance Test", b"Subject: Performance\r\n  Test")
    assert _request(data).headers.get("Subject") == "Performance Test"


def test_leading_crlf_and_bare_lf_are_tolerated() -> None:
    assert _request(b"\r\n\r\n" + pkt.UAC_BYE) == _request(pkt.UAC_BYE)
    assert _request(pkt.UAC_BYE.replace(b"\r\n", b"\n")) == _request(pkt.UAC_BYE)


def test_content_length_shorter_than_datagram_drops_the_excess() -> None:
    data = pkt.UAC_INVITE.replace(b"Content-Length:   129", b"Content-Length: 4")
    assert _request(data).body == b"v=0\r"


def test_no_content_length_means_body_to_end_of_datagram() -> None:
    data = pkt.UAC_INVITE.replace(b"Content-Length:   129\r\n", b"")
    assert _request(data).body == pkt.UAC_SDP


def test_serialise_states_the_real_content_length() -> None:
    request = SipRequest("OPTIONS", "sip:a@b", [("Content-Length", "999")], b"abc")
    assert b"\r\nContent-Length: 3\r\n\r\nabc" in request.serialize()
    bare = SipRequest("OPTIONS", "sip:a@b", [("Call-ID", "x")])
    assert bare.serialize().endswith(b"Call-ID: x\r\nContent-Length: 0\r\n\r\n")


def test_headers_helpers() -> None:
    headers = Headers([("v", "SIP/2.0/UDP a;branch=1"), ("Via", "SIP/2.0/UDP b"), ("X-Id", "7")])
    assert headers.get_all("via") == ["SIP/2.0/UDP a;branch=1", "SIP/2.0/UDP b"]
    assert headers.with_first("Via", "SIP/2.0/UDP c").get_all("Via") == [
        "SIP/2.0/UDP c",
        "SIP/2.0/UDP b",
    ]
    assert "x-id" in headers and "Route" not in headers
    assert headers.without("Via") == Headers([("X-Id", "7")])
    assert len(headers) == 3


# -- malformed input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "kind", "answerable"),
    [
        (pkt.NO_FROM, SipErrorKind.MISSING_HEADER, True),
        (pkt.NO_VIA, SipErrorKind.MISSING_HEADER, True),
        (pkt.NO_CALL_ID, SipErrorKind.MISSING_HEADER, True),
        (pkt.CSEQ_METHOD_MISMATCH, SipErrorKind.BAD_CSEQ, True),
        (pkt.MALFORMED_ACK, SipErrorKind.BAD_CSEQ, True),
        (pkt.CONTENT_LENGTH_TOO_LONG, SipErrorKind.BAD_CONTENT_LENGTH, True),
        (pkt.BAD_HEADER_LINE, SipErrorKind.BAD_HEADER, True),
        (pkt.BAD_START_LINE, SipErrorKind.BAD_START_LINE, False),
        (pkt.GARBAGE, SipErrorKind.BAD_ENCODING, False),
        (b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP a\r\n", SipErrorKind.BAD_FRAMING, True),
        (_bye(b"SIP/2.0/UDP 127", b"SIP/3.0/UDP 127"), SipErrorKind.BAD_VIA, True),
        (_bye(b"CSeq: 2 BYE", b"CSeq: 99999999999 BYE"), SipErrorKind.BAD_CSEQ, True),
        (_bye(b"5061>;tag", b"5061;tag"), SipErrorKind.BAD_HEADER, True),
        (_bye(b"Max-Forwards: 70", b"Max-Forwards: lots"), SipErrorKind.BAD_HEADER, True),
        (_bye(b"Content-Length: 0", b"Content-Length: -1"), SipErrorKind.BAD_CONTENT_LENGTH, True),
        (b"SIP/2.0 2000 OK\r\n\r\n", SipErrorKind.BAD_START_LINE, False),
        (b"INVITE  SIP/2.0\r\n\r\n", SipErrorKind.BAD_START_LINE, False),
        (b"", SipErrorKind.BAD_START_LINE, False),
    ],
)  # fmt: skip
def test_malformed(data: bytes, kind: SipErrorKind, answerable: bool) -> None:
    err = _error(data)
    assert err.kind is kind, str(err)
    assert (err.partial is not None) is answerable
    assert str(err).startswith(kind.value)


def test_conflicting_content_lengths() -> None:
    data = pkt.UAC_BYE.replace(b"Content-Length: 0\r\n", b"Content-Length: 0\r\nl: 5\r\n")
    assert _error(data).kind is SipErrorKind.BAD_CONTENT_LENGTH


def test_malformed_response_has_no_partial() -> None:
    response = build_response(_request(pkt.UAC_BYE), 200).serialize()
    err = _error(response.replace(b"CSeq: 2 BYE\r\n", b""))
    assert err.kind is SipErrorKind.MISSING_HEADER and err.partial is None


def test_partial_keeps_headers_for_a_400() -> None:
    err = _error(pkt.NO_FROM)
    assert err.partial is not None
    assert err.partial.call_id == pkt.UAC_CALL_ID
    response = build_response(err.partial, 400, to_tag="x")
    assert response.headers.get("From") is None
    assert response.headers.get("CSeq") == "1 INVITE"


# -- building responses (§8.2.6) -----------------------------------------------------------------


def test_build_response_copies_the_dialog_headers() -> None:
    invite = _request(pkt.UAC_INVITE)
    ringing = build_response(invite, 180, to_tag="gw1", headers=[("Contact", "<sip:gw@h>")])
    names = [name for name, _ in ringing.headers]
    assert names == ["Via", "From", "To", "Call-ID", "CSeq", "Contact"]
    assert ringing.reason == "Ringing"
    assert ringing.headers.get("From") == invite.headers.get("From")
    assert ringing.headers.get("To") == "service <sip:service@127.0.0.1:5070>;tag=gw1"
    assert ringing.to_tag == "gw1"


def test_build_response_keeps_an_existing_to_tag() -> None:
    bye = _request(pkt.UAC_BYE)
    assert build_response(bye, 200, to_tag="other").to_tag == "abc123"


def test_trying_copies_timestamp() -> None:
    invite = _request(pkt.UAC_INVITE.replace(b"Max-Forwards", b"Timestamp: 54\r\nMax-Forwards"))
    assert build_response(invite, 100).headers.get("Timestamp") == "54"
    assert build_response(invite, 180, to_tag="t").headers.get("Timestamp") is None


# -- rport and received (RFC 3581, §18.2) ----------------------------------------------------------


def test_rport_adds_received_and_port_and_routes_the_response_there() -> None:
    invite = _request(pkt.PBX_INVITE)
    stamped = apply_rport(invite, pkt.PBX_SOURCE)
    via = stamped.top_via
    assert via.received == "203.0.113.7"
    assert via.rport == 40112
    assert via.branch == invite.top_via.branch
    assert response_address(stamped) == pkt.PBX_SOURCE
    top = build_response(stamped, 100).headers.get("Via")
    assert top is not None and ";rport=40112;" in top and top.endswith(";received=203.0.113.7")


def test_rport_from_the_recorded_options() -> None:
    options = apply_rport(_request(pkt.OPTIONS_RPORT), ("127.0.0.1", 40000))
    assert options.top_via.serialize() == (
        "SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-13185-1-7;rport=40000;received=127.0.0.1"
    )
    assert response_address(options) == ("127.0.0.1", 40000)


def test_without_rport_received_only_when_the_host_differs() -> None:
    bye = _request(pkt.UAC_BYE)
    assert apply_rport(bye, ("127.0.0.1", 9999)) is bye
    assert response_address(bye) == pkt.SIPP_ADDR
    moved = apply_rport(bye, ("192.0.2.1", 9999))
    assert moved.top_via.received == "192.0.2.1"
    assert response_address(moved) == ("192.0.2.1", 5061)  # §18.2.2: the sent-by port


def test_default_port_5060() -> None:
    bye = _request(pkt.UAC_BYE.replace(b"127.0.0.1:5061;branch", b"192.0.2.9;branch"))
    assert response_address(bye) == ("192.0.2.9", 5060)


# -- header values ---------------------------------------------------------------------------------


def test_parse_via_variants() -> None:
    via = parse_via("SIP / 2.0 / udp [2001:db8::1]:5070 ;branch=z9hG4bKx;rport;ttl=1")
    assert (via.transport, via.host, via.port) == ("UDP", "2001:db8::1", 5070)
    assert via.sent_by == "[2001:db8::1]:5070"
    assert via.branch == "z9hG4bKx" and via.has_rport and via.rport is None
    assert parse_via(via.serialize()) == via
    for bad in ("SIP/2.0/UDP", "SIP/2.0/UDP host:99999", "HTTP/1.1 x", "SIP/2.0/UDP h;rport=x"):
        with pytest.raises(ValueError):
            parse_via(bad)


def test_parse_name_addr_variants() -> None:
    quoted = parse_name_addr('"Doe, \\"J\\"" <sip:j@example.com;transport=udp>;tag=9;x')
    assert quoted.display == 'Doe, "J"'
    assert quoted.uri == "sip:j@example.com;transport=udp"
    assert quoted.tag == "9"
    bare = parse_name_addr("sip:a@b;tag=1")
    assert (bare.display, bare.uri, bare.tag) == (None, "sip:a@b", "1")
    token = parse_name_addr("Bob <tel:+1555>")
    assert (token.display, token.uri, token.tag) == ("Bob", "tel:+1555", None)
    for bad in ('"open <sip:a@b>', "<sip:a@b", "no-uri-here", '"x" sip:a@b'):
        with pytest.raises(ValueError):
            parse_name_addr(bad)


def test_parse_uri_variants() -> None:
    uri = parse_uri("sip:+1555;npdi@gw.example.com:5080;transport=udp;lr?subject=x")
    assert uri.user == "+1555;npdi"
    assert (uri.host, uri.port) == ("gw.example.com", 5080)
    assert uri.transport == "udp" and uri.loose_route
    assert parse_uri("SIPS:[::1]").host == "::1"
    assert parse_uri("sip:example.com").user is None
    for bad in ("tel:+1555", "http://x", "sip:", "sip:a@"):
        with pytest.raises(ValueError):
            parse_uri(bad)


def test_parse_cseq_and_split_values() -> None:
    assert parse_cseq(" 2147483647  INVITE ").number == 2**31 - 1
    with pytest.raises(ValueError):
        parse_cseq("2147483648 INVITE")
    assert split_values('"a, b" <sip:x>, <sip:y;p=1,2>, sip:z') == [
        '"a, b" <sip:x>',
        "<sip:y;p=1,2>",
        "sip:z",
    ]


def test_generated_identifiers_are_random_and_well_formed() -> None:
    assert new_branch().startswith("z9hG4bK") and new_branch() != new_branch()
    assert len(new_tag()) == 16 and new_tag() != new_tag()
    assert new_call_id("gw.example.com").endswith("@gw.example.com")
