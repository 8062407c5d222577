"""`GET /metrics` through the real gateway: the scraped counts grow by exactly the jobs that ran."""

from __future__ import annotations

import uuid

import httpx
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from ourvidz.api.deps import SERVICE_KEY_HEADER
from ourvidz.db.models import Image
from ourvidz.job_status import JobStatus
from tests.e2e.conftest import Orchestra

SMALL = {"width": 64, "height": 64, "steps": 2}
FAST = {"job_type": "sdxl_image_fast"}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _service(orchestra: Orchestra) -> dict[str, str]:
    assert orchestra.settings.service_key is not None
    return {SERVICE_KEY_HEADER: orchestra.settings.service_key.get_secret_value()}


def _scrape(orchestra: Orchestra, headers: dict[str, str], prefix: str = "") -> Samples:
    answer = httpx.get(f"{orchestra.gateway_url}{prefix}/metrics", headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == CONTENT_TYPE_LATEST
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def _get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_count_the_jobs_run(orchestra: Orchestra) -> None:
    before = _scrape(orchestra, _service(orchestra))
    done = [orchestra.submit("sdxl_image_fast", metadata=SMALL) for _ in range(2)]
    refused = orchestra.submit_refused_at_start("sdxl_image_fast", SMALL)
    jobs = orchestra.wait_final([*done, refused])
    assert [jobs[job_id].status for job_id in done] == [JobStatus.COMPLETED] * 2
    assert jobs[refused].status is JobStatus.FAILED
    after = _scrape(orchestra, orchestra.headers(admin=True), "/functions/v1")

    def grew(name: str, **labels: str) -> float:
        return _get(after, name, **labels) - _get(before, name, **labels)

    assert grew("ourvidz_jobs_created_total", **FAST) == 3
    assert grew("ourvidz_jobs_finished_total", status="completed", **FAST) == 2
    assert grew("ourvidz_jobs_finished_total", status="failed", **FAST) == 1
    assert grew("ourvidz_job_failures_total", code="CONTENT_TIER_NOT_ALLOWED", **FAST) == 1
    assert grew("ourvidz_job_duration_seconds_count", **FAST) == 2
    assert grew("ourvidz_job_duration_seconds_bucket", le="+Inf", **FAST) == 2
    assert grew("ourvidz_job_processing_seconds_count", **FAST) == 2
    durations = [
        (jobs[job_id].completed_at - jobs[job_id].created_at).total_seconds()  # type: ignore[operator]
        for job_id in done
    ]
    assert grew("ourvidz_job_duration_seconds_sum", **FAST) == pytest.approx(sum(durations), abs=1e-3)
    # both completed within the last 5 minutes (earlier ones may have left the window meanwhile)
    assert _get(after, "ourvidz_job_processing_rate", **FAST) * 300 >= 2
    with orchestra.sessions() as session:
        files, size = session.execute(
            select(func.count(), func.sum(Image.size_bytes)).where(
                Image.job_id.in_(done), Image.size_bytes.is_not(None)
            )
        ).one()
    assert files == 2 and size > 0
    image_bucket = {"kind": "image", "bucket": "sdxl_image_fast"}
    assert grew("ourvidz_storage_files", **image_bucket) == files
    assert grew("ourvidz_storage_bytes", **image_bucket) == size
    assert _get(after, "ourvidz_queue_length", queue="sdxl") >= 0
    assert _get(after, "ourvidz_metrics_scrape_seconds") > 0


def test_metrics_are_for_the_service_key_or_admins(orchestra: Orchestra) -> None:
    for prefix in ("", "/functions/v1"):
        url = f"{orchestra.gateway_url}{prefix}/metrics"
        anonymous = httpx.get(url, timeout=30)
        assert anonymous.status_code == 401 and anonymous.json()["code"] == "UNAUTHORIZED"
        wrong_key = httpx.get(url, headers={SERVICE_KEY_HEADER: "not-the-key"}, timeout=30)
        assert wrong_key.status_code == 401
        plain = httpx.get(url, headers=orchestra.headers(uuid.uuid4()), timeout=30)
        assert plain.status_code == 403 and plain.json()["code"] == "FORBIDDEN"
        for _ in range(3):  # a scraper is never rate limited
            answer = httpx.get(url, headers=_service(orchestra), timeout=30)
            assert answer.status_code == 200 and "x-ratelimit-limit" not in answer.headers
