"""The end-to-end tier: the stack as real processes, shared by the session.

A real Prefect server, the job database on PostgreSQL, bootstrap, a GPU worker process (`ourvidz
worker`, tiny models on the CPU) and a gateway process (`ourvidz api`, which runs the dispatcher).
Tests record jobs through the core or the gateway's HTTP API; the gateway's dispatcher, woken by
each job's commit, creates their flow runs and the worker runs them.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_API_URL, temporary_settings
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.auth import Role, mint_token
from ourvidz.config import Settings, get_settings
from ourvidz.db import migrate
from ourvidz.db.models import Job, Profile
from ourvidz.db.session import sessions_for
from ourvidz.job_status import JobStatus
from ourvidz.jobs.create import JobRequest, create_job, ensure_profile
from ourvidz.jobs.references import ReferenceRules
from ourvidz.jobs.wake import wake_dispatchers
from ourvidz.policy import ContentTier
from ourvidz.registry.workers import CHAT, forget
from ourvidz.stack import Stack, free_port, wait_for_http
from tests.conftest import private_schema
from tests.peers import PEER_HOST
from tests.signing import callback_headers

OURVIDZ = [sys.executable, "-m", "ourvidz"]


@dataclass
class Orchestra:
    """Everything a flow or gateway test needs: settings shared with the processes, sessions, URLs."""

    settings: Settings
    sessions: sessionmaker[Session]
    api_url: str
    worker_health_url: str
    gateway_url: str
    stack: Stack
    user_id: uuid.UUID

    def token(self, user_id: uuid.UUID | None = None, admin: bool = False) -> str:
        assert self.settings.jwt_secret is not None
        roles = frozenset({Role.ADMIN}) if admin else frozenset()
        return mint_token(
            self.settings.jwt_secret.get_secret_value(), "authenticated", user_id or self.user_id, roles
        )

    def headers(self, user_id: uuid.UUID | None = None, admin: bool = False) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token(user_id, admin)}"}

    def client(self) -> SyncPrefectClient:
        return get_client(sync_client=True)

    def submit(
        self,
        job_type: str,
        prompt: str = "a lighthouse at dusk",
        user_id: uuid.UUID | None = None,
        **fields: Any,
    ) -> uuid.UUID:
        """Record a job (the gateway's dispatcher gives it its flow run)."""
        request = JobRequest(user_id=user_id or self.user_id, job_type=job_type, prompt=prompt, **fields)
        return create_job(self.sessions, request, rules=self.rules).job.id

    @property
    def rules(self) -> ReferenceRules:
        """What the orchestra's gateway allows of a job (its webhooks may reach the test peers)."""
        return ReferenceRules.of(self.settings)

    def submit_refused_at_start(self, job_type: str, metadata: dict[str, Any]) -> uuid.UUID:
        """A job asking for the explicit tier, accepted while its owner's profile allowed it, whose owner
        loses the age verification before it starts: the flow's validate stage refuses it."""
        user_id = uuid.uuid4()
        ensure_profile(self.sessions, user_id, tier=ContentTier.EXPLICIT, age_verified=True)
        held = uuid.uuid4()  # a run id of no run: no dispatcher takes the job until it is cleared
        metadata = {**metadata, "content_tier": "explicit"}
        request = JobRequest(
            user_id=user_id, job_type=job_type, prompt="x", metadata=metadata, flow_run_id=held
        )
        job_id = create_job(self.sessions, request, rules=self.rules).job.id
        with self.sessions.begin() as session:
            session.get_one(Profile, user_id).age_verified = False
            session.get_one(Job, job_id).flow_run_id = None
            wake_dispatchers(session)
        return job_id

    def wait_final(self, job_ids: list[uuid.UUID], timeout: float = 180) -> dict[uuid.UUID, Job]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.stack.check_alive()
            with self.sessions() as session:
                jobs = {job_id: session.get_one(Job, job_id) for job_id in job_ids}
            if all(job.status.is_final for job in jobs.values()):
                return jobs
            time.sleep(0.2)
        raise AssertionError(f"jobs not final after {timeout} s: {[(j.id, j.status) for j in jobs.values()]}")

    def wait_flow_run(self, job: Job, timeout: float = 60) -> FlowRun:
        """The job's flow run once it is final (the callback stage runs after the job row is final)."""
        assert job.flow_run_id is not None
        deadline = time.monotonic() + timeout
        with self.client() as client:
            while True:
                run = client.read_flow_run(job.flow_run_id)
                if (run.state and run.state.is_final()) or time.monotonic() > deadline:
                    return run
                time.sleep(0.2)

    def wait_generating(self, job_id: uuid.UUID, timeout: float = 120) -> Job:
        """The job once it is generating (processing, with some progress)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.sessions() as session:
                job = session.get_one(Job, job_id)
            if job.status is JobStatus.PROCESSING and job.progress > 0:
                return job
            assert time.monotonic() < deadline and not job.status.is_final, job.status
            time.sleep(0.1)

    def forget_chat_worker(self) -> None:
        """Remove the registered chat worker, so later tests of the session see none."""
        forget(self.sessions, CHAT)

    def worker_status(self) -> dict:
        return httpx.get(self.worker_health_url, timeout=5).json()


LEFT_BEHIND_SECONDS = 180.0  # what the session's worker gets to end the jobs still going at its end


@pytest.fixture(scope="session")
def orchestra_database(postgres_admin: sa.Engine) -> Iterator[str]:
    """The job database of the session's processes: a private PostgreSQL schema."""
    with private_schema(postgres_admin, "orch") as url:
        yield url


@pytest.fixture(scope="session")
def orchestra(tmp_path_factory: pytest.TempPathFactory, orchestra_database: str) -> Iterator[Orchestra]:
    data_dir: Path = tmp_path_factory.mktemp("orchestra")
    env = {name: value for name, value in os.environ.items() if not name.startswith("OURVIDZ_")}
    env.update({"OURVIDZ_DATA_DIR": str(data_dir), "OURVIDZ_DATABASE_URL": orchestra_database})
    env["OURVIDZ_PROMPT_CACHE_CHECK_SECONDS"] = "0.5"  # a cache refresh reaches the processes quickly
    env["OURVIDZ_WAN_I2V_MODEL"] = "tiny"  # Wan jobs may take a first frame (the tiny image-to-video model)
    env["OURVIDZ_WAN_FLF2V_MODEL"] = "tiny"  # and a last one
    env["OURVIDZ_EGRESS_ALLOW"] = json.dumps([PEER_HOST])  # webhooks and references may reach test peers
    stack = Stack(data_dir, env=env)
    try:
        api_url = stack.start_prefect_server(free_port())
        settings = Settings(
            data_dir=data_dir, database_url=orchestra_database, wan_i2v_model="tiny", wan_flf2v_model="tiny",
            egress_allow=[PEER_HOST],
        )  # fmt: skip
        migrate.upgrade(settings.database_url)
        stack.run_once("bootstrap", [*OURVIDZ, "bootstrap"])
        gateway_port = free_port()  # the address of the file links on run pages
        stack.env["OURVIDZ_PUBLIC_URL"] = f"http://127.0.0.1:{gateway_port}"
        health_port = free_port()
        worker = stack.start(
            "gpu-worker", [*OURVIDZ, "worker", "--limit", "8", "--health-port", str(health_port)]
        )
        health_url = f"http://127.0.0.1:{health_port}/health"
        wait_for_http(health_url, 300, worker)
        gateway = stack.start("gateway", [*OURVIDZ, "api", "--port", str(gateway_port)])
        gateway_url = f"http://127.0.0.1:{gateway_port}"
        wait_for_http(f"{gateway_url}/health", 60, gateway)
        sessions = sessions_for(settings.database_url)
        user_id = uuid.uuid4()
        ensure_profile(sessions, user_id)
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            yield Orchestra(settings, sessions, api_url, health_url, gateway_url, stack, user_id)
        _no_job_left_behind(sessions)
    finally:
        stack.stop()


def _no_job_left_behind(sessions: sessionmaker[Session], timeout: float = LEFT_BEHIND_SECONDS) -> None:
    """Every job the tier made ends final, with the stack still running to end it: a test that leaves
    one queued or processing for ever is a defect (no job may stay non-final without a live owner)."""
    deadline = time.monotonic() + timeout
    while True:
        with sessions() as session:
            left = session.execute(
                sa.select(
                    Job.id, Job.job_type, Job.status, Job.flow_run_id, Job.runner, Job.original_prompt
                ).where(Job.status.in_([JobStatus.QUEUED, JobStatus.PROCESSING]))
            ).all()
        if not left:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{len(left)} job(s) left non-final by the tier: " + "; ".join(map(str, left[:20])))
        time.sleep(1)


@contextmanager
def extra_gateway(
    orchestra: Orchestra,
    name: str,
    prefect_url: str,
    database_url: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> Iterator[str]:
    """Another `ourvidz api` process beside the session's, with its own Prefect URL (and database)."""
    # No client retries: calls to an unreachable Prefect fail at once instead of backing off.
    env = {**orchestra.stack.env, "PREFECT_API_URL": prefect_url, "PREFECT_CLIENT_MAX_RETRIES": "0"}
    env.update(extra_env or {})
    if database_url is not None:
        env["OURVIDZ_DATABASE_URL"] = database_url
    stack = Stack(orchestra.settings.data_dir, env=env)
    port = free_port()
    try:
        process = stack.start(name, [*OURVIDZ, "api", "--port", str(port)])
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/health", 60, process)
        yield url
    finally:
        stack.stop()


@pytest.fixture
def as_orchestra(orchestra: Orchestra, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Flows run in this test process read the settings of the orchestra's processes."""
    monkeypatch.setenv("OURVIDZ_DATA_DIR", str(orchestra.settings.data_dir))
    monkeypatch.setenv("OURVIDZ_DATABASE_URL", orchestra.settings.database_url)
    monkeypatch.setenv("OURVIDZ_EGRESS_ALLOW", json.dumps(orchestra.settings.egress_allow))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def private_database(postgres_admin: sa.Engine) -> Iterator[str]:
    """A migrated job database nobody else uses (jobs in it are never run)."""
    with private_schema(postgres_admin, "gw") as url:
        migrate.upgrade(url)
        yield url


def signed_callback(orchestra: Orchestra, url: str, body: dict[str, Any]) -> httpx.Response:
    """A worker's signed `POST /job-callback` to the gateway at `url`."""
    raw = json.dumps(body).encode()
    assert orchestra.settings.callback_secret is not None
    headers = callback_headers(orchestra.settings.callback_secret.get_secret_value(), raw)
    return httpx.post(f"{url}/job-callback", content=raw, headers=headers, timeout=30)
