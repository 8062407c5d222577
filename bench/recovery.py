"""Kill benchmark: a GPU worker killed with SIGKILL in the middle of a job, again and again; how long
until the job is re-queued and until another worker completed it, with nothing lost or made twice.

    python bench/recovery.py                               # 5 kills with leases, 3 on heartbeats alone
    python bench/recovery.py --kills 6 --baseline-kills 2 --json bench/results/recovery-<machine>-<date>.json

Two modes in one run: `leases` (this tree's default: each worker renews a lease, the dispatcher
recovers the runs of one that expired) and the baseline `heartbeats` (leases too long to ever expire,
so only Prefect's flow-run heartbeats, the crash automation and `recover-jobs` act, as before them).
Each mode runs its own stack on one Prefect server (SQLite, started here) and a SQLite job database:
an `ourvidz dispatcher`, a maintenance worker and two GPU workers (tiny models, `sdxl` queue). Per
kill: a job long enough to be killed in (`SLOW`) is recorded, the worker running it is killed once
the job has progress, and the killed worker is started again (a supervisor's job) while the other
completes the job.

Measured per kill: kill -> re-queued (the job's `metadata.recoveries` gains its entry), kill ->
completed; lost = not completed, duplicated = more image rows than the job makes.
Targets (issue 18): kill -> re-queued p95 <= 30 s over >= 5 kills, 0 lost, 0 duplicated.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.db import migrate
from ourvidz.db.models import Image, Job
from ourvidz.db.session import sessions_for
from ourvidz.jobs.create import JobRequest, create_job, ensure_profile
from ourvidz.stack import Stack, free_port, wait_for_http

from report import percentile, publish

OURVIDZ = [sys.executable, "-m", "ourvidz"]
SLOW = {"width": 256, "height": 256, "steps": 100}
MODES = {"leases": "10", "heartbeats": "86400"}  # OURVIDZ_WORKER_LEASE_SECONDS of each mode
JOB_DEADLINE_SECONDS = 600.0


def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {what} within {timeout:.0f} s")
        time.sleep(0.1)


class Fleet:
    """A dispatcher, a maintenance worker and two GPU workers on one stack."""

    def __init__(self, stack: Stack, mode: str) -> None:
        self.stack, self.mode = stack, mode
        self.env = {"OURVIDZ_WORKER_LEASE_SECONDS": MODES[mode]}
        self.ports: dict[str, int] = {}
        stack.start(f"{mode}-dispatcher", [*OURVIDZ, "dispatcher"], self.env)
        maintenance = [*OURVIDZ, "worker", "--pool", "maintenance", "--queue", "default", "--no-warm-up"]
        stack.start(f"{mode}-maintenance", [*maintenance, "--health-port", "0"], self.env)
        for index in (1, 2):
            self.start_worker(f"{mode}-gpu-{index}")

    def start_worker(self, name: str) -> None:
        port = self.ports.setdefault(name, free_port())
        args = [*OURVIDZ, "worker", "--queue", "sdxl", "--name", f"{name}-{uuid.uuid4().hex[:6]}",
                "--health-port", str(port)]  # fmt: skip
        process = self.stack.start(name, args, self.env)
        wait_for_http(f"http://127.0.0.1:{port}/health", 300, process)

    def running(self) -> list[str]:
        busy = []
        for name, port in self.ports.items():
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
            except httpx.HTTPError:
                continue
            if status["running"]:
                busy.append(name)
        return busy

    def kill(self, name: str) -> None:
        process = self.stack.processes.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def stop(self) -> None:
        for name in [name for name in self.stack.processes if name.startswith(f"{self.mode}-")]:
            process = self.stack.processes.pop(name)
            process.terminate()
            try:
                process.wait(timeout=30)
            except Exception:
                process.kill()


def _job(sessions: sessionmaker[Session], job_id: uuid.UUID) -> Job:
    with sessions() as session:
        return session.get_one(Job, job_id)


def kill_once(fleet: Fleet, sessions: sessionmaker[Session], user: uuid.UUID) -> dict[str, Any]:
    request = JobRequest(user_id=user, job_type="sdxl_image_fast", prompt="a lighthouse", metadata=SLOW)
    job_id = create_job(sessions, request).job.id
    victim: list[str] = []

    def generating() -> bool:
        job = _job(sessions, job_id)
        busy = fleet.running()
        if job.status == "processing" and job.progress > 0 and len(busy) == 1:
            victim.append(busy[0])
            return True
        return False

    _wait(generating, 300, "job generating on one worker")
    fleet.kill(victim[0])
    killed = time.monotonic()
    _wait(
        lambda: bool((_job(sessions, job_id).meta or {}).get("recoveries")), JOB_DEADLINE_SECONDS, "re-queue"
    )
    requeued = time.monotonic() - killed
    fleet.start_worker(victim[0])  # as `ourvidz up` would restart it; meanwhile the other takes the job
    _wait(lambda: _job(sessions, job_id).status.is_final, JOB_DEADLINE_SECONDS, "final job")
    completed = time.monotonic() - killed
    job = _job(sessions, job_id)
    with sessions() as session:
        images = session.scalar(select(func.count()).select_from(Image).where(Image.job_id == job_id)) or 0
    return {
        "job_id": str(job_id), "killed": victim[0], "requeued_s": round(requeued, 2),
        "completed_s": round(completed, 2), "status": str(job.status), "attempts": job.attempts,
        "images": images, "reason": job.meta["recoveries"][0]["reason"],
    }  # fmt: skip


def summary(kills: list[dict[str, Any]]) -> dict[str, Any]:
    requeued = [kill["requeued_s"] for kill in kills]
    completed = [kill["completed_s"] for kill in kills]
    return {
        "kills": len(kills),
        "requeued_p50_s": round(statistics.median(requeued), 2),
        "requeued_p95_s": round(percentile(requeued, 0.95), 2),
        "requeued_max_s": max(requeued),
        "completed_p50_s": round(statistics.median(completed), 2),
        "completed_p95_s": round(percentile(completed, 0.95), 2),
        "lost": sum(kill["status"] != "completed" for kill in kills),
        "duplicated": sum(kill["images"] > 1 for kill in kills),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=5, help="kills with leases (the target needs >= 5)")
    parser.add_argument("--baseline-kills", type=int, default=3, help="kills on heartbeats alone (0: skip)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="ourvidz-recovery-bench-") as tmp:
        data_dir = Path(tmp)
        database = f"sqlite:///{data_dir / 'jobs.db'}"
        migrate.upgrade(database)
        env = {name: value for name, value in os.environ.items() if not name.startswith("OURVIDZ_")}
        env |= {"OURVIDZ_DATA_DIR": str(data_dir), "OURVIDZ_DATABASE_URL": database}
        stack = Stack(data_dir, env=env)
        try:
            stack.start_prefect_server(free_port())
            stack.run_once("bootstrap", [*OURVIDZ, "bootstrap"])
            sessions = sessions_for(database)
            user = uuid.uuid4()
            ensure_profile(sessions, user)
            for mode, count in (("leases", args.kills), ("heartbeats", args.baseline_kills)):
                if not count:
                    continue
                fleet = Fleet(stack, mode)
                try:
                    kills = []
                    for _ in range(count):
                        kills.append(kill_once(fleet, sessions, user))
                        print(f"{mode}: {kills[-1]}", file=sys.stderr)
                finally:
                    fleet.stop()
                results[mode] = {"summary": summary(kills), "kills": kills}
        finally:
            stack.stop()
    publish({"benchmark": "recovery", "slow_job": SLOW, "modes": MODES, **results}, args.json)
    print("\n{:<11} {:>5} {:>13} {:>8} {:>8} {:>14} {:>8} {:>5} {:>5}".format(
        "mode", "kills", "requeued p50", "p95", "max", "completed p50", "p95", "lost", "dup"))  # fmt: skip
    for mode, result in results.items():
        s = result["summary"]
        print("{:<11} {:>5} {:>13.1f} {:>8.1f} {:>8.1f} {:>14.1f} {:>8.1f} {:>5} {:>5}".format(
            mode, s["kills"], s["requeued_p50_s"], s["requeued_p95_s"], s["requeued_max_s"],
            s["completed_p50_s"], s["completed_p95_s"], s["lost"], s["duplicated"]))  # fmt: skip


if __name__ == "__main__":
    main()
