"""Bootstrap creates the pool, queues and deployments from code, and re-running it changes nothing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import yaml
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.flows import load_flow_from_entrypoint
from prefect.settings import PREFECT_API_URL, temporary_settings

from deployments.automations import CRASH_SILENT_RUNS, RECOVER_CRASHED_JOBS
from deployments.definitions import (
    DEFAULT_JOB_TYPES,
    GENERATION_ENTRYPOINT,
    GENERATION_QUEUES,
    GENERATION_TAGS,
    MAINTENANCE_CONCURRENCY,
    MAINTENANCE_QUEUE,
    MAINTENANCE_TAGS,
    RECOVERY_DEPLOYMENT,
    generation_description,
    generation_queues,
    maintenance_flows,
)
from ourvidz.config import Settings
from ourvidz.orchestration.names import deployment_name
from ourvidz.stack import Stack, free_port
from tests.e2e.conftest import OURVIDZ, Orchestra

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
                d.parameter_openapi_schema, d.parameters, d.version,
                getattr(d.global_concurrency_limit, "limit", None))
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
    assert {q: limit for q, (_, limit, *_) in state["queues"].items()} == {"sdxl": 4, "wan": 2}
    for queue, (_, entrypoint, pool, work_queue, tags, _, schema, parameters, _, limit) in state[
        "deployments"
    ].items():
        assert limit == state["queues"][queue][1]  # the queue's limit, enforced at Pending as well
        assert (entrypoint, pool, work_queue, tags) == (
            GENERATION_ENTRYPOINT,
            "gpu",
            queue,
            sorted(GENERATION_TAGS),
        )
        assert parameters == {"job_type": DEFAULT_JOB_TYPES[queue]}  # the operator's run form starts there
        assert {"job_type", "prompt", "num_images", "seed", "user_id", "webhook_url", "job_id"} <= set(
            schema["properties"]
        )


def test_concurrency_limits_are_named_for_their_deployment(orchestra: Orchestra) -> None:
    with orchestra.client() as client:
        names = {
            q: getattr(
                client.read_deployment_by_name(deployment_name(q)).global_concurrency_limit, "name", None
            )
            for q in GENERATION_QUEUES
        }
    assert names == {"sdxl": "generate-sdxl", "wan": "generate-wan"}


def test_bootstrap_twice_changes_nothing(orchestra: Orchestra) -> None:
    before = _server_state(orchestra)
    _bootstrap(orchestra)  # whatever earlier tests did to the server, two runs in a row: the second
    lines = _bootstrap(orchestra)  # must find everything as it wants it ("updated (why)" otherwise)
    # operator profile, pool, 2 queues, 2 generation deployments, maintenance pool and flows, 2 automations
    assert len(lines) == 7 + len(maintenance_flows(Settings())) + 2, lines
    assert [line for line in lines if line.split()[0] != "unchanged"] == []
    assert _server_state(orchestra) == before


def test_bootstrap_applies_a_changed_limit_and_only_that(orchestra: Orchestra) -> None:
    before = _server_state(orchestra)
    try:
        lines = _bootstrap(orchestra, OURVIDZ_SDXL_CONCURRENCY="2")
        changed = [line.strip() for line in lines if line.split()[0] != "unchanged"]
        assert changed == [
            "updated  work queue sdxl",
            f"updated (concurrency)  deployment {deployment_name('sdxl')}",
        ]
        after = _server_state(orchestra)
        assert after["queues"]["sdxl"][1] == 2 and after["deployments"]["sdxl"][-1] == 2
        assert after["deployments"]["wan"] == before["deployments"]["wan"]
    finally:
        _bootstrap(orchestra)
    state = _server_state(orchestra)
    assert state["queues"]["sdxl"][1] == state["deployments"]["sdxl"][-1] == 4  # 1 GPU worker x 4 slots


def test_bootstrap_moves_the_daily_report_to_the_configured_hour(orchestra: Orchestra) -> None:
    try:
        lines = _bootstrap(orchestra, OURVIDZ_USAGE_REPORT_HOUR="5")
        changed = [line.strip() for line in lines if line.split()[0] != "unchanged"]
        assert changed == ["updated (schedule)  deployment usage-report/daily-usage-report"]
        with orchestra.client() as client:
            report = client.read_deployment_by_name("usage-report/daily-usage-report")
        assert [s.schedule.cron for s in report.schedules] == ["0 5 * * *"]  # type: ignore[union-attr]
    finally:
        _bootstrap(orchestra)


def test_prefect_yaml_declares_the_same_deployments() -> None:
    project = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    declared = {
        (d["name"], d["entrypoint"]): (d["work_pool"]["name"], d["work_pool"]["work_queue_name"], d["tags"],
                                       d["description"], d.get("schedules", []),
                                       d.get("concurrency_limit"), d.get("parameters"))
        for d in project["deployments"]
    }  # fmt: skip
    assert declared == {
        **{
            (q.name, GENERATION_ENTRYPOINT): ("gpu", q.name, list(GENERATION_TAGS),
                                              generation_description(q.name), [], q.concurrency_limit,
                                              {"job_type": DEFAULT_JOB_TYPES[q.name]})
            for q in generation_queues(Settings())
        },
        **{
            (f.name, f.entrypoint): (
                "maintenance", MAINTENANCE_QUEUE, list(MAINTENANCE_TAGS), f.description,
                [{"interval": f.interval_seconds}] if f.interval_seconds else
                [{"cron": f.cron, "timezone": "UTC"}] if f.cron else [], MAINTENANCE_CONCURRENCY, None,
            )
            for f in maintenance_flows(Settings())
        },
    }  # fmt: skip


def test_bootstrap_deploys_the_maintenance_flows_on_their_schedules(orchestra: Orchestra) -> None:
    with orchestra.client() as client:
        assert client.read_work_pool("maintenance").type == "ourvidz-gpu"
        refresh = client.read_deployment_by_name("refresh-prompt-cache/refresh-prompt-cache")
        batch = client.read_deployment_by_name("enhance-prompts/enhance-prompts")
        report = client.read_deployment_by_name("usage-report/daily-usage-report")
        names = {d.name for d in client.read_deployments()}
    assert [s.schedule.interval.total_seconds() for s in refresh.schedules] == [300]  # type: ignore[union-attr]
    assert [(s.schedule.cron, s.schedule.timezone) for s in report.schedules] == [("0 0 * * *", "UTC")]  # type: ignore[union-attr]
    assert (refresh.work_pool_name, batch.work_pool_name) == ("maintenance", "maintenance")
    assert batch.schedules == []
    assert getattr(report.global_concurrency_limit, "name", None) == "daily-usage-report"
    assert "maintenance" not in names  # every deployment is named for what it does


def test_prefect_cli_starts_our_worker_type(orchestra: Orchestra) -> None:
    result = subprocess.run(
        ["prefect", "worker", "start", "--type", "ourvidz-gpu", "--pool", "gpu-cli-check", "--run-once"],
        env=orchestra.stack.env, capture_output=True, text=True, timeout=120,
        executable=str(Path(OURVIDZ[0]).with_name("prefect")),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    with orchestra.client() as client:
        assert client.read_work_pool("gpu-cli-check").type == "ourvidz-gpu"


def test_bootstrap_creates_the_crash_recovery_automations(orchestra: Orchestra) -> None:
    with orchestra.client() as client:
        recover = client.read_deployment_by_name(RECOVERY_DEPLOYMENT)
        silent = client.read_automations_by_name(CRASH_SILENT_RUNS)
        crashed = client.read_automations_by_name(RECOVER_CRASHED_JOBS)
    assert len(silent) == len(crashed) == 1
    trigger = silent[0].trigger
    assert trigger.posture == "Proactive" and trigger.within.total_seconds() == 60  # type: ignore[union-attr]
    assert [action.type for action in silent[0].actions] == ["change-flow-run-state"]
    (run,) = crashed[0].actions
    assert (run.type, run.deployment_id) == ("run-deployment", recover.id)  # type: ignore[union-attr]
    assert crashed[0].trigger.expect == {"prefect.flow-run.Crashed", "prefect.flow-run.Cancelled"}  # type: ignore[union-attr]


def _deployments(client: SyncPrefectClient) -> dict[str, tuple[Any, ...]]:
    """Every deployment's configuration, by `flow/deployment` name."""
    flows = {flow.id: flow.name for flow in client.read_flows()}
    return {
        f"{flows[d.flow_id]}/{d.name}": (
            d.entrypoint, d.work_pool_name, d.work_queue_name, sorted(d.tags), d.description, d.parameters,
            d.parameter_openapi_schema, d.pull_steps, getattr(d.global_concurrency_limit, "limit", None),
            sorted(str(s.schedule) for s in d.schedules),
        )
        for d in client.read_deployments()
    }  # fmt: skip


