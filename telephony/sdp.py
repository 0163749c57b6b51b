"""SDP (RFC 4566) for telephony, and the offer/answer rules of RFC 3264 that a G.711 leg needs.

Two halves, both pure:

- `SessionDescription.parse` / `serialize`: the v/o/s/c/t/m/a lines and the attributes that
  matter to audio (rtpmap, fmtp, ptime, the direction attributes), several m-lines, session-level
  defaults that m-lines inherit. Lines this module does not model (i, u, e, p, b, r, z, k) are
  kept in order so a description serialises back without losing them.
- `answer()` (we received an offer in an INVITE), `make_offer()` and `accept_answer()` (the
  INVITE had no SDP: our 200 OK offers, the ACK answers). They return a `MediaParams`, the one
  value the RTP session is built from.

Parsing is lenient where real endpoints differ (line endings, a missing s= or t= line, unknown
attributes) and strict where a wrong guess would send audio to the wrong place (the m= and c=
lines, payload type numbers). Anything malformed raises `SdpError`.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal, cast

__all__ = [
    "Answer",
    "Attribute",
    "Codec",
    "Connection",
    "Direction",
    "MediaDescription",
    "MediaParams",
    "Origin",
    "RtpMap",
    "SdpError",
    "SessionDescription",
    "accept_answer",
    "answer",
    "make_offer",
]

Codec = Literal["PCMU", "PCMA"]
Direction = Literal["sendrecv", "sendonly", "recvonly", "inactive"]

DIRECTIONS: Final[frozenset[str]] = frozenset({"sendrecv", "sendonly", "recvonly", "inactive"})
CODEC_PAYLOAD_TYPES: Final[dict[str, int]] = {"PCMU": 0, "PCMA": 8}
TELEPHONE_EVENT: Final = "telephone-event"
CLOCK_RATE: Final = 8000
PTIMES: Final = (20, 30)
DEFAULT_PTIME: Final = 20
# Events 0-15 are the DTMF keys (RFC 4733 section 3.2); they are all this gateway sends or reads.
DTMF_EVENTS: Final = "0-15"

# What each side does when the other asks for X (RFC 3264 section 6.1): the mirror image.
_REVERSE: Final[dict[str, Direction]] = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}

# What an offer or answer with c=0.0.0.0 means: that side cannot receive.
_AT_ZERO_ADDRESS: Final[dict[str, Direction]] = {"sendrecv": "sendonly", "recvonly": "inactive"}

# Static payload types of RFC 3551 table 4 that an offer may list without an rtpmap line.
_STATIC: Final[dict[int, tuple[str, int]]] = {
    0: ("PCMU", 8000),
    3: ("GSM", 8000),
    4: ("G723", 8000),
    8: ("PCMA", 8000),
    9: ("G722", 8000),
    13: ("CN", 8000),
    18: ("G729", 8000),
}

# Canonical line order (RFC 4566 section 5) for the lines kept verbatim in `other`.
_SESSION_ORDER: Final = "voseipcbtrzkam"
_MEDIA_ORDER: Final = "micbka"


class SdpError(ValueError):
    """A session description that cannot be parsed, or an answer that does not fit its offer."""


# ---------------------------------------------------------------------------------------------
# Lines


@dataclass(frozen=True, slots=True)
class Origin:
    """The o= line. The session id and version are digit strings: they may exceed 64 bits."""

    username: str = "-"
    session_id: str = "0"
    session_version: str = "0"
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "0.0.0.0"

    @classmethod
    def parse(cls, value: str) -> Origin:
        parts = value.split()
        if len(parts) != 6:
            raise SdpError(f"o= line needs 6 fields, got {len(parts)}: {value[:80]!r}")
        return cls(*parts)

    def serialize(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(frozen=True, slots=True)
class Connection:
    """The c= line. A multicast TTL or address count ("/127") is dropped: unicast only here."""

    address: str
    nettype: str = "IN"
    addrtype: str = "IP4"

    @classmethod
    def parse(cls, value: str) -> Connection:
        parts = value.split()
        if len(parts) != 3:
            raise SdpError(f"c= line needs 3 fields, got {len(parts)}: {value[:80]!r}")
        nettype, addrtype, address = parts
        address = address.split("/", 1)[0]
        if not address:
            raise SdpError(f"c= line has no address: {value[:80]!r}")
        return cls(address, nettype, addrtype)

    @classmethod
    def for_address(cls, address: str) -> Connection:
        return cls(address, "IN", "IP6" if ":" in address else "IP4")

    def serialize(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"

    @property
    def is_hold(self) -> bool:
        # RFC 2543 put calls on hold with c=0.0.0.0; RFC 3264 section 8.4 still asks
        # answerers to understand it.
        return self.address in ("0.0.0.0", "::")


@dataclass(frozen=True, slots=True)
class Attribute:
    """An a= line: `a=name:value`, or `a=name` for a flag (value None)."""

    name: str
    value: str | None = None

    @classmethod
    def parse(cls, text: str) -> Attribute:
        name, sep, value = text.partition(":")
        if not name:
            raise SdpError(f"a= line without a name: {text[:80]!r}")
        return cls(name, value if sep else None)

    def serialize(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


@dataclass(frozen=True, slots=True)
class RtpMap:
    """`a=rtpmap:<pt> <encoding>/<clock rate>[/<channels>]`."""

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None

    @classmethod
    def parse(cls, value: str) -> RtpMap:
        pt_text, _, rest = value.strip().partition(" ")
        fields = rest.strip().split("/")
        if len(fields) not in (2, 3) or not fields[0]:
            raise SdpError(f"a=rtpmap value is not '<pt> <name>/<rate>': {value[:80]!r}")
        payload_type = _payload_type(pt_text)
        clock_rate = _int(fields[1], "rtpmap clock rate")
        channels = _int(fields[2], "rtpmap channels") if len(fields) == 3 else None
        return cls(payload_type, fields[0], clock_rate, channels)

    def serialize(self) -> str:
        text = f"{self.payload_type} {self.encoding}/{self.clock_rate}"
        return text if self.channels is None else f"{text}/{self.channels}"

    def is_codec(self, name: str, clock_rate: int = CLOCK_RATE) -> bool:
        return (
            self.encoding.upper() == name.upper()
            and self.clock_rate == clock_rate
            and self.channels in (None, 1)
        )


# ---------------------------------------------------------------------------------------------
# Descriptions


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaDescription:
    """One m= section. `formats` are the m= line's format tokens, as strings."""

    media: str
    port: int
    proto: str
    formats: tuple[str, ...]
    port_count: int | None = None
    connection: Connection | None = None
    attributes: tuple[Attribute, ...] = ()
    other: tuple[tuple[str, str], ...] = ()  # i=, b=, k= lines, verbatim

    def attribute(self, name: str) -> str | None:
        """The value of the first `a=name:...` line; "" for a flag; None when absent."""
        for attr in self.attributes:
            if attr.name == name:
                return "" if attr.value is None else attr.value
        return None

    def attribute_values(self, name: str) -> list[str]:
        return [a.value for a in self.attributes if a.name == name and a.value is not None]

    @property
    def is_rtp(self) -> bool:
        # RTP/AVP and its feedback/secure variants; only plain RTP/AVP carries our audio.
        return "RTP/" in self.proto.upper()

    @property
    def payload_types(self) -> tuple[int, ...]:
        if not self.is_rtp:
            raise SdpError(f"m={self.media} with proto {self.proto} has no RTP payload types")
        return tuple(_payload_type(fmt) for fmt in self.formats)

    @property
    def rtpmaps(self) -> dict[int, RtpMap]:
        """Every listed payload type's mapping: its rtpmap line, or RFC 3551's static one."""
        explicit: dict[int, RtpMap] = {}
        for value in self.attribute_values("rtpmap"):
            rtpmap = RtpMap.parse(value)
            explicit.setdefault(rtpmap.payload_type, rtpmap)
        result: dict[int, RtpMap] = {}
        for pt in self.payload_types:
            if pt in explicit:
                result[pt] = explicit[pt]
            elif pt in _STATIC:
                name, rate = _STATIC[pt]
                result[pt] = RtpMap(pt, name, rate)
        return result

    @property
    def fmtp(self) -> dict[int, str]:
        result: dict[int, str] = {}
        for value in self.attribute_values("fmtp"):
            pt_text, _, params = value.partition(" ")
            result.setdefault(_payload_type(pt_text), params.strip())
        return result

    @property
    def ptime(self) -> int | None:
        value = self.attribute("ptime")
        if not value:
            return None
        try:
            # Some endpoints write "20.0"; a fractional ptime rounds to whole milliseconds.
            return round(float(value))
        except ValueError:
            raise SdpError(f"a=ptime value is not a number: {value[:40]!r}") from None

    @property
    def direction(self) -> Direction | None:
        """The m-line's own direction attribute, None when it has none (see effective_direction)."""
        for attr in self.attributes:
            if attr.value is None and attr.name in DIRECTIONS:
                return cast(Direction, attr.name)
        return None

    def serialize_lines(self) -> list[str]:
        port = str(self.port) if self.port_count is None else f"{self.port}/{self.port_count}"
        formats = " ".join(self.formats)
        lines = [f"m={self.media} {port} {self.proto}" + (f" {formats}" if formats else "")]
        lines += _ordered_other(self.other, _MEDIA_ORDER, "c", self.connection)
        lines += [f"a={attr.serialize()}" for attr in self.attributes]
        return lines


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionDescription:
    """A whole SDP body. m-lines inherit the session's c= line and direction attribute."""

    origin: Origin
    name: str = "-"
    connection: Connection | None = None
    times: tuple[str, ...] = ("0 0",)
    attributes: tuple[Attribute, ...] = ()
    media: tuple[MediaDescription, ...] = ()
    version: int = 0
    other: tuple[tuple[str, str], ...] = ()  # i=, u=, e=, p=, b=, r=, z=, k= lines, verbatim

    @classmethod
    def parse(cls, data: str | bytes) -> SessionDescription:
        if isinstance(data, bytes | bytearray | memoryview):
            try:
                data = bytes(data).decode("utf-8")
            except UnicodeDecodeError:
                raise SdpError("SDP body is not UTF-8") from None
        return _parse(data)

    def serialize(self) -> str:
        lines = [f"v={self.version}", f"o={self.origin.serialize()}", f"s={self.name or '-'}"]
        lines += _ordered_other(self.other, _SESSION_ORDER, "c", self.connection, self.times)
        lines += [f"a={attr.serialize()}" for attr in self.attributes]
        for media in self.media:
            lines += media.serialize_lines()
        return "\r\n".join(lines) + "\r\n"

    @property
    def direction(self) -> Direction | None:
        for attr in self.attributes:
            if attr.value is None and attr.name in DIRECTIONS:
                return cast(Direction, attr.name)
        return None

    def effective_direction(self, media: MediaDescription) -> Direction:
        return media.direction or self.direction or "sendrecv"

    def effective_connection(self, media: MediaDescription) -> Connection | None:
        return media.connection or self.connection


