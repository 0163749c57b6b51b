"""Gateway processes and held-open Twilio calls, for tests that need whole processes."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from websockets.asyncio.client import ClientConnection, connect

from telephony.twilio import peer
from telephony.twilio.signature import SignatureChecker
from tests.fakes.twilio_api_server import ACCOUNT_SID, AUTH_TOKEN
from tests.gateway_server import free_port


class GatewayProcess:
    def __init__(self, name: str, env: dict[str, str], cwd: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--port", str(self.port)],
            cwd=cwd,
            env={"SIP_PORT": "0", **env, "INSTANCE_ID": name, "PUBLIC_URL": self.url},
            stdout=subprocess.DEVNULL,
            stderr=open(cwd / f"{name}.log", "wb"),  # noqa: SIM115 - lives as long as the process
        )
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + "/healthz").status_code == 200:
                    return
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gateway {name} did not start; see {cwd / name}.log")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


class HeldCall:
    """A Twilio media stream kept open: silence every 20 ms, marks echoed, media counted."""

    def __init__(self, gateway: GatewayProcess, call_sid: str) -> None:
        self.gateway = gateway
        self.call_sid = call_sid
        self.stream_sid = "MZ" + call_sid[2:]
        self.media = 0
        self.closed = asyncio.Event()
        self._seq = 0
        self._ws: ClientConnection | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    async def open(self) -> None:
        form = {"CallSid": self.call_sid, "From": "+15550100001", "To": "+15550100002"}
        url = self.gateway.url + "/twilio/voice"
        signer = SignatureChecker(AUTH_TOKEN)
        async with httpx.AsyncClient() as http:
            answer = await http.post(
                url, data=form, headers={"X-Twilio-Signature": signer.sign(url, form)}
            )
        assert answer.status_code == 200, answer.text
        stream_url = self.gateway.url.replace("http", "ws", 1) + "/twilio/stream"
        self._ws = await connect(
            stream_url, additional_headers={"X-Twilio-Signature": signer.sign(stream_url, {})}
        )
        params = {"callSid": self.call_sid, "from": form["From"], "to": form["To"]}
        await self._ws.send(peer.encode_connected())
        await self._ws.send(
            peer.encode_start(self.stream_sid, self.call_sid, ACCOUNT_SID, params, self._next())
        )
        self._tasks = [asyncio.create_task(self._talk()), asyncio.create_task(self._listen())]

    async def _talk(self) -> None:
        assert self._ws is not None
        chunk = 0
        with contextlib.suppress(Exception):
            while not self.closed.is_set():
                chunk += 1
                await self._ws.send(
                    peer.encode_inbound_media(
                        self.stream_sid, self._next(), chunk, chunk * 20, b"\xff" * 160
                    )
                )
                await asyncio.sleep(0.02)

    async def _listen(self) -> None:
        assert self._ws is not None
        try:
            async for raw in self._ws:
                message = peer.parse_gateway_message(raw)
                if isinstance(message, peer.OutboundMedia):
                    self.media += 1
                elif isinstance(message, peer.OutboundMark):
                    await self._ws.send(
                        peer.encode_mark_echo(self.stream_sid, self._next(), message.name)
                    )
        except Exception:
            pass
        finally:
            self.closed.set()

    async def press(self, digits: str) -> None:
        assert self._ws is not None
        for digit in digits:
            await self._ws.send(peer.encode_dtmf(self.stream_sid, self._next(), digit))

    async def close(self) -> None:
        self.closed.set()
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
