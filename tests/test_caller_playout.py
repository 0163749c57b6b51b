"""The caller simulator's model of Twilio's playout buffer, and its script format.

Time is passed in, so every timing rule is checked exactly and without sleeping. 8000 bytes of
μ-law are one second of audio.
"""

from __future__ import annotations

import pytest

from gateway.caller import parse_twiml
from gateway.caller_playout import (
    PlayoutBuffer,
    ScriptLine,
    attribute_replies,
    parse_script,
    parse_script_line,
)
from telephony.twilio.twiml import connect_stream_twiml


def seconds(s: float) -> bytes:
    return b"\x7f" * round(s * 8000)


# -- marks ------------------------------------------------------------------------------------


def test_mark_is_echoed_when_the_audio_before_it_has_played() -> None:
    buf = PlayoutBuffer()
    buf.push_audio(1.0, seconds(0.2))
    buf.push_mark(1.0, "s1")
    buf.push_audio(1.05, seconds(0.1))  # queues behind: plays 1.2 .. 1.3
    buf.push_mark(1.05, "s2")
    assert buf.take_echoes() == []
    assert buf.next_deadline() == pytest.approx(1.2)

    buf.advance(1.199)
    assert buf.take_echoes() == []
    buf.advance(1.2)
    assert buf.take_echoes() == ["s1"]
    buf.advance(1.29)
    assert buf.take_echoes() == []
    buf.advance(1.3)
    assert buf.take_echoes() == ["s2"]
    assert buf.marks_echoed == 2


def test_several_due_marks_come_back_in_queue_order() -> None:
    buf = PlayoutBuffer()
    for name in ("a", "b", "c"):
        buf.push_audio(0.0, seconds(0.1))
        buf.push_mark(0.0, name)
    buf.advance(5.0)  # the caller's clock may jump past several deadlines at once
    assert buf.take_echoes() == ["a", "b", "c"]


def test_mark_on_an_empty_buffer_is_echoed_at_once() -> None:
    buf = PlayoutBuffer()
    buf.push_mark(0.5, "nothing-queued")
    assert buf.take_echoes() == ["nothing-queued"]

    buf.push_audio(1.0, seconds(0.1))
    buf.push_mark(1.2, "after-it-played")  # the audio ended at 1.1
    assert buf.take_echoes() == ["after-it-played"]


def test_consecutive_marks_with_no_audio_between_share_a_due_time() -> None:
    buf = PlayoutBuffer()
    buf.push_audio(0.0, seconds(0.5))
    buf.push_mark(0.1, "x")
    buf.push_mark(0.2, "y")
    buf.advance(0.5)
    assert buf.take_echoes() == ["x", "y"]


# -- clear ------------------------------------------------------------------------------------


def test_clear_drops_unplayed_audio_and_echoes_pending_marks() -> None:
    buf = PlayoutBuffer()
    buf.push_audio(0.0, seconds(1.0))
    buf.push_mark(0.0, "first")
    buf.push_audio(0.0, seconds(1.0))
    buf.push_mark(0.0, "second")

    buf.clear(0.4)
    assert buf.take_echoes() == ["first", "second"]
    assert not buf.playing(0.4)
    assert buf.queued_seconds(0.4) == 0.0
    reply = buf.replies[0]
    assert reply.interrupted and reply.closed
    assert reply.audio_seconds == pytest.approx(0.4)
    assert reply.dropped_bytes == round(1.6 * 8000)
    assert reply.ended_at == pytest.approx(0.4)
    assert buf.clear_times == [0.4]

    buf.advance(10.0)  # nothing left to echo later
    assert buf.take_echoes() == []


def test_clear_after_the_audio_played_interrupts_nothing() -> None:
    buf = PlayoutBuffer()
    buf.push_audio(0.0, seconds(0.2))
    buf.push_mark(0.0, "m")
    buf.advance(0.3)
    assert buf.take_echoes() == ["m"]
    buf.clear(0.35)  # reply over but not yet settled
    assert buf.take_echoes() == []
    assert not buf.replies[0].interrupted
    assert buf.replies[0].audio_seconds == pytest.approx(0.2)


def test_audio_after_a_clear_starts_playing_from_the_clear() -> None:
    buf = PlayoutBuffer(clear_grace=0.0)
    buf.push_audio(0.0, seconds(2.0))
    buf.clear(0.5)
    buf.push_mark(0.5, "new-reply-mark")  # closes the clear window
    buf.take_echoes()
    buf.push_audio(0.7, seconds(0.3))
    assert len(buf.replies) == 2
    assert buf.replies[1].started_at == pytest.approx(0.7)
    assert buf.queued_seconds(0.7) == pytest.approx(0.3)


