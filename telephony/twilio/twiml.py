"""TwiML that connects a call to the gateway's Media Streams websocket.

`<Connect><Stream>` (not `<Start><Stream>`) makes the stream bidirectional, so the gateway can
play audio back and use marks and clear. Per-call values travel as `<Parameter>`s and come back in
the `start` message's `customParameters`: the `<Stream>` URL does not support a query string.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from twilio.twiml.voice_response import Connect, Parameter, Stream, VoiceResponse

__all__ = ["DEFAULT_STREAM_PATH", "connect_stream_twiml", "stream_url_for"]

DEFAULT_STREAM_PATH = "/twilio/stream"

_WS_SCHEMES = {"http": "ws", "https": "wss"}


def connect_stream_twiml(stream_url: str, parameters: dict[str, str]) -> str:
    """A TwiML document that streams the call to `stream_url`, passing `parameters` along."""
    stream = Stream(url=stream_url)
    for name, value in parameters.items():
        stream.append(Parameter(name=name, value=value))
    connect = Connect()
    connect.append(stream)
    response = VoiceResponse()
    response.append(connect)
    return response.to_xml()


def stream_url_for(public_url: str, path: str = DEFAULT_STREAM_PATH) -> str:
    """The websocket URL Twilio should open, from the gateway's public HTTP base URL.

    http://host:port/prefix becomes ws://host:port/prefix/twilio/stream, https becomes wss.
    Twilio itself only connects to wss; ws is for local simulators.
    """
    parts = urlsplit(public_url)
    scheme = _WS_SCHEMES.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise ValueError(f"public URL must be an absolute http(s) URL, got {public_url!r}")
    if parts.query or parts.fragment:
        # Twilio does not support a query string on the <Stream> URL.
        raise ValueError(f"public URL must not have a query or fragment, got {public_url!r}")
    full_path = parts.path.rstrip("/") + "/" + path.lstrip("/")
    return urlunsplit((scheme, parts.netloc, full_path, "", ""))
