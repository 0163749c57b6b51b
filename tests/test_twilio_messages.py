"""The Media Streams codec: real traffic, documented shapes, every rejection, and fuzzing."""

from __future__ import annotations

import base64
import pickle
import random
from typing import Any

import orjson
import pytest

from telephony.twilio.messages import (
    Connected,
    Dtmf,
    Mark,
    Media,
    ProtocolErrorKind,
    Start,
    Stop,
    TwilioProtocolError,
    encode_clear,
    encode_mark,
    encode_media,
    parse_message,
)
from tests.fixtures import RECORDED_CALL

SID = "MZ00000000000000000000000000000001"
CALL = "CA00000000000000000000000000000001"
ACCOUNT = "AC00000000000000000000000000000001"


def _lines() -> list[str]:
    return RECORDED_CALL.read_text().splitlines()


def _text(message: dict[str, Any]) -> str:
    return orjson.dumps(message).decode()


def _media(**media: Any) -> dict[str, Any]:
    body = {"track": "inbound", "chunk": "1", "timestamp": "135", "payload": "/w=="}
    body.update(media)
    return {"event": "media", "sequenceNumber": "2", "media": body, "streamSid": SID}


def _start(**start: Any) -> dict[str, Any]:
    body = {
        "accountSid": ACCOUNT,
        "streamSid": SID,
        "callSid": CALL,
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    body.update(start)
    return {"event": "start", "sequenceNumber": "1", "start": body, "streamSid": SID}


def _without(message: dict[str, Any], *path: str) -> dict[str, Any]:
    copy = orjson.loads(orjson.dumps(message))
    target = copy
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return copy


def _error(data: str | bytes) -> TwilioProtocolError:
    with pytest.raises(TwilioProtocolError) as info:
        parse_message(data)
    return info.value


# -- real traffic


def test_recorded_call_parses_line_by_line() -> None:
    events = [parse_message(line) for line in _lines()]

    assert events[0] == Connected(protocol="Call", version="1.0.0")
    assert isinstance(events[1], Start)
    assert isinstance(events[-1], Stop)
    media = events[2:-1]
    assert len(media) == 616
    assert all(isinstance(m, Media) and len(m.payload) == 160 for m in media)


def test_recorded_start_without_custom_parameters() -> None:
    start = parse_message(_lines()[1])
    assert start == Start(
        sequence_number=1,
        stream_sid="test_stream",
        account_sid="AC64f4d8c1481c0a5ac9cdbe997bfbcf58",
        call_sid="CA3ae75ffe1c5d8847e478556c07d07103",
        tracks=("inbound",),
        custom_parameters={},
        encoding="audio/x-mulaw",
        sample_rate=8000,
        channels=1,
    )


def test_recorded_media_has_string_numbers_converted() -> None:
    media = parse_message(_lines()[2])
    assert isinstance(media, Media)
    assert (media.sequence_number, media.chunk, media.timestamp) == (2, 1, 135)
    assert (media.stream_sid, media.track) == ("test_stream", "inbound")


def test_recorded_stop() -> None:
    assert parse_message(_lines()[-1]) == Stop(
        sequence_number=618,
        stream_sid="test_stream",
        account_sid="AC64f4d8c1481c0a5ac9cdbe997bfbcf58",
        call_sid="CA3ae75ffe1c5d8847e478556c07d07103",
    )


def test_bytes_are_accepted_like_text() -> None:
    line = _lines()[2]
    assert parse_message(line.encode()) == parse_message(line)


# -- documented shapes and tolerated variations


def test_documented_start_with_custom_parameters() -> None:
    params = {"FirstName": "Jane", "LastName": "Doe", "RemoteParty": "Bob"}
    start = parse_message(_text(_start(customParameters=params)))
    assert isinstance(start, Start)
    assert start.custom_parameters == params
    assert (start.stream_sid, start.call_sid, start.account_sid) == (SID, CALL, ACCOUNT)


def test_any_protocol_version_is_accepted() -> None:
    text = _text({"event": "connected", "protocol": "Call", "version": "2.1.0-beta"})
    assert parse_message(text) == Connected("Call", "2.1.0-beta")


def test_connected_without_protocol_fields_is_accepted() -> None:
    assert parse_message('{"event":"connected"}') == Connected("", "")


def test_start_without_media_format_defaults_to_mulaw_8k() -> None:
    start = parse_message(_text(_without(_start(), "start", "mediaFormat")))
    assert isinstance(start, Start)
    assert (start.encoding, start.sample_rate, start.channels) == ("audio/x-mulaw", 8000, 1)


def test_start_with_partial_media_format_fills_in_defaults() -> None:
    start = parse_message(_text(_start(mediaFormat={"sampleRate": "16000"})))
    assert isinstance(start, Start)
    assert (start.encoding, start.sample_rate, start.channels) == ("audio/x-mulaw", 16000, 1)


def test_start_with_only_the_inner_stream_sid_is_accepted() -> None:
    start = parse_message(_text(_without(_start(), "streamSid")))
    assert isinstance(start, Start) and start.stream_sid == SID


def test_start_needs_no_account_or_tracks() -> None:
    message = _without(_without(_start(), "start", "accountSid"), "start", "tracks")
    start = parse_message(_text(message))
    assert isinstance(start, Start)
    assert (start.account_sid, start.tracks) == ("", ("inbound",))


def test_numbers_may_be_json_integers() -> None:
    message = _media(chunk=7, timestamp=155)
    message["sequenceNumber"] = 3
    media = parse_message(_text(message))
    assert isinstance(media, Media)
    assert (media.sequence_number, media.chunk, media.timestamp) == (3, 7, 155)


def test_unknown_extra_fields_are_ignored() -> None:
    message = _media(extra={"nested": [1, 2]})
    message["futureField"] = "x"
    media = parse_message(_text(message))
    assert isinstance(media, Media) and media.payload == b"\xff"


def test_empty_payload_is_an_empty_frame() -> None:
    media = parse_message(_text(_media(payload="")))
    assert isinstance(media, Media) and media.payload == b""


@pytest.mark.parametrize("digit", list("0123456789*#ABCD"))
def test_every_dtmf_digit(digit: str) -> None:
    text = _text(
        {
            "event": "dtmf",
            "streamSid": SID,
            "sequenceNumber": "5",
            "dtmf": {"track": "inbound_track", "digit": digit},
        }
    )
    assert parse_message(text) == Dtmf(5, SID, "inbound_track", digit)


def test_mark_echo() -> None:
    text = _text({"event": "mark", "sequenceNumber": "4", "streamSid": SID, "mark": {"name": "x"}})
    assert parse_message(text) == Mark(4, SID, "x")


def test_stop_without_its_stop_object_still_stops() -> None:
    assert parse_message(_text({"event": "stop", "sequenceNumber": "9", "streamSid": SID})) == Stop(
        9, SID, "", ""
    )


# -- rejections: each names its kind, the event and the field


@pytest.mark.parametrize(
    "data", ["", "{", "not json", b"\xff\xfe", "[1,2", '{"event": "media",}', "\ud800"]
)
def test_invalid_json(data: str | bytes) -> None:
    error = _error(data)
    assert error.kind is ProtocolErrorKind.INVALID_JSON
    assert error.event is None


@pytest.mark.parametrize("data", ["[]", "1", '"media"', "null", "true"])
def test_json_that_is_not_an_object(data: str) -> None:
    assert _error(data).kind is ProtocolErrorKind.INVALID_JSON


def test_unknown_event() -> None:
    error = _error('{"event":"clear","streamSid":"x"}')
    assert error.kind is ProtocolErrorKind.UNKNOWN_EVENT
    assert error.event == "clear"
    assert "'clear'" in str(error)


def test_missing_event() -> None:
    error = _error('{"streamSid":"x"}')
    assert (error.kind, error.event) == (ProtocolErrorKind.MISSING_FIELD, None)
    assert "'event'" in str(error)


@pytest.mark.parametrize("event", ["1", "null", "[]", '{"a":1}', "true"])
def test_event_that_is_not_a_string(event: str) -> None:
    error = _error('{"event":' + event + "}")
    assert error.kind in (ProtocolErrorKind.INVALID_FIELD, ProtocolErrorKind.MISSING_FIELD)


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (_without(_media(), "media", "payload"), "media.payload"),
        (_without(_media(), "media", "chunk"), "media.chunk"),
        (_without(_media(), "media", "timestamp"), "media.timestamp"),
        (_without(_media(), "media", "track"), "media.track"),
        (_without(_media(), "media"), "media"),
        (_without(_media(), "streamSid"), "streamSid"),
        (_without(_media(), "sequenceNumber"), "sequenceNumber"),
        (_without(_start(), "start", "callSid"), "start.callSid"),
        (_without(_start(), "start"), "start"),
        (_without(_without(_start(), "streamSid"), "start", "streamSid"), "streamSid"),
        ({"event": "dtmf", "streamSid": SID, "sequenceNumber": "1", "dtmf": {}}, "dtmf.digit"),
        ({"event": "mark", "streamSid": SID, "sequenceNumber": "1", "mark": {}}, "mark.name"),
        ({"event": "mark", "streamSid": SID, "sequenceNumber": "1"}, "mark"),
        ({"event": "stop", "sequenceNumber": "1"}, "streamSid"),
    ],
)
def test_missing_field(message: dict[str, Any], field: str) -> None:
    error = _error(_text(message))
    assert error.kind is ProtocolErrorKind.MISSING_FIELD
    assert error.event == message["event"]
    assert f"'{field}'" in str(error)


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (_media(chunk="-1"), "media.chunk"),
        (_media(chunk=-1), "media.chunk"),
        (_media(chunk="1.5"), "media.chunk"),
        (_media(timestamp=135.0), "media.timestamp"),
        (_media(timestamp=True), "media.timestamp"),
        (_media(timestamp="١٣٥"), "media.timestamp"),  # Arabic-Indic digits: int() takes them
        (_media(timestamp=" 135"), "media.timestamp"),
        (_media(timestamp="1" * 19), "media.timestamp"),
        (_media(timestamp=""), "media.timestamp"),
        (_media(track=1), "media.track"),
        (_media(payload=123), "media.payload"),
        ({**_media(), "streamSid": ""}, "streamSid"),
        ({**_media(), "streamSid": 5}, "streamSid"),
        ({**_media(), "media": []}, "media"),
        (_start(customParameters={"a": 1}), "start.customParameters"),
        (_start(customParameters=["a"]), "start.customParameters"),
        (_start(tracks="inbound"), "start.tracks"),
        (_start(tracks=[1]), "start.tracks"),
        (_start(mediaFormat={"sampleRate": 0}), "start.mediaFormat.sampleRate"),
        (_start(mediaFormat={"channels": "two"}), "start.mediaFormat.channels"),
        (_start(mediaFormat={"encoding": 7}), "start.mediaFormat.encoding"),
        (_start(mediaFormat="mulaw"), "start.mediaFormat"),
        (_start(callSid=""), "start.callSid"),
        (_start(streamSid="other"), "streamSid"),
        ({"event": "stop", "sequenceNumber": "1", "streamSid": SID, "stop": []}, "stop"),
        ({"event": "connected", "version": 1}, "version"),
    ],
)
def test_invalid_field(message: dict[str, Any], field: str) -> None:
    error = _error(_text(message))
    assert error.kind is ProtocolErrorKind.INVALID_FIELD
    assert error.event == message["event"]
    assert f"'{field}'" in str(error)