def _ordered_other(
    other: Iterable[tuple[str, str]],
    order: str,
    connection_key: str,
    connection: Connection | None,
    times: tuple[str, ...] = (),
) -> list[str]:
    """The verbatim lines plus c= (and t=) in RFC 4566 order, keeping each type's own order."""
    entries = list(other)
    if connection is not None:
        entries.append((connection_key, connection.serialize()))
    entries += [("t", value) for value in times]
    entries.sort(key=lambda entry: order.find(entry[0]) if entry[0] in order else len(order))
    return [f"{kind}={value}" for kind, value in entries]


def _parse(text: str) -> SessionDescription:
    lines = [line.rstrip("\r") for line in text.split("\n")]
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise SdpError("empty SDP body")
    items: list[tuple[str, str]] = []
    for line in lines:
        kind, sep, value = line.partition("=")
        if not sep or len(kind) != 1 or not kind.isalpha():
            raise SdpError(f"line is not '<type>=<value>': {line[:80]!r}")
        items.append((kind, value.strip()))
    if items[0] != ("v", "0"):
        raise SdpError(f"SDP must start with v=0, got {lines[0][:80]!r}")

    origin: Origin | None = None
    name = "-"
    connection: Connection | None = None
    times: list[str] = []
    attributes: list[Attribute] = []
    other: list[tuple[str, str]] = []
    media: list[MediaDescription] = []
    current: _MediaLines | None = None  # the m= section being read

    for kind, value in items[1:]:
        if kind == "m":
            if current is not None:
                media.append(current.build())
            current = _MediaLines(value)
        elif current is not None:
            current.add(kind, value)
        elif kind == "o":
            origin = Origin.parse(value)
        elif kind == "s":
            name = value
        elif kind == "c":
            connection = Connection.parse(value)
        elif kind == "t":
            times.append(value)
        elif kind == "a":
            attributes.append(Attribute.parse(value))
        elif kind == "v":
            raise SdpError("second v= line: one SDP body holds one session")
        else:
            other.append((kind, value))
    if current is not None:
        media.append(current.build())
    if origin is None:
        raise SdpError("SDP has no o= line")
    return SessionDescription(
        origin=origin,
        name=name,
        connection=connection,
        times=tuple(times) or ("0 0",),
        attributes=tuple(attributes),
        media=tuple(media),
        other=tuple(other),
    )