# -- media after a clear -----------------------------------------------------------------------


def test_media_while_the_caller_is_still_talking_after_a_clear_is_leftover() -> None:
    buf = PlayoutBuffer(clear_grace=0.3)
    buf.push_audio(0.0, seconds(3.0))
    buf.set_caller_talking(True)
    buf.clear(0.8)
    buf.push_audio(1.5, seconds(0.2))  # 0.7 s after the clear, but the caller still talks
    buf.set_caller_talking(False)
    assert buf.media_after_clear == 1
    leftover = buf.replies[-1]
    assert leftover.stale

    # After the utterance and the grace, new audio is an answer and a separate reply.
    buf.push_audio(1.75, seconds(1.0))
    assert buf.media_after_clear == 1
    answer = buf.replies[-1]
    assert answer is not leftover and not answer.stale
    assert answer.started_at == pytest.approx(1.75)
    assert buf.first_reply_since(1.0) is answer


def test_clear_window_lasts_the_grace_when_the_caller_is_silent() -> None:
    buf = PlayoutBuffer(clear_grace=0.3)
    buf.push_audio(0.0, seconds(1.0))
    buf.clear(0.5)
    buf.push_audio(0.6, seconds(0.02))
    buf.push_audio(0.81, seconds(0.02))
    assert buf.media_after_clear == 1


def test_a_mark_closes_the_clear_window() -> None:
    buf = PlayoutBuffer(clear_grace=5.0)
    buf.push_audio(0.0, seconds(1.0))
    buf.clear(0.5)
    buf.push_mark(0.51, "next")
    buf.push_audio(0.52, seconds(0.5))
    assert buf.media_after_clear == 0
    assert not buf.replies[-1].stale


# -- real-time consumption and underruns ----------------------------------------------------------


def test_audio_plays_at_8000_bytes_per_second_from_its_arrival() -> None:
    buf = PlayoutBuffer()
    buf.push_audio(2.0, seconds(1.0))
    assert buf.queued_seconds(2.0) == pytest.approx(1.0)
    assert buf.queued_seconds(2.25) == pytest.approx(0.75)
    assert buf.playing(2.999)
    assert not buf.playing(3.0)
    assert buf.replies[0].started_at == 2.0

    # Sent faster than real time, audio queues up behind what is playing.
    buf.push_audio(2.5, seconds(1.0))
    assert buf.queued_seconds(2.5) == pytest.approx(1.5)


def test_audio_paced_exactly_in_real_time_has_no_underruns() -> None:
    buf = PlayoutBuffer()
    for k in range(100):
        buf.push_audio(k * 0.02, b"\xff" * 160)
    assert buf.underruns == 0
    assert buf.replies[0].audio_seconds == pytest.approx(2.0)
    assert len(buf.replies) == 1


def test_a_gap_while_a_reply_plays_is_an_underrun() -> None:
    buf = PlayoutBuffer(settle=0.6, gap_tolerance=0.01)
    buf.push_audio(0.0, seconds(0.5))
    buf.push_audio(0.505, seconds(0.5))  # 5 ms late: jitter, not counted
    buf.push_audio(1.3, seconds(0.5))  # 0.295 s of silence mid-reply
    reply = buf.replies[0]
    assert reply.underruns == 1
    assert reply.gap_seconds == pytest.approx(0.295)
    assert len(buf.replies) == 1
    assert buf.underruns == 1
    assert reply.audio_seconds == pytest.approx(1.5)


def test_a_pause_of_settle_or_more_ends_the_reply() -> None:
    buf = PlayoutBuffer(settle=0.6)
    buf.push_audio(0.0, seconds(1.0))
    buf.push_mark(0.0, "end")
    assert buf.next_deadline() == pytest.approx(1.0)  # the mark first
    buf.advance(1.0)
    assert buf.take_echoes() == ["end"]
    assert buf.next_deadline() == pytest.approx(1.6)  # then the reply settles
    assert not buf.idle(1.59)
    assert buf.idle(1.6)
    assert buf.replies[0].closed
    assert buf.next_deadline() is None

    buf.push_audio(2.0, seconds(0.5))
    assert len(buf.replies) == 2
    assert buf.underruns == 0


def test_a_late_gateway_message_postpones_settling() -> None:
    buf = PlayoutBuffer(settle=0.6)
    buf.push_audio(0.0, seconds(0.2))
    buf.push_mark(0.5, "late")  # after the audio ended: echoed at once, but the gateway spoke
    assert buf.take_echoes() == ["late"]
    assert not buf.idle(0.9)
    assert buf.idle(1.1)


# -- turns and replies ----------------------------------------------------------------------------