@pytest.mark.parametrize("digit", ["E", "a", "10", "", " ", "#1", "½"])
def test_invalid_dtmf_digit(digit: str) -> None:
    text = _text(
        {"event": "dtmf", "streamSid": SID, "sequenceNumber": "5", "dtmf": {"digit": digit}}
    )
    error = _error(text)
    assert (error.kind, error.event) == (ProtocolErrorKind.INVALID_FIELD, "dtmf")
    assert "'dtmf.digit'" in str(error)


@pytest.mark.parametrize("payload", ["abc", "/w", "/w==\n", " /w==", "/w==/w==?", "é", "/w=x"])
def test_bad_base64(payload: str) -> None:
    error = _error(_text(_media(payload=payload)))
    assert (error.kind, error.event) == (ProtocolErrorKind.BAD_BASE64, "media")
    assert "'media.payload'" in str(error)


def test_error_text_does_not_echo_long_values() -> None:
    error = _error(_text(_media(timestamp="9" * 5000)))
    assert len(str(error)) < 200


def test_errors_pickle_with_their_attributes() -> None:
    error = pickle.loads(pickle.dumps(_error(_text(_media(payload="abc")))))
    assert (error.kind, error.event) == (ProtocolErrorKind.BAD_BASE64, "media")


# -- serialisers: the documented shapes, valid JSON for any input


