"""SIP calls through the real gateway: SIPp as the independent peer, plus a raw UDP user agent
for what SIPp's built-in scenarios cannot do (being hung up on, refusals, re-INVITE, bad input).
"""

from __future__ import annotations

import re
import socket
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.store import SessionRecord
from session.audio import audioop
from telephony.rtp import RtpPacket
from tests import sip_packets as rec
from tests.fakes.serve import free_udp_port
from tests.fixtures import PHONE_WAV, wav_ulaw
from tests.gateway_server import RunningGateway, run_gateway
from tests.sipp import SippRun, run_sipp, write_uac_pcap_files

FAST = {"STT_PROVIDER": "scripted", "TTS_PROVIDER": "tone", "AGENT_PROVIDER": "instant"}
API = {"Authorization": "Bearer test-api-token"}


def sip_env(**extra: str) -> dict[str, str]:
    base = free_udp_port() & ~1
    low = max(20000, min(base, 60000))
    return {
        "SIP_PORT": str(free_udp_port()),
        "RTP_PORT_MIN": str(low),
        "RTP_PORT_MAX": str(low + 400),
        **extra,
    }


@pytest.fixture
def sip_gateway() -> Iterator[RunningGateway]:
    with run_gateway({**FAST, **sip_env()}) as gateway:
        yield gateway


def records(gateway: RunningGateway) -> list[SessionRecord]:
    async def read() -> list[SessionRecord]:
        await gateway.runtime.writer.flush()
        page, _ = await gateway.runtime.store.list_sessions(limit=500)
        return page

    return gateway.call_in_loop(read)


def events(gateway: RunningGateway, session_id: str) -> list[dict[str, Any]]:
    async def read() -> list[Any]:
        await gateway.runtime.writer.flush()
        return list(await gateway.runtime.store.events(session_id, limit=1000))

    return gateway.call_in_loop(read)


