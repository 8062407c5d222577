"""Prometheus metrics from the job database, on SQLite and PostgreSQL: exact values for known rows."""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.api.app import create_app
from ourvidz.api.deps import SERVICE_KEY_HEADER
from ourvidz.auth import Role, mint_token
from ourvidz.catalog import JOB_TYPES
from ourvidz.config import Settings
from ourvidz.db import migrate
from ourvidz.db.models import Image, Job, Video, WorkerHealth
from ourvidz.db.types import utcnow
from ourvidz.job_status import JobStatus
from ourvidz.jobs.create import JobRequest, create_job, ensure_profile
from ourvidz.metrics import MAX_LABEL_VALUES, OTHER, UNKNOWN_ERROR, _capped, metrics_registry
from ourvidz.registry.probes import Probe
from ourvidz.registry.workers import CHAT, record_probe, register

NOW = utcnow().replace(microsecond=250_000)
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(sessions: sessionmaker[Session]) -> Samples:
    text = generate_latest(metrics_registry(sessions, clock=lambda: NOW)).decode()
    return parse(text)


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name, frozenset(labels.items())]


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (sample, labels), v in samples.items() if sample == name}


def add_job(
    sessions: sessionmaker[Session],
    user: uuid.UUID,
    job_type: str,
    status: JobStatus,
    *,
    created: float,
    started: float | None = None,
    completed: float | None = None,
    code: str | None = None,
    **columns: Any,
) -> Job:
    """A job created `created` seconds before NOW (started/completed likewise), in `status`."""
    job = create_job(sessions, JobRequest(user_id=user, job_type=job_type, prompt="a quiet harbour")).job

    def ago(seconds: float | None) -> datetime | None:
        return None if seconds is None else NOW - timedelta(seconds=seconds)

    with sessions.begin() as session:
        row = session.get_one(Job, job.id)
        row.status, row.error_code = status, code
        row.created_at, row.started_at, row.completed_at = ago(created), ago(started), ago(completed)
        for name, column_value in columns.items():
            setattr(row, name, column_value)
    return job


def test_an_empty_database_gives_zeros(sessions: sessionmaker[Session]) -> None:
    samples = scrape(sessions)
    for job_type in JOB_TYPES:
        assert value(samples, "ourvidz_jobs_created_total", job_type=job_type) == 0
        for status in ("completed", "failed", "cancelled"):
            assert value(samples, "ourvidz_jobs_finished_total", job_type=job_type, status=status) == 0
        assert value(samples, "ourvidz_job_duration_seconds_count", job_type=job_type) == 0
        assert value(samples, "ourvidz_job_duration_seconds_bucket", job_type=job_type, le="+Inf") == 0
        assert value(samples, "ourvidz_job_processing_rate", job_type=job_type) == 0
    assert value(samples, "ourvidz_queue_length", queue="sdxl") == 0
    assert value(samples, "ourvidz_queue_length", queue="wan") == 0
    assert value(samples, "ourvidz_queue_oldest_job_age_seconds", queue="wan") == 0
    assert math.isnan(value(samples, "ourvidz_enhancement_success_ratio"))
    assert value(samples, "ourvidz_active_users", window="24h") == 0
    for name in ("ourvidz_job_failures_total", "ourvidz_storage_bytes", "ourvidz_enhancements_total"):
        assert series(samples, name) == {}
    assert series(samples, "ourvidz_worker_up") == {}  # no health rows yet: nothing, not an error
    assert value(samples, "ourvidz_metrics_scrape_seconds") > 0