def test_encode_media_documented_shape() -> None:
    ulaw = bytes(range(160))
    message = orjson.loads(encode_media(SID, ulaw))
    assert message == {
        "event": "media",
        "streamSid": SID,
        "media": {"payload": base64.b64encode(ulaw).decode()},
    }


@pytest.mark.parametrize("sid", ['a"b', "back\\slash", "new\nline", "ünï", "</script>"])
def test_encode_media_escapes_any_stream_sid(sid: str) -> None:
    message = orjson.loads(encode_media(sid, b"\x00\xff"))
    assert message["streamSid"] == sid
    assert base64.b64decode(message["media"]["payload"]) == b"\x00\xff"


def test_encode_media_of_nothing() -> None:
    assert orjson.loads(encode_media(SID, b""))["media"] == {"payload": ""}


def test_encode_mark_and_clear_documented_shapes() -> None:
    assert orjson.loads(encode_mark(SID, 'say "hi"')) == {
        "event": "mark",
        "streamSid": SID,
        "mark": {"name": 'say "hi"'},
    }
    assert orjson.loads(encode_clear(SID)) == {"event": "clear", "streamSid": SID}


def test_unencodable_mark_name_is_a_protocol_error() -> None:
    with pytest.raises(TwilioProtocolError) as info:
        encode_mark(SID, "\ud800")
    assert info.value.kind is ProtocolErrorKind.INVALID_FIELD


