"""`GET /metrics`: the spec's key metrics in the Prometheus text format, for the service key or an admin.

Computed from the job database at each scrape (see `ourvidz.metrics`), so every gateway replica gives
the same answer. Not rate limited: scrapers call on a fixed interval with the service key. A database
that does not answer is the usual 503 (the scrape then counts as down).
"""

from __future__ import annotations

from functools import lru_cache

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.api.deps import GatewayDep, ServiceOrAdmin
from ourvidz.metrics import metrics_registry

router = APIRouter(tags=["metrics"])

_EXPOSITION = {
    200: {
        "description": "Prometheus text exposition format",
        "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
    }
}


@lru_cache(maxsize=8)
def _registry(sessions: sessionmaker[Session]) -> CollectorRegistry:
    return metrics_registry(sessions)


@router.get("/metrics", response_class=Response, responses=_EXPOSITION)
def metrics(_caller: ServiceOrAdmin, gw: GatewayDep) -> Response:
    """Job counts, queue lengths, durations, processing rates, failures by code, storage, enhancement
    and worker health, from the job database (a sync endpoint: the queries run in the thread pool)."""
    return Response(generate_latest(_registry(gw.sessions)), media_type=CONTENT_TYPE_LATEST)
