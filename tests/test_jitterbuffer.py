"""The inbound jitter buffer, driven with exact fake times (seconds)."""

from __future__ import annotations

import random

import pytest

from telephony.jitterbuffer import Frame, JitterBuffer
from telephony.rtp import RtpPacket
from tests.test_rtp import G711A_PCAP, needs_sipp_pcaps, read_pcap_rtp

SILENCE = b"\xff"  # μ-law silence


def packet(seq: int, ts: int, size: int = 160, *, ssrc: int = 1, marker: bool = False) -> RtpPacket:
    return RtpPacket(
        marker=marker,
        sequence=seq & 0xFFFF,
        timestamp=ts & 0xFFFFFFFF,
        ssrc=ssrc,
        payload=bytes([seq & 0xFF]) * size,
    )


def buffer(**kwargs: object) -> JitterBuffer:
    options: dict[str, object] = {"target_delay_ms": 40, "max_delay_ms": 200, "silence": SILENCE}
    options.update(kwargs)
    return JitterBuffer(**options)  # type: ignore[arg-type]


def seqs(frames: list[Frame]) -> list[int]:
    return [f.sequence for f in frames]


def test_frames_are_released_at_their_due_time() -> None:
    jb = buffer()
    for k in range(3):
        jb.push(packet(k, 160 * k), now=0.02 * k)
    # The first packet arrived at 0: it plays after the 40 ms target, the rest 20 ms apart.
    assert jb.next_due() == pytest.approx(0.04)
    assert jb.pop(0.039) == []
    assert seqs(jb.pop(0.04)) == [0]
    assert jb.pop(0.059) == []
    assert seqs(jb.pop(0.06)) == [1]
    assert seqs(jb.pop(0.5)) == [2]
    assert jb.next_due() is None
    assert jb.stats.played == 3


def test_reordered_packets_come_out_in_order() -> None:
    jb = buffer()
    for k, seq in enumerate([0, 2, 1, 4, 3, 5]):
        jb.push(packet(seq, 160 * seq), now=0.02 * k)
    assert seqs(jb.pop(1.0)) == [0, 1, 2, 3, 4, 5]
    assert jb.stats.concealed == 0


def test_a_packet_overtaken_by_the_first_one_still_plays() -> None:
    jb = buffer()
    jb.push(packet(11, 1760), now=0.0)
    jb.push(packet(10, 1600), now=0.005)
    assert seqs(jb.pop(1.0)) == [10, 11]
    assert jb.stats.late == 0


def test_duplicates_are_dropped() -> None:
    jb = buffer()
    jb.push(packet(0, 0), now=0.0)
    jb.push(packet(1, 160), now=0.02)
    jb.push(packet(1, 160), now=0.021)
    frames = jb.pop(0.1)
    assert seqs(frames) == [0, 1]
    assert jb.stats.duplicates == 1
    jb.push(packet(1, 160), now=0.11)  # again, after it played: late, not a duplicate
    assert jb.stats.late == 1
    assert jb.pop(0.2) == []


def test_a_lost_packet_is_concealed_at_its_due_time() -> None:
    jb = buffer()
    for seq in (0, 1, 3, 4):
        jb.push(packet(seq, 160 * seq), now=0.02 * seq)
    assert seqs(jb.pop(0.079)) == [0, 1]
    (concealed,) = jb.pop(0.08)
    assert concealed == Frame(2, 320, SILENCE * 160, concealed=True)
    assert seqs(jb.pop(0.12)) == [3, 4]
    assert (jb.stats.concealed, jb.stats.lost) == (1, 1)
    jb.push(packet(2, 320), now=0.125)  # the lost one, far too late
    assert jb.stats.late == 1
    assert jb.pop(1.0) == []


def test_a_late_packet_that_arrives_before_its_due_time_is_not_lost() -> None:
    jb = buffer()
    jb.push(packet(0, 0), now=0.0)
    jb.push(packet(2, 320), now=0.04)
    assert seqs(jb.pop(0.05)) == [0]  # 1 is not here, but not due before 0.06: no concealment
    jb.push(packet(1, 160), now=0.055)
    assert seqs(jb.pop(0.06)) == [1]
    assert seqs(jb.pop(0.08)) == [2]
    assert jb.stats.concealed == 0


