"""Twilio Media Streams messages: parse what Twilio sends, serialise what the gateway sends.

Pure and stateless: text in, typed events out, text back. Ordering and identity checks (start
before media, one stream per socket) live in `connection.py`; this module only knows the shape
of one message. Shapes follow https://www.twilio.com/docs/voice/media-streams/websocket-messages.

What is required and what defaults, and why:

- Every message after `connected` must carry `streamSid` and `sequenceNumber`: without them the
  message cannot be tied to a stream or ordered.
- `media` needs `media.payload`, `media.chunk`, `media.timestamp` and `media.track`; `dtmf` needs
  `dtmf.digit`; a `mark` echo needs `mark.name`: these are the message's content.
- `start` needs `start.callSid` (the call the session belongs to). Descriptive fields default when
  absent, because a missing value there can only mean Twilio's fixed one: `mediaFormat` is
  documented as always audio/x-mulaw, 8000 Hz, 1 channel (older protocol versions omitted it),
  `customParameters` is absent when the TwiML set none (the recorded fixture has no such key),
  `tracks` defaults to inbound (the only track `<Connect><Stream>` sends).
- `stop` needs only its stream: a stop is honoured even when its `stop` object is incomplete, since
  rejecting it would leave the call half-open. Its call and account SIDs default to "".
- Fields Twilio adds later are ignored. Fields that are present must have the right type.

Real traffic sends `sequenceNumber`, `chunk` and `timestamp` as decimal strings ("2", "135");
plain non-negative JSON integers are accepted too.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Any, Final

import orjson

__all__ = [
    "Connected",
    "Dtmf",
    "Mark",
    "Media",
    "ProtocolErrorKind",
    "Start",
    "Stop",
    "TwilioEvent",
    "TwilioProtocolError",
    "encode_clear",
    "encode_mark",
    "encode_media",
    "parse_message",
]

DEFAULT_ENCODING: Final = "audio/x-mulaw"
DEFAULT_SAMPLE_RATE: Final = 8000
DEFAULT_CHANNELS: Final = 1
DEFAULT_TRACKS: Final = ("inbound",)
DTMF_DIGITS: Final = frozenset("0123456789*#ABCD")

# 18 decimal digits always fit a signed 64-bit integer; longer numbers are not Twilio's.
_MAX_INT_DIGITS: Final = 18


class ProtocolErrorKind(StrEnum):
    INVALID_JSON = "invalid_json"
    UNKNOWN_EVENT = "unknown_event"
    MISSING_FIELD = "missing_field"
    INVALID_FIELD = "invalid_field"
    BAD_BASE64 = "bad_base64"
    WRONG_STREAM_SID = "wrong_stream_sid"
    UNEXPECTED_EVENT = "unexpected_event"
    UNKNOWN_MARK = "unknown_mark"


class TwilioProtocolError(Exception):
    """A message that breaks the Media Streams protocol. The only exception parsing raises.

    `event` is the message's event name when it could be read, so callers can log and count
    errors per message type without parsing the text again.
    """

    def __init__(self, kind: ProtocolErrorKind, detail: str, event: str | None = None) -> None:
        # Positional args so the exception pickles and compares by its content.
        super().__init__(kind, detail, event)
        self.kind = kind
        self.detail = detail
        self.event = event

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Connected:
    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class Start:
    sequence_number: int
    stream_sid: str
    account_sid: str
    call_sid: str
    tracks: tuple[str, ...]
    custom_parameters: dict[str, str]
    encoding: str
    sample_rate: int
    channels: int


# Not frozen, unlike the other events: one is built for every 20 ms of every call, and a
# frozen dataclass's __init__ (object.__setattr__ per field) costs 0.66 µs against 0.17 µs,
# measured; about 2 % of the gateway's CPU at 700 calls.
@dataclass(slots=True)
class Media:
    sequence_number: int
    stream_sid: str
    track: str
    chunk: int
    timestamp: int  # milliseconds from the start of the stream
    payload: bytes  # base64-decoded audio in the stream's encoding (μ-law)


@dataclass(frozen=True, slots=True)
class Dtmf:
    sequence_number: int
    stream_sid: str
    track: str
    digit: str


@dataclass(frozen=True, slots=True)
class Mark:
    sequence_number: int
    stream_sid: str
    name: str


@dataclass(frozen=True, slots=True)
class Stop:
    sequence_number: int
    stream_sid: str
    account_sid: str
    call_sid: str


TwilioEvent = Connected | Start | Media | Dtmf | Mark | Stop

_loads = orjson.loads
_dumps = orjson.dumps
_JSONDecodeError = orjson.JSONDecodeError
_a2b_base64 = binascii.a2b_base64
_b2a_base64 = binascii.b2a_base64


# ---------------------------------------------------------------------------------------------
# Parsing


def load_json_object(data: str | bytes) -> dict[str, Any]:
    """The frame as a JSON object, or INVALID_JSON: both directions start here."""
    try:
        msg = _loads(data)
    except _JSONDecodeError as exc:
        raise TwilioProtocolError(
            ProtocolErrorKind.INVALID_JSON, f"message is not valid JSON ({exc})"
        ) from None
    if type(msg) is not dict:
        raise TwilioProtocolError(
            ProtocolErrorKind.INVALID_JSON,
            f"message must be a JSON object, got {_json_type(msg)}",
        )
    return msg


def parse_message(data: str | bytes) -> TwilioEvent:
    """Parse one websocket text frame from Twilio into a typed event.

    Raises TwilioProtocolError, and nothing else, for anything that is not a well-formed message.
    """
    msg = load_json_object(data)
    event = msg.get("event")
    # Media is ~all of the traffic: test for it before any table lookup.
    if event == "media":
        return _parse_media(msg)
    if type(event) is not str:
        if event is None:
            raise TwilioProtocolError(
                ProtocolErrorKind.MISSING_FIELD, "message has no 'event' field"
            )
        raise TwilioProtocolError(
            ProtocolErrorKind.INVALID_FIELD,
            f"field 'event' must be a string, got {_json_type(event)}",
        )
    parser = _PARSERS.get(event)
    if parser is None:
        raise TwilioProtocolError(
            ProtocolErrorKind.UNKNOWN_EVENT,
            f"unknown event {_preview(event)}",
            _preview(event, quote=False),
        )
    return parser(msg)


def _parse_media(msg: dict[str, Any]) -> Media:
    media = msg.get("media")
    if type(media) is not dict:
        raise _bad_field("media", "media", media, "an object")
    payload = media.get("payload")
    if type(payload) is not str:
        raise _bad_field("media", "media.payload", payload, "a base64 string")
    try:
        audio = _a2b_base64(payload, strict_mode=True)
    except ValueError:  # binascii.Error, or non-ASCII text
        raise TwilioProtocolError(
            ProtocolErrorKind.BAD_BASE64,
            "media message: field 'media.payload' is not valid base64",
            "media",
        ) from None
    track = media.get("track")
    if type(track) is not str:
        raise _bad_field("media", "media.track", track, "a string")
    return Media(
        _int(msg.get("sequenceNumber"), "media", "sequenceNumber"),
        _stream_sid(msg, "media"),
        track,
        _int(media.get("chunk"), "media", "media.chunk"),
        _int(media.get("timestamp"), "media", "media.timestamp"),
        audio,
    )


def _parse_connected(msg: dict[str, Any]) -> Connected:
    return Connected(
        _optional_str(msg, "protocol", "connected", "protocol", ""),
        _optional_str(msg, "version", "connected", "version", ""),
    )


def _parse_start(msg: dict[str, Any]) -> Start:
    start = _object(msg, "start", "start")
    top_sid = msg.get("streamSid")
    inner_sid = start.get("streamSid")
    # Twilio repeats the stream SID inside `start`; either copy identifies the stream.
    if top_sid is None and inner_sid is None:
        raise _bad_field("start", "streamSid", None, "a non-empty string")
    for path, sid in (("streamSid", top_sid), ("start.streamSid", inner_sid)):
        if sid is not None and (type(sid) is not str or not sid):
            raise _bad_field("start", path, sid, "a non-empty string")
    if top_sid is not None and inner_sid is not None and top_sid != inner_sid:
        raise TwilioProtocolError(
            ProtocolErrorKind.INVALID_FIELD,
            "start message: 'streamSid' and 'start.streamSid' differ",
            "start",
        )
    call_sid = start.get("callSid")
    if type(call_sid) is not str or not call_sid:
        raise _bad_field("start", "start.callSid", call_sid, "a non-empty string")
    media_format = _optional_object(start, "mediaFormat", "start", "start.mediaFormat")
    return Start(
        sequence_number=_int(msg.get("sequenceNumber"), "start", "sequenceNumber"),
        stream_sid=top_sid if top_sid is not None else inner_sid,
        account_sid=_optional_str(start, "accountSid", "start", "start.accountSid", ""),
        call_sid=call_sid,
        tracks=_tracks(start.get("tracks")),
        custom_parameters=_custom_parameters(start.get("customParameters")),
        encoding=_optional_str(
            media_format, "encoding", "start", "start.mediaFormat.encoding", DEFAULT_ENCODING
        ),
        sample_rate=_positive_int(
            media_format.get("sampleRate"), "start.mediaFormat.sampleRate", DEFAULT_SAMPLE_RATE
        ),
        channels=_positive_int(
            media_format.get("channels"), "start.mediaFormat.channels", DEFAULT_CHANNELS
        ),
    )


def _parse_dtmf(msg: dict[str, Any]) -> Dtmf:
    dtmf = _object(msg, "dtmf", "dtmf")
    digit = dtmf.get("digit")
    if type(digit) is not str:
        raise _bad_field("dtmf", "dtmf.digit", digit, "a string")
    if digit not in DTMF_DIGITS:
        raise TwilioProtocolError(
            ProtocolErrorKind.INVALID_FIELD,
            f"dtmf message: field 'dtmf.digit' must be one of 0-9 * # A-D, got {_preview(digit)}",
            "dtmf",
        )
    return Dtmf(
        _int(msg.get("sequenceNumber"), "dtmf", "sequenceNumber"),
        _stream_sid(msg, "dtmf"),
        _optional_str(dtmf, "track", "dtmf", "dtmf.track", "inbound_track"),
        digit,
    )


def _parse_mark(msg: dict[str, Any]) -> Mark:
    mark = _object(msg, "mark", "mark")
    name = mark.get("name")
    if type(name) is not str:
        raise _bad_field("mark", "mark.name", name, "a string")
    return Mark(
        _int(msg.get("sequenceNumber"), "mark", "sequenceNumber"),
        _stream_sid(msg, "mark"),
        name,
    )


def _parse_stop(msg: dict[str, Any]) -> Stop:
    stop = _optional_object(msg, "stop", "stop", "stop")
    return Stop(
        _int(msg.get("sequenceNumber"), "stop", "sequenceNumber"),
        _stream_sid(msg, "stop"),
        _optional_str(stop, "accountSid", "stop", "stop.accountSid", ""),
        _optional_str(stop, "callSid", "stop", "stop.callSid", ""),
    )


_PARSERS: Final = {
    "connected": _parse_connected,
    "start": _parse_start,
    "dtmf": _parse_dtmf,
    "mark": _parse_mark,
    "stop": _parse_stop,
}


# -- field helpers: each names the field it rejects, so a log line says what Twilio got wrong.


def _int(value: object, event: str, path: str) -> int:
    if type(value) is str:
        # isascii() keeps out Unicode digits that int() would accept ("٣"); the length cap keeps
        # the value a 64-bit integer.
        if value.isdigit() and value.isascii() and len(value) <= _MAX_INT_DIGITS:
            return int(value)
    elif type(value) is int and value >= 0:  # `type is` also rules out bool
        return value
    raise _bad_field(event, path, value, "a non-negative integer or decimal string")


def _positive_int(value: object, path: str, default: int) -> int:
    if value is None:
        return default
    number = _int(value, "start", path)
    if number == 0:
        raise _bad_field("start", path, value, "a positive integer")
    return number


def _stream_sid(msg: dict[str, Any], event: str) -> str:
    sid = msg.get("streamSid")
    if type(sid) is not str or not sid:
        raise _bad_field(event, "streamSid", sid, "a non-empty string")
    return sid


def _object(parent: dict[str, Any], key: str, event: str) -> dict[str, Any]:
    value = parent.get(key)
    if type(value) is not dict:
        raise _bad_field(event, key, value, "an object")
    return value


def _optional_object(parent: dict[str, Any], key: str, event: str, path: str) -> dict[str, Any]:
    value = parent.get(key)
    if value is None:
        return {}
    if type(value) is not dict:
        raise _bad_field(event, path, value, "an object")
    return value


def _optional_str(parent: dict[str, Any], key: str, event: str, path: str, default: str) -> str:
    value = parent.get(key)
    if value is None:
        return default
    if type(value) is not str:
        raise _bad_field(event, path, value, "a string")
    return value


def _tracks(value: object) -> tuple[str, ...]:
    if value is None:
        return DEFAULT_TRACKS
    if type(value) is not list or any(type(track) is not str for track in value):
        raise _bad_field("start", "start.tracks", value, "an array of strings")
    return tuple(value)


def _custom_parameters(value: object) -> dict[str, str]:
    if value is None:
        return {}
    # JSON object keys are always strings; only the values need checking.
    if type(value) is not dict or any(type(v) is not str for v in value.values()):
        raise _bad_field("start", "start.customParameters", value, "an object of strings")
    return value


def _bad_field(event: str, path: str, value: object, expected: str) -> TwilioProtocolError:
    if value is None:
        return TwilioProtocolError(
            ProtocolErrorKind.MISSING_FIELD,
            f"{event} message: field '{path}' is missing",
            event,
        )
    return TwilioProtocolError(
        ProtocolErrorKind.INVALID_FIELD,
        f"{event} message: field '{path}' must be {expected}, got {_describe(value)}",
        event,
    )


def _describe(value: object) -> str:
    # The offending value is shown only when short: error text goes to logs, payloads must not.
    if type(value) in (str, int, float, bool):
        return f"{_json_type(value)} {_preview(value)}"
    return _json_type(value)


def _preview(value: object, *, quote: bool = True) -> str:
    text = repr(value) if quote else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _json_type(value: object) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


_JSON_TYPE_NAMES: Final[dict[type, str]] = {
    dict: "object",
    list: "array",
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


# ---------------------------------------------------------------------------------------------
# Serialising what the gateway sends (bidirectional streams): only the documented fields.


@lru_cache(maxsize=4096)
def _media_prefix(stream_sid: str) -> str:
    # Built once per stream: JSON-escaping the SID here keeps any SID correct, and the per-frame
    # work is then one base64 call and a concatenation (about twice as fast as orjson.dumps on a
    # dict, measured). Base64 text never needs escaping.
    return '{"event":"media","streamSid":' + _quote(stream_sid) + ',"media":{"payload":"'


def encode_media(stream_sid: str, ulaw: bytes) -> str:
    """A `media` message that plays `ulaw` (8 kHz μ-law bytes) on the call."""
    return _media_prefix(stream_sid) + _b2a_base64(ulaw, newline=False).decode("ascii") + '"}}'


def encode_mark(stream_sid: str, name: str) -> str:
    """A `mark` message: Twilio echoes `name` back once the audio sent before it has played."""
    return _encode(
        {"event": "mark", "streamSid": stream_sid, "mark": {"name": name}}, "mark", "mark.name"
    )


def encode_clear(stream_sid: str) -> str:
    """A `clear` message: Twilio drops the audio it has buffered and returns pending marks."""
    return _encode({"event": "clear", "streamSid": stream_sid}, "clear", "streamSid")


def _quote(text: str) -> str:
    try:
        return _dumps(text).decode()
    except TypeError:  # orjson.JSONEncodeError: a lone surrogate, or not a str at all
        raise TwilioProtocolError(
            ProtocolErrorKind.INVALID_FIELD,
            "media message: field 'streamSid' is not a JSON-encodable string",
            "media",
        ) from None


def _encode(message: dict[str, Any], event: str, path: str) -> str:
    try:
        return _dumps(message).decode()
    except TypeError:  # orjson.JSONEncodeError
        raise TwilioProtocolError(
            ProtocolErrorKind.INVALID_FIELD,
            f"{event} message: a field (likely '{path}') is not a JSON-encodable string",
            event,
        ) from None
