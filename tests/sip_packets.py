"""SIP datagrams for the tests, byte for byte as peers send them.

The `UAC_*`, `CANCEL_*` and `OPTIONS_RPORT` packets were captured from SIPp 3.6.1 (Debian
`sip-tester`) calling a throw-away UDP responder on 127.0.0.1:5070 from 127.0.0.1:5061:

    sipp -sn uac 127.0.0.1:5070 -m 1 -i 127.0.0.1 -p 5061

and a scenario in SIPp's own template format for INVITE-without-SDP, CANCEL and OPTIONS. The
responder tagged its To header `abc123` (`RECORDED_TAG`); tests swap in the tag the endpoint
chose with `with_tag`. Note what SIPp really sends: a new branch for the ACK of a 2xx (its own
transaction) but the INVITE's branch for the CANCEL and the ACK of a 487, a padded
`Content-Length:   129`, and a bare `Contact: sip:...` without angle brackets.

`UAC_PCAP_INVITE` is SIPp's `uac_pcap` INVITE (PCMA with RFC 4733 telephone-event) expanded from
its scenario the way SIPp expands the recorded ones (that scenario needs pcap files the package
does not ship, so it was not run). `PBX_INVITE` has the shape of an Asterisk/PJSIP trunk INVITE:
rport, a Record-Route, PCMU plus telephone-event, Allow and Supported.
"""

from __future__ import annotations

from typing import Final

RECORDED_TAG: Final = b"abc123"
SIPP_ADDR: Final = ("127.0.0.1", 5061)
GATEWAY_ADDR: Final = ("127.0.0.1", 5070)


def with_tag(packet: bytes, tag: str) -> bytes:
    """The packet with the recorded responder's To tag replaced by `tag`."""
    return packet.replace(b"tag=" + RECORDED_TAG, b"tag=" + tag.encode())


# -- sipp -sn uac: INVITE (PCMU offer), ACK for the 200, BYE --------------------------------

UAC_SDP: Final = (
    b"v=0\r\n"
    b"o=user1 53655765 2353687637 IN IP4 127.0.0.1\r\n"
    b"s=-\r\n"
    b"c=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\n"
    b"m=audio 6000 RTP/AVP 0\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
)

UAC_INVITE: Final = (
    b"INVITE sip:service@127.0.0.1:5070 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-12980-1-0\r\n"
    b"From: sipp <sip:sipp@127.0.0.1:5061>;tag=12980SIPpTag001\r\n"
    b"To: service <sip:service@127.0.0.1:5070>\r\n"
    b"Call-ID: 1-12980@127.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: sip:sipp@127.0.0.1:5061\r\n"
    b"Max-Forwards: 70\r\n"
    b"Subject: Performance Test\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length:   129\r\n"
    b"\r\n" + UAC_SDP
)
UAC_CALL_ID: Final = "1-12980@127.0.0.1"

