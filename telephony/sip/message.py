"""SIP messages over UDP: parse one datagram into a typed request or response, serialise back.

Pure and stateless, like `telephony/twilio/messages.py`: bytes in, `SipRequest`/`SipResponse`
out, bytes back. Which message belongs to which transaction or dialog is `transaction.py` and
`endpoint.py`'s business; this module knows the shape of one message (RFC 3261 §7, §18.3, §20).

What is checked, and why:

- The start line, and the headers every request and response must carry (§8.1.1): Via, From, To,
  Call-ID and CSeq. Without them a message cannot be matched to a transaction or answered.
- The values the user agent routes on are parsed once here, so a bad one is reported as a
  `SipParseError` naming the header and never as an exception deep in the state machines: every
  Via, From, To, Contact, CSeq (whose method must be the request's, §8.1.1.5), Content-Length and
  Max-Forwards.
- Content-Length over UDP (§18.3): bytes past it are dropped; a body shorter than it is an error.
  Without a Content-Length the body runs to the end of the datagram.

Header names are case-insensitive and compact forms (i, f, t, v, m, l, c, k...) are expanded, so
`headers.get("call-id")` and `headers.get("i")` find the same value. Comma-separated Via, Route,
Record-Route and Contact values are split into one entry each (§7.3.1); serialising writes one line
per entry, which is the same message.

A `SipParseError` carries `partial`, the request as far as it could be read, so the endpoint can
still answer 400 when Via, Call-ID and CSeq were readable (§8.2: a UAS answers what it can).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Final

from telephony.sip.headers import (
    CSeq,
    NameAddr,
    Via,
    parse_cseq,
    parse_name_addr,
    parse_via,
    split_values,
)

__all__ = [
    "REASON_PHRASES",
    "Address",
    "Headers",
    "SipErrorKind",
    "SipMessage",
    "SipParseError",
    "SipRequest",
    "SipResponse",
    "apply_rport",
    "build_response",
    "canonical_name",
    "new_branch",
    "new_call_id",
    "new_tag",
    "parse_message",
    "response_address",
]

Address = tuple[str, int]

SIP_VERSION: Final = "SIP/2.0"
BRANCH_MAGIC: Final = "z9hG4bK"  # §8.1.1.7: marks a branch built by RFC 3261 rules
DEFAULT_PORT: Final = 5060

REASON_PHRASES: Final[dict[int, str]] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}

# §7.3.3 compact forms, plus the usual spelling of names this package reads or writes.
_CANONICAL: Final[dict[str, str]] = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "o": "Event",
    "r": "Refer-To",
    "b": "Referred-By",
    "u": "Allow-Events",
    "x": "Session-Expires",
    **{
        name.lower(): name
        for name in (
            "Accept",
            "Allow",
            "Call-ID",
            "Contact",
            "Content-Disposition",
            "Content-Encoding",
            "Content-Length",
            "Content-Type",
            "CSeq",
            "Event",
            "From",
            "Max-Forwards",
            "Record-Route",
            "Require",
            "Retry-After",
            "Route",
            "Server",
            "Subject",
            "Supported",
            "Timestamp",
            "To",
            "Unsupported",
            "User-Agent",
            "Via",
            "Warning",
        )
    },
}
# Headers whose comma-separated values are split into one entry each (§7.3.1).
_LIST_HEADERS: Final = frozenset({"Via", "Route", "Record-Route", "Contact"})
_MANDATORY: Final = ("Via", "From", "To", "Call-ID", "CSeq")


class SipErrorKind(StrEnum):
    """What a peer got wrong. Parse kinds come from `parse_message`; the rest from the endpoint."""

    BAD_ENCODING = "bad_encoding"
    BAD_START_LINE = "bad_start_line"
    BAD_FRAMING = "bad_framing"
    BAD_HEADER = "bad_header"
    MISSING_HEADER = "missing_header"
    BAD_VIA = "bad_via"
    BAD_CSEQ = "bad_cseq"
    BAD_CONTENT_LENGTH = "bad_content_length"
    UNKNOWN_DIALOG = "unknown_dialog"
    OUT_OF_ORDER = "out_of_order"
    INTERNAL = "internal"  # a bug of ours while handling the datagram; the endpoint survived it


class SipParseError(Exception):
    """A datagram that is not a well-formed SIP message. The only exception parsing raises.

    `partial` is the request as far as its start line and header lines could be split, or None
    when not even that was possible (or the message is a response, which is never answered).
    """

    def __init__(self, kind: SipErrorKind, detail: str, partial: SipRequest | None = None) -> None:
        super().__init__(kind, detail, partial)
        self.kind = kind
        self.detail = detail
        self.partial = partial

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.detail}"


def canonical_name(name: str) -> str:
    """The spelling used on the wire: compact forms expanded, known names in their usual case."""
    return _CANONICAL.get(name.lower(), name)


class Headers:
    """An immutable, ordered list of header fields with case-insensitive lookup.

    Order is kept because it carries meaning for Via and Record-Route (§7.3.1). Names are stored
    in their canonical spelling, so a compact `v:` and a full `Via:` are the same header.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: tuple[tuple[str, str], ...] = tuple(
            (canonical_name(name), value) for name, value in items
        )

    def get(self, name: str) -> str | None:
        """The first value of `name`, or None."""
        key = canonical_name(name).lower()
        for item_name, value in self._items:
            if item_name.lower() == key:
                return value
        return None

    def get_all(self, name: str) -> list[str]:
        key = canonical_name(name).lower()
        return [value for item_name, value in self._items if item_name.lower() == key]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def without(self, name: str) -> Headers:
        key = canonical_name(name).lower()
        return Headers(item for item in self._items if item[0].lower() != key)

    def with_first(self, name: str, value: str) -> Headers:
        """A copy whose first `name` entry is `value` (appended when absent)."""
        key = canonical_name(name).lower()
        items = list(self._items)
        for i, (item_name, _) in enumerate(items):
            if item_name.lower() == key:
                items[i] = (item_name, value)
                return Headers(items)
        items.append((name, value))
        return Headers(items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    def __hash__(self) -> int:
        return hash(self._items)

    def __repr__(self) -> str:
        return f"Headers({list(self._items)!r})"


class _HeaderAccess:
    """Readers for the headers both requests and responses carry.

    Values were validated by `parse_message`; on a message built by hand a bad value raises
    ValueError from `headers.py`.
    """

    __slots__ = ()
    headers: Headers

    @property
    def call_id(self) -> str:
        return self.headers.get("Call-ID") or ""

    @property
    def cseq(self) -> CSeq:
        return parse_cseq(self.headers.get("CSeq") or "")

    @property
    def vias(self) -> list[Via]:
        return [parse_via(value) for value in self.headers.get_all("Via")]

    @property
    def top_via(self) -> Via:
        return parse_via(self.headers.get("Via") or "")

    @property
    def from_(self) -> NameAddr:
        return parse_name_addr(self.headers.get("From") or "")

    @property
    def to(self) -> NameAddr:
        return parse_name_addr(self.headers.get("To") or "")

    @property
    def from_tag(self) -> str | None:
        return self.from_.tag

    @property
    def to_tag(self) -> str | None:
        return self.to.tag

    @property
    def contact(self) -> NameAddr | None:
        value = self.headers.get("Contact")
        if value is None or value.strip() == "*":
            return None
        return parse_name_addr(value)

    @property
    def content_type(self) -> str | None:
        """The media type without parameters, lower-cased: `application/sdp`."""
        value = self.headers.get("Content-Type")
        return value.partition(";")[0].strip().lower() if value is not None else None


@dataclass(frozen=True, slots=True)
class SipRequest(_HeaderAccess):
    method: str
    uri: str
    headers: Headers
    body: bytes = b""

    def __post_init__(self) -> None:
        if not isinstance(self.headers, Headers):  # a plain list of pairs is accepted too
            object.__setattr__(self, "headers", Headers(self.headers))

    @property
    def max_forwards(self) -> int | None:
        value = self.headers.get("Max-Forwards")
        return int(value) if value is not None else None

    def serialize(self) -> bytes:
        return _serialize(f"{self.method} {self.uri} {SIP_VERSION}", self.headers, self.body)


@dataclass(frozen=True, slots=True)
class SipResponse(_HeaderAccess):
    status: int
    reason: str
    headers: Headers
    body: bytes = b""

    def __post_init__(self) -> None:
        if not isinstance(self.headers, Headers):
            object.__setattr__(self, "headers", Headers(self.headers))

    def serialize(self) -> bytes:
        return _serialize(f"{SIP_VERSION} {self.status} {self.reason}", self.headers, self.body)


SipMessage = SipRequest | SipResponse


def _serialize(start_line: str, headers: Headers, body: bytes) -> bytes:
    # Content-Length always states the body actually sent, wherever the header stood.
    length = str(len(body))
    lines = [start_line]
    seen_length = False
    for name, value in headers:
        if name == "Content-Length":
            if seen_length:
                continue
            seen_length = True
            value = length
        lines.append(f"{name}: {value}")
    if not seen_length:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# ---------------------------------------------------------------------------------------------
# Parsing


def parse_message(data: bytes) -> SipMessage:
    """Parse one UDP datagram into a request or a response.

    Raises SipParseError, and nothing else, for anything that is not a well-formed message.
    """
    # §7.5: empty lines before the start line are ignored (keep-alive CRLFs, sloppy senders).
    data = data.lstrip(b"\r\n")
    head, body, framed = _split_head(data)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError(SipErrorKind.BAD_ENCODING, "header section is not UTF-8") from None
    lines = text.split("\n")
    start_line = lines[0].rstrip("\r")
    if start_line.startswith(SIP_VERSION + " "):
        return _parse_response(start_line, lines, body, framed)
    return _parse_request(start_line, lines, body, framed)


def _split_head(data: bytes) -> tuple[bytes, bytes, bool]:
    crlf = data.find(b"\r\n\r\n")
    lf = data.find(b"\n\n")  # bare-LF senders exist; accepting them costs nothing
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return data[:crlf], data[crlf + 4 :], True
    if lf >= 0:
        return data[:lf], data[lf + 2 :], True
    return data, b"", False


def _parse_request(start_line: str, lines: list[str], body: bytes, framed: bool) -> SipRequest:
    parts = start_line.split(" ")
    if len(parts) != 3 or parts[2].upper() != SIP_VERSION:
        raise SipParseError(
            SipErrorKind.BAD_START_LINE, f"not a SIP/2.0 request line: {start_line[:80]!r}"
        )
    method, uri = parts[0], parts[1]
    if (
        not method
        or not all(ch.isalnum() or ch in "-.!%*_+`'~" for ch in method)
        or (":" not in uri)
    ):
        raise SipParseError(
            SipErrorKind.BAD_START_LINE, f"bad method or Request-URI: {start_line[:80]!r}"
        )
    headers, bad_line = _parse_header_lines(lines[1:])
    partial = SipRequest(method, uri, headers, body)
    if not framed:
        raise SipParseError(SipErrorKind.BAD_FRAMING, "no blank line after the headers", partial)
    if bad_line is not None:
        raise SipParseError(SipErrorKind.BAD_HEADER, bad_line, partial)
    _check_headers(headers, partial)
    try:
        cseq = parse_cseq(headers.get("CSeq") or "")
    except ValueError as exc:
        raise SipParseError(SipErrorKind.BAD_CSEQ, str(exc), partial) from None
    if cseq.method != method:
        raise SipParseError(
            SipErrorKind.BAD_CSEQ,
            f"CSeq method {cseq.method!r} differs from the request's {method!r}",
            partial,
        )
    max_forwards = headers.get("Max-Forwards")
    if max_forwards is not None and not (
        max_forwards.isdigit() and max_forwards.isascii() and int(max_forwards) <= 255
    ):
        raise SipParseError(
            SipErrorKind.BAD_HEADER, f"Max-Forwards is not 0-255: {max_forwards[:20]!r}", partial
        )
    return SipRequest(method, uri, headers, _body(headers, body, partial))


def _parse_response(start_line: str, lines: list[str], body: bytes, framed: bool) -> SipResponse:
    _, _, rest = start_line.partition(" ")
    code, _, reason = rest.partition(" ")
    if not (len(code) == 3 and code.isdigit() and code.isascii() and 100 <= int(code) <= 699):
        raise SipParseError(
            SipErrorKind.BAD_START_LINE, f"not a SIP/2.0 status line: {start_line[:80]!r}"
        )
    if not framed:
        raise SipParseError(SipErrorKind.BAD_FRAMING, "no blank line after the headers")
    headers, bad_line = _parse_header_lines(lines[1:])
    if bad_line is not None:
        raise SipParseError(SipErrorKind.BAD_HEADER, bad_line)
    _check_headers(headers, None)
    try:
        parse_cseq(headers.get("CSeq") or "")
    except ValueError as exc:
        raise SipParseError(SipErrorKind.BAD_CSEQ, str(exc)) from None
    return SipResponse(int(code), reason.strip(), headers, _body(headers, body, None))


def _parse_header_lines(lines: list[str]) -> tuple[Headers, str | None]:
    """The header fields, and what was wrong with the first unreadable line (skipped).

    A bad line does not stop the others being read: with Via, Call-ID and CSeq intact the
    request can still be answered 400 rather than dropped.
    """
    fields: list[tuple[str, str]] = []
    bad_line: str | None = None
    for raw in lines:
        line = raw.rstrip("\r")
        if not line:
            continue  # only an unframed datagram's tail can hold an empty line here
        if line[:1] in (" ", "\t"):
            # §7.3.1 line folding: a line starting with whitespace continues the previous value.
            if fields:
                name, value = fields[-1]
                fields[-1] = (name, f"{value} {line.strip()}".strip())
            elif bad_line is None:
                bad_line = "continuation line before any header"
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not name or not all(ch.isalnum() or ch in "-.!%*_+`'~" for ch in name):
            if bad_line is None:
                bad_line = f"not a header line: {line[:60]!r}"
            continue
        fields.append((canonical_name(name), value.strip()))
    items: list[tuple[str, str]] = []
    for name, value in fields:
        if name in _LIST_HEADERS and value.strip() != "*":
            items.extend((name, part) for part in split_values(value))
        else:
            items.append((name, value))
    return Headers(items), bad_line


def _check_headers(headers: Headers, partial: SipRequest | None) -> None:
    for name in _MANDATORY:
        value = headers.get(name)
        if value is None or not value.strip():
            raise SipParseError(SipErrorKind.MISSING_HEADER, f"no {name} header", partial)
    for value in headers.get_all("Via"):
        try:
            parse_via(value)
        except ValueError as exc:
            raise SipParseError(SipErrorKind.BAD_VIA, str(exc), partial) from None
    for name in ("From", "To", "Contact"):
        for value in headers.get_all(name):
            if name == "Contact" and value.strip() == "*":
                continue
            try:
                parse_name_addr(value)
            except ValueError as exc:
                raise SipParseError(SipErrorKind.BAD_HEADER, f"{name}: {exc}", partial) from None


def _body(headers: Headers, body: bytes, partial: SipRequest | None) -> bytes:
    values = {value.strip() for value in headers.get_all("Content-Length")}
    if not values:
        return body  # §18.3: over UDP the body then runs to the end of the datagram
    if len(values) > 1:
        raise SipParseError(
            SipErrorKind.BAD_CONTENT_LENGTH, "conflicting Content-Length headers", partial
        )
    value = values.pop()
    if not (value.isdigit() and value.isascii()):
        raise SipParseError(
            SipErrorKind.BAD_CONTENT_LENGTH,
            f"Content-Length is not a number: {value[:20]!r}",
            partial,
        )
    length = int(value)
    if length > len(body):
        raise SipParseError(
            SipErrorKind.BAD_CONTENT_LENGTH,
            f"Content-Length {length} but only {len(body)} body bytes arrived",
            partial,
        )
    return body[:length]


# ---------------------------------------------------------------------------------------------
# Building responses and addressing them


def build_response(
    request: SipRequest,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> SipResponse:
    """A response to `request` per §8.2.6: Via (all, in order), From, Call-ID and CSeq copied,
    To copied with `to_tag` added when the request's To has none.

    Pass the request after `apply_rport`, so the response's top Via carries received/rport.
    `headers` are appended after the copied ones.
    """
    items: list[tuple[str, str]] = [("Via", value) for value in request.headers.get_all("Via")]
    from_value = request.headers.get("From")
    if from_value is not None:
        items.append(("From", from_value))
    to_value = request.headers.get("To")
    if to_value is not None:
        if to_tag is not None and _tag_of(to_value) is None:
            to_value = f"{to_value};tag={to_tag}"
        items.append(("To", to_value))
    for name in ("Call-ID", "CSeq"):
        value = request.headers.get(name)
        if value is not None:
            items.append((name, value))
    timestamp = request.headers.get("Timestamp")
    if status == 100 and timestamp is not None:
        items.append(("Timestamp", timestamp))  # §8.2.6.1: lets the UAC estimate the RTT
    items.extend(headers)
    return SipResponse(
        status, reason or REASON_PHRASES.get(status, "Unknown"), Headers(items), body
    )


def _tag_of(value: str) -> str | None:
    try:
        return parse_name_addr(value).tag
    except ValueError:
        return None


def apply_rport(request: SipRequest, source: Address) -> SipRequest:
    """Record where the request really came from in its top Via (§18.2.1, RFC 3581 §4).

    `received` is added when the sent-by host is not the source address; with `rport` in the
    Via it is always added and `rport` gets the source port, so the response can follow the NAT
    binding the request opened.
    """
    via = request.top_via
    host, port = source[0], source[1]
    if via.has_rport:
        via = via.with_param("received", host).with_param("rport", str(port))
    elif via.host != host:
        via = via.with_param("received", host)
    else:
        return request
    return replace(request, headers=request.headers.with_first("Via", via.serialize()))


def response_address(request: SipRequest) -> Address:
    """Where responses to `request` go over UDP (§18.2.2, RFC 3581 §4), after `apply_rport`."""
    via = request.top_via
    if via.received is not None and via.rport is not None:
        return via.received, via.rport
    return via.received or via.host, via.port or DEFAULT_PORT


def new_tag() -> str:
    return secrets.token_hex(8)


def new_branch() -> str:
    return BRANCH_MAGIC + secrets.token_hex(10)


def new_call_id(host: str) -> str:
    return f"{secrets.token_hex(16)}@{host}"
