"""RFC 4733 telephone-events: payloads, one digit per key press, and the encoder."""

from __future__ import annotations

import pytest

from telephony.dtmf import (
    DtmfError,
    DtmfReceiver,
    TelephoneEvent,
    digit_to_event,
    encode_digit,
    event_to_digit,
)
from telephony.rtp import RtpPacket
from tests.test_rtp import SIPP_DTMF_1


def event_packet(
    event: TelephoneEvent, *, seq: int, ts: int, ssrc: int = 5, marker: bool = False
) -> RtpPacket:
    return RtpPacket(
        marker=marker,
        payload_type=101,
        sequence=seq,
        timestamp=ts,
        ssrc=ssrc,
        payload=event.serialize(),
    )


def press(
    digit: str, *, ts: int, seq: int, ssrc: int = 5, duration_ms: int = 100
) -> list[RtpPacket]:
    payloads = encode_digit(digit, duration_ms=duration_ms)
    return [
        event_packet(p, seq=seq + i, ts=ts, ssrc=ssrc, marker=i == 0)
        for i, p in enumerate(payloads)
    ]


def test_parses_sipp_recorded_events() -> None:
    events = [TelephoneEvent.parse(RtpPacket.parse(data).payload) for data in SIPP_DTMF_1]
    assert events[0] == TelephoneEvent(event=1, end=False, volume=10, duration=0)
    assert events[1].duration == 320
    assert events[-1] == TelephoneEvent(event=1, end=True, volume=10, duration=2240)
    assert [e.end for e in events] == [False] * 7 + [True] * 3
    assert all(
        e.serialize() == RtpPacket.parse(d).payload
        for e, d in zip(events, SIPP_DTMF_1, strict=True)
    )


def test_sipp_key_press_is_one_digit() -> None:
    receiver = DtmfReceiver()
    digits = [receiver.receive(RtpPacket.parse(data)) for data in SIPP_DTMF_1]
    assert [d for d in digits if d is not None] == ["1"]
    assert digits[0] == "1"  # reported on the first packet, not held until the end


def test_repeated_end_packets_reordered_and_duplicated_still_one_digit() -> None:
    receiver = DtmfReceiver()
    packets = press("5", ts=1000, seq=10)
    shuffled = [
        packets[3],
        packets[0],
        packets[0],
        *packets[4:],
        packets[1],
        packets[2],
        packets[-1],
    ]
    digits = [receiver.receive(p) for p in shuffled]
    assert [d for d in digits if d] == ["5"]


def test_a_new_timestamp_is_a_new_digit_even_for_the_same_key() -> None:
    receiver = DtmfReceiver()
    stream = press("7", ts=8000, seq=1) + press("7", ts=9600, seq=20) + press("#", ts=11200, seq=40)
    digits = [d for d in (receiver.receive(p) for p in stream) if d]
    assert digits == ["7", "7", "#"]


def test_lost_start_packets_still_give_the_digit_once() -> None:
    receiver = DtmfReceiver()
    packets = press("9", ts=4000, seq=1)
    digits = [d for d in (receiver.receive(p) for p in packets[-3:]) if d]  # only the end packets
    assert digits == ["9"]


def test_a_late_packet_of_an_earlier_press_does_not_count_again() -> None:
    receiver = DtmfReceiver()
    first = press("1", ts=1000, seq=1)
    second = press("2", ts=3000, seq=20)
    stream = first[:-1] + second[:2] + [first[-1]] + second[2:]
    assert [d for d in (receiver.receive(p) for p in stream) if d] == ["1", "2"]


def test_presses_from_different_sources_with_one_timestamp_are_separate() -> None:
    receiver = DtmfReceiver()
    stream = press("3", ts=500, seq=1, ssrc=1) + press("4", ts=500, seq=1, ssrc=2)
    assert [d for d in (receiver.receive(p) for p in stream) if d] == ["3", "4"]


def test_the_next_segment_of_a_long_press_is_the_same_press() -> None:
    # RFC 4733 section 2.5.1.3: a press longer than the 16-bit duration continues in a new
    # segment whose timestamp is the old one plus the old segment's duration.
    receiver = DtmfReceiver()
    first = TelephoneEvent(event=0, end=True, duration=0xFFFF)
    second = TelephoneEvent(event=0, end=False, duration=800)
    assert receiver.receive(event_packet(first, seq=1, ts=100, marker=True)) == "0"
    assert receiver.receive(event_packet(second, seq=2, ts=100 + 0xFFFF)) is None


def test_non_dtmf_events_yield_nothing() -> None:
    receiver = DtmfReceiver()
    flash = TelephoneEvent(event=16, duration=160)
    assert receiver.receive(event_packet(flash, seq=1, ts=1)) is None


@pytest.mark.parametrize(
    ("event", "digit"),
    [(0, "0"), (9, "9"), (10, "*"), (11, "#"), (12, "A"), (13, "B"), (14, "C"), (15, "D")],
)
def test_event_codes_map_to_keys(event: int, digit: str) -> None:
    assert event_to_digit(event) == digit
    assert digit_to_event(digit) == event


def test_unknown_digits_and_events() -> None:
    assert event_to_digit(16) is None
    assert event_to_digit(-1) is None
    assert digit_to_event("a") == 12  # lower-case keys are the same keys
    for bad in ("E", "", "12", "x"):
        with pytest.raises(ValueError):
            digit_to_event(bad)


def test_short_payload_raises_dtmf_error() -> None:
    with pytest.raises(DtmfError):
        TelephoneEvent.parse(b"\x01\x8a\x00")
    with pytest.raises(DtmfError):
        DtmfReceiver().receive(RtpPacket(payload_type=101, payload=b""))


def test_encoder_builds_updates_then_three_end_packets() -> None:
    payloads = encode_digit("#", duration_ms=100, packet_ms=20)
    assert [(p.event, p.end, p.duration) for p in payloads] == [
        (11, False, 160),
        (11, False, 320),
        (11, False, 480),
        (11, False, 640),
        (11, True, 800),
        (11, True, 800),
        (11, True, 800),
    ]
    assert all(p.volume == 10 for p in payloads)
    assert payloads[0].serialize() == bytes([11, 10, 0, 160])
    assert payloads[-1].serialize() == bytes([11, 0x80 | 10, 0x03, 0x20])


def test_encoder_with_30ms_packets() -> None:
    payloads = encode_digit("1", duration_ms=90, packet_ms=30)
    assert [p.duration for p in payloads] == [240, 480, 720, 720, 720]


def test_serialize_rejects_out_of_range_fields() -> None:
    for bad in (
        TelephoneEvent(event=256),
        TelephoneEvent(event=1, volume=64),
        TelephoneEvent(event=1, duration=70000),
    ):
        with pytest.raises(ValueError):
            bad.serialize()
