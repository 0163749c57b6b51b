"""SIP over UDP for the gateway, sans-I/O: message codec, transactions, dialogs, and the
user agent server (`SipEndpoint`) that turns datagrams into call events and back.

Layers, bottom up: `headers` (one header value) -> `message` (one datagram) -> `transaction`
(one request and its responses, RFC 3261 §17) -> `dialog` (one call's state) -> `endpoint` (the
connection object an asyncio UDP adapter drives). No module here opens a socket or reads a clock.
"""

from telephony.sip.dialog import CallErrorKind, CallOperationError, CallState, EndReason
from telephony.sip.endpoint import (
    ALLOWED_METHODS,
    CallEnded,
    CallEstablished,
    IncomingCall,
    ProtocolError,
    ReInvite,
    ReInviteAcked,
    ReInviteCancelled,
    SipEndpoint,
    SipEvent,
)
from telephony.sip.message import (
    Address,
    Headers,
    SipErrorKind,
    SipMessage,
    SipParseError,
    SipRequest,
    SipResponse,
    build_response,
    parse_message,
)
from telephony.sip.transaction import DEFAULT_TIMERS, SipTimers

__all__ = [
    "ALLOWED_METHODS",
    "DEFAULT_TIMERS",
    "Address",
    "CallEnded",
    "CallErrorKind",
    "CallEstablished",
    "CallOperationError",
    "CallState",
    "EndReason",
    "Headers",
    "IncomingCall",
    "ProtocolError",
    "ReInvite",
    "ReInviteAcked",
    "ReInviteCancelled",
    "SipEndpoint",
    "SipErrorKind",
    "SipEvent",
    "SipMessage",
    "SipParseError",
    "SipRequest",
    "SipResponse",
    "SipTimers",
    "build_response",
    "parse_message",
]
