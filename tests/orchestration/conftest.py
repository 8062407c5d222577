"""A real Prefect server, the job database, bootstrap and a GPU worker process, shared by the session.

The worker runs as its own OS process (`ourvidz worker`), polls the real server and writes to the
same SQLite job database and storage folder that the tests read.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_API_URL, temporary_settings
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.api.dispatch import dispatch_job
from ourvidz.config import Settings
from ourvidz.db import migrate
from ourvidz.db.models import Job
from ourvidz.db.session import sessions_for
from ourvidz.jobs.create import create_job, ensure_profile
from ourvidz.stack import Stack, free_port, wait_for_http

OURVIDZ = [sys.executable, "-m", "ourvidz"]


@dataclass
class Orchestra:
    """Everything a flow test needs: settings shared with the worker, sessions, API and worker URLs."""

    settings: Settings
    sessions: sessionmaker[Session]
    api_url: str
    worker_health_url: str
    stack: Stack
    user_id: uuid.UUID

    def client(self) -> SyncPrefectClient:
        return get_client(sync_client=True)

    def submit(self, job_type: str, prompt: str = "a lighthouse at dusk", **kwargs: object) -> uuid.UUID:
        job = create_job(self.sessions, user_id=self.user_id, job_type=job_type, prompt=prompt, **kwargs)  # type: ignore[arg-type]
        asyncio.run(dispatch_job(self.sessions, job.id, job_type))
        return job.id

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

    def worker_status(self) -> dict:
        return httpx.get(self.worker_health_url, timeout=5).json()


@pytest.fixture(scope="session")
def orchestra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orchestra]:
    data_dir: Path = tmp_path_factory.mktemp("orchestra")
    env = {name: value for name, value in os.environ.items() if not name.startswith("OURVIDZ_")}
    env["OURVIDZ_DATA_DIR"] = str(data_dir)
    stack = Stack(data_dir, env=env)
    try:
        api_url = stack.start_prefect_server(free_port())
        settings = Settings(data_dir=data_dir)
        migrate.upgrade(settings.database_url)
        stack.run_once("bootstrap", [*OURVIDZ, "bootstrap"])
        health_port = free_port()
        worker = stack.start(
            "gpu-worker", [*OURVIDZ, "worker", "--limit", "8", "--health-port", str(health_port)]
        )
        health_url = f"http://127.0.0.1:{health_port}/health"
        wait_for_http(health_url, 300, worker)
        sessions = sessions_for(settings.database_url)
        user_id = uuid.uuid4()
        ensure_profile(sessions, user_id)
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            yield Orchestra(settings, sessions, api_url, health_url, stack, user_id)
    finally:
        stack.stop()
