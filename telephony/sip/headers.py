"""Typed values of the SIP header fields the user agent reads: Via, name-addr, URI, CSeq.

Pure functions from one header value (text) to a small frozen object and back. Framing a whole
message (start line, header lines, body) lives in `message.py`; this module only knows the
grammar of one value, RFC 3261 §25, as far as a UAS over UDP needs it. Every parser raises
`ValueError` with a short reason; `message.py` turns that into a `SipParseError` naming the
header, so a log line says which field the peer got wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = [
    "CSeq",
    "NameAddr",
    "SipUri",
    "Via",
    "format_host",
    "format_params",
    "parse_cseq",
    "parse_name_addr",
    "parse_params",
    "parse_uri",
    "parse_via",
    "split_values",
]

Params = tuple[tuple[str, str | None], ...]

# RFC 3261 §25.1 `token`: method names, transports, parameter names.
_TOKEN: Final = r"[A-Za-z0-9\-.!%*_+`'~]+"
_TOKEN_RE: Final = re.compile(_TOKEN)
_CSEQ_RE: Final = re.compile(rf"(\d{{1,10}})[ \t]+({_TOKEN})")
_VIA_RE: Final = re.compile(
    rf"SIP[ \t]*/[ \t]*2\.0[ \t]*/[ \t]*({_TOKEN})[ \t]+([^;\s]+)[ \t]*(;.*)?", re.DOTALL
)
_HOSTPORT_RE: Final = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(?::(\d{1,5}))?")
# §8.1.1.5: the sequence number must be below 2**31.
_MAX_CSEQ: Final = 2**31 - 1


# -- generic pieces ----------------------------------------------------------------------------


def split_values(value: str) -> list[str]:
    """Split a comma-separated header value (§7.3.1), leaving commas in quotes and <...> alone.

    Display names ("Doe, John") and URIs (<sip:a@b;x=1,2>) may hold commas; splitting blindly
    would tear a Contact or Record-Route in two.
    """
    parts: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    start = 0
    for i, ch in enumerate(value):
        if quoted:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            parts.append(value[start:i].strip())
            start = i + 1
    parts.append(value[start:].strip())
    return [part for part in parts if part]


def parse_params(text: str) -> Params:
    """`;a=1;b;c="x y"` -> (("a", "1"), ("b", None), ("c", '"x y"')). Names keep their case."""
    params: list[tuple[str, str | None]] = []
    for raw in _split_semicolons(text):
        item = raw.strip()
        if not item:
            continue
        name, eq, value = item.partition("=")
        name = name.strip()
        if not _TOKEN_RE.fullmatch(name):
            raise ValueError(f"bad parameter name {name[:20]!r}")
        params.append((name, value.strip() if eq else None))
    return tuple(params)


def format_params(params: Params) -> str:
    return "".join(f";{name}" if value is None else f";{name}={value}" for name, value in params)


def _param(params: Params, name: str) -> str | None:
    lowered = name.lower()
    for key, value in params:
        if key.lower() == lowered:
            return value
    return None


def _has_param(params: Params, name: str) -> bool:
    lowered = name.lower()
    return any(key.lower() == lowered for key, _ in params)


def _split_semicolons(text: str) -> list[str]:
    # Quoted parameter values may hold ';'.
    parts: list[str] = []
    quoted = False
    start = 0
    for i, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        elif ch == ";" and not quoted:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _parse_hostport(text: str) -> tuple[str, int | None]:
    match = _HOSTPORT_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"bad host {text[:40]!r}")
    host, port = match.group(1), match.group(2)
    if host.startswith("["):
        host = host[1:-1]  # addresses are kept bare; `format_host` brackets them again
    if port is None:
        return host, None
    number = int(port)
    if not 0 < number < 65536:
        raise ValueError(f"bad port {port}")
    return host, number


def format_host(host: str, port: int | None = None) -> str:
    """host[:port], with an IPv6 address in brackets (§25.1 `IPv6reference`)."""
    text = f"[{host}]" if ":" in host else host
    return text if port is None else f"{text}:{port}"


# -- Via ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Via:
    """One Via value: `SIP/2.0/UDP host:port;branch=z9hG4bK...;rport`."""

    transport: str
    host: str
    port: int | None
    params: Params = ()

    @property
    def branch(self) -> str | None:
        return _param(self.params, "branch")

    @property
    def received(self) -> str | None:
        return _param(self.params, "received")

    @property
    def has_rport(self) -> bool:
        return _has_param(self.params, "rport")

    @property
    def rport(self) -> int | None:
        """The port filled in by a server (RFC 3581); None while the parameter has no value."""
        value = _param(self.params, "rport")
        return int(value) if value is not None and value.isdigit() else None

    @property
    def sent_by(self) -> str:
        """host[:port] as the sender wrote it, lower-cased: part of the transaction key."""
        return format_host(self.host.lower(), self.port)

    def with_param(self, name: str, value: str | None) -> Via:
        """A copy with `name` set to `value`, in place if present, else appended."""
        lowered = name.lower()
        params = list(self.params)
        for i, (key, _) in enumerate(params):
            if key.lower() == lowered:
                params[i] = (key, value)
                break
        else:
            params.append((name, value))
        return Via(self.transport, self.host, self.port, tuple(params))

    def serialize(self) -> str:
        return f"SIP/2.0/{self.transport} {format_host(self.host, self.port)}" + format_params(
            self.params
        )


def parse_via(value: str) -> Via:
    match = _VIA_RE.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"not a SIP/2.0 Via: {value[:60]!r}")
    host, port = _parse_hostport(match.group(2))
    params = parse_params(match.group(3) or "")
    rport = _param(params, "rport")
    if rport is not None and not rport.isdigit():
        raise ValueError(f"bad rport {rport[:20]!r}")
    return Via(match.group(1).upper(), host, port, params)


# -- URIs and name-addr ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SipUri:
    """A sip:/sips: URI broken into the parts a UAS routes on. Other schemes keep only `scheme`."""

    scheme: str
    user: str | None
    host: str
    port: int | None
    params: Params = ()

    @property
    def transport(self) -> str | None:
        return _param(self.params, "transport")

    @property
    def loose_route(self) -> bool:
        """True for a Route/Record-Route URI with `lr` (§16.12: loose routing)."""
        return _has_param(self.params, "lr")


def parse_uri(text: str) -> SipUri:
    """Parse a sip: or sips: URI (§19.1.1). Header parts (`?...`) are dropped: a UAS never needs
    them. Raises ValueError for any other scheme, so callers can answer 416."""
    scheme, colon, rest = text.strip().partition(":")
    scheme = scheme.lower()
    if not colon or scheme not in ("sip", "sips"):
        raise ValueError(f"unsupported URI scheme in {text[:60]!r}")
    rest = rest.partition("?")[0]
    user: str | None = None
    if "@" in rest:
        userinfo, _, rest = rest.partition("@")
        # The password part (user:password) is deprecated (§19.1.1) and never used here.
        user = userinfo.partition(":")[0]
        if not user:
            raise ValueError(f"empty user in {text[:60]!r}")
    hostport, _, params = rest.partition(";")
    host, port = _parse_hostport(hostport)
    return SipUri(scheme, user, host, port, parse_params(params))


@dataclass(frozen=True, slots=True)
class NameAddr:
    """From, To, Contact, Route and Record-Route values: `"Name" <uri>;params`."""

    display: str | None
    uri: str
    params: Params = ()

    @property
    def tag(self) -> str | None:
        return _param(self.params, "tag")


def parse_name_addr(value: str) -> NameAddr:
    """Parse `name-addr` or a bare `addr-spec` (§20.10).

    Without angle brackets, everything after the first ';' belongs to the header, not the URI:
    `sip:a@b;tag=1` has URI `sip:a@b` and tag 1.
    """
    text = value.strip()
    display: str | None = None
    if text.startswith('"'):
        end = _closing_quote(text)
        display = text[1:end].replace('\\"', '"').replace("\\\\", "\\")
        text = text[end + 1 :].lstrip()
        if not text.startswith("<"):
            raise ValueError("quoted display name without <uri>")
    if "<" in text:
        before, _, after = text.partition("<")
        uri, closed, params = after.partition(">")
        if not closed:
            raise ValueError("unterminated <uri>")
        if display is None and before.strip():
            display = before.strip()
    else:
        uri, _, params = text.partition(";")
        params = ";" + params if params else ""
    uri = uri.strip()
    if ":" not in uri or uri.startswith(":"):
        raise ValueError(f"not a URI: {uri[:60]!r}")
    return NameAddr(display, uri, parse_params(params))


def _closing_quote(text: str) -> int:
    escaped = False
    for i in range(1, len(text)):
        ch = text[i]
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            return i
    raise ValueError("unterminated quoted display name")


# -- CSeq --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CSeq:
    number: int
    method: str

    def serialize(self) -> str:
        return f"{self.number} {self.method}"


def parse_cseq(value: str) -> CSeq:
    match = _CSEQ_RE.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"CSeq is not 'number METHOD': {value[:40]!r}")
    number = int(match.group(1))
    if number > _MAX_CSEQ:
        raise ValueError(f"CSeq number {number} is not below 2**31")
    return CSeq(number, match.group(2))
