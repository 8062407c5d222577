"""The maintenance flows against the session's real Prefect server, GPU worker and gateway: recovery
of jobs whose run was lost, worker health, the usage report."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa
from prefect.client.schemas.actions import ArtifactCreate
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.client.schemas.objects import State, StateType
from prefect.states import Completed, Crashed, Running

from flows.maintenance.health import check_worker_health
from flows.maintenance.recovery import recover_jobs
from flows.maintenance.report import ARTIFACT_KEY as REPORT_KEY
from flows.maintenance.report import daily_usage_report
from flows.maintenance.retention import prune_runs
from ourvidz.config import get_settings
from ourvidz.db.models import Job, WorkerHealth
from ourvidz.db.types import utcnow
from ourvidz.job_status import JobStatus
from ourvidz.jobs.create import JobRequest, create_job
from ourvidz.jobs.errors import WORKER_LOST
from ourvidz.jobs.recovery import HUNG
from ourvidz.orchestration.names import deployment_name
from ourvidz.registry.workers import CHAT, register
from tests.e2e.conftest import Orchestra
from tests.peers import FakeChatWorker
from tests.waiting import wait_until

pytestmark = pytest.mark.usefixtures("as_orchestra")
SMALL = {"width": 64, "height": 64, "steps": 2}


def _job_on_a_crashed_run(orchestra: Orchestra, attempts: int, state: State | None = None) -> uuid.UUID:
    """A job that was processing on a run whose worker died: the run is Crashed (or `state`), the job
    still says processing, and it is old enough for recovery to look at it."""
    request = JobRequest(
        user_id=orchestra.user_id, job_type="sdxl_image_fast", prompt="a lighthouse", metadata=SMALL,
        flow_run_id=uuid.uuid4(),  # linked from the start (its run is made next): no dispatcher takes it
    )  # fmt: skip
    job = create_job(orchestra.sessions, request, rules=orchestra.rules).job
    with orchestra.client() as client:
        deployment = client.read_deployment_by_name(deployment_name("sdxl"))
        run = client.create_flow_run_from_deployment(
            deployment.id,
            parameters={"job_id": str(job.id), "job_type": job.job_type},
            state=state or Crashed(),
        )
    with orchestra.sessions.begin() as session:
        row = session.get_one(Job, job.id)
        row.status, row.attempts, row.flow_run_id = JobStatus.PROCESSING, attempts, run.id
        row.created_at = utcnow() - timedelta(minutes=2)
    return job.id


def test_a_job_whose_run_crashed_is_requeued_and_completes(orchestra: Orchestra) -> None:
    job_id = _job_on_a_crashed_run(orchestra, attempts=1)
    with orchestra.sessions() as session:
        crashed_run = session.get_one(Job, job_id).flow_run_id
    actions = [a for a in asyncio.run(recover_jobs()) if a["job_id"] == str(job_id)]
    assert [(a["action"], a["reason"]) for a in actions] == [
        ("requeued", "its flow run crashed (worker lost)")
    ]
    job = orchestra.wait_final([job_id])[job_id]  # the dispatcher gave it a new run
    assert (job.status, job.attempts) == (JobStatus.COMPLETED, 2) and job.flow_run_id not in (
        None,
        crashed_run,
    )
    assert [r["attempt"] for r in job.meta["recoveries"]] == [1]
    with orchestra.client() as client:
        assert client.read_flow_run(job.flow_run_id).idempotency_key == f"{job_id}:recovery-1"
    assert not [a for a in asyncio.run(recover_jobs()) if a["job_id"] == str(job_id)]  # settled


def test_a_job_whose_worker_hung_is_recovered_and_its_run_ended(orchestra: Orchestra) -> None:
    """A worker that still heartbeats (its run stays Running) but whose job made no progress for longer
    than OURVIDZ_STALL_MINUTES: the run is marked Crashed, freeing its slot, and the job runs again."""
    job_id = _job_on_a_crashed_run(orchestra, attempts=1, state=Running())
    with orchestra.sessions.begin() as session:
        row = session.get_one(Job, job_id)
        old_run = row.flow_run_id
        row.started_at = row.progressed_at = utcnow() - timedelta(minutes=11)
    actions = [a for a in asyncio.run(recover_jobs()) if a["job_id"] == str(job_id)]
    assert [(a["action"], a["reason"]) for a in actions] == [("requeued", f"{HUNG}: no progress for 11 min")]
    with orchestra.client() as client:
        assert client.read_flow_run(old_run).state.type is StateType.CRASHED
    job = orchestra.wait_final([job_id])[job_id]
    assert (job.status, job.attempts) == (JobStatus.COMPLETED, 2) and job.flow_run_id not in (None, old_run)


def test_a_job_out_of_attempts_is_failed_with_the_reason(orchestra: Orchestra) -> None:
    job_id = _job_on_a_crashed_run(orchestra, attempts=3)
    assert [a["action"] for a in asyncio.run(recover_jobs()) if a["job_id"] == str(job_id)] == ["failed"]
    with orchestra.sessions() as session:
        job = session.get_one(Job, job_id)
    assert (job.status, job.error_code) == (JobStatus.FAILED, WORKER_LOST)


def test_the_health_check_records_workers_and_passes_over_a_dead_chat_worker(orchestra: Orchestra) -> None:
    chat = FakeChatWorker()
    register(orchestra.sessions, CHAT, chat.url, "register-chat-worker")
    chat.stop()  # registered, then gone
    started = utcnow()
    try:
        observations = asyncio.run(check_worker_health())
        by_type = {(o["workerType"], o["status"]) for o in observations}
        assert ("chat", "unhealthy") in by_type and ("prefect:gpu", "healthy") in by_type
        gpu = [o for o in observations if o["workerType"] == "gpu"]  # the worker's own status endpoint
        assert gpu and all(o["status"] == "healthy" and isinstance(o["activeJobs"], int) for o in gpu)
        with orchestra.sessions() as session:
            rows = session.scalars(sa.select(WorkerHealth).where(WorkerHealth.checked_at >= started)).all()
        assert len(rows) == len(observations)
        user = orchestra.headers()
        active = httpx.get(f"{orchestra.gateway_url}/get-active-worker-url", headers=user, timeout=10).json()
        assert active["isHealthy"] is False and active["workerUrl"] == chat.url
        body = {"prompt": "a lighthouse at dusk", "jobType": "sdxl_image_fast"}
        answer = httpx.post(f"{orchestra.gateway_url}/enhance-prompt", json=body, headers=user, timeout=30)
        assert answer.json()["enhancement_strategy"] == "rules"  # not asked (and not waited for) at all
    finally:
        orchestra.forget_chat_worker()


def test_the_daily_report_counts_todays_jobs(orchestra: Orchestra) -> None:
    job_id = orchestra.submit("sdxl_image_fast", metadata=SMALL)
    orchestra.wait_final([job_id])
    report = asyncio.run(daily_usage_report())
    assert report["jobs"]["sdxl_image_fast"]["completed"] >= 1 and report["storage_bytes"] > 0
    with orchestra.client() as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[REPORT_KEY]))
        )
    assert artifacts and "sdxl_image_fast" in str(artifacts[-1].data)


def _ended_run(orchestra: Orchestra, deployment: str, final: bool = True) -> uuid.UUID:
    """A run of `deployment` that ended (or is still running), with an artifact on it."""
    with orchestra.client() as client:
        found = client.read_deployment_by_name(deployment)
        run = client.create_flow_run_from_deployment(found.id, parameters={}, state=Running())
        if final:
            client.set_flow_run_state(run.id, Completed(), force=True)
        client.create_artifact(ArtifactCreate(flow_run_id=run.id, type="markdown", data="a report"))
    return run.id


def _runs_left(orchestra: Orchestra, run_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    with orchestra.client() as client:
        return {
            r.id
            for r in client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=run_ids)))
        }


def test_retention_deletes_ended_runs_past_their_kind_s_retention_with_their_artifacts(
    orchestra: Orchestra, monkeypatch: pytest.MonkeyPatch
) -> None:
    maintenance = [_ended_run(orchestra, "refresh-prompt-cache/refresh-prompt-cache") for _ in range(3)]
    running = _ended_run(orchestra, "refresh-prompt-cache/refresh-prompt-cache", final=False)
    generation = _ended_run(orchestra, deployment_name("sdxl"))
    everything = [*maintenance, running, generation]
    assert asyncio.run(prune_runs())["maintenance runs"] == 0  # younger than a day: kept
    assert _runs_left(orchestra, everything) == set(everything)

    monkeypatch.setenv("OURVIDZ_MAINTENANCE_RUN_RETENTION_HOURS", str(1 / 3600))  # a second
    get_settings.cache_clear()
    with orchestra.client() as client:
        ended = max(client.read_flow_run(run_id).end_time for run_id in maintenance)
    wait_until(lambda: datetime.now(UTC) - ended > timedelta(seconds=1.5), 10, "the runs to be a second old")
    counts = asyncio.run(prune_runs())
    assert counts["maintenance runs"] >= 3 and counts["maintenance artifacts"] >= 3
    assert counts["generation runs"] == 0  # 30 days
    assert _runs_left(orchestra, everything) == {running, generation}  # a running one is never pruned
    with orchestra.client() as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=maintenance))
        )
    assert artifacts == []
    with orchestra.client() as client:
        client.set_flow_run_state(
            running, Completed(), force=True
        )  # what is left ends; the next run takes it
