"""The gateway application: the spec's endpoints under `/functions/v1/` and at the root."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI

from ourvidz.api.deps import Gateway
from ourvidz.api.docs import add_callback_security, install_docs
from ourvidz.api.errors import BodyLimit, install_error_handlers
from ourvidz.api.hub import EventHub
from ourvidz.api.ratelimit import RateLimits
from ourvidz.api.realtime import router as realtime_router
from ourvidz.api.replay import ReplayGuard
from ourvidz.api.routes import callbacks, chat, enhancement, jobs, metrics, webhooks, workers
from ourvidz.config import Settings, get_settings
from ourvidz.db.session import sessions_for
from ourvidz.egress import policies
from ourvidz.jobs.dispatch import run_dispatcher
from ourvidz.jobs.lifecycle import Announcer
from ourvidz.jobs.references import ReferenceRules
from ourvidz.orchestration.pool import PoolWatch
from ourvidz.orchestration.runs import FlowRuns
from ourvidz.policy import warm_up
from ourvidz.storage import Storage
from ourvidz.webhooks import WebhookSender

SPEC_PREFIX = "/functions/v1"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    sessions = sessions_for(settings.database_url)
    runs = FlowRuns()
    user_urls, worker_urls = policies(settings)  # resolved once: the own services' names
    gw = Gateway(
        settings=settings,
        sessions=sessions,
        storage=Storage(settings.storage_url),
        limits=RateLimits(settings),
        replays=ReplayGuard(settings.callback_tolerance_seconds, settings.redis_url),
        runs=runs,
        pool=PoolWatch(runs, settings.work_pool),
        announcer=Announcer(sessions, WebhookSender.of(settings, user_urls), background=True),
        rules=ReferenceRules.of(settings, user_urls),
        worker_egress=worker_urls,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await runs.open()
        gw.events = EventHub()
        await gw.events.start()
        gw.pool.start()
        dispatcher = None
        if settings.gateway_dispatches:
            dispatcher = asyncio.create_task(
                run_dispatcher(sessions, runs, settings.database_url, gw.announcer), name="ourvidz-dispatcher"
            )
        # the semantic content model loads in the background (seconds): a check that needs it meanwhile waits
        warm = asyncio.create_task(asyncio.to_thread(warm_up, gw.policy), name="ourvidz-content-model")
        # what startup loaded (Prefect, FastAPI, SQLAlchemy) lives as long as the process: moved out of
        # the collector's generations, it is not rescanned by every full collection during requests
        gc.freeze()
        try:
            yield
        finally:
            await asyncio.gather(warm, return_exceptions=True)
            if dispatcher is not None:  # a dispatch cut short is redone by the next dispatcher: same key
                dispatcher.cancel()
                await asyncio.gather(dispatcher, return_exceptions=True)
            await gw.pool.stop()
            await gw.events.stop()
            await asyncio.to_thread(gw.announcer.close)
            await runs.close()

    app = FastAPI(
        title="OurVidz gateway",
        version="0.1.0",
        description="The OurVidz HTTP API (Supabase edge-function paths), backed by Prefect flows.",
        lifespan=lifespan,
        docs_url=None,  # served from the package's assets instead of a CDN (`install_docs`)
        redoc_url=None,
    )
    app.state.gateway = gw
    install_error_handlers(app)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    api = APIRouter()
    routers = [module.router for module in (jobs, callbacks, enhancement, chat, workers, webhooks, metrics)]
    for router in routers:
        api.include_router(router)
    app.include_router(api)
    app.include_router(api, prefix=SPEC_PREFIX, include_in_schema=False)
    app.include_router(realtime_router)
    app.include_router(realtime_router, prefix=SPEC_PREFIX, include_in_schema=False)
    install_docs(app)

    generated = app.openapi

    def openapi() -> dict[str, Any]:
        """FastAPI's document plus the models of bodies that routes read raw (the signed callback) and
        the security of the callback (its key is checked by hand; the other operations' schemes come
        from their caller dependencies)."""
        schema = generated()
        schema.setdefault("components", {}).setdefault("schemas", {}).update(callbacks.SCHEMAS)
        add_callback_security(schema, routers)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/health", tags=["meta"], include_in_schema=False)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app
