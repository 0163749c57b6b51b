"""Live-call control through Twilio's REST API: transfer, hang up, place an outbound call.

A thin layer over the `twilio` library's async client (`AsyncTwilioHttpClient`, the `*_async`
methods), so request signing, form encoding and error parsing stay Twilio's. What this layer adds:
inputs validated before any request goes out, one typed error (`TwilioRestError`) that says
whether a retry can help and never carries the auth token, and a base URL that can point at a
local fake.

Pointing at another base URL: the library builds absolute URLs from per-product domains
(`https://api.twilio.com/2010-04-01/...`), and its `edge`/`region` options only rewrite the host
*within* twilio.com. Twilio's documented extension point is a custom HTTP client ("Custom HTTP
clients" in the Python library docs), so `_BaseUrlHttpClient` subclasses `AsyncTwilioHttpClient`
and swaps the scheme and host of each URL for the configured base just before sending. That
keeps every URL path exactly as the library builds it (what a fake has to implement is then the
real API surface) and touches no library internals; overwriting the `base_url` attribute of
`client.api` would also work but relies on generated code staying shaped as it is today.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Awaitable
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client
from twilio.twiml.voice_response import Dial, VoiceResponse

__all__ = [
    "DEFAULT_BASE_URL",
    "TwilioRest",
    "TwilioRestError",
    "is_e164",
    "is_sip_uri",
    "transfer_twiml",
]

DEFAULT_BASE_URL = "https://api.twilio.com"
DEFAULT_TIMEOUT = 10.0

# E.164: "+", a country code that never starts with 0, at most 15 digits in all. 8 is the
# shortest number in use that still has a country code and a subscriber part.
_E164 = re.compile(r"\+[1-9][0-9]{7,14}")
# What <Dial><Sip> accepts: sip:user@host with optional ;params, and nothing that could break
# out of the XML text or smuggle whitespace into the URI.
_SIP_URI = re.compile(r"sip:[^\s@<>\"']+@[^\s@<>\"']+", re.IGNORECASE)
# A SIP caller id may be a name token rather than a number (Twilio: alphanumerics, + - _ .).
_SIP_CALLER_ID = re.compile(r"[A-Za-z0-9+\-_.]{1,64}")
_CALL_SID = re.compile(r"CA[0-9a-fA-F]{32}")
_RETRYABLE_STATUSES = frozenset({0, 429})

_T = TypeVar("_T")


class TwilioRestError(Exception):
    """Twilio refused a request, or could not be reached (`status` 0).

    `code` is Twilio's error code (https://www.twilio.com/docs/errors/<code>) when it sent one.
    The message is Twilio's; the auth token never appears in it.
    """

    def __init__(self, status: int, code: int | None, message: str) -> None:
        self.status = status
        self.code = code
        self.message = message
        super().__init__(status, code, message)

    @property
    def retryable(self) -> bool:
        """True when the same request may succeed later (rate limited, Twilio-side failure,
        network trouble); a 4xx other than 429 will fail again as it is."""
        return self.status in _RETRYABLE_STATUSES or self.status >= 500

    def __str__(self) -> str:
        where = "Twilio unreachable" if self.status == 0 else f"Twilio HTTP {self.status}"
        code = f" (code {self.code})" if self.code is not None else ""
        return f"{where}{code}: {self.message}"

    def __repr__(self) -> str:
        return f"TwilioRestError(status={self.status}, code={self.code}, message={self.message!r})"


def is_e164(number: str) -> bool:
    return _E164.fullmatch(number) is not None


def is_sip_uri(uri: str) -> bool:
    return _SIP_URI.fullmatch(uri) is not None


def transfer_twiml(to: str, caller_id: str | None = None) -> str:
    """`<Response><Dial callerId=...>` to a phone number, or `<Dial><Sip>` for a sip: URI."""
    if is_sip_uri(to):
        if caller_id is not None and not (
            is_e164(caller_id) or _SIP_CALLER_ID.fullmatch(caller_id)
        ):
            raise ValueError(f"caller id for a SIP transfer is not valid: {caller_id!r}")
        dial = Dial(caller_id=caller_id)
        dial.sip(to)
    elif is_e164(to):
        if caller_id is not None:
            _check_e164("caller_id", caller_id)
        dial = Dial(to, caller_id=caller_id)
    else:
        raise ValueError(
            f"transfer target must be an E.164 number (+ and 8-15 digits) or a sip: URI, got {to!r}"
        )
    response = VoiceResponse()
    response.append(dial)
    return str(response.to_xml())


class TwilioRest:
    """One Twilio account's REST client for live calls. Use from one event loop; `aclose()`
    (or `async with`) releases its connection pool."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if not account_sid or not auth_token:
            raise ValueError("a Twilio account SID and auth token are required")
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"Twilio base URL must be an http(s) URL, got {base_url!r}")
        if parts.username or parts.password or parts.query or parts.fragment:
            # Credentials in the URL would bypass the token handling (and end up in logs).
            raise ValueError("Twilio base URL must not carry credentials, a query or a fragment")
        if not timeout > 0:
            raise ValueError(f"timeout must be greater than 0, got {timeout!r}")
        self.account_sid = account_sid
        self.base_url = base_url.rstrip("/")
        self._auth_token = auth_token
        self._timeout = timeout
        self._client: Client | None = None
        self._http: _BaseUrlHttpClient | None = None

    def __repr__(self) -> str:
        return (
            f"TwilioRest(account_sid={self.account_sid!r}, auth_token=<hidden>, "
            f"base_url={self.base_url!r})"
        )

    async def __aenter__(self) -> TwilioRest:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        http, self._http, self._client = self._http, None, None
        if http is not None:
            await http.close()

    async def transfer(
        self, call_sid: str, to_number: str, *, caller_id: str | None = None
    ) -> None:
        """Replaces what the live call is doing with a `<Dial>` to `to_number` (E.164 or sip:).

        The caller leaves the gateway's media stream: Twilio ends the `<Connect><Stream>` and
        runs the new TwiML, so the session sees its stream stop.
        """
        _check_call_sid(call_sid)
        twiml = transfer_twiml(to_number, caller_id)
        client = self._ensure_client()
        await self._send(client.calls(call_sid).update_async(twiml=twiml))

    async def hangup(self, call_sid: str) -> None:
        """Ends the live call (status `completed`)."""
        _check_call_sid(call_sid)
        client = self._ensure_client()
        await self._send(client.calls(call_sid).update_async(status="completed"))

    async def create_call(
        self, to: str, from_: str, url: str, status_callback: str | None = None
    ) -> str:
        """Places an outbound call and returns its Call SID.

        `url` is the gateway's own voice webhook (e.g. `.../twilio/voice?route=NAME`): once the
        callee answers, Twilio fetches it, and the call joins the gateway like an inbound one.
        """
        _check_e164("to", to)
        _check_e164("from_", from_)
        _check_http_url("url", url)
        if status_callback is not None:
            _check_http_url("status_callback", status_callback)
        client = self._ensure_client()
        call = await self._send(
            client.calls.create_async(
                to=to, from_=from_, url=url, method="POST", status_callback=status_callback
            )
        )
        sid = getattr(call, "sid", None)
        if not isinstance(sid, str) or not sid:
            raise TwilioRestError(502, None, "Twilio accepted the call but returned no Call SID")
        return sid

    def _ensure_client(self) -> Client:
        # Built on first use, inside the running loop: aiohttp binds its session to the loop
        # that creates it and refuses to be created outside one.
        if self._client is None:
            self._http = _BaseUrlHttpClient(self.base_url, self._timeout)
            self._client = Client(self.account_sid, self._auth_token, http_client=self._http)
        return self._client

    async def _send(self, request: Awaitable[_T]) -> _T:
        try:
            return await request
        except TwilioRestException as exc:
            raise TwilioRestError(exc.status, _int_or_none(exc.code), _clean(exc.msg)) from None
        except TwilioServiceException as exc:  # the RFC 9457 error shape newer APIs use
            message = exc.detail or exc.title
            raise TwilioRestError(exc.status, _int_or_none(exc.code), _clean(message)) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            # `from None`: aiohttp exceptions can hold the request (and its auth) in their state.
            reason = type(exc).__name__
            raise TwilioRestError(0, None, f"could not reach {self.base_url}: {reason}") from None


