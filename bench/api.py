"""Gateway load benchmark: queue-job latency and throughput against `ourvidz api` on PostgreSQL, this
tree against an earlier commit in the same run.

    python bench/api.py --before 1f49422          # 100 requests/s, then 20 clients, for each setup
    python bench/api.py --duration 30 --json out.json --prefect-db sqlite

Starts a Prefect server on a fresh PostgreSQL database of the same server (the scale-out setup;
`--prefect-db sqlite` for the embedded default) at OURVIDZ_BACKGROUND_NICE, bootstraps it, and
gateways on a fresh PostgreSQL schema (`--database`, default the local `test` database). No GPU worker
runs: jobs stay queued, but each one is recorded and dispatched to Prefect exactly as in production.
Setups, each on a Prefect server and job database of its own, in `--rounds` rounds (every other one
in reverse order, so that no setup always runs first):

- before (with `--before`): that commit's gateway and `ourvidz dispatcher` (at the background
  niceness), as its `ourvidz up` ran them;
- this tree as `ourvidz up` runs it: the gateway, which records jobs and runs the dispatcher itself;
- this tree with the dispatcher in a process of its own at the background niceness
  (OURVIDZ_GATEWAY_DISPATCHES=false on the gateway);
- the last one with the Prefect server stopped (SIGSTOP): the gateway's own cost.

For each: queue-job at a fixed rate (open loop: whatever the answers take; the target is at 100/s),
then N clients each sending as fast as answers come (closed loop); last, `GET /health` (no auth, no
database) at the same rate, the floor of any answer. Each phase starts once the previous one's jobs
all have their flow run; that wait is reported as the dispatch lag.

Target: queue-job p99 <= 100 ms at 100 requests/s on this 2-core machine, and no worse than before.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.config import Settings
from ourvidz.db import migrate
from ourvidz.db.models import Job
from ourvidz.db.session import make_engine, sessions_for
from ourvidz.stack import Stack, free_port, wait_for_http

from checkouts import describe, earlier, env_for
from report import percentile, publish
from scratch import scratch_schema, user_tokens

OURVIDZ = [sys.executable, "-m", "ourvidz"]
USERS = 200
BODY = {
    "jobType": "sdxl_image_fast",
    "metadata": {"prompt": "a lighthouse at dusk", "width": 512, "height": 512},
}


def summary(
    name: str, latencies: list[float], statuses: list[int], seconds: float, **extra: Any
) -> dict[str, Any]:
    ok = [lat for lat, status in zip(latencies, statuses, strict=True) if status in (200, 201)]
    failed = Counter(str(status) for status in statuses if status not in (200, 201))  # 0: no answer
    return {
        "phase": name, **extra, "requests": len(statuses), "errors": len(statuses) - len(ok),
        "error_statuses": dict(failed),
        "throughput_rps": round(len(ok) / seconds, 1),
        "p50_ms": round(statistics.median(ok) * 1000, 1) if ok else None,
        "p99_ms": round(percentile(ok, 0.99) * 1000, 1) if ok else None,
        "max_ms": round(max(ok) * 1000, 1) if ok else None,
    }  # fmt: skip


async def _send(client: httpx.AsyncClient, path: str, headers: dict[str, str] | None) -> tuple[float, int]:
    """One request; a transport failure (refused, reset, timeout) counts as an error with status 0."""
    started = time.perf_counter()
    try:
        if headers is None:
            answer = await client.get(path)
        else:
            answer = await client.post(path, json=BODY, headers=headers)
    except httpx.HTTPError:
        return time.perf_counter() - started, 0
    return time.perf_counter() - started, answer.status_code


async def closed_loop(url: str, tokens: list[str], clients: int, duration: float) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: list[int] = []
    deadline = time.perf_counter() + duration
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client_loop(index: int, client: httpx.AsyncClient) -> None:
        headers = {"authorization": f"Bearer {tokens[index % len(tokens)]}"}
        while time.perf_counter() < deadline:
            latency, status = await _send(client, "/queue-job", headers)
            latencies.append(latency)
            statuses.append(status)

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(i, client) for i in range(clients)))
        elapsed = time.perf_counter() - started
    return summary("closed loop", latencies, statuses, elapsed, clients=clients)


async def open_loop(url: str, tokens: list[str] | None, rate: float, duration: float) -> dict[str, Any]:
    """A request every 1/rate s whatever the answers take; queue-job with tokens, else GET /health."""
    latencies: list[float] = []
    statuses: list[int] = []
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)

    async def one(index: int, client: httpx.AsyncClient) -> None:
        headers = None if tokens is None else {"authorization": f"Bearer {tokens[index % len(tokens)]}"}
        latency, status = await _send(client, "/queue-job" if tokens else "/health", headers)
        latencies.append(latency)
        statuses.append(status)

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        started = time.perf_counter()
        tasks = []
        for index in range(int(rate * duration)):
            await asyncio.sleep(max(0.0, started + index / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one(index, client)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    name = "open loop queue-job" if tokens else "baseline GET /health"
    return summary(name, latencies, statuses, elapsed, rate_rps=rate)


def prefect_database(database: str, name: str) -> str:
    """A new database `name` on the server of `database`, as an asyncpg URL for the Prefect server."""
    with make_engine(database).connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.make_url(database).set(drivername="postgresql+asyncpg", database=name, query={})
    return url.render_as_string(hide_password=False)


def drop_database(database: str, name: str) -> None:
    with make_engine(database).connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))


@contextmanager
def paused_process(process: subprocess.Popen[bytes], paused: bool) -> Iterator[None]:
    """SIGSTOP the process (and its group) for the block: the gateway alone, its dispatches waiting."""
    if paused:
        os.killpg(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        if paused:
            os.killpg(process.pid, signal.SIGCONT)


def cpu_seconds(*stacks: Stack) -> dict[str, float]:
    """User + system CPU seconds used so far by each process of the stacks (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    used = {}
    for stack in stacks:
        for name, process in stack.processes.items():
            fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            used[name] = (int(fields[11]) + int(fields[12])) / tick
    return used


def start_gateway(
    tmp: str, env: dict[str, str], nice: int, tree: Path | None, dispatcher_process: bool
) -> tuple[Stack, str]:
    """`ourvidz api` of `tree` (None: this one); with `dispatcher_process`, `ourvidz dispatcher` beside it
    at niceness `nice` and the gateway told not to dispatch (in either tree's spelling)."""
    setup = {**env_for(tree)}
    if dispatcher_process:
        setup |= {"OURVIDZ_DISPATCH": "dispatcher", "OURVIDZ_GATEWAY_DISPATCHES": "false"}
    stack = Stack(Path(tmp), env={**env, **setup})
    if dispatcher_process:
        stack.start("dispatcher", [*OURVIDZ, "dispatcher"], nice=nice)
    port = free_port()
    gateway = stack.start("gateway", [*OURVIDZ, "api", "--port", str(port)])
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}/health", 60, gateway)
    return stack, url


