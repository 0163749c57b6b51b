"""A local stand-in for the part of Twilio's REST API the gateway uses: Calls.

It answers what the `twilio` library sends, at the paths the library builds:

- `POST /2010-04-01/Accounts/{AccountSid}/Calls.json` (form `To`, `From`, `Url`, optional
  `StatusCallback`...) creates a call: 201 with a Call resource (`sid` "CA…", `status` "queued").
- `POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json` with `Twiml`/`Url` (redirect) or
  `Status=completed|canceled` (hang up): 200 with the updated resource. Redirecting a call that
  has ended is Twilio's 400 / 21220 ("Invalid call state").

Errors use Twilio's JSON error body (`code`, `message`, `more_info`, `status`): an unknown call
or account is 404 / 20404, bad or missing HTTP Basic credentials (account SID + auth token) are
401 / 20003. `fail_next()` injects 429 / 5xx answers, `stall_next()` a slow one. Every
request is recorded for assertions.

Calls that did not start with `create` (an inbound call the gateway is handling) are added with
`add_call()`; `answer()` and `complete()` move a call along as the far end would, and
`complete()` also posts the signed status callback when the call has one.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator

from tests.fakes.serve import serve_in_thread

ACCOUNT_SID = "AC" + "5a" * 16
AUTH_TOKEN = "fake-auth-token-3c7e91d2"  # distinctive, so tests can look for leaks
API_VERSION = "2010-04-01"

ENDED_STATUSES = frozenset({"completed", "canceled", "failed", "busy", "no-answer"})
_ERROR_MESSAGES = {
    429: (20429, "Too Many Requests"),
    500: (20500, "An internal server error has occurred"),
    503: (20503, "Service unavailable"),
}


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    form: dict[str, str]  # the last value of each field (the library sends none twice here)
    username: str | None  # the Basic auth user; the password is not kept
    status: int  # what the fake answered


@dataclass
class FakeCall:
    sid: str
    account_sid: str
    to: str
    from_: str
    status: str
    direction: str
    url: str | None = None
    status_callback: str | None = None
    twiml: list[str] = field(default_factory=list)  # each Twiml redirect, in order
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated: datetime = field(default_factory=lambda: datetime.now(UTC))
    started: datetime | None = None
    ended: datetime | None = None

    def resource(self) -> dict[str, Any]:
        """The Call JSON resource, shaped as Twilio's."""
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{self.sid}.json"
        duration = None
        if self.started and self.ended:
            duration = str(int((self.ended - self.started).total_seconds()))
        return {
            "sid": self.sid,
            "account_sid": self.account_sid,
            "parent_call_sid": None,
            "date_created": format_datetime(self.created),
            "date_updated": format_datetime(self.updated),
            "to": self.to,
            "to_formatted": self.to,
            "from": self.from_,
            "from_formatted": self.from_,
            "phone_number_sid": None,
            "status": self.status,
            "start_time": format_datetime(self.started) if self.started else None,
            "end_time": format_datetime(self.ended) if self.ended else None,
            "duration": duration,
            "price": None,
            "price_unit": "USD",
            "direction": self.direction,
            "answered_by": None,
            "api_version": API_VERSION,
            "forwarded_from": None,
            "group_sid": None,
            "caller_name": None,
            "queue_time": "0",
            "trunk_sid": None,
            "uri": uri,
            "subresource_uris": {
                "notifications": uri.replace(".json", "/Notifications.json"),
                "recordings": uri.replace(".json", "/Recordings.json"),
            },
        }


def twilio_error(
    status: int, code: int, message: str, *, detail: str | None = None
) -> JSONResponse:
    body: dict[str, Any] = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(body, status_code=status)