class _BaseUrlHttpClient(AsyncTwilioHttpClient):
    """The library's async HTTP client, with each request sent to `base_url` instead of the
    twilio.com host the library put in the URL, and a default timeout (the library's async
    client otherwise waits forever)."""

    def __init__(self, base_url: str, timeout: float) -> None:
        super().__init__(timeout=timeout)
        base = urlsplit(base_url)
        self._scheme = base.scheme
        self._netloc = base.netloc
        self._prefix = base.path.rstrip("/")
        # The default base is left alone so Twilio's edge/region host rewriting still applies.
        self._rewrite = base_url.rstrip("/") != DEFAULT_BASE_URL

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (the library's signature)
        allow_redirects: bool = False,
    ) -> Response:
        if auth is not None:
            # Sent as a header rather than the library's aiohttp `BasicAuth`, which aiohttp
            # 3.14 deprecates (a warning on every request). The library's request log skips
            # Authorization headers, so the token stays out of logs either way.
            headers = {**(headers or {}), "Authorization": _basic_auth(*auth)}
            auth = None
        if self._rewrite:
            parts = urlsplit(url)
            url = urlunsplit(
                (self._scheme, self._netloc, self._prefix + parts.path, parts.query, "")
            )
        return await super().request(
            method,
            url,
            params=params,
            data=data,
            headers=headers,
            auth=auth,
            timeout=self.timeout if timeout is None else timeout,
            allow_redirects=allow_redirects,
        )


def _basic_auth(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def _check_call_sid(call_sid: str) -> None:
    # The SID becomes part of the URL path; a strict shape keeps "../" and friends out.
    if not isinstance(call_sid, str) or _CALL_SID.fullmatch(call_sid) is None:
        raise ValueError(f"call SID must be 'CA' and 32 hex digits, got {call_sid!r}")


def _check_e164(name: str, number: str) -> None:
    if not isinstance(number, str) or not is_e164(number):
        raise ValueError(f"{name} must be an E.164 number (+ and 8-15 digits), got {number!r}")


def _check_http_url(name: str, url: str) -> None:
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{name} must be an absolute http(s) URL, got {url!r}")


def _int_or_none(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def _clean(message: object) -> str:
    # The library prefixes Twilio's message with its own ("Unable to update record: ...").
    text = str(message or "no message")
    for prefix in ("Unable to create record: ", "Unable to update record: "):
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text