def test_each_turn_gets_the_first_answer_between_its_start_and_the_next_turn() -> None:
    buf = PlayoutBuffer(settle=0.6)
    buf.push_audio(0.0, seconds(1.0))  # greeting
    buf.push_audio(3.0, seconds(1.0))  # answer to the turn begun at 2.0
    buf.push_audio(4.6, seconds(0.5))  # its tail after a long pause: not a separate answer
    # the turn begun at 6.0 gets no answer
    answers = attribute_replies([2.0, 6.0], buf.replies)
    assert answers[0] is buf.replies[1]
    assert answers[1] is None


def test_barge_in_turn_is_not_answered_by_the_reply_it_interrupted() -> None:
    buf = PlayoutBuffer(clear_grace=0.0)
    buf.push_audio(3.0, seconds(2.0))  # answer to turn 1 (began 2.0)
    buf.set_caller_talking(True)  # turn 2 begins at 3.6, over the answer
    buf.clear(3.9)
    buf.set_caller_talking(False)
    buf.push_audio(5.5, seconds(1.0))  # answer to turn 2
    answers = attribute_replies([2.0, 3.6], buf.replies)
    assert answers == [buf.replies[0], buf.replies[1]]


# -- script lines ---------------------------------------------------------------------------------


def test_plain_lines_are_spoken() -> None:
    assert parse_script_line("  hello there ") == ScriptLine("hello there")
    assert str(ScriptLine("what time is it")) == "what time is it"


@pytest.mark.parametrize(
    ("line", "digits"),
    [("dtmf:123#", "123#"), ("DTMF: 4 5 *", "45*"), ("dtmf:0", "0"), ("dtmf:abcd", "ABCD")],
)
def test_dtmf_lines_press_keys(line: str, digits: str) -> None:
    parsed = parse_script_line(line)
    assert parsed == ScriptLine(digits, dtmf=True)
    assert str(parsed) == f"dtmf:{digits}"


@pytest.mark.parametrize("line", ["dtmf:", "dtmf:  ", "dtmf:12x", "dtmf:9!", "", "   "])
def test_bad_lines_are_rejected_with_the_line_named(line: str) -> None:
    with pytest.raises(ValueError, match="script line"):
        parse_script_line(line)


def test_a_script_mixes_speech_and_keys() -> None:
    assert parse_script(["hello", "dtmf:1", "bye"]) == [
        ScriptLine("hello"),
        ScriptLine("1", dtmf=True),
        ScriptLine("bye"),
    ]


def test_a_word_starting_with_dtmf_is_still_speech() -> None:
    assert parse_script_line("dtmf tones please") == ScriptLine("dtmf tones please")


# -- TwiML ----------------------------------------------------------------------------------------


def test_twiml_from_the_gateway_gives_stream_url_and_parameters() -> None:
    twiml = connect_stream_twiml("ws://127.0.0.1:8000/twilio/stream", {"from": "+1555", "x": ""})
    target = parse_twiml(twiml)
    assert target.url == "ws://127.0.0.1:8000/twilio/stream"
    assert target.parameters == {"from": "+1555", "x": ""}


@pytest.mark.parametrize(
    "body", ["not xml", "<Response><Say>hi</Say></Response>", "<Response><Connect/></Response>"]
)
def test_twiml_without_a_stream_is_a_call_error(body: str) -> None:
    from gateway.caller import CallError

    with pytest.raises(CallError):
        parse_twiml(body)


def test_hanging_up_mid_reply_counts_only_what_was_heard() -> None:
    buf = PlayoutBuffer()
    buf.push_audio(1.0, seconds(2.0))
    buf.push_mark(1.0, "never-heard")
    buf.stop(1.5)
    assert buf.take_echoes() == []  # a call that ended echoes nothing
    reply = buf.replies[0]
    assert reply.closed and reply.interrupted
    assert reply.audio_seconds == pytest.approx(0.5)
    assert buf.clear_times == []


def test_clear_and_hang_up_before_any_audio_change_nothing() -> None:
    buf = PlayoutBuffer()
    buf.clear(0.3)
    buf.stop(0.4)
    assert buf.replies == []
    assert buf.take_echoes() == []
    assert buf.clear_times == [0.3]


def test_clear_window_ends_with_the_utterance_it_interrupted() -> None:
    # Keys are answered within milliseconds of the last one: that answer is not leftover audio.
    buf = PlayoutBuffer(clear_grace=0.3)
    buf.push_audio(0.0, seconds(2.0))
    buf.set_caller_talking(True)
    buf.clear(0.6)
    buf.set_caller_talking(False)  # the last key at 0.8
    buf.push_audio(0.85, seconds(1.0))
    assert buf.media_after_clear == 0
    assert buf.first_reply_since(0.6) is buf.replies[-1]