def test_job_counts_queues_durations_and_rates(sessions: sessionmaker[Session], user: uuid.UUID) -> None:
    done = JobStatus.COMPLETED
    add_job(sessions, user, "sdxl_image_fast", done, created=100, started=92, completed=88)  # 12 s, 4 s
    add_job(sessions, user, "sdxl_image_fast", done, created=1000, started=710, completed=640)  # 360 s, 70 s
    add_job(sessions, user, "sdxl_image_fast", done, created=200_000, started=199_990, completed=199_980)
    add_job(sessions, user, "sdxl_image_fast", JobStatus.CANCELLED, created=50, completed=40)
    add_job(sessions, user, "video_fast", JobStatus.QUEUED, created=50)
    add_job(sessions, user, "image_fast", JobStatus.QUEUED, created=20)
    add_job(sessions, user, "sdxl_image_high", JobStatus.PROCESSING, created=30, started=25)
    add_job(sessions, user, "sdxl_image_fast", JobStatus.QUEUED, created=10, flow_run_id=uuid.uuid4())
    add_job(
        sessions,
        user,
        "video_fast",
        JobStatus.FAILED,
        created=80,
        started=70,
        completed=60,
        code="GENERATION_FAILED",
    )

    samples = scrape(sessions)

    created = series(samples, "ourvidz_jobs_created_total")
    assert {dict(labels)["job_type"]: n for labels, n in created.items() if n} == {
        "sdxl_image_fast": 5, "video_fast": 2, "image_fast": 1, "sdxl_image_high": 1,
    }  # fmt: skip
    finished = {
        (dict(labels)["job_type"], dict(labels)["status"]): n
        for labels, n in series(samples, "ourvidz_jobs_finished_total").items()
        if n
    }
    assert finished == {
        ("sdxl_image_fast", "completed"): 3, ("sdxl_image_fast", "cancelled"): 1, ("video_fast", "failed"): 1,
    }  # fmt: skip
    assert value(samples, "ourvidz_jobs_active", job_type="video_fast", status="queued") == 1
    assert value(samples, "ourvidz_jobs_active", job_type="sdxl_image_high", status="processing") == 1
    assert value(samples, "ourvidz_jobs_active", job_type="sdxl_image_fast", status="queued") == 1
    assert value(samples, "ourvidz_queue_length", queue="wan") == 2
    assert value(samples, "ourvidz_queue_length", queue="sdxl") == 2
    assert value(samples, "ourvidz_queue_oldest_job_age_seconds", queue="wan") == pytest.approx(50, abs=1e-3)
    assert value(samples, "ourvidz_queue_oldest_job_age_seconds", queue="sdxl") == pytest.approx(10, abs=1e-3)
    # the two wan jobs wait for a dispatcher; the queued sdxl job has its flow run
    assert value(samples, "ourvidz_queue_undispatched", queue="wan") == 2
    assert value(samples, "ourvidz_queue_undispatched", queue="sdxl") == 0
    undispatched_age = "ourvidz_queue_oldest_undispatched_age_seconds"
    assert value(samples, undispatched_age, queue="wan") == pytest.approx(50, abs=1e-3)
    assert value(samples, undispatched_age, queue="sdxl") == 0

    # the 2-day-old completion is outside the 24 h window of the histograms
    fast = {"job_type": "sdxl_image_fast"}
    assert value(samples, "ourvidz_job_duration_seconds_count", **fast) == 2
    assert value(samples, "ourvidz_job_duration_seconds_sum", **fast) == pytest.approx(372, abs=1e-3)
    duration = {
        dict(labels)["le"]: n
        for labels, n in series(samples, "ourvidz_job_duration_seconds_bucket").items()
        if dict(labels)["job_type"] == "sdxl_image_fast"
    }
    assert duration["10.0"] == 0 and duration["15.0"] == 1 and duration["300.0"] == 1
    assert duration["600.0"] == 2 and duration["+Inf"] == 2
    assert value(samples, "ourvidz_job_processing_seconds_count", **fast) == 2
    assert value(samples, "ourvidz_job_processing_seconds_sum", **fast) == pytest.approx(74, abs=1e-3)
    assert value(samples, "ourvidz_job_processing_seconds_bucket", le="2.5", **fast) == 0
    assert value(samples, "ourvidz_job_processing_seconds_bucket", le="5.0", **fast) == 1
    assert value(samples, "ourvidz_job_processing_seconds_bucket", le="60.0", **fast) == 1
    assert value(samples, "ourvidz_job_processing_seconds_bucket", le="90.0", **fast) == 2
    assert value(samples, "ourvidz_job_duration_seconds_count", job_type="video_fast") == 0  # failed

    # one completion in the last 5 minutes
    assert value(samples, "ourvidz_job_processing_rate", **fast) == pytest.approx(1 / 300)
    assert value(samples, "ourvidz_job_processing_rate", job_type="video_fast") == 0


