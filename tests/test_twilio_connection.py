"""MediaStreamConnection: order, identity, recovery after bad frames, and mark bookkeeping."""

from __future__ import annotations

import orjson
import pytest

from telephony.twilio import peer
from telephony.twilio.connection import MediaStreamConnection, PlayoutMark
from telephony.twilio.messages import (
    Connected,
    Dtmf,
    Media,
    ProtocolErrorKind,
    Start,
    Stop,
    TwilioProtocolError,
)
from tests.fixtures import RECORDED_CALL

SID = "MZ00000000000000000000000000000001"
CALL = "CA00000000000000000000000000000001"
ACCOUNT = "AC00000000000000000000000000000001"

CONNECTED = peer.encode_connected()
START = peer.encode_start(SID, CALL, ACCOUNT, {"agent": "demo"}, 1)
STOP = peer.encode_stop(SID, 99, ACCOUNT, CALL)


def _media(seq: int = 2, sid: str = SID) -> str:
    return peer.encode_inbound_media(sid, seq, seq - 1, 20 * (seq - 2), b"\xff" * 160)


def _dtmf(digit: str = "5", sid: str = SID) -> str:
    return peer.encode_dtmf(sid, 50, digit)


def _echo(name: str, sid: str = SID) -> str:
    return peer.encode_mark_echo(sid, 60, name)


def _streaming() -> MediaStreamConnection:
    conn = MediaStreamConnection()
    conn.receive(CONNECTED)
    conn.receive(START)
    return conn


def _raises(conn: MediaStreamConnection, data: str | bytes, kind: ProtocolErrorKind) -> None:
    with pytest.raises(TwilioProtocolError) as info:
        conn.receive(data)
    assert info.value.kind is kind, str(info.value)


# -- a real call


def test_recorded_call_replays_in_order() -> None:
    conn = MediaStreamConnection()
    events = [conn.receive(line) for line in RECORDED_CALL.read_text().splitlines()]

    assert isinstance(events[0], Connected)
    assert isinstance(events[1], Start) and conn.start == events[1]
    media = [event for event in events[2:-1] if isinstance(event, Media)]
    assert len(media) == len(events) - 3 == 616
    assert {len(m.payload) for m in media} == {160}
    assert [m.timestamp for m in media] == [135 + 20 * i for i in range(616)]
    assert [m.chunk for m in media] == list(range(1, 617))
    assert isinstance(events[-1], Stop)
    assert conn.stopped
    assert conn.stream_sid == "test_stream"


def test_fresh_connection_state() -> None:
    conn = MediaStreamConnection()
    assert (conn.stream_sid, conn.start, conn.stopped, conn.pending_marks) == (None, None, False, 0)


def test_start_without_connected_is_fine() -> None:
    conn = MediaStreamConnection()
    start = conn.receive(START)
    assert isinstance(start, Start) and start.custom_parameters == {"agent": "demo"}
    assert isinstance(conn.receive(_media()), Media)


def test_dtmf_passes_through() -> None:
    assert _streaming().receive(_dtmf("#")) == Dtmf(50, SID, "inbound_track", "#")


# -- order


@pytest.mark.parametrize("message", [_media(), _dtmf(), _echo("m"), STOP])
def test_nothing_but_start_may_come_before_start(message: str) -> None:
    conn = MediaStreamConnection()
    _raises(conn, message, ProtocolErrorKind.UNEXPECTED_EVENT)
    conn.receive(CONNECTED)
    _raises(conn, message, ProtocolErrorKind.UNEXPECTED_EVENT)
    conn.receive(START)  # still fine: the rejected message changed nothing


def test_connected_only_once_and_only_first() -> None:
    conn = MediaStreamConnection()
    conn.receive(CONNECTED)
    _raises(conn, CONNECTED, ProtocolErrorKind.UNEXPECTED_EVENT)
    conn.receive(START)
    _raises(conn, CONNECTED, ProtocolErrorKind.UNEXPECTED_EVENT)


def test_exactly_one_start() -> None:
    conn = _streaming()
    _raises(conn, START, ProtocolErrorKind.UNEXPECTED_EVENT)
    other = peer.encode_start("MZother", CALL, ACCOUNT, None, 3)
    _raises(conn, other, ProtocolErrorKind.UNEXPECTED_EVENT)
    assert conn.stream_sid == SID
    assert isinstance(conn.receive(_media()), Media)


@pytest.mark.parametrize("message", [_media(), _dtmf(), _echo("m"), STOP, START, CONNECTED])
def test_nothing_may_follow_stop(message: str) -> None:
    conn = _streaming()
    conn.send_mark("m")  # so a late echo of it is refused for the order, not as unknown
    conn.receive(STOP)
    assert conn.stopped
    with pytest.raises(TwilioProtocolError) as info:
        conn.receive(message)
    assert info.value.kind is ProtocolErrorKind.UNEXPECTED_EVENT
    assert "after stop" in str(info.value)


# -- identity


@pytest.mark.parametrize(
    "message",
    [
        _media(sid="MZother"),
        _dtmf(sid="MZother"),
        _echo("m", sid="MZother"),
        peer.encode_stop("MZother", 9, ACCOUNT, CALL),
    ],
)
def test_messages_for_another_stream_are_rejected(message: str) -> None:
    conn = _streaming()
    conn.send_mark("m")
    with pytest.raises(TwilioProtocolError) as info:
        conn.receive(message)
    assert info.value.kind is ProtocolErrorKind.WRONG_STREAM_SID
    assert "MZother" in str(info.value)
    # Nothing changed: the stream goes on, the mark is still pending.
    assert not conn.stopped
    assert conn.pending_marks == 1
    assert isinstance(conn.receive(_media()), Media)


