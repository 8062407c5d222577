"""The gateway application: the spec's endpoints under `/functions/v1/` and at the root."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from ourvidz.api.dispatch import Dispatcher
from ourvidz.api.errors import BodyLimit, install_error_handlers
from ourvidz.api.ratelimit import RateLimits
from ourvidz.api.realtime import EventHub
from ourvidz.api.realtime import router as realtime_router
from ourvidz.api.replay import ReplayGuard
from ourvidz.api.routes import callbacks, chat, enhancement, jobs, metrics, webhooks, workers
from ourvidz.api.state import Gateway
from ourvidz.config import Settings, get_settings
from ourvidz.db.session import sessions_for
from ourvidz.storage import Storage

SPEC_PREFIX = "/functions/v1"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    gw = Gateway(
        settings=settings,
        sessions=sessions_for(settings.database_url),
        storage=Storage(settings.storage_url),
        limits=RateLimits(settings),
        replays=ReplayGuard(settings.callback_tolerance_seconds, settings.redis_url),
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        gw.dispatcher = Dispatcher(gw.sessions, settings.work_pool, inline=settings.dispatch == "inline")
        gw.events = EventHub()
        await gw.dispatcher.start()
        await gw.events.start()
        # what startup loaded (Prefect, FastAPI, SQLAlchemy) lives as long as the process: moved out of
        # the collector's generations, it is not rescanned by every full collection during requests
        gc.freeze()
        try:
            yield
        finally:
            await gw.events.stop()
            await gw.dispatcher.stop()

    app = FastAPI(
        title="OurVidz gateway",
        version="0.1.0",
        description="The OurVidz HTTP API (Supabase edge-function paths), backed by Prefect flows.",
        lifespan=lifespan,
    )
    app.state.gateway = gw
    install_error_handlers(app)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    api = APIRouter()
    for module in (jobs, callbacks, enhancement, chat, workers, webhooks, metrics):
        api.include_router(module.router)
    app.include_router(api)
    app.include_router(api, prefix=SPEC_PREFIX, include_in_schema=False)
    app.include_router(realtime_router)
    app.include_router(realtime_router, prefix=SPEC_PREFIX, include_in_schema=False)

    @app.get("/health", tags=["meta"], include_in_schema=False)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app
