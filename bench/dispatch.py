"""Dispatch benchmark: how fast a queued job reaches its GPU, on our worker vs Prefect's process worker,
and this tree against an earlier commit in the same run.

    python bench/dispatch.py                              # 30 jobs per case, no-op generator and tiny model
    python bench/dispatch.py --before 1f49422 --jobs 20   # also the workers and dispatcher of that commit
    python bench/dispatch.py --jobs 10 --profiles noop --json out.json

One Prefect server (SQLite, started here; `--prefect-db` for another) serves every case. Jobs go one at a
time, each once the previous one's run is over, so every number is one job's own latency. Two ways in:

- run: the flow run is created with `run_deployment` (as an operator or the dispatcher creates it);
  dispatch = flow run scheduled (its `Scheduled` state's time) -> its `generate` task starts running
  (from the Prefect API's times);
- recorded (our worker only): the job is recorded in the job database (as the gateway records it) and
  an `ourvidz dispatcher` process of the same tree creates its run; dispatch = job recorded -> its
  `generate` task starts, so it includes the dispatcher's share.

Also: overhead = the flow run's running time minus the `generate` task's; end to end = scheduled (or
recorded) -> flow run ends; model loads from our worker's status endpoint, for the process worker from
each run's log line. Each case starts with one unmeasured warm-up job (first poll, flow import).

Dispatch is also reported in stages (`STAGES`): scheduled -> Pending (the event, the worker's query,
its claim), -> Running (a flow thread, the engine's start), -> the first task, and each task up to
`generate`. `--prefect-db postgresql+asyncpg://...` runs the Prefect server on PostgreSQL.

Targets (our worker, this 2-core machine): on the Prefect server on PostgreSQL dispatch p50 <= 100 ms
and p95 <= 250 ms (stretch 50 ms); on SQLite p95 <= 1 s; overhead p50 <= 100 ms; far below the process
worker (the baseline, measured in the same run); one load per model; no worse than `--before`.
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
from contextlib import ExitStack
from dataclasses import dataclass
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
from sqlalchemy import select

from flows.generation.job import generate_job
from ourvidz.config import Settings
from ourvidz.db import migrate
from ourvidz.db.models import Job
from ourvidz.db.session import sessions_for
from ourvidz.jobs.create import JobRequest, create_job, ensure_profile
from ourvidz.stack import Stack, free_port, wait_for_http

from checkouts import describe, earlier, env_for
from report import percentile, publish

OURVIDZ = [sys.executable, "-m", "ourvidz"]
PROCESS_POOL = "bench-process"
JOB_TYPE, METADATA = "sdxl_image_fast", {"width": 64, "height": 64, "steps": 2}
POLL_SECONDS = "2"  # both workers' timer poll; ours is woken by events before it comes round
# The dispatch path in stages: (from mark, to mark), marks as `_marks` names them.
STAGES = {
    "scheduled": ("entered", "scheduled"),  # recorded: the dispatcher's share; run: 0
    "claimed": ("scheduled", "pending"),  # event -> worker query -> Pending proposed
    "started": ("pending", "running"),  # handed to a flow thread -> the engine sets Running
    "engine": ("running", "validate"),  # flow body reaches its first task
    "validate": ("validate", "enhance"),
    "enhance": ("enhance", "generate"),
}
LOAD_LINE = re.compile(r"pipelines loaded during this run: (\d+)")


@dataclass(frozen=True)
class Case:
    worker: str  # ourvidz | process
    tree: str  # "this tree" or the earlier commit's short id
    way_in: str  # run | recorded
    profile: str


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


async def _run_jobs(
    settings: Settings, deployment: str, way_in: str, count: int
) -> list[tuple[uuid.UUID, float]]:
    """Submit `count` jobs one after another, each once the previous one's run is over; each job's run
    and when it entered (recorded, or its run scheduled: None then, read from the run)."""
    sessions = sessions_for(settings.database_url)
    user_id = uuid.uuid4()
    ensure_profile(sessions, user_id)
    entered = []
    for _ in range(count):
        request = JobRequest(
            user_id=user_id, job_type=JOB_TYPE, prompt="a lighthouse at dusk", metadata=METADATA
        )
        job = (await asyncio.to_thread(create_job, sessions, request)).job  # no dispatcher runs unless asked
        if way_in == "recorded":
            entered.append((await _wait_for_run(sessions, job.id), job.created_at.timestamp()))
        else:
            parameters = {"job_id": str(job.id), "job_type": JOB_TYPE}
            run = await run_deployment(deployment, parameters=parameters, timeout=0, as_subflow=False)
            entered.append((run.id, float("nan")))
        async with get_client() as client:  # the run (not just the job row) must be over: queues allow one
            while not (await client.read_flow_run(entered[-1][0])).state.is_final():
                await asyncio.sleep(0.2)  # rarely: on 2 cores the polls would slow the server measured
    return entered


async def _wait_for_run(sessions: Any, job_id: uuid.UUID) -> uuid.UUID:
    while True:
        with sessions() as session:
            run_id = session.scalar(select(Job.flow_run_id).where(Job.id == job_id))
        if run_id is not None:
            return run_id
        await asyncio.sleep(0.01)


async def _measure(entered: list[tuple[uuid.UUID, float]]) -> dict[str, Any]:
    """Per-run latencies from the API; waits until every run has ended."""
    ids = [run_id for run_id, _ in entered]
    since = dict(entered)
    async with get_client() as client:
        for _ in range(200):
            runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
            if all(run.end_time for run in runs):
                break
            await asyncio.sleep(0.1)
        dispatch, overhead, end_to_end, loads = [], [], [], 0
        stages: dict[str, list[float]] = {name: [] for name in STAGES}
        for run in runs:
            tasks = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
            )
            generate = next(t for t in tasks if t.name.startswith("generate"))
            assert run.expected_start_time and run.start_time and run.end_time
            assert generate.start_time and generate.end_time
            marks = await _marks(client, run.id, tasks, since[run.id])
            start = marks["entered"]
            for name, (begin, end) in STAGES.items():
                stages[name].append(marks[end] - marks[begin])
            dispatch.append(generate.start_time.timestamp() - start)
            generation = (generate.end_time - generate.start_time).total_seconds()
            overhead.append((run.end_time - run.start_time).total_seconds() - generation)
            end_to_end.append(run.end_time.timestamp() - start)
            logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
            loads += sum(int(match.group(1)) for log in logs if (match := LOAD_LINE.search(log.message)))
    return {"dispatch": dispatch, "overhead": overhead, "end_to_end": end_to_end, "stages": stages,
            "loads_seen_in_logs": loads}  # fmt: skip


async def _marks(client: Any, run_id: uuid.UUID, tasks: list[Any], entered: float) -> dict[str, float]:
    """When the run entered, reached each state and started each task (seconds since the epoch)."""
    marks = {}
    for state in await client.read_flow_run_states(run_id):
        marks.setdefault(state.type.value.lower(), state.timestamp.timestamp())
    marks["entered"] = marks["scheduled"] if entered != entered else entered  # NaN: the run's creation
    for task_run in tasks:
        if task_run.start_time is not None:
            marks.setdefault(task_run.name.split("-")[0], task_run.start_time.timestamp())
    return marks


def _summary(case: Case, measured: dict[str, Any], model_loads: int) -> dict[str, Any]:
    summary: dict[str, Any] = {**case.__dict__, "jobs": len(measured["dispatch"])}
    for name in ("dispatch", "overhead", "end_to_end"):
        summary[f"{name}_p50_s"] = round(statistics.median(measured[name]), 3)
        summary[f"{name}_p95_s"] = round(percentile(measured[name], 0.95), 3)
    summary["stages_p50_ms"] = {
        name: round(statistics.median(values) * 1000, 1) for name, values in measured["stages"].items()
    }
    summary["model_loads"] = model_loads
    return summary


def run_case(stack: Stack, settings: Settings, case: Case, tree: Path | None, jobs: int) -> dict[str, Any]:
    env = {"OURVIDZ_MODEL_PROFILE": case.profile, "PREFECT_WORKER_QUERY_SECONDS": POLL_SECONDS,
           "PREFECT_LOGGING_EXTRA_LOGGERS": "ourvidz", **env_for(tree)}  # fmt: skip
    name = f"{case.worker}-{case.tree}-{case.way_in}-{case.profile}".replace(" ", "-")
    started = []
    port = free_port()
    if case.worker == "ourvidz":
        worker = stack.start(name, [*OURVIDZ, "worker", "--queue", "sdxl", "--health-port", str(port)], env)
        started.append(name)
        wait_for_http(f"http://127.0.0.1:{port}/health", 300, worker)
        deployment = "generate/sdxl"
        if case.way_in == "recorded":
            stack.start(f"{name}-dispatcher", [*OURVIDZ, "dispatcher"], env)
            started.append(f"{name}-dispatcher")
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
        stack.start(name, args, env)
        started.append(name)
        deployment = f"generate/{PROCESS_POOL}"
        time.sleep(3)  # the process worker has no health endpoint by default; let it sync first
    try:
        asyncio.run(_run_jobs(settings, deployment, case.way_in, 1))  # warm-up; not measured
        entered = asyncio.run(_run_jobs(settings, deployment, case.way_in, jobs))
        measured = asyncio.run(_measure(entered))
        if case.worker == "ourvidz":
            status = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json()
            model_loads = sum(status["model_loads"].values())
        else:
            model_loads = measured["loads_seen_in_logs"]
    finally:
        for process_name in reversed(started):
            process = stack.processes.pop(process_name)
            process.terminate()
            process.wait(timeout=30)
    return {"summary": _summary(case, measured, model_loads), "raw": measured}


def print_table(results: list[dict[str, Any]]) -> None:
    header = ("worker", "tree", "way in", "profile", "jobs", "dispatch p50", "p95", "overhead p50", "p95",
              "e2e p50", "loads")  # fmt: skip
    print("\n{:<8} {:<10} {:<9} {:<7} {:>4} {:>12} {:>7} {:>12} {:>7} {:>8} {:>5}".format(*header))
    for result in results:
        s = result["summary"]
        row = (s["worker"], s["tree"][:10], s["way_in"], s["profile"], s["jobs"], s["dispatch_p50_s"],
               s["dispatch_p95_s"], s["overhead_p50_s"], s["overhead_p95_s"], s["end_to_end_p50_s"],
               s["model_loads"])  # fmt: skip
        print(
            "{:<8} {:<10} {:<9} {:<7} {:>4} {:>12.3f} {:>7.3f} {:>12.3f} {:>7.3f} {:>8.3f} {:>5}".format(*row)
        )
    print("\ndispatch in stages, p50 ms:")
    print("{:<8} {:<10} {:<9} {:<7} ".format("worker", "tree", "way in", "profile")
          + " ".join(f"{name:>9}" for name in STAGES))  # fmt: skip
    for result in results:
        s = result["summary"]
        print("{:<8} {:<10} {:<9} {:<7} ".format(s["worker"], s["tree"][:10], s["way_in"], s["profile"])
              + " ".join(f"{s['stages_p50_ms'][name]:>9.1f}" for name in STAGES))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--profiles", nargs="+", default=["noop", "tiny"], choices=["noop", "tiny"])
    parser.add_argument(
        "--workers", nargs="+", default=["ourvidz", "process"], choices=["ourvidz", "process"]
    )
    parser.add_argument("--ways-in", nargs="+", default=["run", "recorded"], choices=["run", "recorded"])
    parser.add_argument("--before", help="an earlier commit whose worker and dispatcher are measured too")
    parser.add_argument("--prefect-db", help="database URL of the Prefect server (default: SQLite)")
    parser.add_argument("--database", help="job database URL (default: SQLite under the temporary data dir)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    results = []
    with ExitStack() as cleanup:
        data_dir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="ourvidz-bench-dispatch-")))
        trees: dict[str, Path | None] = {"this tree": None}
        if args.before:
            trees[describe(args.before).split()[0]] = cleanup.enter_context(earlier(args.before))
        stack = Stack(data_dir)
        stack.env["OURVIDZ_DATA_DIR"] = str(data_dir)
        if args.database:
            stack.env["OURVIDZ_DATABASE_URL"] = args.database
        if args.prefect_db:
            stack.env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = args.prefect_db
        cleanup.callback(stack.stop)
        api_url = stack.start_prefect_server(free_port())
        settings = Settings(data_dir=data_dir, database_url=args.database or "")
        migrate.upgrade(settings.database_url)
        stack.run_once("bootstrap", [*OURVIDZ, "bootstrap"])
        cases = [
            Case(worker, tree, way_in, profile)
            for profile in args.profiles
            for worker in args.workers
            for tree in (trees if worker == "ourvidz" else ["this tree"])
            for way_in in args.ways_in
            if worker == "ourvidz" or way_in == "run"
        ]
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            if "process" in args.workers:
                asyncio.run(_process_deployment())
            for case in cases:
                print(f"running {args.jobs} jobs: {case}...", flush=True)
                results.append(run_case(stack, settings, case, trees.get(case.tree), args.jobs))
    ratios = {}
    for profile in args.profiles:
        by_worker = {(r["summary"]["worker"], r["summary"]["tree"], r["summary"]["way_in"]): r["summary"]
                     for r in results if r["summary"]["profile"] == profile}  # fmt: skip
        ours, theirs = (
            by_worker.get(("ourvidz", "this tree", "run")),
            by_worker.get(("process", "this tree", "run")),
        )
        if ours and theirs:
            ratios[profile] = round(theirs["dispatch_p50_s"] / ours["dispatch_p50_s"], 2)
    output = {
        "jobs_per_case": args.jobs,
        "before": describe(args.before) if args.before else None,
        "prefect_db": args.prefect_db.split(":")[0] if args.prefect_db else "sqlite",
        "job_db": args.database.split(":")[0] if args.database else "sqlite",
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