@pytest.mark.parametrize(
    ("stored", "label"),
    [
        ("CONTENT_TIER_NOT_ALLOWED", "CONTENT_TIER_NOT_ALLOWED"),
        ("GENERATION_FAILED", "GENERATION_FAILED"),
        ("WORKER_LOST", "WORKER_LOST"),
        ("a worker's own words", OTHER),  # a label is a code or nothing of the text
        ("A" * 41 + "_B", OTHER),  # longer than a code can be
        (None, UNKNOWN_ERROR),
    ],
)
def test_error_codes_are_bounded(
    sessions: sessionmaker[Session], user: uuid.UUID, stored: str | None, label: str
) -> None:
    add_job(sessions, user, "image_high", JobStatus.FAILED, created=10, completed=5, code=stored)
    failures = series(scrape(sessions), "ourvidz_job_failures_total")
    assert failures == {frozenset({("job_type", "image_high"), ("code", label)}): 1}


def test_failures_add_up_by_type_and_code(sessions: sessionmaker[Session], user: uuid.UUID) -> None:
    codes = {
        "video_fast": ["CONTENT_TIER_NOT_ALLOWED", "CONTENT_TIER_NOT_ALLOWED", "GENERATION_FAILED", None],
        "sdxl_image_high": ["CONTENT_TIER_NOT_ALLOWED", "WORKER_LOST"],
    }
    for job_type, kinds in codes.items():
        for code in kinds:
            add_job(sessions, user, job_type, JobStatus.FAILED, created=10, completed=5, code=code)
    add_job(sessions, user, "video_fast", JobStatus.CANCELLED, created=10, completed=5)  # not a failure
    failures = {
        (dict(labels)["job_type"], dict(labels)["code"]): n
        for labels, n in series(scrape(sessions), "ourvidz_job_failures_total").items()
    }
    assert failures == {
        ("video_fast", "CONTENT_TIER_NOT_ALLOWED"): 2, ("video_fast", "GENERATION_FAILED"): 1,
        ("video_fast", UNKNOWN_ERROR): 1, ("sdxl_image_high", "CONTENT_TIER_NOT_ALLOWED"): 1,
        ("sdxl_image_high", "WORKER_LOST"): 1,
    }  # fmt: skip


def test_label_values_are_capped() -> None:
    counts = {("video_fast", f"CODE_{n}"): float(n + 1) for n in range(MAX_LABEL_VALUES + 10)}
    capped = _capped(counts, 1)
    assert len(capped) == MAX_LABEL_VALUES
    assert sum(capped.values()) == sum(counts.values())
    assert capped["video_fast", OTHER] == sum(range(1, 12))  # the 11 least common, folded together


def test_storage_by_kind_and_bucket(sessions: sessionmaker[Session], user: uuid.UUID) -> None:
    image_job = add_job(sessions, user, "sdxl_image_fast", JobStatus.COMPLETED, created=10, completed=5)
    video_job = add_job(sessions, user, "video_fast", JobStatus.COMPLETED, created=10, completed=5)
    add_job(sessions, user, "image_fast", JobStatus.QUEUED, created=10)  # a placeholder row: no file yet
    with sessions.begin() as session:
        placeholder = session.get_one(Image, image_job.image_id)
        placeholder.bucket, placeholder.size_bytes = "sdxl_image_fast", 1000
        session.add(
            Image(user_id=user, job_id=image_job.id, image_index=1, bucket="sdxl_image_fast", size_bytes=24)
        )
        session.add(Image(user_id=user, bucket="my-own-bucket", size_bytes=500))
        session.add(Image(user_id=user, bucket="another-bucket", size_bytes=7))
        video = session.get_one(Video, video_job.video_id)
        video.bucket, video.size_bytes = "video_fast", 5_000_000_000  # beyond 32 bits
    samples = scrape(sessions)
    assert series(samples, "ourvidz_storage_bytes") == {
        frozenset({("kind", "image"), ("bucket", "sdxl_image_fast")}): 1024,
        frozenset({("kind", "image"), ("bucket", OTHER)}): 507,
        frozenset({("kind", "video"), ("bucket", "video_fast")}): 5_000_000_000,
    }
    assert value(samples, "ourvidz_storage_files", kind="image", bucket="sdxl_image_fast") == 2
    assert value(samples, "ourvidz_storage_files", kind="image", bucket=OTHER) == 2
    assert value(samples, "ourvidz_storage_files", kind="video", bucket="video_fast") == 1


