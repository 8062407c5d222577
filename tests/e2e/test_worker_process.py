"""The GPU worker as a process an operator runs: its name in the UI, its runs' heartbeats (a default
of the worker type, not of `ourvidz worker`), and a clean stop on SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
from sqlalchemy import select

from ourvidz.db.models import WorkerLease
from ourvidz.registry import workers as registry
from ourvidz.stack import free_port, wait_for_http
from tests.e2e.conftest import OURVIDZ, Orchestra
from tests.waiting import wait_until

HOST = socket.gethostname()


def test_workers_are_named_for_their_host_and_pool(orchestra: Orchestra) -> None:
    with orchestra.client() as client:
        gpu = {worker.name for worker in client.read_workers_for_work_pool("gpu")}
    assert f"{HOST}-gpu" in gpu
    assert registry.registration(orchestra.sessions, registry.STATUS_ENDPOINT, f"gpu:{HOST}-gpu") is not None


def test_generation_runs_send_heartbeats_without_a_prefect_setting(orchestra: Orchestra) -> None:
    """The stack sets no PREFECT_FLOWS_HEARTBEAT_FREQUENCY: the worker type's default applies, and the
    engine sends its first heartbeat as the run starts."""
    assert "PREFECT_FLOWS_HEARTBEAT_FREQUENCY" not in orchestra.stack.env
    job_id = orchestra.submit("sdxl_image_fast", metadata={"width": 64, "height": 64, "steps": 2})
    job = orchestra.wait_final([job_id])[job_id]
    run = orchestra.wait_flow_run(job)
    with orchestra.client() as client:
        page = client.read_events(
            EventFilter(
                event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
                resource=EventResourceFilter(id=[f"prefect.flow-run.{run.id}"]),
            ),
            limit=50,
        )
    assert page.events, "the run sent no heartbeat"


def test_a_worker_stops_cleanly_on_sigterm(orchestra: Orchestra, tmp_path: Path) -> None:
    """SIGTERM (what `ourvidz up`, systemd or Kubernetes send) stops the worker like Ctrl-C: it leaves
    Prefect's pool, takes its status endpoint off the health check and gives its lease up."""
    pool, port, log = "sigterm-check", free_port(), tmp_path / "worker.log"
    with log.open("wb") as out:
        args = ["worker", "--pool", pool, "--queue", "sdxl", "--no-warm-up", "--health-port", str(port)]
        process = subprocess.Popen(
            [*OURVIDZ, *args], env=orchestra.stack.env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", 120, process)
        name = f"{pool}:{HOST}-{pool}"  # `<pool>:<worker>`, the worker named `<host>-<pool>`
        wait_until(
            lambda: registry.registration(orchestra.sessions, registry.STATUS_ENDPOINT, name) is not None,
            30,
            "the worker's registration",
        )
        wait_until(lambda: _workers_of(orchestra, pool) == [f"{HOST}-{pool}"], 30, "the worker in Prefect")
        _wait_for_lease(orchestra, pool, present=True)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
    assert registry.registration(orchestra.sessions, registry.STATUS_ENDPOINT, name) is None
    _wait_for_lease(orchestra, pool, present=False)


def _workers_of(orchestra: Orchestra, pool: str) -> list[str]:
    with orchestra.client() as client:
        return [worker.name for worker in client.read_workers_for_work_pool(pool)]


def _wait_for_lease(orchestra: Orchestra, pool: str, present: bool, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with orchestra.sessions() as session:
            found = session.scalars(select(WorkerLease).where(WorkerLease.pool == pool)).first() is not None
        if found is present:
            return
        assert time.monotonic() < deadline, f"lease of pool {pool} {'missing' if present else 'left'}"
        time.sleep(0.2)
