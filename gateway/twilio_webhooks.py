"""Twilio's HTTP webhooks: the incoming-call answer (TwiML) and call status callbacks."""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter, HTTPException, Request, Response

from gateway.runtime import GatewayRuntime
from telephony.twilio.twiml import connect_stream_twiml

log = logging.getLogger(__name__)

router = APIRouter(prefix="/twilio", tags=["twilio"])


async def _verified_form(request: Request) -> dict[str, str]:
    """The webhook's form fields, after the signature check when a token is configured."""
    runtime: GatewayRuntime = request.app.state.runtime
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    checker = runtime.signature_checker
    if checker is not None:
        # Signed over the URL Twilio called, which is the public one, not what a proxy forwards.
        url = runtime.settings.public_url + request.url.path
        if request.url.query:
            url += "?" + request.url.query
        if not checker.check_webhook(url, form, request.headers.get("x-twilio-signature")):
            log.warning("rejected %s: bad or missing X-Twilio-Signature", request.url.path)
            raise HTTPException(status_code=403, detail="invalid Twilio signature")
    return form


@router.post("/voice", summary="Answer an incoming call with a bidirectional media stream")
async def voice(request: Request) -> Response:
    form = await _verified_form(request)
    runtime: GatewayRuntime = request.app.state.runtime
    if runtime.draining:
        # Twilio treats a 5xx as a failed webhook and tries the number's fallback URL.
        raise HTTPException(
            status_code=503,
            detail="this instance is draining; try another",
            headers={"Retry-After": "5"},
        )
    call_sid = form.get("CallSid", "")
    if not call_sid:
        raise HTTPException(status_code=400, detail="CallSid is required")
    from_number, to_number = form.get("From", ""), form.get("To", "")
    # An outbound call placed through the API names its route in the URL it gave Twilio.
    route = await runtime.route_for(request.query_params.get("route") or to_number)
    await runtime.call_answered(call_sid, from_number, to_number, route.number)
    twiml = connect_stream_twiml(
        runtime.stream_url,
        {"callSid": call_sid, "from": from_number, "to": to_number, "route": route.number},
    )
    return Response(content=twiml, media_type="application/xml")


@router.post("/status", status_code=204, summary="Record a call status callback")
async def status(request: Request) -> Response:
    form = await _verified_form(request)
    runtime: GatewayRuntime = request.app.state.runtime
    call_sid = form.get("CallSid", "")
    call_status = form.get("CallStatus", "")
    if not call_sid or not call_status:
        raise HTTPException(status_code=400, detail="CallSid and CallStatus are required")
    data = {"status": call_status}
    if form.get("CallDuration"):
        data["duration"] = form["CallDuration"]
    runtime.writer.event(call_sid, "call_status", data, time.time())
    return Response(status_code=204)
