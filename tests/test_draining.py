"""SIGTERM drains: new calls refused, calls in progress go on, exit when they end."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from telephony.twilio.signature import SignatureChecker
from tests.fakes.twilio_api_server import AUTH_TOKEN
from tests.gateway_process import GatewayProcess, HeldCall


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "API_", "REDIS"))}
    return {
        **env,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "API_TOKEN": "drain-token",
        "STT_PROVIDER": "scripted",
        "TTS_PROVIDER": "tone",
        "AGENT_PROVIDER": "instant",
    }


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    process = GatewayProcess("drain", environment(), tmp_path)
    try:
        yield process
    finally:
        process.stop()


async def wait_exit(gateway: GatewayProcess, within: float) -> int | None:
    for _ in range(int(within * 10)):
        if (code := gateway.process.poll()) is not None:
            return code
        await asyncio.sleep(0.1)
    return None


async def test_first_sigterm_drains_and_exits_when_the_last_call_ends(
    gateway: GatewayProcess,
) -> None:
    call = HeldCall(gateway, "CA" + "d" * 32)
    await call.open()
    try:
        await asyncio.sleep(1.0)
        gateway.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        async with httpx.AsyncClient() as http:
            ready = await http.get(gateway.url + "/readyz")
            assert ready.status_code == 503 and ready.json()["status"] == "draining"
            url = gateway.url + "/twilio/voice"
            form = {"CallSid": "CA" + "e" * 32, "From": "+15550100001", "To": "+15550100002"}
            signature = SignatureChecker(AUTH_TOKEN).sign(url, form)
            refused = await http.post(url, data=form, headers={"X-Twilio-Signature": signature})
            assert refused.status_code == 503
        before = call.media
        await call.press("5#")  # the call in progress is still served
        for _ in range(50):
            if call.media > before:
                break
            await asyncio.sleep(0.1)
        assert call.media > before and not call.closed.is_set()
        assert gateway.process.poll() is None
    finally:
        await call.close()
    assert await wait_exit(gateway, 15) is not None, "the drained gateway did not exit"


async def test_a_second_signal_ends_the_calls_and_exits(gateway: GatewayProcess) -> None:
    call = HeldCall(gateway, "CA" + "f" * 32)
    await call.open()
    try:
        await asyncio.sleep(1.0)
        gateway.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        assert gateway.process.poll() is None and not call.closed.is_set()
        gateway.process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(call.closed.wait(), 15)
        assert await wait_exit(gateway, 15) is not None
    finally:
        await call.close()
