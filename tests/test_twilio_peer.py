"""Twilio's side of the protocol, and the two sides wired back to back in memory."""

from __future__ import annotations

import base64
import contextlib
import random
import struct
from dataclasses import dataclass, field

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
    parse_message,
)
from telephony.twilio.peer import OutboundClear, OutboundMark, OutboundMedia
from tests.fixtures import FIXTURES

SID = "MZ00000000000000000000000000000001"
CALL = "CA00000000000000000000000000000001"
ACCOUNT = "AC00000000000000000000000000000001"
FRAME = 160  # 20 ms of 8 kHz μ-law


def _recorded_ulaw() -> bytes:
    raw = (FIXTURES / "real-phone-how-are-you.wav").read_bytes()
    offset = 12
    while offset + 8 <= len(raw):
        chunk_id, size = struct.unpack_from("<4sI", raw, offset)
        if chunk_id == b"data":
            return raw[offset + 8 : offset + 8 + size]
        offset += 8 + size + (size & 1)
    raise AssertionError("no data chunk")


@dataclass
class FakeTwilio:
    """Plays Twilio: sends a caller's audio, plays the gateway's audio, echoes marks."""

    stream_sid: str = SID
    sequence: int = 0
    chunk: int = 0
    # What the gateway queued for playout, in order: audio bytes or mark names.
    playout: list[bytes | str] = field(default_factory=list)
    heard: bytearray = field(default_factory=bytearray)

    def _next(self) -> int:
        self.sequence += 1
        return self.sequence

    def open(self, parameters: dict[str, str] | None) -> list[str]:
        # `connected` carries no sequence number; `start` is 1, as in the recorded call.
        return [
            peer.encode_connected(),
            peer.encode_start(self.stream_sid, CALL, ACCOUNT, parameters, self._next()),
        ]

    def say(self, ulaw: bytes) -> list[str]:
        frames = []
        for offset in range(0, len(ulaw) - FRAME + 1, FRAME):
            self.chunk += 1
            timestamp = 20 * (self.chunk - 1)
            frames.append(
                peer.encode_inbound_media(
                    self.stream_sid,
                    self._next(),
                    self.chunk,
                    timestamp,
                    ulaw[offset : offset + FRAME],
                )
            )
        return frames

    def press(self, digit: str) -> str:
        return peer.encode_dtmf(self.stream_sid, self._next(), digit)

    def hang_up(self) -> str:
        return peer.encode_stop(self.stream_sid, self._next(), ACCOUNT, CALL)

    def deliver(self, text: str) -> list[str]:
        """Take one message from the gateway; return what Twilio sends back at once."""
        message = peer.parse_gateway_message(text)
        assert message.stream_sid == self.stream_sid
        if isinstance(message, OutboundMedia):
            self.playout.append(message.payload)
        elif isinstance(message, OutboundMark):
            self.playout.append(message.name)
        else:  # clear: drop the audio, hand back every pending mark
            names = [item for item in self.playout if isinstance(item, str)]
            self.playout.clear()
            return [peer.encode_mark_echo(self.stream_sid, self._next(), n) for n in names]
        return []

    def play(self, nbytes: int) -> list[str]:
        """Play up to `nbytes` of queued audio; echo each mark reached on the way."""
        echoes = []
        while self.playout:
            item = self.playout[0]
            if isinstance(item, str):
                echoes.append(peer.encode_mark_echo(self.stream_sid, self._next(), item))
                self.playout.pop(0)
                continue
            if nbytes <= 0:
                break
            taken, rest = item[:nbytes], item[nbytes:]
            self.heard += taken
            nbytes -= len(taken)
            if rest:
                self.playout[0] = rest
            else:
                self.playout.pop(0)
        return echoes


def test_a_whole_call_back_to_back() -> None:
    twilio = FakeTwilio()
    gateway = MediaStreamConnection()
    caller_audio = _recorded_ulaw()

    # The call opens and the caller speaks: the gateway sees their exact audio, in order.
    opened = [gateway.receive(text) for text in twilio.open({"agent": "support", "lang": "en"})]
    assert isinstance(opened[0], Connected)
    assert isinstance(opened[1], Start) and opened[1].custom_parameters["lang"] == "en"
    frames = [gateway.receive(text) for text in twilio.say(caller_audio)]
    assert all(isinstance(frame, Media) for frame in frames)
    received = b"".join(frame.payload for frame in frames if isinstance(frame, Media))
    assert received == caller_audio[: len(received)] and len(caller_audio) - len(received) < FRAME
    assert gateway.receive(twilio.press("7")) == Dtmf(twilio.sequence, SID, "inbound_track", "7")

    # The gateway answers in two sentences, each followed by a mark.
    first, second = b"\x11" * 800, b"\x22" * 800
    for text in (
        gateway.send_media(first),
        gateway.send_mark("sentence-1"),
        gateway.send_media(second),
        gateway.send_mark("sentence-2"),
    ):
        assert twilio.deliver(text) == []
    assert gateway.pending_marks == 2

    # Twilio plays the first sentence and part of the second...
    echoes = twilio.play(800 + 300)
    assert [gateway.receive(text) for text in echoes] == [PlayoutMark("sentence-1", played=True)]

    # ...then the caller barges in: the gateway clears, Twilio hands back the pending mark.
    echoes = twilio.deliver(gateway.send_clear())
    assert [gateway.receive(text) for text in echoes] == [PlayoutMark("sentence-2", played=False)]
    assert gateway.pending_marks == 0
    assert bytes(twilio.heard) == first + second[:300]

    # A new answer after the clear plays in full.
    twilio.deliver(gateway.send_media(b"\x33" * 160))
    twilio.deliver(gateway.send_mark("sentence-3"))
    echoes = twilio.play(160)
    assert [gateway.receive(text) for text in echoes] == [PlayoutMark("sentence-3", played=True)]

    assert isinstance(gateway.receive(twilio.hang_up()), Stop)
    assert gateway.stopped