def test_enhancement_results_and_token_ratio(sessions: sessionmaker[Session], user: uuid.UUID) -> None:
    def enhanced(strategy: str, details: dict[str, Any] | None) -> None:
        meta = {"width": 64} | ({"enhancement": details} if details is not None else {})
        add_job(
            sessions, user, "image7b_fast_enhanced", JobStatus.COMPLETED, created=10, completed=5,
            enhancement_strategy=strategy, meta=meta,
        )  # fmt: skip

    enhanced("chat_worker", {"token_count": 60, "original_token_count": 20, "compression_applied": False})
    enhanced("chat_worker", {"token_count": 75, "original_token_count": 50, "compression_applied": True})
    enhanced("rules_fallback", {"token_count": 30, "original_token_count": 40, "compression_applied": True})
    enhanced("local_llm", {"token_count": 9, "original_token_count": 0})  # no ratio for an empty original
    enhanced("none", None)  # not enhanced
    add_job(sessions, user, "image_fast", JobStatus.QUEUED, created=5)  # never reached enhancement
    samples = scrape(sessions)
    assert series(samples, "ourvidz_enhancements_total") == {
        frozenset({("strategy", "chat_worker")}): 2,
        frozenset({("strategy", "rules_fallback")}): 1,
        frozenset({("strategy", "local_llm")}): 1,
    }
    assert value(samples, "ourvidz_enhancement_success_ratio") == pytest.approx(3 / 4)
    assert value(samples, "ourvidz_enhancement_token_ratio_count", strategy="chat_worker") == 2
    assert value(samples, "ourvidz_enhancement_token_ratio_sum", strategy="chat_worker") == pytest.approx(4.5)
    assert value(samples, "ourvidz_enhancement_token_ratio_count", strategy="rules_fallback") == 1
    assert value(samples, "ourvidz_enhancement_token_ratio_sum", strategy="rules_fallback") == pytest.approx(
        0.75
    )
    assert value(samples, "ourvidz_enhancement_token_ratio_count", strategy="local_llm") == 0
    assert value(samples, "ourvidz_enhancement_compressed_total", strategy="chat_worker") == 1
    assert value(samples, "ourvidz_enhancement_compressed_total", strategy="rules_fallback") == 1
    assert value(samples, "ourvidz_enhancement_compressed_total", strategy="local_llm") == 0


def test_active_users_by_window(sessions: sessionmaker[Session], user: uuid.UUID) -> None:
    others = [uuid.uuid4(), uuid.uuid4()]
    for other in others:
        ensure_profile(sessions, other)
    add_job(sessions, user, "sdxl_image_fast", JobStatus.QUEUED, created=60)
    add_job(sessions, user, "sdxl_image_fast", JobStatus.QUEUED, created=120)
    add_job(sessions, others[0], "sdxl_image_fast", JobStatus.QUEUED, created=7200)
    add_job(sessions, others[1], "sdxl_image_fast", JobStatus.QUEUED, created=3 * 86400)
    samples = scrape(sessions)
    assert value(samples, "ourvidz_active_users", window="1h") == 1
    assert value(samples, "ourvidz_active_users", window="24h") == 2