def test_sequence_numbers_wrap_at_65535() -> None:
    jb = buffer()
    start = 65533
    order = [0, 1, 3, 2, 4, 5]  # 65533, 65534, 0, 65535, 1, 2: reordered across the wrap
    for k, i in enumerate(order):
        jb.push(packet(start + i, 160 * i), now=0.02 * k)
    frames = jb.pop(1.0)
    assert seqs(frames) == [65533, 65534, 65535, 0, 1, 2]
    assert jb.stats.concealed == jb.stats.late == 0


def test_timestamps_wrap_at_two_to_the_32() -> None:
    jb = buffer()
    base = 2**32 - 320
    for k in range(5):
        jb.push(packet(100 + k, base + 160 * k), now=0.02 * k)
    frames = jb.pop(0.04 + 0.02 * 4)
    assert [f.timestamp for f in frames] == [base, base + 160, 0, 160, 320]


def test_loss_across_the_wraps_is_concealed_with_the_right_timestamp() -> None:
    jb = buffer()
    base_seq, base_ts = 65534, 2**32 - 160
    for i in (0, 2, 3):  # seq 65535 / ts 0 lost
        jb.push(packet(base_seq + i, base_ts + 160 * i), now=0.02 * i)
    frames = jb.pop(0.1)
    assert [(f.sequence, f.timestamp, f.concealed) for f in frames] == [
        (65534, base_ts, False),
        (65535, 0, True),
        (0, 160, False),
        (1, 320, False),
    ]


def test_30ms_frames() -> None:
    jb = buffer()
    for seq in (0, 1, 2, 4, 5):  # 3 lost
        jb.push(packet(seq, 240 * seq, size=240), now=0.03 * seq)
    assert seqs(jb.pop(0.04)) == [0]
    assert jb.pop(0.069) == []
    assert seqs(jb.pop(0.07)) == [1]
    assert seqs(jb.pop(0.10)) == [2]
    (concealed,) = jb.pop(0.13)
    assert concealed.concealed and concealed.payload == SILENCE * 240
    assert concealed.timestamp == 720
    assert seqs(jb.pop(0.19)) == [4, 5]


@needs_sipp_pcaps
def test_sipp_g711a_recording_plays_through_in_order() -> None:
    records = read_pcap_rtp(G711A_PCAP)
    start = records[0][0]
    jb = buffer(silence=b"\xd5")
    played: list[Frame] = []
    for when, data in records:
        jb.push(RtpPacket.parse(data), now=when - start)
        played += jb.pop(when - start)
    played += jb.pop(records[-1][0] - start + 1)
    assert len(played) == len(records)
    assert not any(f.concealed for f in played)
    assert all(len(f.payload) == 240 for f in played)


def test_silence_suppression_gap_is_not_concealed() -> None:
    jb = buffer()
    jb.push(packet(0, 0), now=0.0)
    jb.push(packet(1, 160), now=0.02)
    # One second of silence: the sender stops, then resumes with the next sequence number.
    jb.push(packet(2, 160 + 8160, marker=True), now=1.04)
    assert seqs(jb.pop(1.079)) == [0, 1]
    assert seqs(jb.pop(1.08)) == [2]
    assert jb.stats.concealed == 0


def test_underrun_re_anchors_instead_of_dropping() -> None:
    jb = buffer()
    for k in range(3):
        jb.push(packet(k, 160 * k), now=0.02 * k)
    assert seqs(jb.pop(0.08)) == [0, 1, 2]
    # The network delay grows by 60 ms: packet 3 (due at 0.10) arrives at 0.16, into an empty
    # buffer. It is re-anchored to play 40 ms later, so the jitter margin is back.
    jb.push(packet(3, 480), now=0.16)
    assert jb.pop(0.16) == []
    assert jb.next_due() == pytest.approx(0.20)
    for k in range(4, 8):
        jb.push(packet(k, 160 * k), now=0.16 + 0.02 * (k - 3))
    assert seqs(jb.pop(0.20)) == [3]
    assert seqs(jb.pop(0.279)) == [4, 5, 6]
    assert seqs(jb.pop(0.28)) == [7]
    assert jb.stats.late == jb.stats.concealed == 0


