"""Bootstrap creates the pool, queues and deployments from code, and re-running it changes nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from deployments.definitions import (
    GENERATION_ENTRYPOINT,
    GENERATION_QUEUES,
    GENERATION_TAGS,
    generation_description,
)
from ourvidz.api.dispatch import deployment_name
from tests.orchestration.conftest import OURVIDZ, Orchestra

ROOT = Path(__file__).resolve().parents[2]


def _server_state(orchestra: Orchestra) -> dict[str, Any]:
    with orchestra.client() as client:
        pool = client.read_work_pool("gpu")
        queues = {q: client.read_work_queue_by_name(q, work_pool_name="gpu") for q in GENERATION_QUEUES}
        deployments = {q: client.read_deployment_by_name(deployment_name(q)) for q in GENERATION_QUEUES}
    # Configuration only: `updated` also moves whenever a worker polls a queue or deployment.
    return {
        "pool": (pool.id, pool.type, pool.base_job_template, pool.concurrency_limit),
        "queues": {q: (w.id, w.concurrency_limit, w.is_paused, w.priority) for q, w in queues.items()},
        "deployments": {
            q: (d.id, d.entrypoint, d.work_pool_name, d.work_queue_name, sorted(d.tags), d.description,
                d.parameter_openapi_schema, d.version)
            for q, d in deployments.items()
        },
    }  # fmt: skip


def _bootstrap(orchestra: Orchestra, **env: str) -> list[str]:
    result = subprocess.run(
        [*OURVIDZ, "bootstrap"],
        env={**orchestra.stack.env, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_bootstrap_made_what_the_workers_need(orchestra: Orchestra) -> None:
    state = _server_state(orchestra)
    assert state["pool"][1] == "ourvidz-gpu"
    assert {q: limit for q, (_, limit, *_) in state["queues"].items()} == {"sdxl": 1, "wan": 1}
    for queue, (_, entrypoint, pool, work_queue, tags, *_) in state["deployments"].items():
        assert (entrypoint, pool, work_queue, tags) == (
            GENERATION_ENTRYPOINT,
            "gpu",
            queue,
            sorted(GENERATION_TAGS),
        )


def test_bootstrap_twice_changes_nothing(orchestra: Orchestra) -> None:
    before = _server_state(orchestra)
    lines = _bootstrap(orchestra)
    assert len(lines) == 5 and all(line.split()[0] == "unchanged" for line in lines), lines
    assert _server_state(orchestra) == before


def test_bootstrap_applies_a_changed_limit_and_only_that(orchestra: Orchestra) -> None:
    before = _server_state(orchestra)
    try:
        lines = _bootstrap(orchestra, OURVIDZ_SDXL_CONCURRENCY="2")
        assert [line.split()[0] for line in lines if "updated" in line] == ["updated"]
        assert "updated  work queue sdxl" in "\n".join(lines)
        after = _server_state(orchestra)
        assert after["queues"]["sdxl"][1] == 2 and after["deployments"] == before["deployments"]
    finally:
        _bootstrap(orchestra)
    assert _server_state(orchestra)["queues"]["sdxl"][1] == 1


def test_prefect_yaml_declares_the_same_deployments() -> None:
    project = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    declared = {
        d["name"]: (d["entrypoint"], d["work_pool"]["name"], d["work_pool"]["work_queue_name"], d["tags"],
                    d["description"])
        for d in project["deployments"]
    }  # fmt: skip
    assert declared == {
        q: (GENERATION_ENTRYPOINT, "gpu", q, list(GENERATION_TAGS), generation_description(q))
        for q in GENERATION_QUEUES
    }


def test_prefect_cli_starts_our_worker_type(orchestra: Orchestra) -> None:
    result = subprocess.run(
        ["prefect", "worker", "start", "--type", "ourvidz-gpu", "--pool", "gpu-cli-check", "--run-once"],
        env=orchestra.stack.env, capture_output=True, text=True, timeout=120,
        executable=str(Path(OURVIDZ[0]).with_name("prefect")),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    with orchestra.client() as client:
        assert client.read_work_pool("gpu-cli-check").type == "ourvidz-gpu"