class _MediaLines:
    """The lines of one m= section while it is being read."""

    __slots__ = (
        "attributes",
        "connection",
        "formats",
        "media",
        "other",
        "port",
        "port_count",
        "proto",
    )

    def __init__(self, value: str) -> None:
        parts = value.split()
        if len(parts) < 3:
            raise SdpError(f"m= line needs '<media> <port> <proto> <fmt>...': {value[:80]!r}")
        port_text, _, count_text = parts[1].partition("/")
        self.port = _int(port_text, "m= port")
        if self.port > 65535:
            raise SdpError(f"m= port {self.port} is out of range")
        self.port_count = _int(count_text, "m= port count") if count_text else None
        self.media = parts[0]
        self.proto = parts[2]
        self.formats = tuple(parts[3:])
        self.connection: Connection | None = None
        self.attributes: list[Attribute] = []
        self.other: list[tuple[str, str]] = []

    def add(self, kind: str, value: str) -> None:
        if kind == "c":
            self.connection = Connection.parse(value)
        elif kind == "a":
            self.attributes.append(Attribute.parse(value))
        elif kind in "osvtuepzr":
            # Session-only line types: after an m= line they mean a broken or merged body.
            raise SdpError(f"{kind}= line inside an m= section")
        else:
            self.other.append((kind, value))

    def build(self) -> MediaDescription:
        return MediaDescription(
            media=self.media,
            port=self.port,
            proto=self.proto,
            formats=self.formats,
            port_count=self.port_count,
            connection=self.connection,
            attributes=tuple(self.attributes),
            other=tuple(self.other),
        )