def wait_dispatched(sessions: sessionmaker[Session], timeout: float = 600.0) -> float:
    """Seconds until every accepted job has its flow run, so one phase's backlog does not load the next."""
    started = time.perf_counter()
    query = sa.select(sa.func.count()).select_from(Job).where(Job.flow_run_id.is_(None))
    while time.perf_counter() - started < timeout:
        with sessions() as session:
            if not session.scalar(query):
                break
        time.sleep(0.2)
    return round(time.perf_counter() - started, 1)


def run_phase(
    label: str,
    phase: Callable[[], Coroutine[Any, Any, dict[str, Any]]],
    prefect: Stack,
    gateways: Stack,
    sessions: sessionmaker[Session],
    paused: bool,
) -> dict[str, Any]:
    """One phase, then the wait until its jobs are all dispatched, with each process's CPU per request."""
    print(f"{label}...", flush=True)
    before = cpu_seconds(prefect, gateways)
    with paused_process(prefect.processes["prefect-server"], paused):
        result = asyncio.run(phase())
    result["phase"] = label
    result["dispatch_lag_s"] = wait_dispatched(sessions)
    after = cpu_seconds(prefect, gateways)
    for name, spent in before.items():  # lag included
        result[f"{name}_cpu_ms_per_request"] = round((after[name] - spent) * 1000 / result["requests"], 1)
    return result


def print_table(results: list[dict[str, Any]]) -> None:
    header = ("round", "phase", "load", "requests", "errors", "rps", "p50 ms", "p99 ms", "lag s")
    header += ("cpu ms/req",)
    print("\n{:<5} {:<62} {:>10} {:>8} {:>6} {:>7} {:>7} {:>7} {:>6} {:>25}".format(*header))
    for r in results:
        load = f"{r['clients']} clients" if "clients" in r else f"{r['rate_rps']:.0f}/s"
        cpu = f"{r['gateway_cpu_ms_per_request']:>6} + {r['prefect-server_cpu_ms_per_request']:>6}"
        cpu += f" + {r.get('dispatcher_cpu_ms_per_request', '-'):>6}"
        print(
            f"{r['round']:<5} {r['phase']:<62} {load:>10} {r['requests']:>8} {r['errors']:>6} "
            f"{r['throughput_rps']:>7.1f} {r['p50_ms']:>7} {r['p99_ms']:>7} {r['dispatch_lag_s']:>6} "
            f"{cpu:>25}"
        )


