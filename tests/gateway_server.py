"""A real gateway (uvicorn, real sockets) on a free port, in a thread of the test process.

Running in-process lets tests look at the live call registry and the server's event loop
(no task left behind) while every byte still crosses a real TCP websocket.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import uvicorn

from gateway.app import create_app
from gateway.runtime import GatewayRuntime
from gateway.sip_calls import SipCalls
from gateway.workers import SERVER_OPTIONS
from infra.settings import Settings, load_settings
from infra.store import SessionRecord
from tests.fakes.serve import free_port

T = TypeVar("T")


class RunningGateway:
    def __init__(self, settings: Settings, runtime: GatewayRuntime, sip: SipCalls | None) -> None:
        self.settings = settings
        self.runtime = runtime
        self.sip = sip  # the SIP listener, when SIP_PORT is set
        self.path = "direct"  # which media socket path serves it (see run_gateway)
        self.url = settings.public_url
        self.loop: asyncio.AbstractEventLoop | None = None

    def call_in_loop(self, fn: Callable[[], Coroutine[Any, Any, T]], timeout: float = 10) -> T:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(fn(), self.loop).result(timeout)

    def record(self, session_id: str) -> SessionRecord | None:
        """The stored record, once what the call path queued has been written."""

        async def read() -> SessionRecord | None:
            await self.runtime.writer.flush()
            return await self.runtime.store.get_session(session_id)

        return self.call_in_loop(read)


@contextmanager
def run_gateway(
    env: Mapping[str, str] | None = None,
    *,
    path: str = "direct",
    new_loop: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop,
) -> Iterator[RunningGateway]:
    """`path` "direct" is the media socket protocol `serve` runs; "asgi" is uvicorn's plain
    `websockets-sansio`, which reaches the endpoint through ASGI messages."""
    port = free_port()
    settings = load_settings(
        port=port,
        # SIP is off unless a test asks for it: gateways run side by side in the tests.
        env={"API_TOKEN": "test-api-token", "SIP_PORT": "0", **(env or {})},
        dotenv_path=Path("/nonexistent/.env"),
    )
    runtime = GatewayRuntime.from_settings(settings)
    app = create_app(settings, runtime)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            # The loop is this thread's own (`new_loop`), not uvicorn's choice.
            ws=SERVER_OPTIONS["ws"] if path == "direct" else "websockets-sansio",
            ws_per_message_deflate=SERVER_OPTIONS["ws_per_message_deflate"],
            log_config=None,
            lifespan="on",
        )
    )
    gateway = RunningGateway(settings, runtime, app.state.sip)
    gateway.path = path

    def serve() -> None:
        loop = new_loop()
        gateway.loop = loop
        loop.run_until_complete(server.serve())
        loop.close()

    thread = threading.Thread(target=serve, name=f"gateway-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start")
        time.sleep(0.02)
    try:
        yield gateway
    finally:
        server.should_exit = True
        thread.join(15)