def _int(text: str, what: str) -> int:
    if not (text.isdigit() and text.isascii() and len(text) <= 10):
        raise SdpError(f"{what} is not a non-negative integer: {text[:20]!r}")
    return int(text)


def _payload_type(text: str) -> int:
    value = _int(text.strip(), "payload type")
    if value > 127:
        raise SdpError(f"payload type {value} is outside 0-127")
    return value


# ---------------------------------------------------------------------------------------------
# Offer/answer


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaParams:
    """The negotiated audio stream, from this side's point of view.

    `ptime_ms` is the packet time we send with (what the peer asked to receive). `direction` is
    ours: "recvonly" means we receive and must not send (the peer put us on hold).
    """

    codec: Codec
    payload_type: int
    clock_rate: int = CLOCK_RATE
    ptime_ms: int = DEFAULT_PTIME
    dtmf_payload_type: int | None = None
    remote_addr: tuple[str, int]
    direction: Direction = "sendrecv"

    @property
    def sends(self) -> bool:
        return self.direction in ("sendrecv", "sendonly")

    @property
    def receives(self) -> bool:
        return self.direction in ("sendrecv", "recvonly")


@dataclass(frozen=True, slots=True)
class Answer:
    """Our answer to an offer. `media` is None when no audio stream could be accepted: the SIP
    layer should then refuse the INVITE with 488 rather than send `sdp` (every m-line at port 0).
    """

    sdp: SessionDescription
    media: MediaParams | None

    @property
    def accepted(self) -> bool:
        return self.media is not None


