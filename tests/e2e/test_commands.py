"""`ourvidz demo` and `ourvidz up` on a fresh data dir, as a user would run them."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.db.models import Job
from ourvidz.db.session import sessions_for
from ourvidz.jobs.create import JobRequest, create_job
from ourvidz.stack import free_port
from tests.e2e.conftest import OURVIDZ


def _env(data_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OURVIDZ_", "PREFECT_API_URL"))}
    return {
        **env, "OURVIDZ_DATA_DIR": str(data_dir), "OURVIDZ_PREFECT_PORT": str(port),
        "OURVIDZ_API_PORT": str(free_port()),
    }  # fmt: skip


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _pid(data_dir: Path, *command: str) -> int:
    """The one running process of the stack on `data_dir` whose command line contains `command` (other
    stacks may run on the machine: a benchmark, another test run)."""
    found = []
    marker = f"OURVIDZ_DATA_DIR={data_dir}".encode()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().decode(errors="replace").split("\0")
            if all(part in args for part in command) and marker in cmdline.with_name(
                "environ"
            ).read_bytes().split(b"\0"):
                found.append(int(cmdline.parent.name))
        except OSError:  # gone meanwhile
            continue
    assert len(found) == 1, f"{command}: {found}"
    return found[0]


def _niceness(data_dir: Path, *command: str) -> int:
    return os.getpriority(os.PRIO_PROCESS, _pid(data_dir, *command))


SMALL = {"width": 64, "height": 64, "steps": 2}
SLOW = {"width": 256, "height": 256, "steps": 100}  # long enough to be killed mid-job (as in test_scale_out)


class _Client:
    """A new user of the stack (token from `ourvidz token`), queueing SDXL jobs and watching them."""

    def __init__(self, env: dict[str, str], gateway: str) -> None:
        self.user_id = uuid.uuid4()
        token = subprocess.run(
            [*OURVIDZ, "token", "--user", str(self.user_id)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        self.gateway, self.headers = gateway, {"authorization": f"Bearer {token}"}

    def queue(self, metadata: dict[str, int]) -> str:
        body = {"jobType": "sdxl_image_fast", "prompt": "a boat", "metadata": metadata}
        answer = httpx.post(f"{self.gateway}/queue-job", json=body, headers=self.headers, timeout=30)
        assert answer.status_code == 201, answer.text
        return answer.json()["job"]["id"]

    def job(self, job_id: str) -> dict:
        return httpx.get(f"{self.gateway}/jobs/{job_id}", headers=self.headers, timeout=30).json()

    def wait(self, job_id: str, statuses: tuple[str, ...], timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.job(job_id)
            if status["job"]["status"] in statuses:
                return status
            time.sleep(0.2)
        raise AssertionError(f"the job was not {statuses} within {timeout} s: {status}")


def _run_job(env: dict[str, str], gateway: str, timeout: float = 180) -> dict:
    """Queue a small SDXL job as a new user and wait for it to end."""
    client = _Client(env, gateway)
    return client.wait(client.queue(SMALL), ("completed", "failed", "cancelled"), timeout)


def test_demo_runs_both_jobs_and_prints_their_files(tmp_path: Path) -> None:
    port = free_port()
    result = subprocess.run(
        [*OURVIDZ, "demo"], env=_env(tmp_path, port), capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "sdxl_image_fast: completed" in out and "video_fast: completed" in out
    assert len(re.findall(rf"http://127\.0\.0\.1:{port}/runs/flow-run/[0-9a-f-]{{36}}", out)) == 2
    files = [Path(path) for path in re.findall(r"file: file://(\S+)", out)]
    assert sorted(path.suffix for path in files) == [".mp4", ".png", ".webp"]
    assert all(path.is_file() and path.stat().st_size > 0 for path in files)
    assert not _port_open(port), "the demo left its Prefect server running"


def test_up_serves_restarts_dead_parts_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    """`ourvidz up` as a user runs it: everything answers; its GPU worker killed mid-job is restarted and
    the job completes with nobody involved; its gateway (and dispatcher) killed, the jobs recorded
    meanwhile have their flow runs within 5 s of it answering again; its maintenance worker killed is
    restarted; the stack stays up through all of it, and Ctrl-C stops every part."""
    port = free_port()
    env = _env(tmp_path, port)
    process = subprocess.Popen(
        [*OURVIDZ, "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    assert process.stdout is not None
    threading.Thread(target=lambda: lines.extend(process.stdout or ()), daemon=True).start()
    try:
        _wait_for(lambda: "Press Ctrl-C" in "".join(lines), 600, "ourvidz up to start", process)
        text = "".join(lines)
        assert f"Prefect UI:  http://127.0.0.1:{port}" in text, text
        worker_url = re.search(r"GPU worker:\s+(\S+)", text)
        gateway_url = re.search(r"Gateway:\s+(\S+)", text)
        assert worker_url is not None and gateway_url is not None
        gateway = gateway_url.group(1)
        assert httpx.get(f"{gateway}/health", timeout=5).json() == {"status": "ok"}
        assert httpx.get(f"{gateway}/jobs/{uuid.uuid4()}", timeout=5).status_code == 401
        assert httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5).status_code == 200
        assert httpx.get(worker_url.group(1), timeout=5).json()["work_pool"] == "gpu"
        # The gateway's answers come before flow-run creation (OURVIDZ_BACKGROUND_NICE, default 10).
        own = os.getpriority(os.PRIO_PROCESS, 0)
        assert _niceness(tmp_path, "prefect", "server", "--port", str(port)) == min(own + 10, 19)
        gateway_port = gateway.rsplit(":", 1)[1]
        assert _niceness(tmp_path, "ourvidz", "api", "--port", gateway_port) == own
        # A job through the gateway, whose dispatcher gives it its flow run.
        job = _run_job(env, gateway)
        assert job["job"]["status"] == "completed" and job["job"]["flow_run_id"] is not None
        _first_job_as_the_readme_shows(env, gateway)
        # The GPU worker dies mid-job: `up` restarts it, recovery requeues the job, the new worker runs it.
        client = _Client(env, gateway)
        slow = client.queue(SLOW)
        _wait_for(lambda: client.job(slow)["progress"] > 0, 180, "the slow job's progress", process)
        assert client.job(slow)["job"]["status"] == "processing"
        worker_pid = _pid(
            tmp_path,
            "ourvidz",
            "worker",
            "--health-port",
            worker_url.group(1).rsplit(":", 1)[1].split("/")[0],
        )
        os.kill(worker_pid, signal.SIGKILL)
        _wait_for(
            lambda: "gpu-worker restarted (restart 1)" in "".join(lines), 60, "the worker's restart", process
        )
        assert "gpu-worker exited with code -9; restarting in 1 s" in "".join(lines)
        done = client.wait(slow, ("completed", "failed", "cancelled"), timeout=420)
        assert done["job"]["status"] == "completed", done
        # The gateway dies, with its dispatcher: jobs recorded meanwhile (as a gateway that only records
        # would) are dispatched as soon as it is back.
        os.kill(_pid(tmp_path, "ourvidz", "api", "--port", gateway_port), signal.SIGKILL)
        sessions = sessions_for(f"sqlite:///{tmp_path / 'ourvidz.db'}")
        request = JobRequest(
            user_id=client.user_id, job_type="sdxl_image_fast", prompt="a dock", metadata=SMALL
        )
        recorded = [create_job(sessions, request).job.id for _ in range(3)]
        _wait_for(
            lambda: "gateway restarted (restart 1)" in "".join(lines), 60, "the gateway's restart", process
        )
        _wait_for(lambda: _answers(f"{gateway}/health"), 60, "the gateway to answer", process)
        _wait_for(lambda: _all_dispatched(sessions, recorded), 5, "flow runs of the jobs recorded", process)
        assert "gateway exited with code -9; restarting in 1 s" in "".join(lines)
        # The maintenance worker dies: restarted, and the jobs complete meanwhile.
        os.kill(_pid(tmp_path, "ourvidz", "worker", "--pool", "maintenance", "--no-warm-up"), signal.SIGKILL)
        _wait_for(
            lambda: "maintenance-worker restarted (restart 1)" in "".join(lines), 60, "its restart", process
        )
        for job_id in recorded:
            assert (
                client.wait(str(job_id), ("completed", "failed", "cancelled"))["job"]["status"] == "completed"
            )
        assert process.poll() is None, "".join(lines)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    deadline = time.monotonic() + 10
    while _port_open(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _port_open(port), "Ctrl-C left the Prefect server running"


README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_first_job() -> list[str]:
    """The commands of the README's "Your first job" block, continuation lines joined, without the
    comments and `ourvidz up` (the test's stack is up)."""
    section = README.read_text().split("## Your first job", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0].replace("\\\n", "")
    return [line for line in block.splitlines() if line.strip() and not line.startswith(("#", "ourvidz up"))]


def _first_job_as_the_readme_shows(env: dict[str, str], gateway: str) -> None:
    """The README's first job, its commands run as shown (against this stack's gateway port): the
    live updates show the job completed, and the job's status says so with its file."""
    export, watch, queue, status = _readme_first_job()
    assert watch.endswith("&") and "JOB_ID" in status
    here = gateway.removeprefix("http://").replace("127.0.0.1", "localhost")
    shell_env = {**env, "PATH": f"{Path(OURVIDZ[0]).parent}:{env.get('PATH', '')}"}
    script = "\n".join(line.replace("localhost:8000", here) for line in (export, watch, queue, "wait"))
    process = subprocess.Popen(
        ["bash", "-c", script], env=shell_env, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert process.stdout is not None
    seen: list[str] = []
    threading.Thread(
        target=lambda: seen.extend(iter(lambda: process.stdout.read(1), "")), daemon=True
    ).start()  # type: ignore[union-attr]
    try:
        job_id = _job_id_of(seen, process)
        _wait_for_text(
            seen, process, lambda text: f'"{job_id}"' in text and '"completed"' in text.split(job_id, 1)[1]
        )
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    status_line = status.replace("localhost:8000", here).replace("JOB_ID", job_id)
    answer = subprocess.run(
        ["bash", "-c", f"{export}\n{status_line}"], env=shell_env, capture_output=True, text=True, check=True
    )
    body = json.loads(answer.stdout)
    assert body["job"]["status"] == "completed" and body["assets"], body


def _job_id_of(seen: list[str], process: subprocess.Popen[str], timeout: float = 60) -> str:
    """The id in `/queue-job`'s answer, among the stream's `data:` lines."""
    deadline = time.monotonic() + timeout
    while True:
        text = "".join(seen)
        start = text.find('{"')
        while start >= 0 and text[max(0, start - 6) : start] == "data: ":
            start = text.find('{"', start + 1)
        if start >= 0:
            try:
                answer, _ = json.JSONDecoder().raw_decode(text[start:])
                return str(answer["job"]["id"])
            except ValueError:
                pass
        assert process.poll() is None and time.monotonic() < deadline, f"no /queue-job answer: {text}"
        time.sleep(0.2)


def _wait_for_text(
    seen: list[str], process: subprocess.Popen[str], found: Callable[[str], bool], timeout: float = 180
) -> None:
    deadline = time.monotonic() + timeout
    while not found("".join(seen)):
        assert process.poll() is None and time.monotonic() < deadline, "".join(seen)
        time.sleep(0.2)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _all_dispatched(sessions: sessionmaker[Session], job_ids: list[uuid.UUID]) -> bool:
    with sessions() as session:
        return all(session.get_one(Job, job_id).flow_run_id is not None for job_id in job_ids)


def _wait_for(
    condition: Callable[[], bool], timeout: float, what: str, process: subprocess.Popen[str]
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"ourvidz up exited with code {process.returncode} waiting for {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s"
        time.sleep(0.2)
