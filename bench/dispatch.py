"""Dispatch benchmark: how fast a queued job reaches its GPU, on our worker vs Prefect's process worker.

    python bench/dispatch.py                 # 30 jobs per case, no-op generator and tiny model
    python bench/dispatch.py --jobs 10 --profiles noop --json out.json

One Prefect server (SQLite, started here) serves both workers. Jobs are submitted one at a time, each
through `run_deployment` exactly as the gateway does, so every number is one job's own latency:

- dispatch: flow run scheduled -> its `generate` task starts running (from the Prefect API's times);
- overhead: the flow run's own stages, i.e. its running time minus the `generate` task's duration;
- end to end: flow run scheduled -> flow run ends;
- model loads: from our worker's status endpoint; for the process worker from each run's log line.

Each case starts with one unmeasured warm-up job (first poll after start, flow import).

Targets (our worker): dispatch p50 <= 0.5 s and p95 <= 1.0 s; p50 at least 4x lower than the process
worker's (the baseline, measured in the same run); overhead p50 <= 0.3 s; one load per model.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId
from prefect.deployments import run_deployment
from prefect.deployments.runner import EntrypointType
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.workers.process import ProcessWorker

from flows.generation.job import generate_job
from ourvidz.config import Settings
from ourvidz.db import migrate
from ourvidz.db.session import sessions_for
from ourvidz.jobs.create import create_job, ensure_profile
from ourvidz.stack import Stack, free_port, wait_for_http

from report import percentile, publish

OURVIDZ = [sys.executable, "-m", "ourvidz"]
PROCESS_POOL = "bench-process"
JOB = {"job_type": "sdxl_image_fast", "metadata": {"width": 64, "height": 64, "steps": 2}}
POLL_SECONDS = "2"  # both workers' timer poll; ours is woken by events before it comes round
LOAD_LINE = re.compile(r"pipelines loaded during this run: (\d+)")


async def _process_deployment() -> str:
    async with get_client() as client:
        template = ProcessWorker.get_default_base_job_template()
        await client.create_work_pool(
            WorkPoolCreate(name=PROCESS_POOL, type="process", base_job_template=template)
        )
    deployment = await generate_job.ato_deployment(
        name=PROCESS_POOL, work_pool_name=PROCESS_POOL, entrypoint_type=EntrypointType.MODULE_PATH
    )
    await deployment.apply()
    return f"generate/{PROCESS_POOL}"


async def _run_jobs(settings: Settings, deployment: str, count: int) -> list[uuid.UUID]:
    """Submit `count` jobs one after another, each once the previous one is final."""
    sessions = sessions_for(settings.database_url)
    user_id = uuid.uuid4()
    ensure_profile(sessions, user_id)
    flow_runs = []
    for _ in range(count):
        job = create_job(sessions, user_id=user_id, prompt="a lighthouse at dusk", **JOB).job  # type: ignore[arg-type]
        run = await run_deployment(
            deployment,
            parameters={"job_id": str(job.id), "job_type": job.job_type},
            timeout=0,
            as_subflow=False,
        )
        flow_runs.append(run.id)
        async with get_client() as client:  # the run (not just the job row) must be over: queues allow one
            while not (await client.read_flow_run(run.id)).state.is_final():
                await asyncio.sleep(0.05)
    return flow_runs


async def _measure(flow_run_ids: list[uuid.UUID]) -> dict[str, Any]:
    """Per-run latencies from the API; waits until every run has ended."""
    async with get_client() as client:
        for _ in range(200):
            runs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids))
            )
            if all(run.end_time for run in runs):
                break
            await asyncio.sleep(0.1)
        dispatch, overhead, end_to_end, loads = [], [], [], 0
        for run in runs:
            tasks = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
            )
            generate = next(t for t in tasks if t.name.startswith("generate"))
            scheduled = run.expected_start_time
            assert scheduled and generate.start_time and generate.end_time and run.end_time
            assert run.start_time
            dispatch.append((generate.start_time - scheduled).total_seconds())
            generation = (generate.end_time - generate.start_time).total_seconds()
            overhead.append((run.end_time - run.start_time).total_seconds() - generation)
            end_to_end.append((run.end_time - scheduled).total_seconds())
            logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
            loads += sum(int(match.group(1)) for log in logs if (match := LOAD_LINE.search(log.message)))
    return {"dispatch": dispatch, "overhead": overhead, "end_to_end": end_to_end, "loads_seen_in_logs": loads}


def _summary(worker: str, profile: str, measured: dict[str, Any], model_loads: int) -> dict[str, Any]:
    summary: dict[str, Any] = {"worker": worker, "profile": profile, "jobs": len(measured["dispatch"])}
    for name in ("dispatch", "overhead", "end_to_end"):
        summary[f"{name}_p50_s"] = round(statistics.median(measured[name]), 3)
        summary[f"{name}_p95_s"] = round(percentile(measured[name], 0.95), 3)
    summary["model_loads"] = model_loads
    return summary


def run_case(stack: Stack, settings: Settings, worker: str, profile: str, jobs: int) -> dict[str, Any]:
    env = {"OURVIDZ_MODEL_PROFILE": profile, "PREFECT_WORKER_QUERY_SECONDS": POLL_SECONDS,
           "PREFECT_LOGGING_EXTRA_LOGGERS": "ourvidz"}  # fmt: skip
    name = f"{worker}-{profile}"
    if worker == "ourvidz":
        port = free_port()
        process = stack.start(name, [*OURVIDZ, "worker", "--queue", "sdxl", "--health-port", str(port)], env)
        wait_for_http(f"http://127.0.0.1:{port}/health", 300, process)
        deployment = "generate/sdxl"
    else:
        args = [
            sys.executable,
            "-m",
            "prefect",
            "worker",
            "start",
            "--type",
            "process",
            "--pool",
            PROCESS_POOL,
        ]
        process = stack.start(name, args, env)
        deployment = f"generate/{PROCESS_POOL}"
        time.sleep(3)  # the process worker has no health endpoint by default; let it sync first
    try:
        asyncio.run(_run_jobs(settings, deployment, 1))  # warm-up: first poll, flow import; not measured
        flow_runs = asyncio.run(_run_jobs(settings, deployment, jobs))
        measured = asyncio.run(_measure(flow_runs))
        if worker == "ourvidz":
            model_loads = sum(
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json()["model_loads"].values()
            )
        else:
            model_loads = measured["loads_seen_in_logs"]
    finally:
        process.terminate()
        process.wait(timeout=30)
        stack.processes.pop(name)
    return {"summary": _summary(worker, profile, measured, model_loads), "raw": measured}


def print_table(results: list[dict[str, Any]]) -> None:
    header = ("worker", "profile", "jobs", "dispatch p50", "p95", "overhead p50", "p95", "e2e p50", "loads")
    print("\n{:<8} {:<7} {:>4} {:>12} {:>7} {:>12} {:>7} {:>8} {:>5}".format(*header))
    for result in results:
        s = result["summary"]
        row = (s["worker"], s["profile"], s["jobs"], s["dispatch_p50_s"], s["dispatch_p95_s"])
        row += (s["overhead_p50_s"], s["overhead_p95_s"], s["end_to_end_p50_s"], s["model_loads"])
        print("{:<8} {:<7} {:>4} {:>12.3f} {:>7.3f} {:>12.3f} {:>7.3f} {:>8.3f} {:>5}".format(*row))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--profiles", nargs="+", default=["noop", "tiny"], choices=["noop", "tiny"])
    parser.add_argument(
        "--workers", nargs="+", default=["ourvidz", "process"], choices=["ourvidz", "process"]
    )
    parser.add_argument(
        "--prefect-db", help="database URL of the Prefect server (default: SQLite, the embedded default)"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ourvidz-bench-dispatch-") as tmp:
        data_dir = Path(tmp)
        stack = Stack(data_dir)
        stack.env["OURVIDZ_DATA_DIR"] = str(data_dir)
        if args.prefect_db:
            stack.env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = args.prefect_db
        results = []
        try:
            api_url = stack.start_prefect_server(free_port())
            settings = Settings(data_dir=data_dir)
            migrate.upgrade(settings.database_url)
            stack.run_once("bootstrap", [*OURVIDZ, "bootstrap"])
            with temporary_settings(updates={PREFECT_API_URL: api_url}):
                if "process" in args.workers:
                    asyncio.run(_process_deployment())
                for profile in args.profiles:
                    for worker in args.workers:
                        print(f"running {args.jobs} jobs: {worker} worker, {profile} profile...", flush=True)
                        results.append(run_case(stack, settings, worker, profile, args.jobs))
        finally:
            stack.stop()
    ratios = {}
    for profile in args.profiles:
        by_worker = {
            r["summary"]["worker"]: r["summary"] for r in results if r["summary"]["profile"] == profile
        }
        if {"ourvidz", "process"} <= by_worker.keys():
            ratios[profile] = round(
                by_worker["process"]["dispatch_p50_s"] / by_worker["ourvidz"]["dispatch_p50_s"], 2
            )
    output = {
        "jobs_per_case": args.jobs,
        "prefect_db": args.prefect_db.split(":")[0] if args.prefect_db else "sqlite",
        "poll_seconds": float(POLL_SECONDS),
        "results": results,
        "process_over_ourvidz_dispatch_p50": ratios,
    }
    publish(output, args.json)
    print_table(results)
    for profile, ratio in ratios.items():
        print(
            f"{profile}: our worker dispatches {ratio}x faster at p50 than the process worker (target >= 4x)"
        )


if __name__ == "__main__":
    main()