def test_peer_reproduces_the_recorded_call_byte_for_byte() -> None:
    lines = (FIXTURES / "twilio-recorded-call.jsonl").read_text().splitlines()
    events = [parse_message(line) for line in lines]
    encoded = []
    for event in events:
        if isinstance(event, Connected):
            encoded.append(peer.encode_connected(event.version))
        elif isinstance(event, Start):
            encoded.append(
                peer.encode_start(
                    event.stream_sid, event.call_sid, event.account_sid, None, event.sequence_number
                )
            )
        elif isinstance(event, Media):
            encoded.append(
                peer.encode_inbound_media(
                    event.stream_sid,
                    event.sequence_number,
                    event.chunk,
                    event.timestamp,
                    event.payload,
                )
            )
        elif isinstance(event, Stop):
            encoded.append(
                peer.encode_stop(
                    event.stream_sid, event.sequence_number, event.account_sid, event.call_sid
                )
            )
    assert encoded == lines


def test_start_includes_custom_parameters_and_sample_rate() -> None:
    message = orjson.loads(peer.encode_start(SID, CALL, ACCOUNT, {"a": "b"}, 1, sample_rate=16000))
    assert message["start"]["customParameters"] == {"a": "b"}
    assert message["start"]["mediaFormat"] == {
        "encoding": "audio/x-mulaw",
        "sampleRate": 16000,
        "channels": 1,
    }
    assert (
        "customParameters"
        not in orjson.loads(peer.encode_start(SID, CALL, ACCOUNT, None, 1))["start"]
    )


def test_dtmf_and_mark_echo_documented_shapes() -> None:
    assert orjson.loads(peer.encode_dtmf(SID, 5, "1")) == {
        "event": "dtmf",
        "streamSid": SID,
        "sequenceNumber": "5",
        "dtmf": {"track": "inbound_track", "digit": "1"},
    }
    assert orjson.loads(peer.encode_mark_echo(SID, 4, "my label")) == {
        "event": "mark",
        "sequenceNumber": "4",
        "streamSid": SID,
        "mark": {"name": "my label"},
    }


# -- parse_gateway_message


def test_gateway_messages_with_extra_fields_are_accepted() -> None:
    text = orjson.dumps(
        {"event": "media", "streamSid": SID, "media": {"payload": "AAE=", "x": 1}, "y": 2}
    )
    assert peer.parse_gateway_message(text) == OutboundMedia(SID, b"\x00\x01")
    text = orjson.dumps({"event": "mark", "streamSid": SID, "mark": {"name": ""}})
    assert peer.parse_gateway_message(text) == OutboundMark(SID, "")
    assert peer.parse_gateway_message(b'{"event":"clear","streamSid":"s"}') == OutboundClear("s")


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("nope", ProtocolErrorKind.INVALID_JSON),
        ("[]", ProtocolErrorKind.INVALID_JSON),
        ('{"streamSid":"s"}', ProtocolErrorKind.MISSING_FIELD),
        ('{"event":"start","streamSid":"s"}', ProtocolErrorKind.UNKNOWN_EVENT),
        ('{"event":["media"],"streamSid":"s"}', ProtocolErrorKind.UNKNOWN_EVENT),
        ('{"event":"clear"}', ProtocolErrorKind.MISSING_FIELD),
        ('{"event":"clear","streamSid":""}', ProtocolErrorKind.INVALID_FIELD),
        ('{"event":"media","streamSid":"s"}', ProtocolErrorKind.MISSING_FIELD),
        ('{"event":"media","streamSid":"s","media":{}}', ProtocolErrorKind.MISSING_FIELD),
        (
            '{"event":"media","streamSid":"s","media":{"payload":"%%"}}',
            ProtocolErrorKind.BAD_BASE64,
        ),
        ('{"event":"mark","streamSid":"s","mark":{}}', ProtocolErrorKind.MISSING_FIELD),
        ('{"event":"mark","streamSid":"s","mark":{"name":1}}', ProtocolErrorKind.INVALID_FIELD),
    ],
)
def test_bad_gateway_messages(message: str, kind: ProtocolErrorKind) -> None:
    with pytest.raises(TwilioProtocolError) as info:
        peer.parse_gateway_message(message)
    assert info.value.kind is kind


def test_fuzz_gateway_messages_only_raise_protocol_errors() -> None:
    rng = random.Random(5)
    seeds = [
        '{"event":"media","streamSid":"s","media":{"payload":"' + base64.b64encode(b"ab").decode(),
        '{"event":"mark","streamSid":"s","mark":{"name":"n"}}',
        '{"event":"clear","streamSid":"s"}',
    ]
    for _ in range(3000):
        raw = bytearray(rng.choice(seeds).encode())
        del raw[rng.randrange(len(raw)) :]
        raw.extend(rng.randbytes(rng.randrange(4)))
        with contextlib.suppress(TwilioProtocolError):
            peer.parse_gateway_message(bytes(raw))