class FakeTwilioApi:
    """The fake's state and switches; tests touch it from their own thread (dict and deque
    operations only, which the GIL keeps whole)."""

    def __init__(self, account_sid: str = ACCOUNT_SID, auth_token: str = AUTH_TOKEN) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.url = ""  # http://127.0.0.1:PORT once running
        self.calls: dict[str, FakeCall] = {}
        self.requests: list[RecordedRequest] = []
        self.failures: deque[tuple[int, float | None]] = deque()
        self.stalls: deque[float] = deque()  # next requests: answer this many seconds late
        self.callbacks: list[tuple[str, int]] = []  # status callbacks sent: (url, status)

    # ------------------------------------------------------------- switches and helpers

    def fail_next(self, status: int, *, times: int = 1, retry_after: float | None = None) -> None:
        """The next `times` requests get `status` (429 or 5xx) with Twilio's error body."""
        self.failures.extend([(status, retry_after)] * times)

    def stall_next(self, seconds: float) -> None:
        """The next request is answered `seconds` late (to make a client time out)."""
        self.stalls.append(seconds)

    def add_call(
        self,
        to: str = "+15005550006",
        from_: str = "+15005550001",
        *,
        status: str = "in-progress",
        direction: str = "inbound",
        sid: str | None = None,
    ) -> str:
        """Registers a live call the API did not create (an inbound call); returns its SID."""
        now = datetime.now(UTC)
        call = FakeCall(
            sid=sid or _new_sid("CA"),
            account_sid=self.account_sid,
            to=to,
            from_=from_,
            status=status,
            direction=direction,
            started=now if status == "in-progress" else None,
        )
        self.calls[call.sid] = call
        return call.sid

    def answer(self, sid: str) -> FakeCall:
        """The callee picks up: the call is in progress (Twilio would now fetch `call.url`)."""
        call = self.calls[sid]
        call.status = "in-progress"
        call.started = call.updated = datetime.now(UTC)
        return call

    def complete(self, sid: str, *, status: str = "completed", notify: bool = True) -> FakeCall:
        """The call ends as if the far end hung up; with `notify`, its status callback (if
        any) receives Twilio's signed form POST. That POST blocks: call this from a thread
        other than the one serving the callback URL."""
        call = self.calls[sid]
        self._end(call, status)
        if notify and call.status_callback:
            self._send_status_callback(call)
        return call

    def reset(self) -> None:
        self.calls.clear()
        self.requests.clear()
        self.failures.clear()
        self.stalls.clear()
        self.callbacks.clear()

    def requests_to(self, path_suffix: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith(path_suffix)]

    # ------------------------------------------------------------- app

    def app(self) -> Starlette:
        base = f"/{API_VERSION}/Accounts/{{account_sid}}"
        return Starlette(
            routes=[
                Route(f"{base}/Calls.json", self._create_call, methods=["POST"]),
                Route(f"{base}/Calls/{{call_sid}}.json", self._update_call, methods=["POST"]),
                Route(f"{base}/Calls/{{call_sid}}.json", self._fetch_call, methods=["GET"]),
            ]
        )

    async def _create_call(self, request: Request) -> Response:
        form, refusal = await self._admit(request)
        if refusal is not None:
            return self._record(request, form, refusal)
        to, from_, url = form.get("To"), form.get("From"), form.get("Url")
        if not to:
            return self._record(
                request, form, twilio_error(400, 21201, "No 'To' number is specified")
            )
        if not from_:
            reply = twilio_error(400, 21213, "No 'From' number is specified")
            return self._record(request, form, reply)
        if not (url or form.get("Twiml") or form.get("ApplicationSid")):
            reply = twilio_error(400, 21205, "Url is not a valid URL")
            return self._record(request, form, reply)
        call = FakeCall(
            sid=_new_sid("CA"),
            account_sid=self.account_sid,
            to=to,
            from_=from_,
            status="queued",
            direction="outbound-api",
            url=url,
            status_callback=form.get("StatusCallback"),
        )
        self.calls[call.sid] = call
        return self._record(request, form, JSONResponse(call.resource(), status_code=201))

    async def _update_call(self, request: Request) -> Response:
        form, refusal = await self._admit(request)
        if refusal is not None:
            return self._record(request, form, refusal)
        call = self.calls.get(request.path_params["call_sid"])
        if call is None:
            return self._record(request, form, _not_found(request))
        status = form.get("Status")
        if status is not None and status not in ("completed", "canceled"):
            reply = twilio_error(400, 20001, f"Status must be completed or canceled, got {status}")
            return self._record(request, form, reply)
        if form.get("Twiml") is not None or form.get("Url") is not None:
            if call.status in ENDED_STATUSES:
                reply = twilio_error(400, 21220, "Call is not in-progress. Cannot redirect.")
                return self._record(request, form, reply)
            if form.get("Twiml") is not None:
                call.twiml.append(form["Twiml"])
            call.url = form.get("Url", call.url)
            call.updated = datetime.now(UTC)
        if status is not None and call.status not in ENDED_STATUSES:
            # A hang-up of a call that already ended changes nothing, as the gateway expects.
            self._end(call, status)
        return self._record(request, form, JSONResponse(call.resource()))

    async def _fetch_call(self, request: Request) -> Response:
        _, refusal = await self._admit(request)
        if refusal is not None:
            return self._record(request, {}, refusal)
        call = self.calls.get(request.path_params["call_sid"])
        reply = _not_found(request) if call is None else JSONResponse(call.resource())
        return self._record(request, {}, reply)

    # ------------------------------------------------------------- internals

    async def _admit(self, request: Request) -> tuple[dict[str, str], Response | None]:
        """The request's form, and the refusal it gets before reaching a resource, if any."""
        form = {k: str(v) for k, v in (await request.form()).multi_items()}
        if self.stalls:
            await asyncio.sleep(self.stalls.popleft())
        if self.failures:
            status, retry_after = self.failures.popleft()
            code, message = _ERROR_MESSAGES.get(status, (status * 100, "Request failed"))
            reply = twilio_error(status, code, message)
            if retry_after is not None:
                reply.headers["Retry-After"] = f"{retry_after:g}"
            return form, reply
        username, password = _basic_auth(request)
        if username != self.account_sid or password != self.auth_token:
            detail = "Your AccountSid or AuthToken was incorrect."
            reply = twilio_error(401, 20003, "Authenticate", detail=detail)
            reply.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
            return form, reply
        if request.path_params["account_sid"] != self.account_sid:
            return form, _not_found(request)
        return form, None

    def _record(self, request: Request, form: dict[str, str], reply: Response) -> Response:
        username, _ = _basic_auth(request)
        self.requests.append(
            RecordedRequest(request.method, request.url.path, form, username, reply.status_code)
        )
        return reply

    def _end(self, call: FakeCall, status: str) -> None:
        call.status = status
        call.ended = call.updated = datetime.now(UTC)

    def _send_status_callback(self, call: FakeCall) -> None:
        assert call.status_callback is not None
        form = {
            "AccountSid": call.account_sid,
            "ApiVersion": API_VERSION,
            "CallSid": call.sid,
            "CallStatus": call.status,
            "CallDuration": call.resource()["duration"] or "0",
            "Direction": call.direction,
            "From": call.from_,
            "To": call.to,
        }
        signature = RequestValidator(self.auth_token).compute_signature(call.status_callback, form)
        reply = httpx.post(
            call.status_callback,
            data=form,
            headers={"X-Twilio-Signature": signature},
            timeout=5,
        )
        self.callbacks.append((call.status_callback, reply.status_code))


def _basic_auth(request: Request) -> tuple[str | None, str | None]:
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        decoded = base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    username, sep, password = decoded.partition(":")
    return (username, password) if sep else (None, None)


def _not_found(request: Request) -> JSONResponse:
    message = f"The requested resource {request.url.path} was not found"
    return twilio_error(404, 20404, message)


def _new_sid(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


@contextmanager
def run_fake_twilio_api(
    account_sid: str = ACCOUNT_SID, auth_token: str = AUTH_TOKEN
) -> Iterator[FakeTwilioApi]:
    """Serves a `FakeTwilioApi` on 127.0.0.1 (uvicorn, in a thread) for the `with` block."""
    fake = FakeTwilioApi(account_sid, auth_token)
    with serve_in_thread(fake.app(), "fake-twilio-api") as url:
        fake.url = url
        yield fake