def test_prefect_deploy_all_on_a_fresh_server_equals_bootstrap(tmp_path: Path) -> None:
    """The documented way without bootstrap's deployments: `ourvidz bootstrap --pools` (prefect.yaml
    cannot make pools), then `prefect deploy --all`; bootstrap afterwards finds every deployment as it
    wants it, but for the name of its concurrency limit, which prefect.yaml cannot give."""
    stack = Stack(tmp_path, env={k: v for k, v in os.environ.items() if not k.startswith("OURVIDZ_")})
    stack.env |= {
        "OURVIDZ_DATA_DIR": str(tmp_path),
        "OURVIDZ_DATABASE_URL": f"sqlite:///{tmp_path / 'jobs.db'}",
    }
    try:
        api_url = stack.start_prefect_server(free_port(), database="sqlite")
        stack.env["PREFECT_API_URL"] = api_url
        stack.run_once("db-upgrade", [*OURVIDZ, "db", "upgrade"])
        stack.run_once("pools", [*OURVIDZ, "bootstrap", "--pools"])
        prefect = str(Path(OURVIDZ[0]).with_name("prefect"))
        deploy = subprocess.run(
            [prefect, "--no-prompt", "deploy", "--all"], cwd=ROOT, env=stack.env, capture_output=True,
            text=True, timeout=300,
        )  # fmt: skip
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
            deployed = _deployments(client)
            result = subprocess.run([*OURVIDZ, "bootstrap"], env=stack.env, capture_output=True, text=True)
            assert result.returncode == 0, result.stderr
            actions = dict(reversed(line.strip().split("  ", 1)) for line in result.stdout.splitlines())
            bootstrapped = _deployments(client)
    finally:
        stack.stop()
    assert set(deployed) == {f"generate/{q}" for q in GENERATION_QUEUES} | {
        f"{load_flow_from_entrypoint(spec.entrypoint).name}/{spec.name}"
        for spec in maintenance_flows(Settings())
    }
    assert {name: action for name, action in actions.items() if name.startswith("deployment ")} == {
        f"deployment {name}": "updated (concurrency limit name)" for name in deployed
    }
    assert bootstrapped == deployed