UAC_ACK: Final = (
    b"ACK sip:service@127.0.0.1:5070 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-12980-1-5\r\n"
    b"From: sipp <sip:sipp@127.0.0.1:5061>;tag=12980SIPpTag001\r\n"
    b"To: service <sip:service@127.0.0.1:5070>;tag=abc123\r\n"
    b"Call-ID: 1-12980@127.0.0.1\r\n"
    b"CSeq: 1 ACK\r\n"
    b"Contact: sip:sipp@127.0.0.1:5061\r\n"
    b"Max-Forwards: 70\r\n"
    b"Subject: Performance Test\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

UAC_BYE: Final = (
    b"BYE sip:service@127.0.0.1:5070 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-12980-1-7\r\n"
    b"From: sipp <sip:sipp@127.0.0.1:5061>;tag=12980SIPpTag001\r\n"
    b"To: service <sip:service@127.0.0.1:5070>;tag=abc123\r\n"
    b"Call-ID: 1-12980@127.0.0.1\r\n"
    b"CSeq: 2 BYE\r\n"
    b"Contact: sip:sipp@127.0.0.1:5061\r\n"
    b"Max-Forwards: 70\r\n"
    b"Subject: Performance Test\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

# A re-INVITE putting the call on hold, as SIPp would send it from a scenario on that call.
UAC_REINVITE_HOLD_SDP: Final = (
    b"v=0\r\n"
    b"o=user1 53655765 2353687638 IN IP4 127.0.0.1\r\n"
    b"s=-\r\n"
    b"c=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\n"
    b"m=audio 6000 RTP/AVP 0\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=sendonly\r\n"
)
UAC_REINVITE: Final = (
    b"INVITE sip:sipp@127.0.0.1:5070 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-12980-1-9\r\n"
    b"From: sipp <sip:sipp@127.0.0.1:5061>;tag=12980SIPpTag001\r\n"
    b"To: service <sip:service@127.0.0.1:5070>;tag=abc123\r\n"
    b"Call-ID: 1-12980@127.0.0.1\r\n"
    b"CSeq: 2 INVITE\r\n"
    b"Contact: sip:sipp@127.0.0.1:5061\r\n"
    b"Max-Forwards: 70\r\n"
    b"Subject: Performance Test\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 141\r\n"
    b"\r\n" + UAC_REINVITE_HOLD_SDP
)
UAC_REINVITE_ACK: Final = (
    b"ACK sip:sipp@127.0.0.1:5070 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-12980-1-11\r\n"
    b"From: sipp <sip:sipp@127.0.0.1:5061>;tag=12980SIPpTag001\r\n"
    b"To: service <sip:service@127.0.0.1:5070>;tag=abc123\r\n"
    b"Call-ID: 1-12980@127.0.0.1\r\n"
    b"CSeq: 2 ACK\r\n"
    b"Contact: sip:sipp@127.0.0.1:5061\r\n"
    b"Max-Forwards: 70\r\n"
    b"Subject: Performance Test\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

# -- INVITE without SDP, CANCEL, ACK for the 487, OPTIONS with rport ----------------------------

CANCEL_INVITE: Final = (
    b"INVITE sip:service@127.0.0.1:5070 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-13185-1-0\r\n"
    b"From: sipp <sip:sipp@127.0.0.1:5061>;tag=13185SIPpTag001\r\n"
    b"To: service <sip:service@127.0.0.1:5070>\r\n"
    b"Call-ID: 1-13185@127.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: sip:sipp@127.0.0.1:5061\r\n"
    b"Max-Forwards: 70\r\n"
    b"Subject: cancel\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)
CANCEL_CALL_ID: Final = "1-13185@127.0.0.1"

CANCEL: Final = (
    b"CANCEL sip:service@127.0.0.1:5070 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-13185-1-0\r\n"
    b"From: sipp <sip:sipp@127.0.0.1:5061>;tag=13185SIPpTag001\r\n"
    b"To: service <sip:service@127.0.0.1:5070>\r\n"
    b"Call-ID: 1-13185@127.0.0.1\r\n"
    b"CSeq: 1 CANCEL\r\n"
    b"Max-Forwards: 70\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

CANCEL_ACK: Final = (
    b"ACK sip:service@127.0.0.1:5070 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-13185-1-0\r\n"
    b"From: sipp <sip:sipp@127.0.0.1:5061>;tag=13185SIPpTag001\r\n"
    b"To: service <sip:service@127.0.0.1:5070>;tag=abc123\r\n"
    b"Call-ID: 1-13185@127.0.0.1\r\n"
    b"CSeq: 1 ACK\r\n"
    b"Max-Forwards: 70\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

OPTIONS_RPORT: Final = (
    b"OPTIONS sip:service@127.0.0.1:5070 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-13185-1-7;rport\r\n"
    b"From: sipp <sip:sipp@127.0.0.1:5061>;tag=13185SIPpTag011\r\n"
    b"To: <sip:service@127.0.0.1:5070>\r\n"
    b"Call-ID: options-1-13185@127.0.0.1\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Contact: sip:sipp@127.0.0.1:5061\r\n"
    b"Max-Forwards: 70\r\n"
    b"Accept: application/sdp\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

# -- sipp -sn uac_pcap's INVITE: PCMA plus telephone-event --------------------------------------

UAC_PCAP_SDP: Final = (
    b"v=0\r\n"
    b"o=user1 53655765 2353687637 IN IP4 127.0.0.1\r\n"
    b"s=-\r\n"
    b"c=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\n"
    b"m=audio 6000 RTP/AVP 8 101\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-11,16\r\n"
)
UAC_PCAP_INVITE: Final = (
    b"INVITE sip:service@127.0.0.1:5070 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-13321-1-0\r\n"
    b"From: sipp <sip:sipp@127.0.0.1:5061>;tag=13321SIPpTag091\r\n"
    b"To: service <sip:service@127.0.0.1:5070>\r\n"
    b"Call-ID: 1-13321@127.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: sip:sipp@127.0.0.1:5061\r\n"
    b"Max-Forwards: 70\r\n"
    b"Subject: Performance Test\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length:   188\r\n"
    b"\r\n" + UAC_PCAP_SDP
)

# -- a PBX trunk behind a NAT: rport, Record-Route, PCMU + telephone-event ----------------------

PBX_SOURCE: Final = ("203.0.113.7", 40112)  # what the NAT shows; Via says 10.0.0.5:5060
PBX_SDP: Final = (
    b"v=0\r\n"
    b"o=- 1712 1712 IN IP4 10.0.0.5\r\n"
    b"s=Asterisk\r\n"
    b"c=IN IP4 10.0.0.5\r\n"
    b"t=0 0\r\n"
    b"m=audio 17234 RTP/AVP 0 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\n"
    b"a=maxptime:150\r\n"
    b"a=sendrecv\r\n"
)
PBX_INVITE: Final = (
    b"INVITE sip:+15551230000@gateway.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.5:5060;rport;branch=z9hG4bKPj8d1c4e2a-57b1-4f0e-9a43-2d5c7e1f0b11\r\n"
    b"Record-Route: <sip:10.0.0.1;lr>\r\n"
    b'From: "Alice Doe" <sip:+15559870000@pbx.example.com>;tag=b6c1f3a0-2d84-4a7e\r\n'
    b"To: <sip:+15551230000@gateway.example.com>\r\n"
    b"Contact: <sip:asterisk@10.0.0.5:5060>\r\n"
    b"Call-ID: 6b7e2c40-95d3-4f21-a1c8-0e3d9b6a7f52\r\n"
    b"CSeq: 12345 INVITE\r\n"
    b"Allow: OPTIONS, REGISTER, SUBSCRIBE, NOTIFY, PUBLISH, INVITE, ACK, BYE, CANCEL, UPDATE, "
    b"PRACK, MESSAGE, REFER\r\n"
    b"Supported: 100rel, timer, replaces, norefersub\r\n"
    b"Session-Expires: 1800\r\n"
    b"Min-SE: 90\r\n"
    b"Max-Forwards: 70\r\n"
    b"User-Agent: Asterisk PBX 20.5.0\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 217\r\n"
    b"\r\n" + PBX_SDP
)
PBX_CALL_ID: Final = "6b7e2c40-95d3-4f21-a1c8-0e3d9b6a7f52"

# -- compact header forms (§7.3.3), as some phones send to keep under the MTU -------------------

COMPACT_INVITE: Final = (
    b"INVITE sip:100@192.0.2.10 SIP/2.0\r\n"
    b"v: SIP/2.0/UDP 192.0.2.20:5062;branch=z9hG4bKcompact1\r\n"
    b"f: <sip:phone@192.0.2.20>;tag=ph1\r\n"
    b"t: <sip:100@192.0.2.10>\r\n"
    b"i: compact-1@192.0.2.20\r\n"
    b"CSeq: 7 INVITE\r\n"
    b"m: <sip:phone@192.0.2.20:5062>\r\n"
    b"Max-Forwards: 70\r\n"
    b"k: replaces\r\n"
    b"c: application/sdp\r\n"
    b"l: 129\r\n"
    b"\r\n" + UAC_SDP
)

# -- malformed datagrams ---------------------------------------------------------------------

# Readable Via, Call-ID and CSeq: a 400 can be built and addressed.
NO_FROM: Final = UAC_INVITE.replace(
    b"From: sipp <sip:sipp@127.0.0.1:5061>;tag=12980SIPpTag001\r\n", b""
)
CSEQ_METHOD_MISMATCH: Final = UAC_INVITE.replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE")
CONTENT_LENGTH_TOO_LONG: Final = UAC_INVITE.replace(
    b"Content-Length:   129", b"Content-Length: 400"
)
BAD_HEADER_LINE: Final = UAC_INVITE.replace(b"Subject: Performance Test\r\n", b"Subject\r\n")
# Nothing to answer with: dropped.
NO_VIA: Final = UAC_INVITE.replace(
    b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-12980-1-0\r\n", b""
)
NO_CALL_ID: Final = UAC_INVITE.replace(b"Call-ID: 1-12980@127.0.0.1\r\n", b"")
BAD_START_LINE: Final = UAC_INVITE.replace(b" SIP/2.0\r\n", b" HTTP/1.1\r\n", 1)
GARBAGE: Final = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not sip at all"
MALFORMED_ACK: Final = UAC_ACK.replace(b"CSeq: 1 ACK", b"CSeq: one ACK")
