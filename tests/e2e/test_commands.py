"""`ourvidz demo` and `ourvidz up` on a fresh data dir, as a user would run them."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import httpx

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


def _niceness(*command: str) -> int:
    """The CPU niceness of the one running process whose command line contains `command`."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:  # gone meanwhile
            continue
        if all(part in args for part in command):
            found.append(int(cmdline.parent.name))
    assert len(found) == 1, f"{command}: {found}"
    return os.getpriority(os.PRIO_PROCESS, found[0])


def _run_job(env: dict[str, str], gateway: str, timeout: float = 180) -> dict:
    """Queue a small SDXL job as a new user (token from `ourvidz token`) and wait for it to end."""
    token = subprocess.run(
        [*OURVIDZ, "token", "--user", str(uuid.uuid4())], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    headers = {"authorization": f"Bearer {token}"}
    body = {
        "jobType": "sdxl_image_fast",
        "prompt": "a boat",
        "metadata": {"width": 64, "height": 64, "steps": 2},
    }
    answer = httpx.post(f"{gateway}/queue-job", json=body, headers=headers, timeout=30)
    assert answer.status_code == 201, answer.text
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = httpx.get(f"{gateway}/jobs/{answer.json()['job']['id']}", headers=headers, timeout=30).json()
        if status["job"]["status"] in ("completed", "failed", "cancelled"):
            return status
        time.sleep(0.5)
    raise AssertionError(f"the job did not end within {timeout} s: {status}")


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


def test_up_serves_until_ctrl_c_then_stops_everything(tmp_path: Path) -> None:
    port = free_port()
    env = _env(tmp_path, port)
    process = subprocess.Popen(
        [*OURVIDZ, "up"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "Press Ctrl-C" in line:
                break
        text = "".join(lines)
        assert f"Prefect UI:  http://127.0.0.1:{port}" in text, text
        worker_url = re.search(r"GPU worker:\s+(\S+)", text)
        gateway_url = re.search(r"Gateway:\s+(\S+)", text)
        assert worker_url is not None and gateway_url is not None
        assert httpx.get(f"{gateway_url.group(1)}/health", timeout=5).json() == {"status": "ok"}
        assert httpx.get(f"{gateway_url.group(1)}/jobs/{uuid.uuid4()}", timeout=5).status_code == 401
        assert httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5).status_code == 200
        assert httpx.get(worker_url.group(1), timeout=5).json()["work_pool"] == "gpu"
        # The gateway's answers come before flow-run creation (OURVIDZ_BACKGROUND_NICE, default 10).
        own = os.getpriority(os.PRIO_PROCESS, 0)
        assert _niceness("prefect", "server", "--port", str(port)) == min(own + 10, 19)
        gateway_port = gateway_url.group(1).rsplit(":", 1)[1]
        assert _niceness("ourvidz", "api", "--port", gateway_port) == own
        # A job through the gateway, whose dispatcher gives it its flow run.
        job = _run_job(env, gateway_url.group(1))
        assert job["job"]["status"] == "completed" and job["job"]["flow_run_id"] is not None
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    deadline = time.monotonic() + 10
    while _port_open(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _port_open(port), "Ctrl-C left the Prefect server running"