# -- bad frames are reported and skipped


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        ("{not json", ProtocolErrorKind.INVALID_JSON),
        (b"\x00\xff\xfe", ProtocolErrorKind.INVALID_JSON),
        (_media().replace('"payload":"', '"payload":"!!'), ProtocolErrorKind.BAD_BASE64),
        ('{"event":"hangup","streamSid":"' + SID + '"}', ProtocolErrorKind.UNKNOWN_EVENT),
        ('{"event":"media","streamSid":"' + SID + '"}', ProtocolErrorKind.MISSING_FIELD),
        (_dtmf("Z"), ProtocolErrorKind.INVALID_FIELD),
    ],
)
def test_bad_frame_leaves_the_stream_usable(data: str | bytes, kind: ProtocolErrorKind) -> None:
    conn = _streaming()
    assert isinstance(conn.receive(_media(2)), Media)
    _raises(conn, data, kind)
    media = conn.receive(_media(3))
    assert isinstance(media, Media) and media.sequence_number == 3
    assert not conn.stopped


# -- marks, clear and what was played


def test_marks_echoed_in_order_were_played() -> None:
    conn = _streaming()
    for name in ("a", "b", "c"):
        conn.send_media(b"\xff" * 160)
        conn.send_mark(name)
    assert conn.pending_marks == 3
    assert conn.receive(_echo("a")) == PlayoutMark("a", played=True)
    assert conn.receive(_echo("b")) == PlayoutMark("b", played=True)
    assert conn.pending_marks == 1
    assert conn.receive(_echo("c")) == PlayoutMark("c", played=True)
    assert conn.pending_marks == 0


def test_clear_flags_pending_marks_as_not_played() -> None:
    conn = _streaming()
    conn.send_mark("a")
    conn.send_mark("b")
    conn.send_mark("c")
    assert conn.receive(_echo("a")) == PlayoutMark("a", played=True)
    conn.send_clear()
    conn.send_mark("d")  # sent after the clear: its audio is new
    assert conn.pending_marks == 3
    # Twilio returns the cleared marks right away, then "d" once its audio has played.
    assert conn.receive(_echo("b")) == PlayoutMark("b", played=False)
    assert conn.receive(_echo("c")) == PlayoutMark("c", played=False)
    assert conn.receive(_echo("d")) == PlayoutMark("d", played=True)
    assert conn.pending_marks == 0


def test_clear_twice_and_with_nothing_pending() -> None:
    conn = _streaming()
    conn.send_clear()
    conn.send_mark("a")
    conn.send_clear()
    conn.send_clear()
    conn.send_mark("b")
    assert conn.receive(_echo("a")) == PlayoutMark("a", played=False)
    assert conn.receive(_echo("b")) == PlayoutMark("b", played=True)


def test_same_name_twice_is_matched_oldest_first() -> None:
    conn = _streaming()
    conn.send_mark("sentence")
    conn.send_clear()
    conn.send_mark("sentence")
    assert conn.receive(_echo("sentence")) == PlayoutMark("sentence", played=False)
    assert conn.receive(_echo("sentence")) == PlayoutMark("sentence", played=True)


def test_out_of_order_echo_keeps_the_others_pending() -> None:
    conn = _streaming()
    conn.send_mark("a")
    conn.send_mark("b")
    conn.send_clear()
    conn.send_mark("c")
    assert conn.receive(_echo("b")) == PlayoutMark("b", played=False)
    assert conn.receive(_echo("c")) == PlayoutMark("c", played=True)
    assert conn.receive(_echo("a")) == PlayoutMark("a", played=False)


def test_unknown_or_repeated_mark_echo_is_rejected() -> None:
    conn = _streaming()
    _raises(conn, _echo("never-sent"), ProtocolErrorKind.UNKNOWN_MARK)
    conn.send_mark("a")
    conn.send_mark("b")
    conn.receive(_echo("a"))
    _raises(conn, _echo("a"), ProtocolErrorKind.UNKNOWN_MARK)
    assert conn.pending_marks == 1
    assert conn.receive(_echo("b")) == PlayoutMark("b", played=True)


# -- sending


def test_send_outputs_documented_messages() -> None:
    conn = _streaming()
    assert peer.parse_gateway_message(conn.send_media(b"\x01\x02")) == peer.OutboundMedia(
        SID, b"\x01\x02"
    )
    assert peer.parse_gateway_message(conn.send_mark("m1")) == peer.OutboundMark(SID, "m1")
    assert peer.parse_gateway_message(conn.send_clear()) == peer.OutboundClear(SID)
    assert orjson.loads(conn.send_clear()) == {"event": "clear", "streamSid": SID}


@pytest.mark.parametrize("phase", ["opened", "connected", "stopped"])
def test_sending_outside_the_stream_is_refused(phase: str) -> None:
    conn = MediaStreamConnection()
    if phase != "opened":
        conn.receive(CONNECTED)
    if phase == "stopped":
        conn.receive(START)
        conn.receive(STOP)
    for send in (lambda: conn.send_media(b"\xff"), lambda: conn.send_mark("m"), conn.send_clear):
        with pytest.raises(TwilioProtocolError) as info:
            send()
        assert info.value.kind is ProtocolErrorKind.UNEXPECTED_EVENT
    assert conn.pending_marks == 0


def test_a_mark_that_cannot_be_encoded_is_not_tracked() -> None:
    conn = _streaming()
    with pytest.raises(TwilioProtocolError):
        conn.send_mark("\ud800")
    assert conn.pending_marks == 0