def answer(
    offer: SessionDescription,
    *,
    local_ip: str,
    rtp_port: int,
    supported: Iterable[str] = ("PCMU", "PCMA"),
    session_id: int | None = None,
    session_version: int = 0,
) -> Answer:
    """Answer an offer (RFC 3264 section 6): one m-line per offered m-line, in order.

    The first audio m-line with a codec we support is accepted with the first such codec in the
    offer's order, the offer's telephone-event payload type, and its ptime when that is 20 or 30.
    Every other m-line (video, a second audio stream, SRTP, no common codec, port 0 in the
    offer) is answered with port 0, which rejects it. For a re-INVITE pass the session id and
    an incremented version of the previous answer (RFC 3264 section 8).
    """
    wanted = {name.upper() for name in supported}
    params: MediaParams | None = None
    answered: list[MediaDescription] = []
    for offered in offer.media:
        accepted = None if params is not None else _accept_media(offer, offered, wanted)
        if accepted is None:
            answered.append(_rejected(offered))
            continue
        params, codec_map, dtmf_map, dtmf_fmtp = accepted
        answered.append(
            _audio_media(
                rtp_port,
                codec_map,
                dtmf_map,
                dtmf_fmtp,
                params.ptime_ms,
                params.direction,
                proto=offered.proto,
            )
        )
    sdp = SessionDescription(
        origin=_origin(local_ip, session_id, session_version),
        name="-",
        connection=Connection.for_address(local_ip),
        times=offer.times,  # RFC 3264 section 6: the answer's t= equals the offer's
        media=tuple(answered),
    )
    return Answer(sdp, params)


def _accept_media(
    offer: SessionDescription, media: MediaDescription, wanted: set[str]
) -> tuple[MediaParams, RtpMap, RtpMap | None, str | None] | None:
    if media.port == 0 or media.media.lower() != "audio" or media.proto.upper() != "RTP/AVP":
        return None
    rtpmaps = media.rtpmaps
    codec_map: RtpMap | None = None
    for pt in media.payload_types:
        rtpmap = rtpmaps.get(pt)
        if rtpmap is not None and any(rtpmap.is_codec(name) for name in wanted):
            codec_map = rtpmap
            break
    if codec_map is None:
        return None
    connection = offer.effective_connection(media)
    if connection is None:
        raise SdpError(f"m={media.media} line has no connection address (no c= line)")
    dtmf_map = next(
        (m for m in rtpmaps.values() if m.is_codec(TELEPHONE_EVENT, codec_map.clock_rate)), None
    )
    offered_direction = _meant_direction(offer.effective_direction(media), connection)
    ptime = media.ptime
    params = MediaParams(
        codec=cast(Codec, codec_map.encoding.upper()),
        payload_type=codec_map.payload_type,
        clock_rate=codec_map.clock_rate,
        ptime_ms=ptime if ptime in PTIMES else DEFAULT_PTIME,
        dtmf_payload_type=None if dtmf_map is None else dtmf_map.payload_type,
        remote_addr=(connection.address, media.port),
        direction=_REVERSE[offered_direction],
    )
    return params, codec_map, dtmf_map, DTMF_EVENTS if dtmf_map is not None else None


def _meant_direction(direction: Direction, connection: Connection) -> Direction:
    # A peer at 0.0.0.0 receives nothing, whatever its direction attribute says.
    if connection.is_hold:
        return _AT_ZERO_ADDRESS.get(direction, direction)
    return direction


def _rejected(offered: MediaDescription) -> MediaDescription:
    # RFC 3264 section 6: port 0 rejects the stream; the m-line must still list a format.
    return MediaDescription(
        media=offered.media,
        port=0,
        proto=offered.proto,
        formats=offered.formats or ("0",),
    )


def _audio_media(
    port: int,
    codec: RtpMap,
    dtmf: RtpMap | None,
    dtmf_fmtp: str | None,
    ptime_ms: int,
    direction: Direction,
    *,
    proto: str = "RTP/AVP",
    extra_codecs: tuple[RtpMap, ...] = (),
) -> MediaDescription:
    maps = [codec, *extra_codecs] + ([dtmf] if dtmf is not None else [])
    attributes = [Attribute("rtpmap", m.serialize()) for m in maps]
    if dtmf is not None and dtmf_fmtp:
        attributes.append(Attribute("fmtp", f"{dtmf.payload_type} {dtmf_fmtp}"))
    attributes += [Attribute("ptime", str(ptime_ms)), Attribute(direction)]
    return MediaDescription(
        media="audio",
        port=port,
        proto=proto,
        formats=tuple(str(m.payload_type) for m in maps),
        attributes=tuple(attributes),
    )


