"""RtpSession: pacing with exact fake times, marks, clear, symmetric RTP, and two sessions back
to back in memory exchanging audio and a DTMF digit.
"""

from __future__ import annotations

import itertools
import math
import random
import struct
from dataclasses import replace

import pytest

from telephony.g711 import alaw_to_pcm, pcm_to_alaw, pcm_to_ulaw, ulaw_to_pcm
from telephony.rtp import RtpPacket
from telephony.rtp_session import (
    Addr,
    AudioReceived,
    DtmfReceived,
    PlayoutMark,
    RtpEvent,
    RtpSession,
)
from telephony.sdp import MediaParams, SessionDescription, accept_answer, answer
from tests.test_rtp import G711A_PCAP, SIPP_DTMF_1, SIPP_PCAPS, needs_sipp_pcaps, read_pcap_rtp
from tests.test_sdp import SIPP_UAC_PCAP

PEER: Addr = ("198.51.100.7", 6000)
NAT: Addr = ("203.0.113.5", 40000)
ME: Addr = ("192.0.2.10", 10000)


def media(**changes: object) -> MediaParams:
    base = MediaParams(
        codec="PCMU",
        payload_type=0,
        ptime_ms=20,
        dtmf_payload_type=101,
        remote_addr=PEER,
        direction="sendrecv",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def session(params: MediaParams | None = None, **kwargs: object) -> RtpSession:
    options: dict[str, object] = {"ssrc": 0x1234, "sequence": 65534, "timestamp": 1000}
    options.update(kwargs)
    return RtpSession(params or media(), **options)  # type: ignore[arg-type]


def tone(ms: int, rate: int = 8000, freq: float = 440.0) -> bytes:
    count = rate * ms // 1000
    return struct.pack(
        f"<{count}h", *(int(8000 * math.sin(2 * math.pi * freq * i / rate)) for i in range(count))
    )


def drain(s: RtpSession) -> list[RtpEvent]:
    events = []
    while (event := s.next_event()) is not None:
        events.append(event)
    return events


def sent(s: RtpSession, now: float) -> list[RtpPacket]:
    return [RtpPacket.parse(data) for data, _ in s.datagrams_to_send(now)]


def rtp(seq: int, ts: int, payload: bytes, *, pt: int = 0, ssrc: int = 77) -> bytes:
    return RtpPacket(
        payload_type=pt, sequence=seq, timestamp=ts, ssrc=ssrc, payload=payload
    ).serialize()


# -- outbound pacing


def test_packets_are_due_one_ptime_apart() -> None:
    s = session()
    audio = tone(100)
    s.send_audio(audio)
    assert s.get_timer() is not None
    (first,) = sent(s, 10.0)
    assert (first.sequence, first.timestamp, first.marker, first.payload_type) == (
        65534,
        1000,
        True,
        0,
    )
    assert first.ssrc == 0x1234
    assert first.payload == pcm_to_ulaw(audio[:320])
    assert s.get_timer() == pytest.approx(10.02)
    assert sent(s, 10.019) == []
    (second,) = sent(s, 10.02)
    assert (second.sequence, second.timestamp, second.marker) == (65535, 1160, False)
    assert [p.sequence for p in sent(s, 10.04)] == [0]  # the sequence number wraps
    assert sent(s, 10.05) == []
    assert [(p.sequence, p.timestamp) for p in sent(s, 10.08)] == [(1, 1480), (2, 1640)]
    assert s.get_timer() == pytest.approx(10.1)
    assert sent(s, 10.1) == []  # nothing queued at the next slot: the talk spurt ends
    assert s.get_timer() is None
    assert s.stats.sent == 5
    assert s.played_until == pytest.approx(0.1)


def test_any_chunk_size_is_packetised_and_the_tail_padded() -> None:
    s = session()
    audio = tone(50)
    cuts = [0, 2, 98, 330, 500, 640, 798, len(audio)]
    for a, b in itertools.pairwise(cuts):
        s.send_audio(audio[a:b])
    packets = sent(s, 0.0) + sent(s, 0.02) + sent(s, 0.04) + sent(s, 0.06)
    assert [len(p.payload) for p in packets] == [160, 160, 160]
    assert packets[2].payload == pcm_to_ulaw(audio[640:] + bytes(160))
    with pytest.raises(ValueError):
        s.send_audio(b"\x00")


def test_a_new_talk_spurt_has_the_marker_and_continues_the_numbering() -> None:
    s = session()
    s.send_audio(tone(40))
    assert [p.marker for p in sent(s, 10.0) + sent(s, 10.02)] == [True, False]
    assert sent(s, 10.04) == []  # spurt over; idle from 10.04
    s.send_audio(tone(40))
    first, *_ = sent(s, 10.5)
    assert first.marker
    assert first.sequence == 0  # 65534, 65535, then 0
    # The timestamp ran on through the 460 ms of silence: 1000 + 2 frames + 0.46 s.
    assert first.timestamp == 1000 + 320 + 3680
    assert sent(s, 10.519) == []
    assert [p.marker for p in sent(s, 10.52)] == [False]


def test_a_stall_sends_a_few_packets_at_once_not_a_catch_up_burst() -> None:
    s = session(max_catchup_ms=40)
    s.send_audio(tone(1000))
    assert len(sent(s, 0.0)) == 1
    late = sent(s, 0.5)  # the adapter did not run for half a second
    assert len(late) == 3  # slots due at 0.46, 0.48 and 0.50
    assert late[0].marker and not late[1].marker
    assert [p.timestamp for p in late] == [1000 + 160 * k for k in (23, 24, 25)]
    assert [p.sequence for p in late] == [65535, 0, 1]  # no packet was lost, none skipped
    assert s.stats.skipped_slots == 22
    assert sent(s, 0.519) == []
    assert len(sent(s, 0.52)) == 1
    total = 1 + 3 + 1 + sum(len(sent(s, 0.52 + 0.02 * k)) for k in range(1, 60))
    assert total == 50  # the audio is delayed, not dropped


def test_30ms_packets() -> None:
    s = session(media(ptime_ms=30, codec="PCMA", payload_type=8))
    audio = tone(90)
    s.send_audio(audio)
    packets = sent(s, 1.0) + sent(s, 1.029) + sent(s, 1.03) + sent(s, 1.06)
    assert [(len(p.payload), p.timestamp) for p in packets] == [
        (240, 1000),
        (240, 1240),
        (240, 1480),
    ]
    assert packets[0].payload == pcm_to_alaw(audio[:480])
    assert {p.payload_type for p in packets} == {8}


# -- marks and clear


def test_marks_come_back_once_the_audio_before_them_is_sent() -> None:
    s = session()
    s.mark("empty")
    assert drain(s) == [PlayoutMark("empty")]  # nothing queued: already played
    s.send_audio(tone(50))
    s.mark("first")
    s.send_audio(tone(20))
    s.mark("second")
    sent(s, 0.0)
    sent(s, 0.02)
    assert drain(s) == []
    sent(s, 0.04)  # carries the last 10 ms of "first" and 10 ms of the next sentence
    assert drain(s) == [PlayoutMark("first")]
    assert s.played_until == pytest.approx(0.06)
    sent(s, 0.06)
    assert drain(s) == [PlayoutMark("second")]
    assert s.played_until == pytest.approx(0.07)
    assert s.pending_audio == 0


def test_clear_drops_queued_audio_and_reports_pending_marks_unplayed() -> None:
    s = session()
    s.send_audio(tone(1000))
    s.mark("sentence")
    assert len(sent(s, 0.0) + sent(s, 0.02)) == 2
    s.clear()
    assert drain(s) == [PlayoutMark("sentence", played=False)]
    assert sent(s, 0.04) == []
    assert s.played_until == pytest.approx(0.04)
    assert s.pending_audio == 0
    s.send_audio(tone(20))  # the next reply starts a new talk spurt
    (packet,) = sent(s, 0.3)
    assert packet.marker


def test_hold_keeps_audio_queued_until_resumed() -> None:
    s = session(media(direction="recvonly"))  # the caller sent sendonly: we must not send
    s.send_audio(tone(40))
    s.mark("m")
    assert s.datagrams_to_send(0.0) == []
    assert drain(s) == []
    s.update(media())
    assert len(sent(s, 1.0) + sent(s, 1.02)) == 2
    assert drain(s) == [PlayoutMark("m")]


# -- DTMF out


def test_send_dtmf_between_audio() -> None:
    s = session()
    s.send_audio(tone(20))
    s.send_dtmf("#", duration_ms=100)
    s.mark("after-digit")
    s.send_audio(tone(20))
    packets = [p for k in range(12) for p in sent(s, 0.02 * k)]
    kinds = [p.payload_type for p in packets]
    assert kinds == [0] + [101] * 7 + [0]
    events = packets[1:8]
    assert events[0].marker and not any(p.marker for p in events[1:])
    assert {p.timestamp for p in events} == {1160}  # the event's start, in every packet
    assert [p.sequence for p in packets] == [(65534 + k) & 0xFFFF for k in range(9)]
    assert packets[-1].timestamp == 1000 + 8 * 160  # audio resumes on the running clock
    assert events[-1].payload == bytes([11, 0x80 | 10, 0x03, 0x20])
    assert PlayoutMark("after-digit") in drain(s)


def test_send_dtmf_needs_telephone_event() -> None:
    s = session(media(dtmf_payload_type=None))
    with pytest.raises(ValueError):
        s.send_dtmf("1")
    with pytest.raises(ValueError):
        session().send_dtmf("E")


# -- inbound


def test_inbound_audio_is_decoded_in_order() -> None:
    s = session()
    payloads = [pcm_to_ulaw(tone(20, freq=300 + 100 * k)) for k in range(4)]
    for k in (0, 2, 1, 3):
        s.receive_datagram(rtp(k, 160 * k, payloads[k]), PEER, now=0.02 * k)
    s.handle_timer(0.2)
    events = drain(s)
    assert events == [AudioReceived(ulaw_to_pcm(p)) for p in payloads]
    assert s.stats.received == 4


def test_a_lost_frame_is_concealed_with_a_faded_repeat() -> None:
    s = session()
    frame = pcm_to_ulaw(tone(20))
    for k in (0, 2):
        s.receive_datagram(rtp(k, 160 * k, frame), PEER, now=0.02 * k)
    # Frame 0 was due at 0.04 and came out with the second datagram; frame 1 is missing and
    # the timer is set for the moment it must be concealed.
    assert s.get_timer() == pytest.approx(0.06)
    s.handle_timer(0.06)
    s.handle_timer(0.08)
    frames = [e for e in drain(s) if isinstance(e, AudioReceived)]
    assert [f.concealed for f in frames] == [False, True, False]
    concealed = frames[1]
    assert len(concealed.pcm) == 320
    peak = max(abs(v) for v in struct.unpack("<160h", concealed.pcm))
    assert 3000 < peak < 5000  # half of the 8000-peak tone
    assert s.stats.jitter.concealed == 1


def test_silence_is_played_while_the_peer_sends_nothing() -> None:
    s = session()
    assert s.get_timer() is None  # nothing heard yet: nothing to fill
    frame = pcm_to_ulaw(tone(20))
    for k in range(3):
        s.receive_datagram(rtp(k, 160 * k, frame), PEER, now=0.02 * k)
    s.handle_timer(0.08)  # the last frame is out at 0.08
    assert len(drain(s)) == 3
    # Silence suppression: nothing more arrives. From the jitter margin after the end of the
    # last frame, one 20 ms frame of silence per 20 ms.
    assert s.get_timer() == pytest.approx(0.08 + 0.02 + 0.04)
    s.handle_timer(0.14)
    s.handle_timer(0.161)
    silence = drain(s)
    assert silence == [AudioReceived(bytes(320), concealed=True)] * 2
    # A new talk spurt stops the filling; its frames come after the jitter delay.
    s.receive_datagram(rtp(3, 160 * 20, frame), PEER, now=0.17)
    assert s.get_timer() == pytest.approx(0.21)
    s.handle_timer(0.21)
    assert drain(s) == [AudioReceived(ulaw_to_pcm(frame))]
    assert s.stats.silence_filled == 2


def test_a_stall_does_not_replay_the_missed_silence_in_a_burst() -> None:
    s = session()
    s.receive_datagram(rtp(0, 0, pcm_to_ulaw(tone(20))), PEER, now=0.0)
    s.handle_timer(0.04)
    drain(s)
    s.handle_timer(5.0)  # the loop did not run for five seconds
    assert len(drain(s)) == 5
    assert s.get_timer() == pytest.approx(5.02)


def test_no_silence_is_made_up_on_hold() -> None:
    s = session()
    s.receive_datagram(rtp(0, 0, pcm_to_ulaw(tone(20))), PEER, now=0.0)
    s.handle_timer(0.04)
    drain(s)
    s.update(media(direction="sendonly"))  # the peer put us on hold: we do not receive
    assert s.get_timer() is None
    s.handle_timer(1.0)
    assert drain(s) == []


def test_inbound_dtmf_from_sipp_is_one_digit() -> None:
    s = session()
    for k, data in enumerate(SIPP_DTMF_1):
        s.receive_datagram(data, PEER, now=0.02 * k)
    assert drain(s) == [DtmfReceived("1")]


def test_symmetric_rtp_latches_the_first_source() -> None:
    s = session()
    assert s.remote_addr == PEER and not s.latched
    s.receive_datagram(rtp(0, 0, b"\xff" * 160), NAT, now=0.0)
    assert s.latched and s.remote_addr == NAT
    s.send_audio(tone(20))
    assert [addr for _, addr in s.datagrams_to_send(0.0)] == [NAT]
    s.receive_datagram(rtp(1, 160, b"\xff" * 160), PEER, now=0.02)  # SDP address, too late
    assert s.stats.wrong_source == 1
    s.handle_timer(1.0)
    assert len(drain(s)) == 1


def test_a_new_address_in_a_re_invite_is_latched_afresh() -> None:
    s = session()
    s.receive_datagram(rtp(0, 0, b"\xff" * 160), NAT, now=0.0)
    s.update(media(remote_addr=("198.51.100.99", 7000)))
    assert s.remote_addr == ("198.51.100.99", 7000) and not s.latched
    s.update(media(remote_addr=("198.51.100.99", 7000), direction="recvonly"))
    assert s.remote_addr == ("198.51.100.99", 7000)


def test_no_address_to_send_to_until_the_peer_is_heard() -> None:
    s = session(media(remote_addr=("0.0.0.0", 6000)))
    s.send_audio(tone(20))
    assert s.datagrams_to_send(0.0) == []
    s.receive_datagram(rtp(0, 0, b"\xff" * 160), NAT, now=0.01)
    assert [addr for _, addr in s.datagrams_to_send(0.01)] == [NAT]


def test_rtcp_garbage_and_strangers_are_counted_not_raised() -> None:
    s = session()
    s.receive_datagram(bytes.fromhex("80c90001") + b"\x00\x00\x00\x01", NAT, now=0.0)
    s.receive_datagram(b"\x00garbage", NAT, now=0.0)
    s.receive_datagram(rtp(0, 0, b"\x00" * 10, pt=13), NAT, now=0.0)  # comfort noise
    s.receive_datagram(rtp(0, 0, b"\x01", pt=101), NAT, now=0.0)  # short telephone-event
    assert (s.stats.rtcp, s.stats.malformed, s.stats.unknown_payload_type) == (1, 2, 1)
    assert s.remote_addr == NAT  # the telephone-event packet was well-formed RTP: it latched
    rng = random.Random(3550)
    for _ in range(2000):
        size = rng.randrange(0, 200)
        s.receive_datagram(bytes(rng.getrandbits(8) for _ in range(size)), NAT, now=1.0)
    s.handle_timer(2.0)
    drain(s)


def test_inbound_while_on_hold_is_ignored() -> None:
    s = session(media(direction="sendonly"))
    s.receive_datagram(rtp(0, 0, b"\xff" * 160), PEER, now=0.0)
    s.handle_timer(1.0)
    assert drain(s) == []
    assert s.stats.not_receiving == 1


@needs_sipp_pcaps
def test_sipp_uac_pcap_media_replayed_into_a_session() -> None:
    params = answer(
        SessionDescription.parse(SIPP_UAC_PCAP), local_ip="127.0.0.1", rtp_port=10000
    ).media
    assert params is not None
    s = RtpSession(params)
    audio = read_pcap_rtp(G711A_PCAP)
    dtmf = read_pcap_rtp(SIPP_PCAPS / "dtmf_2833_1.pcap")
    start = audio[0][0]
    sipp = ("127.0.0.1", 6002)
    for when, data in audio:
        s.receive_datagram(data, sipp, now=when - start)
    end = audio[-1][0] - start
    for when, data in dtmf:
        s.receive_datagram(data, sipp, now=end + 1 + when - dtmf[0][0])
    s.handle_timer(end + 10)
    events = drain(s)
    frames = [e for e in events if isinstance(e, AudioReceived)]
    assert len(frames) == len(audio)
    assert {len(f.pcm) for f in frames} == {480}  # 30 ms of 16-bit PCM
    assert not any(f.concealed for f in frames)
    first = RtpPacket.parse(audio[0][1]).payload
    assert frames[0].pcm == alaw_to_pcm(first)
    assert [e for e in events if isinstance(e, DtmfReceived)] == [DtmfReceived("1")]


# -- two sessions back to back


def test_two_sessions_exchange_audio_and_a_digit() -> None:
    # The caller's offer, our answer, and both sides' view of the stream, as in a real call.
    offer = SessionDescription.parse(SIPP_UAC_PCAP.replace("127.0.0.1", "198.51.100.7"))
    ours = answer(offer, local_ip=ME[0], rtp_port=ME[1])
    assert ours.media is not None
    theirs = accept_answer(offer, ours.sdp)
    gateway = RtpSession(ours.media, ssrc=1, sequence=100, timestamp=0)
    caller = RtpSession(replace(theirs, remote_addr=ME), ssrc=2, sequence=65500, timestamp=7)
    caller_addr = ("198.51.100.7", 6002)

    hello = tone(300, freq=500)
    reply = tone(200, freq=700)
    caller.send_audio(hello)
    caller.send_dtmf("5")
    gateway.send_audio(reply)
    gateway.mark("reply-done")

    heard_by_gateway: list[RtpEvent] = []
    heard_by_caller: list[RtpEvent] = []
    now = 0.0
    while now < 2.0:
        for data, addr in caller.datagrams_to_send(now):
            assert addr == ME
            gateway.receive_datagram(data, caller_addr, now + 0.005)  # 5 ms one way
        for data, addr in gateway.datagrams_to_send(now):
            assert addr == caller_addr
            caller.receive_datagram(data, ME, now + 0.005)
        gateway.handle_timer(now)
        caller.handle_timer(now)
        heard_by_gateway += drain(gateway)
        heard_by_caller += drain(caller)
        timers = [t for t in (gateway.get_timer(), caller.get_timer()) if t is not None]
        now = max(now + 0.001, min(timers)) if timers else now + 0.01

    frames_in = [e for e in heard_by_gateway if isinstance(e, AudioReceived)]
    audio_in = b"".join(e.pcm for e in frames_in if not e.concealed)
    assert audio_in == alaw_to_pcm(pcm_to_alaw(hello))  # PCMA both ways, nothing lost
    # After the caller's audio, silence: the stream stopped, the inbound clock did not.
    filled = [e for e in frames_in if e.concealed]
    assert filled and not any(any(e.pcm) for e in filled)
    assert [e for e in heard_by_gateway if isinstance(e, DtmfReceived)] == [DtmfReceived("5")]
    audio_out = b"".join(
        e.pcm for e in heard_by_caller if isinstance(e, AudioReceived) and not e.concealed
    )
    assert audio_out == alaw_to_pcm(pcm_to_alaw(reply))
    assert PlayoutMark("reply-done") in heard_by_gateway
    assert gateway.latched and gateway.remote_addr == caller_addr
    assert gateway.stats.jitter.concealed == caller.stats.jitter.concealed == 0
