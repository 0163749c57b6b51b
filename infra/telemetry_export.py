"""Where the gateway's OpenTelemetry data goes: `/metrics` always, OTLP when asked for.

`session/telemetry.py` records through the OpenTelemetry API's global providers and never
decides where anything goes. This module installs the SDK behind those globals, once per
process, at start:

- metrics: an SDK `MeterProvider` with a `PrometheusMetricReader`, which registers with
  `prometheus_client`'s default registry; `gateway/metrics_route.py` serves that registry at
  `/metrics`. With an OTLP endpoint set, a periodic OTLP/HTTP exporter is added beside it.
- traces: only with an OTLP endpoint set, a `TracerProvider` whose `BatchSpanProcessor` sends
  spans over OTLP/HTTP. Without one no tracer provider is installed at all, so every span the
  session opens stays the API's free no-op.

Endpoints follow the standard variables: `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` /
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` are used as they are, `OTEL_EXPORTER_OTLP_ENDPOINT` gets
`/v1/metrics` / `/v1/traces` appended. `OTEL_METRICS_EXPORTER` / `OTEL_TRACES_EXPORTER=none`
turn one signal's export off, `OTEL_SDK_DISABLED=true` turns everything off. Headers, timeouts,
compression, the export interval and the sampler are read by the SDK from the same variables.

The resource is `service.name=voice-gateway` unless `OTEL_SERVICE_NAME` or
`OTEL_RESOURCE_ATTRIBUTES` say otherwise; `service.instance.id` is always `INSTANCE_ID`, the name
heartbeats and the ops API use, so a dashboard and `/api/sessions` agree on who carried a call.

FastAPI's built-in telemetry switches itself on once these providers exist: HTTP request
durations appear at `/metrics` (labelled by route template, never by the ids in a path), and
with traces on each request and each media websocket gets a span, the call's `voice.session`
span nesting under its websocket's.

The media path pays next to nothing: the session batches its per-frame counter (one SDK `add`
per 50 frames: 0.3 µs a frame with /metrics alone, about 0.5 µs with OTLP as well), and
exporting runs on the SDK's own threads or on a scrape.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values
from opentelemetry import metrics, trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import (
    SERVICE_INSTANCE_ID,
    SERVICE_NAME,
    OTELResourceDetector,
    Resource,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from prometheus_client import REGISTRY, CollectorRegistry

from infra.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_SERVICE_NAME = "voice-gateway"
_HTTP_PROTOBUF = "http/protobuf"


class TelemetryHandles:
    """What `configure_telemetry` installed, to flush and shut down at the end.

    `meter_provider` is None only with `OTEL_SDK_DISABLED=true`; `tracer_provider` is None
    unless traces are exported. `metrics_endpoint` / `traces_endpoint` are the OTLP URLs in use.
    """

    __slots__ = (
        "_lock",
        "_shut_down",
        "meter_provider",
        "metrics_endpoint",
        "registry",
        "tracer_provider",
        "traces_endpoint",
    )

    def __init__(
        self,
        meter_provider: MeterProvider | None,
        tracer_provider: TracerProvider | None,
        registry: CollectorRegistry,
        metrics_endpoint: str | None,
        traces_endpoint: str | None,
    ) -> None:
        self.meter_provider = meter_provider
        self.tracer_provider = tracer_provider
        self.registry = registry
        self.metrics_endpoint = metrics_endpoint
        self.traces_endpoint = traces_endpoint
        self._lock = threading.Lock()
        self._shut_down = False

    def force_flush(self, timeout_millis: int = 10_000) -> bool:
        """Exports what is pending now (spans, and metrics to OTLP); True if all went out."""
        ok = True
        if self.tracer_provider is not None:
            ok = self.tracer_provider.force_flush(timeout_millis) and ok
        if self.meter_provider is not None:
            ok = self.meter_provider.force_flush(timeout_millis) and ok
        return ok

    @property
    def shut_down(self) -> bool:
        return self._shut_down

    def shutdown(self) -> None:
        """Flushes and stops the exporters; later calls do nothing.

        The app's lifespan calls it when the server stops (`create_app(telemetry=...)`); an
        exit hook covers the other ways out, but not a SIGTERM that uvicorn re-raises.
        """
        with self._lock:
            if self._shut_down:
                return
            self._shut_down = True
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()


_current: TelemetryHandles | None = None


def configure_telemetry(
    settings: Settings,
    *,
    instance_label: bool = False,
    dotenv_path: Path | None = None,
) -> TelemetryHandles:
    """Installs the SDK behind the global OpenTelemetry API; call once per process, at start.

    `instance_label` puts `service_instance_id` on every `/metrics` series: worker processes
    sharing one port answer scrapes in turn, and without it their counters would interleave
    into one series that jumps back and forth. A single process has Prometheus' own
    `instance` label and needs none.
    """
    global _current
    if _current is not None and not _current.shut_down:
        # A second reader would serve every series twice, and the API keeps the first
        # providers anyway.
        raise RuntimeError("configure_telemetry() was already called in this process")
    _adopt_dotenv_otel(dotenv_path if dotenv_path is not None else Path(".env"))
    env = os.environ
    if _flag(env, "OTEL_SDK_DISABLED"):
        log.info("OTEL_SDK_DISABLED is set: no metrics or traces are recorded")
        _current = TelemetryHandles(None, None, REGISTRY, None, None)
        return _current

    resource = _resource(settings.instance_id)
    metrics_endpoint = _otlp_endpoint(env, "METRICS", "v1/metrics")
    traces_endpoint = _otlp_endpoint(env, "TRACES", "v1/traces")

    readers: list[MetricReader] = [
        PrometheusMetricReader(
            registry=REGISTRY,
            resource_attribute_filter=_is_instance_id if instance_label else None,
        )
    ]
    if metrics_endpoint is not None:
        # Imported only when used: the OTLP exporter pulls in protobuf and requests.
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=metrics_endpoint)))
    # Our own exit hook instead of the SDK's: `shutdown()` has usually run by then.
    meter_provider = MeterProvider(
        metric_readers=readers, resource=resource, shutdown_on_exit=False
    )
    metrics.set_meter_provider(meter_provider)

    tracer_provider = None
    if traces_endpoint is not None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        tracer_provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_endpoint))
        )
        trace.set_tracer_provider(tracer_provider)

    handles = _current = TelemetryHandles(
        meter_provider, tracer_provider, REGISTRY, metrics_endpoint, traces_endpoint
    )
    atexit.register(handles.shutdown)
    log.info(
        "telemetry: /metrics on; OTLP metrics %s; OTLP traces %s",
        metrics_endpoint or "off",
        traces_endpoint or "off",
    )
    return handles


def _resource(instance_id: str) -> Resource:
    # `Resource.create` puts the attributes it is given over the environment's; detecting the
    # environment again on top gives OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES the last
    # word, as they have for any SDK service. The instance id is ours whatever they say: it
    # must be the name the store, the heartbeats and the ops API use.
    resource = Resource.create({SERVICE_NAME: DEFAULT_SERVICE_NAME})
    resource = resource.merge(OTELResourceDetector().detect())
    return resource.merge(Resource({SERVICE_INSTANCE_ID: instance_id}))


def _is_instance_id(resource_attribute: str) -> bool:
    return resource_attribute == SERVICE_INSTANCE_ID


def _otlp_endpoint(env: Mapping[str, str], signal: str, path: str) -> str | None:
    """The OTLP/HTTP URL for one signal, or None when that signal is not exported."""
    if env.get(f"OTEL_{signal}_EXPORTER", "").strip().lower() == "none":
        return None
    specific = env.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT", "").strip()
    general = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if not (specific or general):
        return None
    protocol = (
        env.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL", "").strip()
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "").strip()
        or _HTTP_PROTOBUF
    )
    if protocol != _HTTP_PROTOBUF:
        # Sending protobuf over HTTP to a gRPC port fails on every export; say so once.
        log.error(
            "OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported (only %s): %s are not exported",
            protocol,
            _HTTP_PROTOBUF,
            signal.lower(),
        )
        return None
    return specific or f"{general.rstrip('/')}/{path}"


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() == "true"


def _adopt_dotenv_otel(path: Path) -> None:
    """`OTEL_*` set only in `.env` reach the SDK, which reads the process environment itself.

    The real environment wins, as it does for every other setting.
    """
    if not path.is_file():
        return
    for name, value in dotenv_values(path).items():
        if name.startswith("OTEL_") and value is not None:
            os.environ.setdefault(name, value)