def wait_until(condition: Any, timeout: float = 10, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def sipp(gateway: RunningGateway, tmp_path: Path, scenario: str = "uac", **kw: Any) -> SippRun:
    return run_sipp(
        scenario,
        gateway.settings.sip_port,
        cwd=tmp_path,
        local_port=free_udp_port(),
        media_port=free_udp_port() & ~1,
        **kw,
    )


def assert_clean(run: SippRun, calls: int) -> None:
    assert run.returncode == 0, run.output
    assert run.count("SuccessfulCall(C)") == calls, run.stats
    assert run.count("FailedCall(C)") == 0, run.stats
    assert run.unexpected == 0, run.stats


def media_stats(gateway: RunningGateway, session_id: str) -> dict[str, Any]:
    found = [e["data"] for e in events(gateway, session_id) if e["kind"] == "media_stats"]
    assert len(found) == 1, events(gateway, session_id)
    return found[0]


# -- SIPp ------------------------------------------------------------------------------------


def test_sipp_uac_calls_complete_and_the_reply_audio_reaches_sipp(
    sip_gateway: RunningGateway, tmp_path: Path
) -> None:
    # -rtp_echo: SIPp sends back every RTP packet it receives, so what the gateway receives
    # on its RTP port is its own greeting, having reached SIPp.
    run = sipp(sip_gateway, tmp_path, calls=5, rate=5, call_ms=2500, extra=["-rtp_echo"])
    assert_clean(run, 5)
    wait_until(lambda: not sip_gateway.runtime.live, what="the calls to end")
    calls = [r for r in records(sip_gateway) if r.transport == "sip"]
    assert len(calls) == 5
    for record in calls:
        assert record.ended and record.end_reason == "bye"
        assert (record.from_number, record.to_number, record.route) == (
            "sipp",
            "service",
            "default",
        )
        assert record.call_sid.endswith("@127.0.0.1")  # the SIP Call-ID
        stats = media_stats(sip_gateway, record.session_id)
        assert stats["codec"] == "PCMU" and stats["ptime_ms"] == 20
        assert stats["packets_sent"] >= 20  # the greeting's tone: half a second or more
        assert stats["packets_received"] >= 0.8 * stats["packets_sent"]
        kinds = [e["kind"] for e in events(sip_gateway, record.session_id)]
        assert "agent_text" in kinds  # the greeting was played to the end
    sip = sip_gateway.sip
    assert sip is not None
    assert not sip.calls and not sip.ports.in_use


def test_fifty_sipp_calls_at_ten_per_second(sip_gateway: RunningGateway, tmp_path: Path) -> None:
    run = sipp(sip_gateway, tmp_path, calls=50, rate=10, call_ms=2000)
    assert_clean(run, 50)
    wait_until(lambda: not sip_gateway.runtime.live, what="the calls to end")
    calls = [r for r in records(sip_gateway) if r.transport == "sip"]
    assert len(calls) == 50 and all(r.end_reason == "bye" for r in calls)
    assert len({r.session_id for r in calls}) == 50
    assert sip_gateway.sip is not None and not sip_gateway.sip.ports.in_use


def test_uac_pcap_speech_is_transcribed_and_dtmf_reaches_the_agent(tmp_path: Path) -> None:
    """SIPp's uac_pcap through the offline stack: PCMA in 30 ms packets, then RFC 4733 keys.

    The speech is the real phone recording from the shared fixtures (3.3 s): SIPp's own 7 s
    recording ends 1.5 s before the scenario hangs up, less than PocketSphinx may need to
    finish it on a busy machine. The scenario hangs up a second after the keys, before a lone
    "1" would time out into a turn, so "#" ends the entry as a caller would."""
    write_uac_pcap_files(tmp_path, audioop.ulaw2lin(wav_ulaw(PHONE_WAV), 2), "1#")
    with run_gateway(sip_env()) as gateway:
        run = sipp(gateway, tmp_path, "uac_pcap", calls=1, rate=1)
        assert_clean(run, 1)
        wait_until(lambda: not gateway.runtime.live, what="the call to end")
        (record,) = [r for r in records(gateway) if r.transport == "sip"]
        log = events(gateway, record.session_id)
        stats = media_stats(gateway, record.session_id)
    finals = [e["data"]["text"] for e in log if e["kind"] == "transcript"]
    assert finals and all(text.strip() for text in finals), finals
    # Whatever the recogniser made of the phone line (it is weak on real phone audio), the
    # turns come in order: what was said, then the keys.
    turns = [e["data"] for e in log if e["kind"] == "user_turn"]
    assert turns[-1] == {"text": "", "dtmf": "1"}, turns
    assert " ".join(t["text"] for t in turns[:-1]) == " ".join(finals), turns
    replies = [e["data"]["text"] for e in log if e["kind"] == "agent_text"]
    assert f"You said: {turns[-2]['text']}." in replies and "You pressed 1." in replies, replies
    assert stats["codec"] == "PCMA" and stats["packets_sent"] > 0
    assert stats["packets_received"] >= 110 and stats["packets_lost"] == 0


# -- a raw user agent --------------------------------------------------------------------------


class RawUac:
    """The recorded SIPp packets, re-addressed to the gateway from this test's own sockets."""

    def __init__(self, sip_port: int) -> None:
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind(("127.0.0.1", 0))
        self.sip.settimeout(5)
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", 0))
        self.rtp.settimeout(5)
        self.port = self.sip.getsockname()[1]
        self.rtp_port = self.rtp.getsockname()[1]
        self.gateway = ("127.0.0.1", sip_port)
        self.to_tag = ""

    def close(self) -> None:
        self.sip.close()
        self.rtp.close()

    def adapt(self, packet: bytes) -> bytes:
        packet = packet.replace(b"127.0.0.1:5061", f"127.0.0.1:{self.port}".encode())
        packet = packet.replace(b"127.0.0.1:5070", f"127.0.0.1:{self.gateway[1]}".encode())
        packet = packet.replace(b"m=audio 6000 ", f"m=audio {self.rtp_port} ".encode())
        if self.to_tag:
            packet = rec.with_tag(packet, self.to_tag)
        head, sep, body = packet.partition(b"\r\n\r\n")
        head = re.sub(rb"Content-Length: *\d+", b"Content-Length: %d" % len(body), head)
        return head + sep + body

    def send(self, packet: bytes) -> None:
        self.sip.sendto(self.adapt(packet), self.gateway)

    def receive(self) -> bytes:
        data, _ = self.sip.recvfrom(65535)
        return data

    def status(self, wanted: int) -> bytes:
        """Reads responses until one with `wanted` status (provisional ones are skipped)."""
        while True:
            data = self.receive()
            match = re.match(rb"SIP/2\.0 (\d{3})", data)
            assert match, data[:200]
            code = int(match.group(1))
            if code == wanted:
                tag = re.search(rb"^To:.*;tag=([^;\r\n]+)", data, re.M | re.I)
                if tag and code < 300 and re.search(rb"^CSeq: 1 INVITE", data, re.M):
                    self.to_tag = tag.group(1).decode()  # the dialog's
                return data
            assert code < 200, f"expected {wanted}, got {data[:300]!r}"

    def answered_call(self) -> bytes:
        self.send(rec.UAC_INVITE)
        ok = self.status(200)
        self.send(rec.UAC_ACK)
        return ok


@pytest.fixture
def uac(sip_gateway: RunningGateway) -> Iterator[RawUac]:
    peer = RawUac(sip_gateway.settings.sip_port)
    yield peer
    peer.close()


def _session_for(gateway: RunningGateway, call_id: str) -> str:
    wait_until(
        lambda: any(s.metadata["call_sid"] == call_id for s in gateway.runtime.live.values()),
        what="the session",
    )
    return next(sid for sid, s in gateway.runtime.live.items() if s.metadata["call_sid"] == call_id)


def test_api_hangup_sends_bye_and_the_greeting_arrives_as_rtp(
    sip_gateway: RunningGateway, uac: RawUac
) -> None:
    ok = uac.answered_call()
    assert b"Content-Type: application/sdp" in ok
    session_id = _session_for(sip_gateway, rec.UAC_CALL_ID)
    packet = RtpPacket.parse(uac.rtp.recvfrom(2048)[0])  # the greeting
    assert packet.payload_type == 0 and len(packet.payload) == 160
    response = httpx.post(
        f"{sip_gateway.url}/api/sessions/{session_id}/hangup", headers=API, timeout=10
    )
    assert response.status_code == 200, response.text
    bye = uac.receive()
    while bye.startswith(b"SIP/2.0"):  # a 200 retransmitted before our ACK was seen
        bye = uac.receive()
    assert bye.startswith(b"BYE sip:sipp@127.0.0.1:%d" % uac.port), bye[:200]
    record = sip_gateway.record(session_id)
    assert record is not None and record.end_reason == "hangup" and record.transport == "sip"
    transfer = httpx.post(
        f"{sip_gateway.url}/api/sessions/{session_id}/transfer",
        headers=API,
        json={"to": "+15550100003"},
        timeout=10,
    )
    assert transfer.status_code == 409


def test_transfer_of_a_live_sip_call_is_refused(sip_gateway: RunningGateway, uac: RawUac) -> None:
    uac.answered_call()
    session_id = _session_for(sip_gateway, rec.UAC_CALL_ID)
    response = httpx.post(
        f"{sip_gateway.url}/api/sessions/{session_id}/transfer",
        headers=API,
        json={"to": "+15550100003"},
        timeout=10,
    )
    assert response.status_code == 409 and "SIP" in response.json()["detail"]
    uac.send(rec.UAC_BYE)
    uac.status(200)
    wait_until(lambda: not sip_gateway.runtime.live, what="the call to end")


def test_the_dialled_number_picks_its_route(sip_gateway: RunningGateway, uac: RawUac) -> None:
    route = {"greeting": "Support line.", "agent": "instant"}
    number = "+15550100002"
    put = httpx.put(f"{sip_gateway.url}/api/routes/{number}", headers=API, json=route, timeout=10)
    assert put.status_code == 200, put.text
    # The Request-URI user as a trunk may write it: visual separators and a user parameter.
    uac.send(rec.UAC_INVITE.replace(b"INVITE sip:service@", b"INVITE sip:+1-555-010-0002;npdi@"))
    uac.status(200)
    uac.send(rec.UAC_ACK)
    session_id = _session_for(sip_gateway, rec.UAC_CALL_ID)
    uac.send(rec.UAC_BYE)
    uac.status(200)
    wait_until(lambda: not sip_gateway.runtime.live, what="the call to end")
    record = sip_gateway.record(session_id)
    assert record is not None and record.end_reason == "bye"
    assert (record.route, record.to_number) == (number, number)
    spoken = [
        e["data"]["text"] for e in events(sip_gateway, session_id) if e["kind"] == "agent_text"
    ]
    assert spoken[:1] == ["Support line."]


def test_reinvite_to_hold_is_answered_and_the_call_goes_on(
    sip_gateway: RunningGateway, uac: RawUac
) -> None:
    uac.answered_call()
    _session_for(sip_gateway, rec.UAC_CALL_ID)
    uac.send(rec.UAC_REINVITE)
    ok = uac.status(200)
    assert b"a=recvonly" in ok  # they send only: we only receive
    uac.send(rec.UAC_REINVITE_ACK)
    uac.send(rec.UAC_BYE)
    uac.status(200)
    wait_until(lambda: not sip_gateway.runtime.live, what="the call to end")


def test_an_ended_sip_call_is_freed_without_the_cyclic_collector(
    sip_gateway: RunningGateway, uac: RawUac, no_collector: None
) -> None:
    # As tests/test_call_memory.py for Twilio: what outlives the call sits in a cycle.
    uac.answered_call()
    session = weakref.ref(sip_gateway.runtime.live[_session_for(sip_gateway, rec.UAC_CALL_ID)])
    uac.rtp.recvfrom(2048)  # the greeting is playing
    uac.send(rec.UAC_BYE)
    uac.status(200)
    wait_until(lambda: session() is None, what="the ended call to be freed")


def test_a_caller_that_goes_silent_without_bye_is_hung_up(tmp_path: Path) -> None:
    with run_gateway({**FAST, **sip_env(RTP_TIMEOUT="1")}) as gateway:
        peer = RawUac(gateway.settings.sip_port)
        try:
            peer.answered_call()
            session_id = _session_for(gateway, rec.UAC_CALL_ID)
            # One packet, then nothing: the caller's side is gone.
            silence = RtpPacket(payload_type=0, sequence=1, timestamp=0, ssrc=9, payload=bytes(160))
            peer.rtp.sendto(silence.serialize(), ("127.0.0.1", _rtp_port(gateway)))
            bye = peer.receive()
            while bye.startswith(b"SIP/2.0"):
                bye = peer.receive()
            assert bye.startswith(b"BYE "), bye[:200]
        finally:
            peer.close()
        wait_until(lambda: not gateway.runtime.live, what="the call to end")
        record = gateway.record(session_id)
        assert record is not None and record.end_reason == "media_timeout"


def test_an_invite_without_sdp_gets_our_offer_and_the_ack_answers_it(
    sip_gateway: RunningGateway, uac: RawUac
) -> None:
    uac.send(rec.CANCEL_INVITE)  # SIPp's INVITE without a body
    ok = uac.status(200)
    offer = ok.partition(b"\r\n\r\n")[2]
    assert re.search(rb"^m=audio \d+ RTP/AVP 0 8 101\r$", offer, re.M), offer
    port = int(re.search(rb"^m=audio (\d+)", offer, re.M).group(1))  # type: ignore[union-attr]
    answer_sdp = rec.UAC_PCAP_SDP  # PCMA and telephone-event, from the offer's formats
    ack = rec.CANCEL_ACK.replace(b"Max-Forwards: 70\r\n", b"Content-Type: application/sdp\r\n")
    uac.send(ack.replace(b"Content-Length: 0\r\n\r\n", b"Content-Length: 0\r\n\r\n" + answer_sdp))
    packet = RtpPacket.parse(uac.rtp.recvfrom(2048)[0])  # the greeting, in the answer's codec
    assert packet.payload_type == 8
    assert uac.gateway[1] != port
    bye = rec.UAC_BYE.replace(b"1-12980@", b"1-13185@").replace(
        b"12980SIPpTag001", b"13185SIPpTag001"
    )
    uac.send(bye)
    uac.status(200)
    wait_until(lambda: not sip_gateway.runtime.live, what="the call to end")


def test_options_is_answered_with_allow(sip_gateway: RunningGateway, uac: RawUac) -> None:
    uac.send(rec.OPTIONS_RPORT)
    ok = uac.status(200)
    assert re.search(rb"^Allow: INVITE, ACK, BYE, CANCEL, OPTIONS\r$", ok, re.M), ok


def test_draining_instance_answers_503_with_retry_after(
    sip_gateway: RunningGateway, uac: RawUac
) -> None:
    sip_gateway.runtime.draining = True
    uac.send(rec.UAC_INVITE)
    refused = uac.status(503)
    assert re.search(rb"^Retry-After: \d+", refused, re.M)
    assert not sip_gateway.runtime.live


def test_offer_without_a_g711_codec_gets_488(sip_gateway: RunningGateway, uac: RawUac) -> None:
    g722_only = rec.UAC_INVITE.replace(
        b"RTP/AVP 0\r\na=rtpmap:0 PCMU/8000", b"RTP/AVP 9\r\na=rtpmap:9 G722/8000"
    )
    uac.send(g722_only)
    uac.status(488)
    assert not sip_gateway.runtime.live
    assert sip_gateway.sip is not None and not sip_gateway.sip.ports.in_use


def test_sources_outside_sip_allowed_sources_get_403(tmp_path: Path) -> None:
    env = {**FAST, **sip_env(SIP_ALLOWED_SOURCES="203.0.113.0/24")}
    with run_gateway(env) as gateway:
        peer = RawUac(gateway.settings.sip_port)
        try:
            peer.send(rec.UAC_INVITE)
            peer.status(403)
        finally:
            peer.close()
        assert not gateway.runtime.live
        run = sipp(gateway, tmp_path, calls=1, rate=1)
        assert run.count("SuccessfulCall(C)") == 0


def test_malformed_datagrams_are_answered_400_or_dropped_and_calls_go_on(
    sip_gateway: RunningGateway, uac: RawUac
) -> None:
    uac.answered_call()
    session_id = _session_for(sip_gateway, rec.UAC_CALL_ID)
    uac.sip.sendto(rec.GARBAGE, uac.gateway)  # no Via to answer to: dropped
    uac.send(rec.BAD_HEADER_LINE.replace(b"1-12980@", b"2-12980@"))
    uac.status(400)
    uac.rtp.sendto(b"\x80\x00not rtp", ("127.0.0.1", _rtp_port(sip_gateway)))
    uac.send(rec.UAC_BYE)
    uac.status(200)
    wait_until(lambda: not sip_gateway.runtime.live, what="the call to end")
    record = sip_gateway.record(session_id)
    assert record is not None and record.end_reason == "bye"


def _rtp_port(gateway: RunningGateway) -> int:
    assert gateway.sip is not None
    (call,) = gateway.sip.calls.values()
    assert call.port is not None
    return call.port