def test_worker_health_latest_check_per_worker(sessions: sessionmaker[Session]) -> None:
    def check(worker_type: str, name: str | None, status: str, ms: float | None, ago: float) -> None:
        with sessions.begin() as session:
            session.add(
                WorkerHealth(
                    worker_type=worker_type, worker_name=name, status=status, response_time_ms=ms,
                    checked_at=NOW - timedelta(seconds=ago),
                )
            )  # fmt: skip

    check("sdxl", "gpu-1", "healthy", 15, ago=120)
    check("sdxl", "gpu-1", "unhealthy", None, ago=60)  # the latest one counts
    check("wan", "gpu-2", "unhealthy", 900, ago=90)
    check("wan", "gpu-2", "healthy", 250, ago=30)
    check("video", None, "healthy", 40, ago=10)
    check("wan", "gone", "healthy", 10, ago=3 * 86400)  # outside the window
    url = "http://user:secret@chat.local:8080/v1"  # the chat worker's last probe, kept with its registration
    register(sessions, CHAT, url, "register-chat-worker")
    record_probe(sessions, CHAT, "", url, Probe(True, 0.12))
    samples = scrape(sessions)
    assert series(samples, "ourvidz_worker_up") == {
        frozenset({("worker_type", "sdxl"), ("worker_name", "gpu-1")}): 0,
        frozenset({("worker_type", "wan"), ("worker_name", "gpu-2")}): 1,
        frozenset({("worker_type", "video"), ("worker_name", "")}): 1,
        frozenset({("worker_type", "chat"), ("worker_name", "chat.local:8080")}): 1,  # no credentials
    }
    assert series(samples, "ourvidz_worker_response_seconds") == {
        frozenset({("worker_type", "wan"), ("worker_name", "gpu-2")}): pytest.approx(0.25),
        frozenset({("worker_type", "video"), ("worker_name", "")}): pytest.approx(0.04),
        frozenset({("worker_type", "chat"), ("worker_name", "chat.local:8080")}): pytest.approx(0.12),
    }
    checked = value(
        samples, "ourvidz_worker_last_check_timestamp_seconds", worker_type="sdxl", worker_name="gpu-1"
    )
    assert checked == pytest.approx((NOW - timedelta(seconds=60)).timestamp(), abs=1e-3)

    check("chat", "chat-a", "unhealthy", 2000, ago=1)  # a health-flow row replaces the registry's probe
    chat = {
        labels: up for labels, up in series(scrape(sessions), "ourvidz_worker_up").items()
        if ("worker_type", "chat") in labels
    }  # fmt: skip
    assert chat == {frozenset({("worker_type", "chat"), ("worker_name", "chat-a")}): 0}


def test_registering_queries_nothing() -> None:
    class NoSessions:
        def __call__(self) -> Session:
            raise AssertionError("describe must not reach the database")

    registry = metrics_registry(NoSessions())  # type: ignore[arg-type]
    assert registry is not None


@pytest.fixture
def app_settings(tmp_path: Path, sqlite_url: str) -> Settings:
    migrate.upgrade(sqlite_url)
    return Settings(data_dir=tmp_path, database_url=sqlite_url)


def test_endpoint_needs_the_service_key_or_an_admin(app_settings: Settings) -> None:
    client = TestClient(create_app(app_settings))  # no lifespan: the endpoint needs no Prefect
    assert app_settings.jwt_secret is not None and app_settings.service_key is not None
    secret = app_settings.jwt_secret.get_secret_value()

    def bearer(roles: frozenset[Role]) -> dict[str, str]:
        return {"authorization": f"Bearer {mint_token(secret, 'authenticated', uuid.uuid4(), roles)}"}

    for prefix in ("", "/functions/v1"):
        anonymous = client.get(f"{prefix}/metrics")
        assert anonymous.status_code == 401 and anonymous.json()["code"] == "UNAUTHORIZED"
        wrong_key = client.get(f"{prefix}/metrics", headers={SERVICE_KEY_HEADER: "not-the-key"})
        assert wrong_key.status_code == 401
        plain = client.get(f"{prefix}/metrics", headers=bearer(frozenset()))
        assert plain.status_code == 403 and plain.json()["code"] == "FORBIDDEN"
        for headers in (
            {SERVICE_KEY_HEADER: app_settings.service_key.get_secret_value()},
            bearer(frozenset({Role.ADMIN})),
        ):
            answer = client.get(f"{prefix}/metrics", headers=headers)
            assert answer.status_code == 200, answer.text
            assert answer.headers["content-type"] == CONTENT_TYPE_LATEST
            assert "x-ratelimit-limit" not in answer.headers
            assert value(parse(answer.text), "ourvidz_jobs_created_total", job_type="video_fast") == 0
