"""`GET /metrics`: the gateway's metrics in the Prometheus exposition format.

It serves `prometheus_client`'s default registry, where `infra.telemetry_export` registers the
OpenTelemetry reader (the `session_*` metrics) beside the client's process and runtime
collectors. Without `configure_telemetry` only the latter appear.

No authentication, as usual for a scrape endpoint (restrict it at the network edge if need
be): what it exposes is counts and latencies, never secrets or call identities. The session's
metric attributes are `code` (an error code) and `operation` (a latency name), both from fixed
vocabularies; FastAPI's HTTP metrics are labelled by route template, not by the ids in a
path. Session and call ids only ever go on spans, which are not served here. The `target_info`
series carries the resource: service name, `INSTANCE_ID`, SDK version, and whatever the
operator put in `OTEL_RESOURCE_ATTRIBUTES`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    # A plain `def`: the collection runs in the thread pool, so the event loop carrying the
    # calls' audio keeps getting turns while a large scrape is encoded.
    encoder, content_type = choose_encoder(request.headers.get("accept"))
    return Response(encoder(REGISTRY), media_type=content_type)
