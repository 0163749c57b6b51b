"""RTP packets (RFC 3550 section 5.1) against recorded sipp traffic and hand-built edge cases."""

from __future__ import annotations

import itertools
import random
import struct
from pathlib import Path

import pytest

from telephony.rtp import RtpError, RtpPacket, is_rtcp

# sipp's own recordings, installed with the Debian package `sip-tester` (the uac_pcap scenario
# plays g711a.pcap, then dtmf_2833_1.pcap).
SIPP_PCAPS = Path("/usr/share/sip-tester")
G711A_PCAP = SIPP_PCAPS / "g711a.pcap"
needs_sipp_pcaps = pytest.mark.skipif(
    not G711A_PCAP.exists(), reason="sipp's pcap files (package sip-tester) are not installed"
)

# The ten RTP packets of sipp's dtmf_2833_1.pcap (key "1"), copied out of the capture: start
# with the marker bit, updates every 20 ms, then the end packet three times, all three with one
# sequence number.
SIPP_DTMF_1 = [
    bytes.fromhex(h)
    for h in (
        "80e51f30000033e00e05384e010a0000",
        "80651f31000033e00e05384e010a0140",
        "80651f32000033e00e05384e010a0280",
        "80651f33000033e00e05384e010a03c0",
        "80651f34000033e00e05384e010a0500",
        "80651f35000033e00e05384e010a0640",
        "80651f36000033e00e05384e010a0780",
        "80651f37000033e00e05384e018a08c0",
        "80651f37000033e00e05384e018a08c0",
        "80651f37000033e00e05384e018a08c0",
    )
]


def read_pcap_rtp(path: Path) -> list[tuple[float, bytes]]:
    """(capture time, UDP payload) of every record of an Ethernet/IPv4/UDP capture, read by hand
    so the tests depend on no pcap library.
    """
    raw = path.read_bytes()
    magic = struct.unpack_from("<I", raw)[0]
    order = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    scale = 1e-9 if magic in (0xA1B23C4D, 0x4D3CB2A1) else 1e-6
    records = []
    offset = 24
    while offset + 16 <= len(raw):
        seconds, fraction, length, _ = struct.unpack_from(order + "IIII", raw, offset)
        frame = raw[offset + 16 : offset + 16 + length]
        offset += 16 + length
        ip = frame[14:]
        udp = ip[(ip[0] & 0x0F) * 4 :]
        records.append((seconds + fraction * scale, udp[8:]))
    return records


def test_parses_a_recorded_sipp_dtmf_packet() -> None:
    packet = RtpPacket.parse(SIPP_DTMF_1[0])
    assert packet == RtpPacket(
        marker=True,
        payload_type=101,
        sequence=0x1F30,
        timestamp=0x33E0,
        ssrc=0x0E05384E,
        payload=bytes.fromhex("010a0000"),
    )
    assert packet.serialize() == SIPP_DTMF_1[0]


@needs_sipp_pcaps
def test_sipp_g711a_recording_is_30ms_pcma_and_round_trips() -> None:
    records = read_pcap_rtp(G711A_PCAP)
    packets = [RtpPacket.parse(data) for _, data in records]
    assert {p.payload_type for p in packets} == {8}
    assert {len(p.payload) for p in packets} == {240}  # 30 ms at 8 kHz, no a=ptime in its SDP
    assert packets[0].marker and not any(p.marker for p in packets[1:])
    for previous, packet in itertools.pairwise(packets):
        assert packet.sequence == (previous.sequence + 1) & 0xFFFF
        assert packet.timestamp - previous.timestamp == 240
    assert [p.serialize() for p in packets] == [data for _, data in records]


def test_round_trip_with_csrcs_extension_and_padding() -> None:
    packet = RtpPacket(
        padding=True,
        extension=True,
        marker=True,
        payload_type=0,
        sequence=65535,
        timestamp=0xFFFFFFFF,
        ssrc=0xDEADBEEF,
        csrc=(1, 2, 3),
        payload=b"\xff" * 161,
        header_extension=struct.pack("!HH", 0xBEDE, 1) + b"\x10\xaa\x00\x00",
    )
    data = packet.serialize()
    assert len(data) % 4 == 0
    assert RtpPacket.parse(data) == packet


