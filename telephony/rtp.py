"""RTP packets (RFC 3550, section 5.1): parse and serialise the fixed header and its payload.

Pure: bytes in, an `RtpPacket` out, and back. What a packet means (which stream, which codec,
whether it is late) is for `jitterbuffer.py`, `dtmf.py` and `rtp_session.py`.

RTCP shares the port in practice (rtcp-mux) or arrives on the RTP port by mistake; `is_rtcp()`
tells the two apart from the second byte, so the session can ignore RTCP without parsing it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

__all__ = ["RTP_HEADER_SIZE", "RtpError", "RtpPacket", "is_rtcp"]

RTP_HEADER_SIZE: Final = 12
RTP_VERSION: Final = 2

_HEADER: Final = struct.Struct("!BBHII")
_EXTENSION_HEADER: Final = struct.Struct("!HH")


class RtpError(ValueError):
    """Bytes that are not a well-formed RTP packet. The only exception `parse` raises."""


def is_rtcp(data: bytes) -> bool:
    """True when the datagram looks like RTCP rather than RTP.

    RTCP packet types 200-204 (SR, RR, SDES, BYE, APP) and the later feedback and XR types sit
    where RTP has marker bit + payload type. RFC 5761 section 4 reserves second-byte values
    192-223 for RTCP so the two can share a port, which is the range tested here.
    """
    return len(data) >= 2 and data[0] >> 6 == RTP_VERSION and 192 <= data[1] <= 223


@dataclass(frozen=True, slots=True, kw_only=True)
class RtpPacket:
    """One RTP packet: the fixed header, the CSRC list, and the payload with padding removed.

    `padding` and `extension` record what the packet carried. The header extension is kept
    whole (profile word, length word, data) in `header_extension` so a parsed packet serialises
    back to the same bytes; nothing in telephony reads it.
    """

    version: int = RTP_VERSION
    padding: bool = False
    extension: bool = False
    marker: bool = False
    payload_type: int = 0
    sequence: int = 0
    timestamp: int = 0
    ssrc: int = 0
    csrc: tuple[int, ...] = ()
    payload: bytes = b""
    header_extension: bytes = b""

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        size = len(data)
        if size < RTP_HEADER_SIZE:
            raise RtpError(f"RTP packet of {size} bytes is shorter than the 12-byte header")
        first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
        version = first >> 6
        if version != RTP_VERSION:
            raise RtpError(f"RTP version {version}, expected 2")
        padding = bool(first & 0x20)
        extension = bool(first & 0x10)
        csrc_count = first & 0x0F
        offset = RTP_HEADER_SIZE + 4 * csrc_count
        if offset > size:
            raise RtpError(f"RTP header with {csrc_count} CSRCs does not fit in {size} bytes")
        csrc = struct.unpack_from(f"!{csrc_count}I", data, RTP_HEADER_SIZE) if csrc_count else ()
        header_extension = b""
        if extension:
            if offset + 4 > size:
                raise RtpError("RTP header extension flag set but no extension header")
            _profile, words = _EXTENSION_HEADER.unpack_from(data, offset)
            end = offset + 4 + 4 * words
            if end > size:
                raise RtpError(f"RTP header extension of {words} words overruns the packet")
            header_extension = bytes(data[offset:end])
            offset = end
        end = size
        if padding:
            count = data[-1]
            # The count includes itself, so 0 is malformed; it may not eat into the header.
            if count == 0 or offset + count > size:
                raise RtpError(f"RTP padding count {count} is invalid for a {size}-byte packet")
            end = size - count
        return cls(
            version=version,
            padding=padding,
            extension=extension,
            marker=bool(second & 0x80),
            payload_type=second & 0x7F,
            sequence=sequence,
            timestamp=timestamp,
            ssrc=ssrc,
            csrc=tuple(csrc),
            payload=bytes(data[offset:end]),
            header_extension=header_extension,
        )

    def serialize(self) -> bytes:
        """The packet's bytes. Padding, when flagged, rounds the packet up to 32-bit words."""
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"payload type {self.payload_type} is outside 0-127")
        if len(self.csrc) > 15:
            raise ValueError(f"{len(self.csrc)} CSRCs; at most 15 fit the header")
        if self.extension and (len(self.header_extension) < 4 or len(self.header_extension) % 4):
            raise ValueError("header_extension must be whole 32-bit words, profile word included")
        first = (self.version << 6) | (self.padding << 5) | (self.extension << 4) | len(self.csrc)
        second = (self.marker << 7) | self.payload_type
        parts = [
            _HEADER.pack(
                first, second, self.sequence & 0xFFFF, self.timestamp & 0xFFFFFFFF, self.ssrc
            )
        ]
        if self.csrc:
            parts.append(struct.pack(f"!{len(self.csrc)}I", *self.csrc))
        if self.extension:
            parts.append(self.header_extension)
        parts.append(self.payload)
        if self.padding:
            body = sum(len(part) for part in parts)
            count = 4 - body % 4  # 1-4: padding always has at least its count byte
            parts.append(bytes(count - 1) + bytes([count]))
        return b"".join(parts)
