"""Checks that a webhook or a websocket upgrade really comes from Twilio (X-Twilio-Signature).

A thin wrapper over the twilio library's RequestValidator, so the HMAC details (sorted
parameters, URL with and without the default port) stay Twilio's.

Twilio signs each request with the account auth token: HMAC-SHA1 over the full URL it requested
followed by the sorted POST parameters. Media Streams carry the same header on the websocket
upgrade: "You must also configure your application to validate the X-Twilio-Signature header.
This is how your application verifies that a Media Stream is coming from an authentic Twilio
source." (docs, Media Streams Configuration). The docs do not spell out what is signed there, but
it follows: the upgrade is a GET with no body, and "<Stream> does not support query strings"
(error 31920), so the signed text is the wss:// URL Twilio connected to and nothing else.
Twilio's own twilio-agent-connect-python validates the upgrade that way, and twilio-aspnet issue
#162 confirms that the wss scheme is part of what is signed. Behind a TLS-terminating proxy the
server sees http/https: pass the wss:// URL from the TwiML instead.
"""

from __future__ import annotations

from collections.abc import Mapping

from twilio.request_validator import RequestValidator

__all__ = ["SIGNATURE_HEADER", "SignatureChecker"]

SIGNATURE_HEADER = "X-Twilio-Signature"


class SignatureChecker:
    """Validates X-Twilio-Signature values against one account's auth token."""

    __slots__ = ("_validator",)

    def __init__(self, auth_token: str) -> None:
        if not auth_token:
            # An empty key would make every signature anyone computes "valid".
            raise ValueError("a Twilio auth token is required to check signatures")
        self._validator = RequestValidator(auth_token)

    def __repr__(self) -> str:
        return "SignatureChecker(auth_token=<hidden>)"  # the token never reaches a log

    def check_webhook(self, url: str, params: Mapping[str, str], signature: str | None) -> bool:
        """True if `signature` is Twilio's for a request to `url` with form `params`."""
        if not signature:
            return False
        return bool(self._validator.validate(url, dict(params), signature))

    def check_websocket(self, url: str, signature: str | None) -> bool:
        """True if `signature` is Twilio's for the websocket upgrade to `url` (no parameters)."""
        if not signature:
            return False
        return bool(self._validator.validate(url, {}, signature))

    def sign(self, url: str, params: Mapping[str, str] | None = None) -> str:
        """The signature Twilio would send, for simulators and tests."""
        return str(self._validator.compute_signature(url, dict(params or {})))