def test_padding_is_removed_from_the_payload() -> None:
    header = struct.pack("!BBHII", 0xA0, 0, 1, 160, 7)  # version 2, padding bit
    packet = RtpPacket.parse(header + b"abc" + b"\x00\x00\x03")
    assert packet.payload == b"abc"
    assert packet.padding


def test_extension_is_skipped_to_reach_the_payload() -> None:
    header = struct.pack("!BBHII", 0x90, 8, 1, 160, 7)  # version 2, extension bit
    extension = struct.pack("!HH", 0x1000, 2) + b"12345678"
    packet = RtpPacket.parse(header + extension + b"payload")
    assert packet.payload == b"payload"
    assert packet.header_extension == extension


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "empty"),
        (b"\x80\x00\x00\x01\x00\x00\x00\xa0\x00\x00\x00", "11 bytes"),
        (struct.pack("!BBHII", 0x40, 0, 1, 2, 3), "version 1"),
        (struct.pack("!BBHII", 0xC0, 0, 1, 2, 3), "version 3"),
        (struct.pack("!BBHII", 0x00, 0, 1, 2, 3) + b"x", "version 0"),
        (struct.pack("!BBHII", 0x82, 0, 1, 2, 3) + b"\x00" * 4, "CSRC count 2, room for 1"),
        (struct.pack("!BBHII", 0x90, 0, 1, 2, 3) + b"\x00\x00", "extension header cut"),
        (struct.pack("!BBHII", 0x90, 0, 1, 2, 3) + b"\x00\x00\x00\x02abcd", "extension overrun"),
        (struct.pack("!BBHII", 0xA0, 0, 1, 2, 3) + b"ab\x00", "padding count 0"),
        (struct.pack("!BBHII", 0xA0, 0, 1, 2, 3) + b"ab\x09", "padding past the header"),
    ],
)
def test_malformed_packets_raise_rtp_error(data: bytes, why: str) -> None:
    with pytest.raises(RtpError):
        RtpPacket.parse(data)


def test_random_and_truncated_bytes_raise_only_rtp_error() -> None:
    rng = random.Random(4733)
    valid = RtpPacket(
        extension=True, csrc=(9,), payload=b"x" * 20, header_extension=b"\x00\x01\x00\x00"
    ).serialize()
    samples = [valid[:cut] for cut in range(len(valid))]
    samples += [bytes(rng.getrandbits(8) for _ in range(rng.randrange(40))) for _ in range(3000)]
    for data in samples:
        try:
            packet = RtpPacket.parse(data)
        except RtpError:
            continue
        assert packet.version == 2


def test_serialize_rejects_values_that_do_not_fit() -> None:
    with pytest.raises(ValueError):
        RtpPacket(payload_type=128).serialize()
    with pytest.raises(ValueError):
        RtpPacket(csrc=tuple(range(16))).serialize()
    with pytest.raises(ValueError):
        RtpPacket(extension=True, header_extension=b"\x00\x01").serialize()


def test_rtcp_is_told_apart_from_rtp() -> None:
    receiver_report = bytes.fromhex("80c90001") + b"\x00\x00\x00\x01"
    sender_report = bytes.fromhex("80c80006") + bytes(24)
    bye = bytes.fromhex("81cb0001") + b"\x00\x00\x00\x01"
    assert is_rtcp(receiver_report) and is_rtcp(sender_report) and is_rtcp(bye)
    assert not is_rtcp(SIPP_DTMF_1[0])  # 101 with the marker bit: second byte 0xE5
    assert not is_rtcp(RtpPacket(marker=True, payload_type=8).serialize())
    assert not is_rtcp(RtpPacket(payload_type=0).serialize())
    assert not is_rtcp(b"\x80")