def measure_setup(
    args: argparse.Namespace, label: str, tree: Path | None, dispatcher_process: bool
) -> list[dict[str, Any]]:
    """The phases of one setup, on a Prefect server and job database of its own: what earlier setups
    left in them (thousands of late flow runs) does not slow this one down."""
    results = []
    with (
        scratch_schema(args.database) as (database_url, schema),
        tempfile.TemporaryDirectory(prefix="ourvidz-bench-api-") as tmp,
    ):
        stack = Stack(Path(tmp))
        stack.env.update({
            "OURVIDZ_DATA_DIR": tmp, "OURVIDZ_DATABASE_URL": database_url,
            "OURVIDZ_RATE_LIMIT_JOBS": "1000000/minute",
        })  # fmt: skip
        if args.prefect_db == "postgres":
            stack.env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = prefect_database(args.database, schema)
        try:
            settings = Settings(data_dir=Path(tmp), database_url=database_url)
            nice = settings.background_nice
            stack.start_prefect_server(free_port(), nice=nice)
            migrate.upgrade(database_url)
            stack.run_once("bootstrap", [*OURVIDZ, "bootstrap"])
            sessions = sessions_for(database_url)
            tokens = user_tokens(settings, sessions, USERS)
            gateways, url = start_gateway(tmp, stack.env, nice, tree, dispatcher_process)
            try:
                asyncio.run(closed_loop(url, tokens, 5, 2.0))  # warm-up: connections, caches; not reported
                wait_dispatched(sessions)
                phases: list[tuple[str, Callable[[], Coroutine[Any, Any, dict[str, Any]]], bool]] = [
                    (f"{label}: queue-job", partial(open_loop, url, tokens, args.rate, args.duration), False),
                    *[(f"{label}: queue-job", partial(closed_loop, url, tokens, n, args.duration), False)
                      for n in args.clients],
                ]  # fmt: skip
                if tree is None and dispatcher_process:
                    paused = partial(open_loop, url, tokens, args.rate, args.duration)
                    health = partial(open_loop, url, None, args.rate, args.duration)
                    phases += [(f"{label}: queue-job, Prefect paused", paused, True),
                               ("baseline GET /health", health, False)]  # fmt: skip
                for phase_label, phase, pause in phases:
                    results.append(run_phase(phase_label, phase, stack, gateways, sessions, pause))
            finally:
                gateways.stop()
        finally:
            stack.stop()
            if args.prefect_db == "postgres":
                drop_database(args.database, schema)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per phase")
    parser.add_argument("--clients", type=int, nargs="*", default=[20])
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument(
        "--prefect-db",
        choices=["postgres", "sqlite"],
        default="postgres",
        help="the Prefect server's database",
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--before", help="an earlier commit whose gateway and dispatcher are measured too")
    parser.add_argument("--rounds", type=int, default=2, help="each setup this often, in alternating order")
    args = parser.parse_args()

    results: list[dict[str, Any]] = []
    with contextlib.ExitStack() as trees:
        setups: list[tuple[str, Path | None, bool]] = [
            ("dispatcher in the gateway (`ourvidz up`)", None, False),
            ("dispatcher process", None, True),
        ]
        if args.before:
            before = (f"before ({describe(args.before).split()[0]}), dispatcher process",
                      trees.enter_context(earlier(args.before)), True)  # fmt: skip
            setups.insert(0, before)
        for round_ in range(args.rounds):  # every other round in reverse: no setup always goes first
            for label, tree, dispatcher_process in setups if round_ % 2 == 0 else setups[::-1]:
                for result in measure_setup(args, label, tree, dispatcher_process):
                    results.append({**result, "round": round_ + 1})
    output = {
        "before": describe(args.before) if args.before else None,
        "rounds": args.rounds,
        "duration_s": args.duration,
        "prefect_db": args.prefect_db,
        "results": results,
        "target_p99_ms_at_rate": 100,
    }
    publish(output, args.json)
    print_table(results)


if __name__ == "__main__":
    main()
