"""`voice-gateway serve --workers K`: K gateway processes answering on one port.

uvicorn's supervisor binds the port once and spawns K workers that accept from the same
socket; the kernel hands each new connection (a webhook, a media stream) to one of them. A
spawned process cannot be handed a built app, so each worker builds its own with
`app_factory`, from the environment. The parent resolves what every worker must share (bind
address, API token, instance name) and passes it down the same way.

Each worker is a full gateway instance in the store, with its own heartbeat and command
channel under `INSTANCE_ID-<pid>`. A call's webhook and its media stream may reach different
workers, which is the multi-instance case the Redis store already handles; the embedded store
lives inside one process and cannot, hence REDIS_URL is required.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NoReturn

from gateway.asgi_websocket import MediaWebSocketProtocol
from infra.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger(__name__)

APP_FACTORY = "gateway.workers:app_factory"
# Bind address handed from the parent to its workers (usable when running uvicorn directly).
HOST_ENV = "VOICE_GATEWAY_HOST"
PORT_ENV = "VOICE_GATEWAY_PORT"

# uvicorn options shared by the single-process and the worker server. Per media message
# (Twilio sends 50 a second per call), measured on one core: uvloop and httptools cost 26 %
# less than asyncio and h11; `websockets-sansio` is the cheapest websocket implementation
# uvicorn has (`websockets` +20 %, `wsproto` +33 %), and `MediaWebSocketProtocol` extends it
# with a fast path for text frames and direct delivery to the media stream endpoint
# (`gateway.asgi_websocket`). uvloop and httptools come with `uvicorn[standard]`; named here
# rather than left to "auto", a missing one fails at start instead of running slower.
# permessage-deflate is declined: zlib on every 20 ms message in and out would cost more CPU
# than the fast path saves, to shrink base64 audio that barely compresses.
SERVER_OPTIONS: dict[str, Any] = {
    "loop": "uvloop",
    "http": "httptools",
    "ws": MediaWebSocketProtocol,
    "ws_per_message_deflate": False,
    "log_config": None,
    "access_log": False,
}


# Garbage collection, measured with 600 calls on one core: a full (generation 2) collection
# walks every live object of every call, and stopped the event loop for 80-300 ms about every
# 10 s; that alone took the reply latency p95 from 409 ms to 760-950 ms. Freezing what exists
# once the app is built (modules, the app, ~120k objects) keeps it out of every collection,
# and a full collection after 100 rather than 10 middle-generation ones makes the pause rare:
# p95 409 ms at 600 calls and 465 ms at 700. Cyclic garbage that reached the old generation
# then waits longer to be freed, which is why an ended call must leave none
# (tests/test_call_memory.py).
FULL_COLLECTION_EVERY = 100


def tune_gc() -> None:
    """Sets the collector up for serving calls; once, after the app is built (`serve` and
    every worker of `serve --workers`)."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)


def check_workers(settings: Settings, workers: int) -> str | None:
    """Why these settings cannot run `workers` processes (a message for the user), or None."""
    if workers < 1:
        return f"--workers must be at least 1, got {workers}"
    if workers > 1 and not settings.redis_url:
        return (
            f"--workers {workers} needs REDIS_URL: the embedded store lives inside one "
            "process, so workers would not see each other's calls, routes or commands"
        )
    return _check_providers(settings)


def _check_providers(settings: Settings) -> str | None:
    # Reported once here rather than by every worker, and uvicorn's supervisor would only
    # say that a worker failed to start.
    from gateway.provider_wiring import ProviderCatalog, ProviderConfigError
    from providers.registry import UnknownProviderError
    from session.errors import SessionError

    try:
        catalog = ProviderCatalog(settings)
    except (UnknownProviderError, ProviderConfigError, SessionError) as exc:
        return f"invalid setting: {exc}"
    asyncio.run(catalog.aclose())
    return None


def handoff_env(settings: Settings) -> dict[str, str]:
    """What every worker must share with the parent, as environment variables.

    Without it each worker would draw its own random API token, and a default INSTANCE_ID
    (host and pid) would name the worker rather than the deployment.
    """
    return {
        HOST_ENV: settings.host,
        PORT_ENV: str(settings.port),
        "INSTANCE_ID": settings.instance_id,
        "API_TOKEN": settings.api_token,
    }


def serve_workers(settings: Settings, workers: int) -> int:
    """Runs `workers` processes on the settings' port until signalled; `check_workers` first."""
    import uvicorn

    # Spawned workers inherit the environment: that is how they receive the shared values.
    os.environ.update(handoff_env(settings))
    log.info(
        "%d workers on port %d as %s-<pid>; /metrics answers for the worker that takes the "
        "scrape (series carry service_instance_id); OTLP gives every worker's",
        workers,
        settings.port,
        settings.instance_id,
    )
    uvicorn.run(
        APP_FACTORY,
        factory=True,
        workers=workers,
        host=settings.host,
        port=settings.port,
        **SERVER_OPTIONS,
    )
    return 0


def worker_settings(env: Mapping[str, str] | None = None, pid: int | None = None) -> Settings:
    """One worker's settings: the environment's, named `INSTANCE_ID-<pid>`, sharing SIP_PORT.

    Distinct names keep the workers' heartbeats and command channels apart in the store. The
    SIP socket is bound with SO_REUSEPORT in every worker: the kernel hands each source
    address's datagrams to one of them, so a dialog stays with the worker that answered it.
    """
    values = os.environ if env is None else env
    raw_port = values.get(PORT_ENV, "").strip()
    try:
        port = int(raw_port) if raw_port else None
    except ValueError:
        raise SettingsError(f"{PORT_ENV} must be a port number, got {raw_port!r}") from None
    settings = load_settings(host=values.get(HOST_ENV) or None, port=port, env=env)
    settings = dataclasses.replace(settings, sip_shared_port=True)
    suffix = f"-{os.getpid() if pid is None else pid}"
    if settings.instance_id.endswith(suffix):  # the default name already carries the pid
        return settings
    return dataclasses.replace(settings, instance_id=settings.instance_id + suffix)


def app_factory() -> FastAPI:
    """Builds one worker's app; uvicorn calls it in each worker process."""
    from gateway.app import create_app
    from gateway.provider_wiring import ProviderConfigError
    from infra.logging import configure_logging
    from infra.telemetry_export import configure_telemetry
    from providers.registry import UnknownProviderError
    from session.errors import SessionError

    try:
        settings = worker_settings()
    except SettingsError as exc:
        _startup_failure(f"invalid setting: {exc}")
    configure_logging(settings.log_level, settings.log_format)
    # Per worker: a spawned process starts with none of the parent's providers, and each
    # worker counts its own calls. The app's shutdown flushes them.
    telemetry = configure_telemetry(settings, instance_label=True)
    try:
        app = create_app(settings, telemetry=telemetry)
    except (UnknownProviderError, ProviderConfigError, SessionError) as exc:
        telemetry.shutdown()
        _startup_failure(f"invalid setting: {exc}")
    tune_gc()
    log.info("worker %s ready", settings.instance_id)
    return app


def _startup_failure(message: str) -> NoReturn:
    from uvicorn.config import STARTUP_FAILURE

    # This exit code tells uvicorn's supervisor to stop rather than restart the worker
    # forever: the same settings would fail the same way.
    print(f"voice-gateway worker: {message}", file=sys.stderr)
    sys.exit(STARTUP_FAILURE)
