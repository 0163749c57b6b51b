"""The <Connect><Stream> TwiML, the stream URL, and X-Twilio-Signature checks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import xml.etree.ElementTree as ET

import pytest

from telephony.twilio.signature import SignatureChecker
from telephony.twilio.twiml import connect_stream_twiml, stream_url_for

TOKEN = "0123456789abcdef0123456789abcdef"
WEBHOOK = "https://gateway.example.com/twilio/voice"
STREAM = "wss://gateway.example.com/twilio/stream"
PARAMS = {
    "CallSid": "CA00000000000000000000000000000001",
    "From": "+15550100",
    "To": "+15550101",
    "AccountSid": "AC00000000000000000000000000000001",
}


# -- TwiML


def test_connect_stream_twiml_structure() -> None:
    params = {"call_id": "abc", "note": 'a <b> & "c"'}
    root = ET.fromstring(connect_stream_twiml(STREAM, params))

    assert root.tag == "Response"
    [connect] = list(root)
    assert connect.tag == "Connect"  # bidirectional, unlike <Start><Stream>
    [stream] = list(connect)
    assert stream.tag == "Stream"
    assert stream.attrib == {"url": STREAM}
    assert [(p.tag, p.attrib) for p in stream] == [
        ("Parameter", {"name": "call_id", "value": "abc"}),
        ("Parameter", {"name": "note", "value": 'a <b> & "c"'}),
    ]


def test_connect_stream_twiml_is_a_whole_document() -> None:
    twiml = connect_stream_twiml(STREAM, {})
    assert twiml.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    stream = ET.fromstring(twiml).find("Connect/Stream")
    assert stream is not None and stream.get("url") == STREAM
    assert len(stream) == 0  # no parameters, no <Parameter> children


@pytest.mark.parametrize(
    ("public_url", "expected"),
    [
        ("http://localhost:8000", "ws://localhost:8000/twilio/stream"),
        ("https://gateway.example.com", "wss://gateway.example.com/twilio/stream"),
        ("https://gateway.example.com/", "wss://gateway.example.com/twilio/stream"),
        (
            "HTTPS://gateway.example.com:8443/voice/",
            "wss://gateway.example.com:8443/voice/twilio/stream",
        ),
        ("http://10.0.0.5:8080/a/b", "ws://10.0.0.5:8080/a/b/twilio/stream"),
    ],
)
def test_stream_url_for(public_url: str, expected: str) -> None:
    assert stream_url_for(public_url) == expected


def test_stream_url_for_custom_path() -> None:
    assert stream_url_for("https://h.example", "media") == "wss://h.example/media"
    assert stream_url_for("https://h.example/p", "/x/y") == "wss://h.example/p/x/y"


@pytest.mark.parametrize(
    "public_url",
    [
        "ftp://h.example",
        "gateway.example.com",
        "https://",
        "https://h.example/?a=1",
        "ws://h.example",
    ],
)
def test_stream_url_for_rejects_what_twilio_cannot_use(public_url: str) -> None:
    with pytest.raises(ValueError, match="public URL"):
        stream_url_for(public_url)


# -- signatures


def _reference_signature(token: str, url: str, params: dict[str, str]) -> str:
    """Twilio's documented scheme, written out independently of the twilio library."""
    text = url + "".join(key + params[key] for key in sorted(params))
    digest = hmac.new(token.encode(), text.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def test_sign_matches_the_documented_scheme() -> None:
    checker = SignatureChecker(TOKEN)
    assert checker.sign(WEBHOOK, PARAMS) == _reference_signature(TOKEN, WEBHOOK, PARAMS)
    assert checker.sign(STREAM) == _reference_signature(TOKEN, STREAM, {})


def test_valid_webhook_signature_passes() -> None:
    checker = SignatureChecker(TOKEN)
    signature = _reference_signature(TOKEN, WEBHOOK, PARAMS)
    assert checker.check_webhook(WEBHOOK, PARAMS, signature)


def test_webhook_with_query_string_is_signed_over_the_full_url() -> None:
    checker = SignatureChecker(TOKEN)
    url = WEBHOOK + "?agent=support"
    assert checker.check_webhook(url, PARAMS, checker.sign(url, PARAMS))
    assert not checker.check_webhook(WEBHOOK, PARAMS, checker.sign(url, PARAMS))


@pytest.mark.parametrize(
    "tamper",
    [
        lambda url, params: (url, {**params, "From": "+15550199"}),
        lambda url, params: (url, {**params, "Extra": "1"}),
        lambda url, params: (url, {k: v for k, v in params.items() if k != "To"}),
        lambda url, params: (url.replace("voice", "voicE"), params),
        lambda url, params: (url.replace("https", "http"), params),
        lambda url, params: (url + "?x=1", params),
    ],
)
def test_tampered_webhook_fails(tamper) -> None:
    checker = SignatureChecker(TOKEN)
    signature = checker.sign(WEBHOOK, PARAMS)
    url, params = tamper(WEBHOOK, PARAMS)
    assert not checker.check_webhook(url, params, signature)


def test_wrong_token_fails() -> None:
    signature = SignatureChecker("another-token").sign(WEBHOOK, PARAMS)
    assert not SignatureChecker(TOKEN).check_webhook(WEBHOOK, PARAMS, signature)
    assert not SignatureChecker(TOKEN).check_websocket(
        STREAM, SignatureChecker("another-token").sign(STREAM)
    )


@pytest.mark.parametrize("signature", [None, ""])
def test_missing_signature_fails(signature: str | None) -> None:
    checker = SignatureChecker(TOKEN)
    assert not checker.check_webhook(WEBHOOK, PARAMS, signature)
    assert not checker.check_websocket(STREAM, signature)


def test_garbage_signature_fails() -> None:
    checker = SignatureChecker(TOKEN)
    assert not checker.check_webhook(WEBHOOK, PARAMS, "not-a-signature")
    assert not checker.check_websocket(STREAM, "é")


def test_websocket_signature_is_over_the_url_alone() -> None:
    checker = SignatureChecker(TOKEN)
    signature = _reference_signature(TOKEN, STREAM, {})
    assert checker.check_websocket(STREAM, signature)
    assert not checker.check_websocket(STREAM.replace("stream", "other"), signature)
    # Behind a TLS proxy the server sees https; the signed URL is still the wss one.
    assert not checker.check_websocket(STREAM.replace("wss", "https"), signature)


def test_explicit_default_port_is_tolerated() -> None:
    # Twilio is inconsistent about including :443, so the library checks both forms.
    checker = SignatureChecker(TOKEN)
    signature = checker.sign(WEBHOOK, PARAMS)
    with_port = WEBHOOK.replace(".com/", ".com:443/")
    assert checker.check_webhook(with_port, PARAMS, signature)


def test_token_is_required_and_never_shown() -> None:
    with pytest.raises(ValueError):
        SignatureChecker("")
    assert TOKEN not in repr(SignatureChecker(TOKEN))
