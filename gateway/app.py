"""The FastAPI application: Twilio webhooks, the media websocket, the ops API, health, and
the SIP listener it runs alongside."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from gateway import api, media_socket, metrics_route, twilio_webhooks
from gateway.call_control import command_handler
from gateway.draining import Drainer
from gateway.runtime import GatewayRuntime
from gateway.sip_calls import SipCalls
from infra.settings import Settings

if TYPE_CHECKING:
    from infra.telemetry_export import TelemetryHandles

log = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    runtime: GatewayRuntime | None = None,
    telemetry: TelemetryHandles | None = None,
) -> FastAPI:
    runtime = runtime or GatewayRuntime.from_settings(settings)
    sip = SipCalls(runtime, settings) if settings.sip_enabled else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        warm_up = getattr(runtime.providers.stt, "warm_up", None)
        if warm_up is not None:
            # Loading a recogniser takes a while; do it before the first caller waits for it.
            await warm_up()
        await runtime.start(command_handler(runtime))
        if sip is not None:
            try:
                await sip.start()
            except OSError as exc:
                log.error(
                    "cannot listen for SIP on udp %s:%d (SIP_HOST, SIP_PORT; SIP_PORT=0 turns "
                    "SIP off): %s",
                    settings.sip_host,
                    settings.sip_port,
                    exc,
                )
                await runtime.aclose()
                raise
        drainer = Drainer(runtime, settings.drain_timeout)
        drainer.install()
        yield
        drainer.uninstall()
        await runtime.aclose()  # ends the calls: SIP ones send their BYE
        if sip is not None:
            await sip.aclose()
        if telemetry is not None:
            # Flushed here, not at exit: uvicorn ends a SIGTERMed process by raising the
            # signal again once it has shut down, and exit hooks never run.
            await asyncio.to_thread(telemetry.shutdown)

    app = FastAPI(title="voice-gateway", version="0.1.0", lifespan=lifespan)
    app.state.runtime = runtime
    app.state.sip = sip
    app.include_router(twilio_webhooks.router)
    app.include_router(media_socket.router)
    app.include_router(api.router)
    app.include_router(metrics_route.router)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz() -> JSONResponse:
        # Degraded still takes calls: they run without the store and catch up later.
        backlog = runtime.writer.backlog
        status = "draining" if runtime.draining else "degraded" if runtime.degraded else "ready"
        return JSONResponse(
            status_code=503 if runtime.draining else 200,
            content={
                "status": status,
                "instance": runtime.instance_id,
                "live_calls": len(runtime.live),
                "store_backlog": {"sessions": backlog.sessions, "events": backlog.events},
            },
        )

    return app