# -- fuzzing: whatever arrives, only TwilioProtocolError may come out


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randrange(9 if depth < 3 else 6)
    if choice == 0:
        return None
    if choice == 1:
        return rng.random() < 0.5
    if choice == 2:
        return rng.randint(-(2**63), 2**64 - 1)
    if choice == 3:
        return rng.uniform(-1e9, 1e9)
    if choice == 4:
        return rng.choice(["", "media", "start", "1", "-1", "/w==", "A", "#", "x" * 50, "١"])
    if choice == 5:
        return "".join(chr(rng.randrange(32, 0x3000)) for _ in range(rng.randrange(8)))
    if choice == 6:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["event", "streamSid", "sequenceNumber", "media", "start", "stop", "mark", "dtmf"]
    keys += ["payload", "chunk", "timestamp", "track", "digit", "name", "callSid", "mediaFormat"]
    keys += ["customParameters", "tracks", "sampleRate", "channels", "encoding", "protocol"]
    return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randrange(6))}


def _mutate(rng: random.Random, value: Any) -> Any:
    """Replace one value somewhere inside a real message with a random one."""
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = rng.choice(list(value))
        return {**value, key: _mutate(rng, value[key])}
    if rng.random() < 0.15 and isinstance(value, dict) and value:
        copy = dict(value)
        del copy[rng.choice(list(copy))]
        return copy
    return _random_json(rng)


def _only_protocol_errors(data: str | bytes) -> None:
    try:
        parse_message(data)
    except TwilioProtocolError as error:
        assert isinstance(error.kind, ProtocolErrorKind)
        str(error)  # the message must render too


def test_fuzz_random_bytes() -> None:
    rng = random.Random(1)
    for _ in range(3000):
        _only_protocol_errors(rng.randbytes(rng.randrange(64)))


def test_fuzz_random_json_values() -> None:
    rng = random.Random(2)
    for _ in range(5000):
        _only_protocol_errors(orjson.dumps(_random_json(rng)))


def test_fuzz_mutated_real_messages() -> None:
    rng = random.Random(3)
    messages = [orjson.loads(line) for line in _lines()[:4] + _lines()[-1:]]
    messages.append(_start(customParameters={"a": "b"}))
    messages.append(
        {"event": "dtmf", "streamSid": SID, "sequenceNumber": "5", "dtmf": {"digit": "1"}}
    )
    for _ in range(5000):
        _only_protocol_errors(orjson.dumps(_mutate(rng, rng.choice(messages))))


def test_fuzz_truncated_and_corrupted_fixture_lines() -> None:
    rng = random.Random(4)
    lines = _lines()
    for line in lines[:3] + lines[-1:]:
        for cut in range(len(line)):
            _only_protocol_errors(line[:cut])
    for _ in range(3000):
        raw = bytearray(rng.choice(lines).encode())
        for _ in range(rng.randrange(1, 4)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        _only_protocol_errors(bytes(raw))
