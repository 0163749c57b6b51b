"""Twilio's side of the Media Streams protocol, for the caller simulator and tests.

It writes what Twilio writes (field order, string-typed numbers and all, as in the recorded
fixture) and reads what the gateway sends back, with the same strictness the gateway applies to
Twilio. Pure functions, no I/O: a simulator adds the websocket and the clock.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from typing import Any

import orjson

# The private helpers are the codec's field checks, shared so both directions word errors alike.
from telephony.twilio.messages import (
    DEFAULT_ENCODING,
    ProtocolErrorKind,
    TwilioProtocolError,
    _bad_field,
    _preview,
    load_json_object,
)

__all__ = [
    "OutboundClear",
    "OutboundMark",
    "OutboundMedia",
    "encode_connected",
    "encode_dtmf",
    "encode_inbound_media",
    "encode_mark_echo",
    "encode_start",
    "encode_stop",
    "parse_gateway_message",
]


@dataclass(frozen=True, slots=True)
class OutboundMedia:
    stream_sid: str
    payload: bytes  # decoded μ-law


@dataclass(frozen=True, slots=True)
class OutboundMark:
    stream_sid: str
    name: str


@dataclass(frozen=True, slots=True)
class OutboundClear:
    stream_sid: str


GatewayMessage = OutboundMedia | OutboundMark | OutboundClear


def _text(message: dict[str, Any]) -> str:
    return orjson.dumps(message).decode()


# -- what Twilio sends


def encode_connected(version: str = "1.0.0") -> str:
    return _text({"event": "connected", "protocol": "Call", "version": version})


def encode_start(
    stream_sid: str,
    call_sid: str,
    account_sid: str,
    custom_parameters: dict[str, str] | None,
    sequence_number: int,
    sample_rate: int = 8000,
) -> str:
    """A `start` message; `customParameters` is left out when None, as in the recorded call."""
    start: dict[str, Any] = {
        "accountSid": account_sid,
        "streamSid": stream_sid,
        "callSid": call_sid,
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": DEFAULT_ENCODING, "sampleRate": sample_rate, "channels": 1},
    }
    if custom_parameters is not None:
        start["customParameters"] = custom_parameters
    return _text(
        {
            "event": "start",
            "sequenceNumber": str(sequence_number),
            "start": start,
            "streamSid": stream_sid,
        }
    )


def encode_inbound_media(
    stream_sid: str, sequence_number: int, chunk: int, timestamp_ms: int, ulaw: bytes
) -> str:
    """An inbound `media` message; Twilio sends the numbers as decimal strings."""
    return _text(
        {
            "event": "media",
            "sequenceNumber": str(sequence_number),
            "media": {
                "track": "inbound",
                "chunk": str(chunk),
                "timestamp": str(timestamp_ms),
                "payload": binascii.b2a_base64(ulaw, newline=False).decode("ascii"),
            },
            "streamSid": stream_sid,
        }
    )


def encode_dtmf(stream_sid: str, sequence_number: int, digit: str) -> str:
    # The docs give the DTMF track as "always inbound_track", unlike media's "inbound".
    return _text(
        {
            "event": "dtmf",
            "streamSid": stream_sid,
            "sequenceNumber": str(sequence_number),
            "dtmf": {"track": "inbound_track", "digit": digit},
        }
    )


def encode_mark_echo(stream_sid: str, sequence_number: int, name: str) -> str:
    return _text(
        {
            "event": "mark",
            "sequenceNumber": str(sequence_number),
            "streamSid": stream_sid,
            "mark": {"name": name},
        }
    )


def encode_stop(stream_sid: str, sequence_number: int, account_sid: str, call_sid: str) -> str:
    return _text(
        {
            "event": "stop",
            "sequenceNumber": str(sequence_number),
            "streamSid": stream_sid,
            "stop": {"accountSid": account_sid, "callSid": call_sid},
        }
    )


# -- what the gateway sends


def parse_gateway_message(data: str | bytes) -> GatewayMessage:
    """Parse a `media`, `mark` or `clear` message sent by the gateway.

    Documented fields are required; extra ones are ignored, as Twilio would. Anything else raises
    TwilioProtocolError.
    """
    msg = load_json_object(data)
    event = msg.get("event")
    if event not in ("media", "mark", "clear"):
        if event is None:
            raise TwilioProtocolError(
                ProtocolErrorKind.MISSING_FIELD, "message has no 'event' field"
            )
        raise TwilioProtocolError(
            ProtocolErrorKind.UNKNOWN_EVENT,
            f"the gateway may send media, mark or clear, not {_preview(event)}",
            _preview(event, quote=False) if type(event) is str else None,
        )
    stream_sid = msg.get("streamSid")
    if type(stream_sid) is not str or not stream_sid:
        raise _bad_field(event, "streamSid", stream_sid, "a non-empty string")
    if event == "clear":
        return OutboundClear(stream_sid)
    body = msg.get(event)
    if type(body) is not dict:
        raise _bad_field(event, event, body, "an object")
    if event == "mark":
        name = body.get("name")
        if type(name) is not str:
            raise _bad_field(event, "mark.name", name, "a string")
        return OutboundMark(stream_sid, name)
    payload = body.get("payload")
    if type(payload) is not str:
        raise _bad_field(event, "media.payload", payload, "a base64 string")
    try:
        audio = binascii.a2b_base64(payload, strict_mode=True)
    except ValueError:
        raise TwilioProtocolError(
            ProtocolErrorKind.BAD_BASE64,
            "media message: field 'media.payload' is not valid base64",
            "media",
        ) from None
    return OutboundMedia(stream_sid, audio)