def _origin(local_ip: str, session_id: int | None, session_version: int) -> Origin:
    if session_id is None:
        # RFC 4566 suggests an NTP timestamp; any number unique to this session will do.
        session_id = random.getrandbits(31)
    connection = Connection.for_address(local_ip)
    return Origin("-", str(session_id), str(session_version), "IN", connection.addrtype, local_ip)


def make_offer(
    *,
    local_ip: str,
    rtp_port: int,
    codecs: Iterable[str] = ("PCMU", "PCMA"),
    dtmf_payload_type: int | None = 101,
    ptime_ms: int = DEFAULT_PTIME,
    direction: Direction = "sendrecv",
    session_id: int | None = None,
    session_version: int = 0,
) -> SessionDescription:
    """Our offer, for an INVITE that came without SDP (it goes in the 200 OK; the ACK answers)."""
    names = [name.upper() for name in codecs]
    unknown = [name for name in names if name not in CODEC_PAYLOAD_TYPES]
    if not names or unknown:
        raise ValueError(f"codecs must be a non-empty subset of PCMU, PCMA; got {names}")
    if ptime_ms not in PTIMES:
        raise ValueError(f"ptime_ms must be 20 or 30, got {ptime_ms}")
    maps = [RtpMap(CODEC_PAYLOAD_TYPES[name], name, CLOCK_RATE) for name in names]
    dtmf = (
        None
        if dtmf_payload_type is None
        else RtpMap(dtmf_payload_type, TELEPHONE_EVENT, CLOCK_RATE)
    )
    media = _audio_media(
        rtp_port, maps[0], dtmf, DTMF_EVENTS, ptime_ms, direction, extra_codecs=tuple(maps[1:])
    )
    return SessionDescription(
        origin=_origin(local_ip, session_id, session_version),
        name="-",
        connection=Connection.for_address(local_ip),
        media=(media,),
    )


def accept_answer(offer: SessionDescription, answer: SessionDescription) -> MediaParams:
    """The stream an answer to our offer settles on. Raises SdpError if it accepts no audio."""
    if len(answer.media) != len(offer.media):
        raise SdpError(
            f"answer has {len(answer.media)} m-lines for an offer with {len(offer.media)}"
        )
    for ours, theirs in zip(offer.media, answer.media, strict=True):
        if ours.port == 0 or theirs.port == 0 or theirs.media.lower() != "audio":
            continue
        if ours.media.lower() != "audio" or theirs.proto.upper() != "RTP/AVP":
            continue
        offered = ours.rtpmaps
        answered = theirs.rtpmaps
        codec_map: RtpMap | None = None
        for pt in theirs.payload_types:
            rtpmap = answered.get(pt) or offered.get(pt)
            if rtpmap is None:
                continue
            name = rtpmap.encoding.upper()
            if name in CODEC_PAYLOAD_TYPES and rtpmap.is_codec(name) and _offered(offered, name):
                codec_map = rtpmap
                break
        if codec_map is None:
            raise SdpError("answer accepts the audio stream with no codec we offered")
        connection = answer.effective_connection(theirs)
        if connection is None:
            raise SdpError("answer's audio m-line has no connection address (no c= line)")
        dtmf = next(
            (m for m in answered.values() if m.is_codec(TELEPHONE_EVENT, codec_map.clock_rate)),
            None,
        )
        ptime = theirs.ptime
        if ptime not in PTIMES:
            ptime = ours.ptime if ours.ptime in PTIMES else DEFAULT_PTIME
        their_direction = _meant_direction(answer.effective_direction(theirs), connection)
        return MediaParams(
            codec=cast(Codec, codec_map.encoding.upper()),
            payload_type=codec_map.payload_type,
            clock_rate=codec_map.clock_rate,
            ptime_ms=cast(int, ptime),
            dtmf_payload_type=None if dtmf is None else dtmf.payload_type,
            remote_addr=(connection.address, theirs.port),
            direction=_REVERSE[their_direction],
        )
    raise SdpError("answer accepts no audio stream")


def _offered(rtpmaps: dict[int, RtpMap], name: str) -> bool:
    return any(m.is_codec(name) for m in rtpmaps.values())
