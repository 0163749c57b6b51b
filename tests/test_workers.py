"""`voice-gateway serve --workers K`: K processes on one port, sharing a real Redis.

The end-to-end test runs the real command line as a subprocess and places whole calls
(webhook, then media stream) until the store shows calls carried by two different workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from gateway.caller import run_call
from gateway.workers import check_workers, handoff_env, worker_settings
from infra.settings import load_settings
from tests.fakes.serve import free_udp_port
from tests.gateway_server import free_port
from tests.redis_server import RedisServer, redis_server  # noqa: F401 (fixture)
from tests.sipp import run_sipp
from tests.test_metrics_export import Receiver, otlp_receiver  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parents[1]
API_TOKEN = "workers-test-token"
FAST_PROVIDERS = {"STT_PROVIDER": "scripted", "TTS_PROVIDER": "tone", "AGENT_PROVIDER": "instant"}
NO_DOTENV = Path("/nonexistent/.env")


def gateway_env(**extra: str) -> dict[str, str]:
    """The test process's environment without anything that would change the gateway."""
    prefixes = ("TWILIO_", "API_", "REDIS_", "OTEL_", "INSTANCE_", "PUBLIC_", "VOICE_GATEWAY_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    # The subprocess imports this checkout, however the package happens to be installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return {**env, **FAST_PROVIDERS, "API_TOKEN": API_TOKEN, **extra}


def serve(port: int, workers: int, env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--port", str(port), "--workers", str(workers)],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


# ----------------------------------------------------------------------- settings


def test_each_worker_is_named_after_the_instance_and_its_pid(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    env = {
        "INSTANCE_ID": "gw-eu",
        "API_TOKEN": "shared",
        "VOICE_GATEWAY_HOST": "0.0.0.0",
        "VOICE_GATEWAY_PORT": "9100",
    }
    settings = worker_settings(env, pid=4242)
    assert settings.instance_id == "gw-eu-4242"
    assert settings.sip_shared_port  # the workers share SIP_PORT
    assert (settings.host, settings.port) == ("0.0.0.0", 9100)
    assert settings.public_url == "http://0.0.0.0:9100"
    assert settings.api_token == "shared" and not settings.api_token_generated
    # The default name (host and pid) already names the process: no second pid.
    default = worker_settings({}, pid=os.getpid())
    assert default.instance_id.endswith(f"-{os.getpid()}")
    assert not default.instance_id.endswith(f"-{os.getpid()}-{os.getpid()}")


def test_the_parent_hands_its_resolved_settings_to_the_workers() -> None:
    parent = load_settings(host="0.0.0.0", port=9100, env={}, dotenv_path=NO_DOTENV)
    assert parent.api_token_generated  # a random token must reach every worker, not K tokens
    assert handoff_env(parent) == {
        "VOICE_GATEWAY_HOST": "0.0.0.0",
        "VOICE_GATEWAY_PORT": "9100",
        "INSTANCE_ID": parent.instance_id,
        "API_TOKEN": parent.api_token,
    }


def test_check_workers() -> None:
    embedded = load_settings(env=FAST_PROVIDERS, dotenv_path=NO_DOTENV)
    shared = load_settings(
        env={**FAST_PROVIDERS, "REDIS_URL": "redis://127.0.0.1:1/0"}, dotenv_path=NO_DOTENV
    )
    assert check_workers(embedded, 1) is None
    assert "REDIS_URL" in (check_workers(embedded, 2) or "")
    assert check_workers(shared, 4) is None  # the store is only reached by the workers
    assert "at least 1" in (check_workers(shared, 0) or "")
    bad = load_settings(
        env={"REDIS_URL": "redis://127.0.0.1:1/0", "TTS_PROVIDER": "nope"}, dotenv_path=NO_DOTENV
    )
    assert "invalid setting" in (check_workers(bad, 2) or "")


# --------------------------------------------------------------------- processes


def test_workers_without_redis_url_are_refused(tmp_path: Path) -> None:
    process = serve(free_port(), 2, gateway_env(), tmp_path)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 2
    assert b"REDIS_URL" in stderr and b"--workers 2" in stderr


@dataclass
class Workers:
    url: str
    process: subprocess.Popen[bytes]
    sip_port: int

    def stop(self) -> None:
        """SIGTERM to the supervisor, as a deploy does; every worker must stop cleanly."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            _, stderr = self.process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, stderr = self.process.communicate()
        assert self.process.returncode == 0, (stderr or b"").decode()[-3000:]


@pytest.fixture
def two_workers(
    otlp_receiver: Receiver,  # noqa: F811
    redis_server: RedisServer,  # noqa: F811
    tmp_path: Path,
) -> Iterator[Workers]:
    redis_server.start()
    redis_server.flushall()
    port, sip_port = free_port(), free_udp_port()
    env = gateway_env(
        REDIS_URL=redis_server.url,
        INSTANCE_ID="gw",
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.url,
        SIP_PORT=str(sip_port),
    )
    workers = Workers(f"http://127.0.0.1:{port}", serve(port, 2, env, tmp_path), sip_port)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(workers.url + "/healthz").status_code == 200:
                    break
            assert workers.process.poll() is None, workers.process.communicate()[1].decode()
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.1)
        yield workers
    finally:
        workers.stop()


async def _carriers(url: str, call_sids: set[str]) -> dict[str, str]:
    async with httpx.AsyncClient() as http:
        reply = await http.get(
            url + "/api/sessions",
            params={"limit": 500},
            headers={"Authorization": f"Bearer {API_TOKEN}"},
        )
    reply.raise_for_status()
    return {
        record["session_id"]: record["instance"]
        for record in reply.json()["sessions"]
        if record["session_id"] in call_sids
    }


def test_calls_are_carried_by_two_workers_on_one_port(
    two_workers: Workers,
    otlp_receiver: Receiver,  # noqa: F811
) -> None:
    url = two_workers.url

    async def scenario() -> dict[str, str]:
        placed: set[str] = set()
        carriers: dict[str, str] = {}
        # The kernel picks the worker for each connection; a few concurrent batches make
        # it next to certain that both get some.
        for _ in range(5):
            reports = await asyncio.gather(
                *(run_call(url, ["dtmf:1#"], api_token=API_TOKEN, printer=None) for _ in range(4))
            )
            for report in reports:
                assert report.ok, report.errors
                placed.add(report.call_sid)
            carriers = await _carriers(url, placed)
            if len(set(carriers.values())) >= 2:
                break
        assert set(carriers) == placed  # every call was recorded, by whichever worker
        return carriers

    carriers = asyncio.run(scenario())
    instances = set(carriers.values())
    assert len(instances) == 2, carriers
    for instance in instances:
        assert re.fullmatch(r"gw-\d+", instance), instance

    # Each worker pushes its own metrics, named as in the store, and flushes them as it
    # stops (uvicorn ends a worker by re-raising SIGTERM, so exit hooks would be too late).
    two_workers.stop()
    exported = {
        attribute.value.string_value
        for body in otlp_receiver.bodies("/v1/metrics")
        for resource_metrics in ExportMetricsServiceRequest.FromString(body).resource_metrics
        for attribute in resource_metrics.resource.attributes
        if attribute.key == "service.instance.id"
    }
    assert exported == instances


def test_sip_calls_reach_workers_sharing_the_sip_port(two_workers: Workers, tmp_path: Path) -> None:
    # Every worker binds SIP_PORT (SO_REUSEPORT); the kernel picks one per source address, so
    # a few SIPp runs from different ports land on one worker or both, each call whole.
    for _ in range(4):
        run = run_sipp(
            "uac",
            two_workers.sip_port,
            cwd=tmp_path,
            calls=2,
            rate=5,
            call_ms=500,
            local_port=free_udp_port(),
            media_port=free_udp_port() & ~1,
        )
        assert run.returncode == 0 and run.count("SuccessfulCall(C)") == 2, run.output
        assert run.unexpected == 0, run.stats

    async def sip_records() -> list[dict[str, str]]:
        async with httpx.AsyncClient() as http:
            for _ in range(50):  # records are written behind the calls
                reply = await http.get(
                    two_workers.url + "/api/sessions",
                    params={"limit": 500},
                    headers={"Authorization": f"Bearer {API_TOKEN}"},
                )
                found = [r for r in reply.json()["sessions"] if r["transport"] == "sip"]
                if len(found) == 8 and all(r["end_reason"] for r in found):
                    return found
                await asyncio.sleep(0.1)
        return found

    records = asyncio.run(sip_records())
    assert len(records) == 8 and {r["end_reason"] for r in records} == {"bye"}, records
    for record in records:
        assert re.fullmatch(r"gw-\d+", record["instance"]), record
