"""Metrics and traces leaving the process: `/metrics` on a real gateway, OTLP to a local
receiver. Each test installs the SDK behind the global OpenTelemetry API, as the gateway does
at start, and puts the globals back afterwards."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import opentelemetry.metrics._internal as metrics_api
import pytest
from opentelemetry import metrics, trace
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.util._once import Once
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.app import create_app
from gateway.caller import run_call
from infra.settings import Settings, load_settings
from infra.telemetry_export import TelemetryHandles, configure_telemetry
from session.telemetry import SessionTelemetry
from tests.fakes.serve import serve_in_thread
from tests.gateway_server import run_gateway

FAST_PROVIDERS = {"STT_PROVIDER": "scripted", "TTS_PROVIDER": "tone", "AGENT_PROVIDER": "instant"}
NO_DOTENV = Path("/nonexistent/.env")

Install = Callable[..., TelemetryHandles]


def _reset_otel_globals() -> None:
    # The API lets a process set its providers once; OpenTelemetry's own test utilities
    # reset this same private state so that each test can install its own.
    metrics_api._METER_PROVIDER_SET_ONCE = Once()
    metrics_api._METER_PROVIDER = None
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None


@pytest.fixture
def install(monkeypatch: pytest.MonkeyPatch) -> Iterator[Install]:
    """`install(settings, **options)`: configure_telemetry for this test only."""
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    installed: list[TelemetryHandles] = []
    _reset_otel_globals()

    def run(settings: Settings, **options: object) -> TelemetryHandles:
        handles = configure_telemetry(settings, dotenv_path=NO_DOTENV, **options)  # type: ignore[arg-type]
        installed.append(handles)
        return handles

    yield run
    for handles in installed:
        handles.shutdown()
    _reset_otel_globals()
    # Instruments made through the global proxy before this test would otherwise keep
    # feeding the shut-down SDK; a no-op is what they had before.
    metrics_api._PROXY_METER_PROVIDER.on_set_meter_provider(metrics.NoOpMeterProvider())


def settings(instance_id: str = "gw-test") -> Settings:
    return load_settings(env={"INSTANCE_ID": instance_id}, dotenv_path=NO_DOTENV)


def samples(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def target_info(handles: TelemetryHandles) -> Sample:
    (info,) = [
        s for s in samples(generate_latest(handles.registry).decode()) if s.name == "target_info"
    ]
    return info


def one_session(session_id: str = "CAsession") -> None:
    """A short session through the global providers, as the engine records one."""
    tel = SessionTelemetry()
    tel.session_started(session_id, {"call.sid": session_id})
    for _ in range(60):
        tel.audio_processed()
    tel.turn_started("turn-1")
    with tel.provider_call("agent", "instant"):
        pass
    tel.turn_ended(interrupted=False)
    tel.session_ended("hangup")


# ------------------------------------------------------------------------ /metrics


def test_metrics_after_a_call_show_sessions_and_latencies(install: Install) -> None:
    with run_gateway(FAST_PROVIDERS) as gateway:
        install(gateway.settings)
        report = asyncio.run(
            run_call(gateway.url, ["dtmf:1#"], api_token="test-api-token", printer=None)
        )
        assert report.ok, report.errors
        reply = httpx.get(gateway.url + "/metrics")

    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    found = samples(reply.text)
    totals = [s.value for s in found if s.name == "session_sessions_total"]
    assert totals and totals[0] >= 1
    buckets = [s for s in found if s.name.startswith("session_latency") and "le" in s.labels]
    assert buckets, "no session_latency histogram buckets"
    # Counts, never identities: no series carries the call's id, in a label name or value.
    for sample in found:
        for name, value in sample.labels.items():
            assert "session" not in name and "call" not in name, sample
            assert report.call_sid not in value, sample


def test_metrics_answer_without_telemetry_configured() -> None:
    # Embedded use (tests, another server) without configure_telemetry still scrapes.
    with run_gateway(FAST_PROVIDERS) as gateway:
        reply = httpx.get(gateway.url + "/metrics")
    assert reply.status_code == 200
    assert not [s for s in samples(reply.text) if s.name.startswith("session_")]


def test_resource_names_the_service_and_the_instance(
    install: Install, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
    handles = install(settings("gw-7"))
    one_session()
    info = target_info(handles)
    assert info.labels["service_name"] == "voice-gateway"
    assert info.labels["service_instance_id"] == "gw-7"
    assert info.labels["deployment_environment"] == "test"


def test_otel_service_name_wins(install: Install, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "phones-eu")
    handles = install(settings())
    one_session()
    assert target_info(handles).labels["service_name"] == "phones-eu"


def test_instance_label_marks_every_series_for_workers(install: Install) -> None:
    handles = install(settings("gw-1-4242"), instance_label=True)
    one_session()
    text = generate_latest(handles.registry).decode()
    session_series = [s for s in samples(text) if s.name.startswith("session_")]
    assert session_series
    assert {s.labels.get("service_instance_id") for s in session_series} == {"gw-1-4242"}


def test_without_an_endpoint_no_tracer_provider_is_installed(install: Install) -> None:
    handles = install(settings())
    assert handles.tracer_provider is None
    assert handles.metrics_endpoint is None and handles.traces_endpoint is None
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    span = trace.get_tracer("t").start_span("x")
    assert not span.is_recording()


@pytest.mark.parametrize(
    ("env", "metrics_url", "traces_url"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}, "http://c:4318/v1/metrics",
         "http://c:4318/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t/x"}, None, "http://t/x"),
        ({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://m/y"}, "http://m/y", None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_TRACES_EXPORTER": "none"},
         "http://c/v1/metrics", None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
         None, None),
    ],
)  # fmt: skip
def test_otlp_endpoints_follow_the_standard_variables(
    install: Install,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    metrics_url: str | None,
    traces_url: str | None,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    handles = install(settings())
    assert (handles.metrics_endpoint, handles.traces_endpoint) == (metrics_url, traces_url)
    assert (handles.tracer_provider is not None) == (traces_url is not None)


def test_configuring_twice_is_refused(install: Install) -> None:
    install(settings())
    with pytest.raises(RuntimeError, match="already"):
        install(settings())


def test_sdk_disabled_installs_nothing(install: Install, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")
    handles = install(settings())
    assert handles.meter_provider is None and handles.tracer_provider is None
    handles.shutdown()  # harmless


# ---------------------------------------------------------------------------- OTLP


@dataclass
class Receiver:
    url: str
    posts: list[tuple[str, str, bytes]] = field(default_factory=list)

    def bodies(self, path: str) -> list[bytes]:
        return [body for p, _, body in self.posts if p == path]


@pytest.fixture
def otlp_receiver() -> Iterator[Receiver]:
    """A collector stand-in: records each OTLP/HTTP POST and answers 200."""
    receiver = Receiver("")

    async def export(request: Request) -> Response:
        receiver.posts.append(
            (request.url.path, request.headers.get("content-type", ""), await request.body())
        )
        # An empty Export*ServiceResponse is zero bytes of protobuf.
        return Response(b"", media_type="application/x-protobuf")

    app = Starlette(routes=[Route("/v1/{signal}", export, methods=["POST"])])
    with serve_in_thread(app, "otlp-receiver") as url:
        receiver.url = url
        yield receiver


def test_otlp_export_sends_metrics_and_traces(
    otlp_receiver: Receiver, install: Install, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The receiver comes first so it outlives the exporters' final flush at teardown.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_receiver.url)
    handles = install(settings("gw-otlp"))
    one_session("CAotlp")
    assert handles.force_flush()

    paths = {path for path, _, _ in otlp_receiver.posts}
    assert {"/v1/metrics", "/v1/traces"} <= paths
    for _, content_type, body in otlp_receiver.posts:
        assert content_type == "application/x-protobuf"
        assert body

    spans = ExportTraceServiceRequest.FromString(otlp_receiver.bodies("/v1/traces")[0])
    resource = {a.key: a.value.string_value for a in spans.resource_spans[0].resource.attributes}
    assert resource["service.name"] == "voice-gateway"
    assert resource["service.instance.id"] == "gw-otlp"
    names = {s.name for rs in spans.resource_spans for ss in rs.scope_spans for s in ss.spans}
    assert {"voice.session", "voice.turn", "voice.provider.agent"} <= names

    metric_names = {
        m.name
        for body in otlp_receiver.bodies("/v1/metrics")
        for rm in ExportMetricsServiceRequest.FromString(body).resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    assert {"session.sessions.total", "session.audio.processed", "session.latency"} <= metric_names


def test_shutdown_flushes_spans_still_batched(
    otlp_receiver: Receiver, install: Install, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", otlp_receiver.url + "/v1/traces")
    handles = install(settings())
    one_session()
    assert not otlp_receiver.bodies("/v1/traces")  # the batch processor is still holding them
    handles.shutdown()
    assert otlp_receiver.bodies("/v1/traces")
    handles.shutdown()  # a second call (the exit hook) does nothing


def test_the_app_flushes_telemetry_as_it_stops(
    otlp_receiver: Receiver, install: Install, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", otlp_receiver.url + "/v1/metrics")
    gateway_settings = load_settings(env=FAST_PROVIDERS, dotenv_path=NO_DOTENV)
    handles = install(gateway_settings)
    app = create_app(gateway_settings, telemetry=handles)

    async def start_and_stop() -> None:
        async with app.router.lifespan_context(app):
            one_session()
            assert not otlp_receiver.bodies("/v1/metrics")  # the periodic export is 60 s away

    # Off the main thread, like uvicorn in tests: the app leaves signal handlers alone there.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, start_and_stop()).result(30)
    assert handles.shut_down
    assert otlp_receiver.bodies("/v1/metrics")