def test_a_burst_after_a_stall_skips_ahead_to_bound_the_delay() -> None:
    jb = buffer()
    played: list[Frame] = []
    for k in range(5):
        jb.push(packet(k, 160 * k), now=0.02 * k)
        played += jb.pop(0.02 * k)
    played += jb.pop(0.12)
    # The network holds 500 ms of packets, then delivers them at once.
    for k in range(5, 30):
        jb.push(packet(k, 160 * k), now=0.6)
        assert jb.depth(0.6) <= 0.2 + 1e-9
    played += jb.pop(0.6)
    played += jb.pop(2.0)
    assert jb.stats.skipped > 0
    numbers = seqs(played)
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert numbers[-1] == 29
    assert not any(f.concealed for f in played)


def test_a_fast_sender_clock_is_bounded_too() -> None:
    jb = buffer()
    played = 0
    # 2000 packets of 20 ms arriving every 19 ms: the buffer would grow by 1 ms per packet.
    for k in range(2000):
        now = 0.019 * k
        jb.push(packet(k, 160 * k), now=now)
        played += len(jb.pop(now))
        assert jb.depth(now) <= 0.2 + 1e-9
    assert jb.stats.skipped > 0
    assert played + jb.stats.skipped + len(jb) == 2000


def test_a_new_ssrc_restarts_the_stream() -> None:
    jb = buffer()
    jb.push(packet(500, 80000, ssrc=1), now=0.0)
    assert seqs(jb.pop(0.04)) == [500]
    jb.push(packet(9, 123, ssrc=2), now=0.05)
    jb.push(packet(10, 283, ssrc=2), now=0.07)
    assert seqs(jb.pop(0.2)) == [9, 10]
    assert jb.stats.resets == 1 and jb.stats.late == 0


def test_a_sequence_jump_is_a_restart_only_when_the_next_packet_confirms_it() -> None:
    jb = buffer()
    jb.push(packet(0, 0), now=0.0)
    jb.push(packet(20000, 999999), now=0.02)  # a stray: discarded
    jb.push(packet(1, 160), now=0.02)
    assert seqs(jb.pop(0.1)) == [0, 1]
    assert jb.stats.discarded == 1
    jb.push(packet(40000, 5000), now=0.2)
    jb.push(packet(40001, 5160), now=0.22)  # confirmed: the source restarted its numbering
    assert seqs(jb.pop(0.4)) == [40001]
    assert jb.stats.resets == 1


def test_a_stale_hole_is_skipped_not_filled_with_a_burst_of_silence() -> None:
    jb = buffer()
    jb.push(packet(0, 0), now=0.0)
    assert seqs(jb.pop(0.04)) == [0]
    jb.push(packet(50, 160 * 50), now=1.0)  # 49 packets lost in an outage
    frames = jb.pop(1.04)
    assert seqs(frames) == [50]
    assert jb.stats.lost == 49 and jb.stats.concealed == 0


def test_next_due_points_at_the_concealment_time_of_a_missing_frame() -> None:
    jb = buffer()
    jb.push(packet(0, 0), now=0.0)
    jb.push(packet(2, 320), now=0.04)
    jb.pop(0.04)
    assert jb.next_due() == pytest.approx(0.06)  # when frame 1 is concealed if still missing


def test_random_network_never_breaks_order() -> None:
    rng = random.Random(3550)
    jb = buffer()
    arrivals = []
    for k in range(3000):
        if rng.random() < 0.05:
            continue  # lost
        when = 0.02 * k + rng.uniform(0, 0.08)
        arrivals.append((when, k))
        if rng.random() < 0.03:
            arrivals.append((when + rng.uniform(0, 0.05), k))  # duplicated
    arrivals.sort()
    out: list[Frame] = []
    for when, k in arrivals:
        jb.push(packet(60000 + k, 160 * k), now=when)
        out += jb.pop(when)
    out += jb.pop(1e6)
    unwrapped = []
    previous = None
    for frame in out:
        seq = (
            frame.sequence if previous is None else previous + ((frame.sequence - previous) % 65536)
        )
        unwrapped.append(seq)
        previous = seq
    assert unwrapped == sorted(set(unwrapped))
    assert len(out) == jb.stats.played + jb.stats.concealed
    assert all(len(f.payload) == 160 for f in out)
