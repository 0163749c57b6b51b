"""The webhook agent: each caller turn is answered by the customer's own HTTP server.

The protocol (ours; customers implement the server side)
--------------------------------------------------------
For every turn the gateway sends one request::

    POST {AGENT_WEBHOOK_URL}
    Content-Type: application/json
    Accept: application/json, text/plain, text/event-stream
    (plus any configured headers, e.g. Authorization: Bearer SECRET)

    {
      "session_id": "3f2c...",          one id per call, the same on every turn of it
      "metadata": {"from": "+1555..."},  string -> string, fixed when the call starts
      "transcript": "what time is it",   what the caller said; "" on a keypad turn
      "dtmf": "",                        keypad digits that made the turn; "" on a spoken turn
      "history": [                       earlier turns, oldest first (not this one)
        {"role": "user", "text": "hello"},
        {"role": "assistant", "text": "Hi! How can I help?"}
      ]
    }

The server answers ``200`` with the reply in one of three forms, told apart by Content-Type:

``application/json``
    ``{"text": "The whole reply."}``, spoken once it has all arrived.
``text/plain``
    The body is the reply, UTF-8 unless a ``charset`` says otherwise. Stream it (chunked
    transfer encoding) and each sentence is spoken as soon as it is complete.
``text/event-stream``
    Server-Sent Events: each event's data is the next piece of the reply, either the text
    itself (``data: Hello``) or a JSON object (``data: {"text": "Hello"}``). ``data: [DONE]``,
    or the end of the body, ends the reply. Pieces are joined exactly as sent, so spaces
    belong inside them; SSE strips one space after ``data:``, which is why the JSON form is
    the clearer one for a piece starting with a space. Comments, ``event:``, ``id:`` and
    ``retry:`` lines, and JSON objects without a string ``text``, are ignored.

``204 No Content``, or an empty reply, means the agent says nothing this turn. Any other
Content-Type is an error.

Failures and retries. ``401``/``403``: authentication error, not retried. ``429`` and ``5xx``:
retried by the gateway, after ``Retry-After`` seconds if given. Other statuses: not retried;
the body's ``error``/``message``/``detail`` (or its first line) goes into the gateway's error
report. Refused or dropped connections are retried, and so is a timeout: ``timeout`` (default
10 s) bounds connecting and each wait for the next byte, not the whole reply, so a long
streamed reply is fine while it keeps flowing.

Delivery. A turn is retried only while nothing of its reply has arrived, so the server may see
the same turn (same ``session_id``, ``transcript`` and ``history``) more than once. The gateway
may also ask before the caller has quite finished, and close the connection if the caller goes
on talking: treat a closed connection as "never mind".
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import httpx

from providers.http_errors import connection_error, status_error
from session.errors import ErrorCode, ProviderError
from session.interfaces import AgentContext

__all__ = ["WebhookAgent", "request_body", "sse_pieces"]

PROVIDER: Final = "webhook"
DONE: Final = "[DONE]"
_ACCEPT: Final = "application/json, text/plain, text/event-stream"
_MAX_MESSAGE: Final = 300  # characters of the customer's error body worth quoting


def request_body(ctx: AgentContext, transcript: str) -> dict[str, Any]:
    """The JSON document sent for one turn."""
    return {
        "session_id": ctx.session_id,
        "metadata": dict(ctx.metadata),
        "transcript": transcript,
        "dtmf": ctx.dtmf,
        "history": [{"role": m.role, "text": m.text} for m in ctx.history],
    }


class WebhookAgent:
    """Answers each turn by asking the customer's server at `url` (see the module docstring).

    `headers` are sent with every request (an ``Authorization`` secret, typically); their
    values never appear in `repr` or error messages.
    """

    name = PROVIDER

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url must be an absolute http:// or https:// URL")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.url = url
        self.timeout = timeout
        self._headers = {
            "user-agent": "voice-gateway-webhook/1",
            "accept": _ACCEPT,
            **(headers or {}),
        }
        # Header values and URL credentials are secrets as far as messages are concerned.
        # The token alone counts too: a server may echo it without its "Bearer " scheme.
        values = [*(headers or {}).values(), parts.password or "", parts.query]
        tokens = [v.split()[-1] for v in values if v.strip()]
        self._secrets = sorted({s for s in values + tokens if len(s) >= 4}, key=len, reverse=True)
        self._client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        # Path only: a query string or user-info may hold a token.
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return f"WebhookAgent(url='{parts.scheme}://{host}{port}{parts.path}')"

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout))
        return self._client

    async def respond(self, ctx: AgentContext, transcript: str) -> AsyncIterator[str]:
        """Streams the reply's pieces as the customer's server sends them."""
        try:
            async with self._http().stream(
                "POST", self.url, json=request_body(ctx, transcript), headers=self._headers
            ) as response:
                if not 200 <= response.status_code < 300:
                    await response.aread()
                    raise self._status_error(response)
                if response.status_code == 204:
                    return
                media_type = _media_type(response)
                if media_type == "application/json":
                    text = self._json_reply(await response.aread())
                    if text:
                        yield text
                elif media_type == "text/plain":
                    async for piece in response.aiter_text():
                        if piece:
                            yield piece
                elif media_type == "text/event-stream":
                    async for piece in sse_pieces(response.aiter_lines()):
                        yield piece
                else:
                    raise self._protocol_error(
                        f"unsupported Content-Type {media_type or '(none)'!r}; expected {_ACCEPT}"
                    )
        except ProviderError:
            raise
        except httpx.TransportError as exc:
            raise connection_error(PROVIDER, exc, within=self.timeout, redact=self._redact) from exc
        except httpx.HTTPError as exc:  # e.g. a body in an unknown charset or encoding
            raise self._protocol_error(
                f"{type(exc).__name__}: {self._redact(str(exc))}", cause=exc
            ) from exc

    def _json_reply(self, body: bytes) -> str:
        if not body.strip():
            return ""  # an empty reply: nothing to say
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise self._protocol_error("the JSON reply does not parse", cause=exc) from exc
        text = payload.get("text") if isinstance(payload, dict) else None
        if not isinstance(text, str):
            raise self._protocol_error('a JSON reply must be an object {"text": "..."}')
        return text

    def _status_error(self, response: httpx.Response) -> ProviderError:
        status = response.status_code
        message = f"HTTP {status}"
        if detail := self._redact(_error_message(response.content)):
            message += f": {detail}"
        return status_error(PROVIDER, status, message, response.headers)

    def _protocol_error(self, message: str, cause: BaseException | None = None) -> ProviderError:
        # The server answered, but not in this protocol: asking again will not fix it.
        return ProviderError(ErrorCode.AGENT_ERROR, PROVIDER, message, retryable=False, cause=cause)

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        return text


async def sse_pieces(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """Reply pieces from Server-Sent Events lines, up to ``[DONE]`` or the end.

    An event is its ``data:`` lines joined by newlines, complete at the next blank line (a
    last event without one still counts: cut short by a proxy, it is still text to say).
    """
    data: list[str] = []
    async for line in lines:
        if line:
            field, _, value = line.partition(":")
            if field == "data":  # "" is a comment; event, id and retry say nothing to us
                data.append(value.removeprefix(" "))
            continue
        if not data:
            continue
        piece = _event_text("\n".join(data))
        data = []
        if piece is None:
            return
        if piece:
            yield piece
    if data and (piece := _event_text("\n".join(data))):
        yield piece


def _event_text(data: str) -> str | None:
    """The text an event carries; None for the end marker."""
    if data == DONE:
        return None
    if data.startswith("{"):
        try:
            payload = json.loads(data)
        except ValueError:
            return data  # text that happens to start with a brace
        if isinstance(payload, dict):
            text = payload.get("text")
            return text if isinstance(text, str) else ""
    return data


def _media_type(response: httpx.Response) -> str:
    return response.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _error_message(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip()
    try:
        payload = json.loads(text)
    except ValueError:
        return text.splitlines()[0][:_MAX_MESSAGE] if text else ""
    if isinstance(payload, dict):
        for key in ("error", "message", "detail"):
            value = payload.get(key)
            if isinstance(value, dict):
                value = value.get("message") or value
            if value:
                return str(value)[:_MAX_MESSAGE]
    return text[:_MAX_MESSAGE]
