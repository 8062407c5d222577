"""The gateway tier: the gateway application served in this process (uvicorn on a thread, lifespan
included: its Prefect client, event hub and dispatcher), over real HTTP and WebSockets on loopback,
against a real Prefect server started here on SQLite and bootstrapped. The job database is SQLite.
No GPU worker runs: jobs move through the gateway's own endpoints (queue, cancel, worker callbacks),
and the flow runs its dispatcher creates stay scheduled. Peers (chat worker, webhook receiver) are
real HTTP servers on loopback too.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from prefect.events.worker import EventsWorker
from prefect.settings import PREFECT_API_URL, temporary_settings
from sqlalchemy.orm import Session, sessionmaker

from deployments.bootstrap import bootstrap
from ourvidz.api.app import create_app
from ourvidz.api.deps import SERVICE_KEY_HEADER
from ourvidz.auth import Role, mint_token
from ourvidz.config import Settings
from ourvidz.db import migrate
from ourvidz.db.session import sessions_for
from ourvidz.jobs.create import ensure_profile
from ourvidz.registry.workers import CHAT, forget
from ourvidz.stack import Stack, free_port
from tests.peers import PEER_HOST
from tests.signing import callback_headers
from tests.waiting import flow_run_of


@dataclass
class Gateway:
    url: str
    app: FastAPI
    settings: Settings
    sessions: sessionmaker[Session]
    api_url: str  # the Prefect server's

    user_id: uuid.UUID  # a user of the whole tier, for tests where whose job it is does not matter

    def user(self, **profile: Any) -> uuid.UUID:
        """A new user with a profile (`tier=`, `age_verified=` as `ensure_profile` takes them)."""
        user_id = uuid.uuid4()
        ensure_profile(self.sessions, user_id, **profile)
        return user_id

    def token(self, user_id: uuid.UUID | None = None, admin: bool = False) -> str:
        assert self.settings.jwt_secret is not None
        roles = frozenset({Role.ADMIN}) if admin else frozenset()
        secret = self.settings.jwt_secret.get_secret_value()
        return mint_token(secret, "authenticated", user_id or self.user_id, roles)

    def headers(self, user_id: uuid.UUID | None = None, admin: bool = False) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token(user_id, admin)}"}

    def flow_run_of(self, job_id: str) -> uuid.UUID:
        """The job's flow run, given by the gateway's dispatcher."""
        run = flow_run_of(self.sessions, uuid.UUID(job_id), timeout=30)
        assert run is not None, "the gateway's dispatcher gave the job no flow run"
        return run

    def forget_chat_worker(self) -> None:
        """Remove the registered chat worker, so later tests see none."""
        forget(self.sessions, CHAT)

    def service(self) -> dict[str, str]:
        assert self.settings.service_key is not None
        return {SERVICE_KEY_HEADER: self.settings.service_key.get_secret_value()}

    def callback(self, body: dict[str, Any] | bytes, **signing: Any) -> httpx.Response:
        """A worker's signed `job-callback` (`signing`: as `callback_headers` takes it)."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        assert self.settings.callback_secret is not None
        headers = callback_headers(self.settings.callback_secret.get_secret_value(), raw, **signing)
        return httpx.post(f"{self.url}/job-callback", content=raw, headers=headers, timeout=30)


@pytest.fixture(scope="package")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    data_dir: Path = tmp_path_factory.mktemp("gateway")
    database = f"sqlite:///{data_dir / 'jobs.db'}"
    migrate.upgrade(database)
    # webhooks may reach the test peers (PEER_HOST), nothing else on loopback; the gateway knows its port
    port = free_port()
    settings = Settings(
        data_dir=data_dir, database_url=database, prompt_cache_check_seconds=0.5, egress_allow=[PEER_HOST],
        api_port=port,
    )  # fmt: skip
    stack = Stack(data_dir)
    try:
        api_url = stack.start_prefect_server(free_port())
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            asyncio.run(bootstrap(settings))
            app = create_app(settings)
            with serving(app, port) as url:
                sessions = sessions_for(database)
                user_id = uuid.uuid4()
                ensure_profile(sessions, user_id)
                yield Gateway(url, app, settings, sessions, api_url, user_id)
            EventsWorker.drain_all()  # the next tier's events go to its own server
    finally:
        stack.stop()


@contextmanager
def serving(app: FastAPI, port: int | None = None) -> Iterator[str]:
    """`app` served by uvicorn on a thread of this process, until the block ends; its base URL. The
    thread runs in a copy of this context, so the app sees the Prefect settings in force here."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port or free_port(), log_level="warning")
    )
    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(server.run,), name="gateway", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the gateway did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
