"""SpeechTracker: speech segments from per-frame VAD decisions, and where the voice ended."""

from __future__ import annotations

import pytest

from session.speech_tracker import MAX_QUIET_TAIL, SpeechEdge, SpeechTracker

FRAME = 0.02
LOUD = 3000  # RMS of speech at about -21 dBFS
NOISE = 60  # 34 dB below it: a noisy line
HUSH = 20  # 44 dB below it: a quiet line's hiss


def tracker(min_speech: float = 0.1, end_silence: float = 0.2) -> SpeechTracker:
    return SpeechTracker(FRAME, min_speech, end_silence)


def run(t: SpeechTracker, frames: list[tuple[bool, int | None]]) -> list[SpeechEdge]:
    return [edge for voiced, level in frames if (edge := t.update(voiced, level)) is not None]


def test_speech_starts_after_min_speech_and_ends_after_end_silence() -> None:
    t = tracker()
    assert run(t, [(True, LOUD)] * 4) == []
    assert t.update(True, LOUD) is SpeechEdge.START
    assert run(t, [(False, None)] * 9) == []
    assert t.update(False, None) is SpeechEdge.END
    assert not t.in_speech


def test_a_vad_hangover_of_quiet_frames_is_not_taken_as_voice() -> None:
    t = tracker()
    run(t, [(True, LOUD)] * 10)
    assert t.quiet_tail == 0.0
    # webrtcvad's hangover: five more frames called speech, though nothing is there.
    for n in range(1, 6):
        t.update(True, 0)
        assert t.quiet_tail == pytest.approx(n * FRAME)
    assert t.update(True, LOUD) is None  # the voice goes on: the tail is gone
    assert t.quiet_tail == 0.0


def test_the_quiet_tail_is_capped() -> None:
    t = tracker()
    run(t, [(True, LOUD)] * 10 + [(True, HUSH)] * 30)
    assert t.quiet_tail == pytest.approx(MAX_QUIET_TAIL)


def test_on_a_noisy_line_the_vad_decision_stands() -> None:
    t = tracker()
    run(t, [(True, LOUD)] * 10 + [(True, NOISE)] * 5)
    assert t.quiet_tail == 0.0


def test_silence_after_a_quiet_tail_keeps_counting_from_the_last_loud_frame() -> None:
    t = tracker()
    run(t, [(True, LOUD)] * 10 + [(True, HUSH)] * 2 + [(False, None)] * 2)
    assert t.quiet_tail == pytest.approx(4 * FRAME)


def test_each_segment_is_measured_against_its_own_loudest_frame() -> None:
    t = tracker()
    run(t, [(True, 30000)] * 10 + [(False, None)] * 10)
    assert not t.in_speech
    # A much quieter caller next time: still voice, not a tail of the loud segment.
    run(t, [(True, 200)] * 10)
    assert t.in_speech and t.quiet_tail == 0.0


def test_without_levels_every_voiced_frame_is_voice() -> None:
    t = tracker()
    run(t, [(True, None)] * 20)
    assert t.in_speech and t.quiet_tail == 0.0
