"""Settings come from OURVIDZ_* variables; secrets are generated once on the embedded default only."""

from __future__ import annotations

import base64
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from ourvidz import settings_doc
from ourvidz.config import Settings


def test_defaults_live_under_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OURVIDZ_DATA_DIR", str(tmp_path / "data"))
    settings = Settings()
    data = (tmp_path / "data").resolve()
    assert settings.environment == "embedded"
    assert settings.data_dir == data
    assert settings.database_url == f"sqlite:///{data / 'ourvidz.db'}"
    assert settings.storage_url == f"file://{data / 'storage'}"
    assert settings.models_dir == data / "models"
    assert settings.redis_url is None
    assert settings.model_profile == "tiny"
    assert settings.jwt_audience == "authenticated"


def test_relative_data_dir_defaults_to_dot_ourvidz(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("OURVIDZ_DATA_DIR")
    monkeypatch.chdir(tmp_path)
    assert Settings().data_dir == (tmp_path / ".ourvidz").resolve()


def test_every_setting_reads_its_environment_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = {
        "OURVIDZ_ENVIRONMENT": "production",
        "OURVIDZ_DATABASE_URL": "postgresql://u@db.internal:5432/ourvidz",
        "OURVIDZ_STORAGE_URL": "memory://assets",
        "OURVIDZ_REDIS_URL": "redis://cache:6379/2",
        "OURVIDZ_JWT_SECRET": "jwt-from-env",
        "OURVIDZ_JWT_AUDIENCE": "ourvidz-app",
        "OURVIDZ_CALLBACK_SECRET": "callback-from-env",
        "OURVIDZ_WEBHOOK_SECRET": "whsec_d2ViaG9vaw==",
        "OURVIDZ_DEVICE": "cuda:1",
        "OURVIDZ_BATCH_WINDOW_MS": "20",
        "OURVIDZ_MAX_BATCH_IMAGES": "4",
        "OURVIDZ_TORCH_COMPILE": "true",
        "OURVIDZ_SDXL_CONCURRENCY": "2",
        "OURVIDZ_WAN_CONCURRENCY": "3",
        "OURVIDZ_SDXL_SLOTS": "6",
        "OURVIDZ_WAN_SLOTS": "1",
        "OURVIDZ_GPU_WORKERS": "5",
        "OURVIDZ_WORK_POOL": "gpu-east",
        "OURVIDZ_WORKER_HEALTH_PORT": "8123",
        "OURVIDZ_PREFECT_PORT": "4300",
        "OURVIDZ_BACKGROUND_NICE": "5",
        "OURVIDZ_GATEWAY_DISPATCHES": "false",
        "OURVIDZ_STALL_MINUTES": "25",
        "OURVIDZ_SERVICE_KEY": "service-from-env",
        "OURVIDZ_API_HOST": "0.0.0.0",
        "OURVIDZ_API_PORT": "8080",
        "OURVIDZ_RATE_LIMIT_JOBS": "5/minute",
        "OURVIDZ_RATE_LIMIT_ENHANCE": "6/minute",
        "OURVIDZ_RATE_LIMIT_HEALTH": "7/minute",
        "OURVIDZ_MAX_BODY_BYTES": "2048",
        "OURVIDZ_MAX_METADATA_BYTES": "512",
        "OURVIDZ_CALLBACK_TOLERANCE_SECONDS": "60",
        "OURVIDZ_MODEL_PROFILE": "production",
        "OURVIDZ_MODELS_DIR": str(tmp_path / "weights"),
        "OURVIDZ_SDXL_MODEL": "/models/sdxl.safetensors",
        "OURVIDZ_WAN_MODEL": "/models/wan",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.environment == "production"
    assert settings.database_url == "postgresql+psycopg://u@db.internal:5432/ourvidz"
    assert settings.storage_url == "memory://assets"
    assert settings.redis_url == "redis://cache:6379/2"
    assert settings.jwt_secret is not None and settings.jwt_secret.get_secret_value() == "jwt-from-env"
    assert settings.callback_secret is not None
    assert settings.callback_secret.get_secret_value() == "callback-from-env"
    assert settings.jwt_audience == "ourvidz-app"
    assert settings.model_profile == "production"
    assert settings.models_dir == tmp_path / "weights"
    assert (settings.sdxl_model, settings.wan_model) == ("/models/sdxl.safetensors", "/models/wan")
    assert settings.webhook_secret is not None
    assert settings.webhook_secret.get_secret_value() == "whsec_d2ViaG9vaw=="
    assert (settings.device, settings.batch_window_ms, settings.max_batch_images) == ("cuda:1", 20.0, 4)
    assert settings.torch_compile is True
    assert (settings.sdxl_concurrency, settings.wan_concurrency, settings.work_pool) == (2, 3, "gpu-east")
    assert (settings.sdxl_slots, settings.wan_slots, settings.gpu_workers) == (6, 1, 5)
    assert (settings.worker_health_port, settings.prefect_port) == (8123, 4300)
    assert (settings.background_nice, settings.gateway_dispatches, settings.stall_minutes) == (5, False, 25.0)
    assert settings.service_key is not None and settings.service_key.get_secret_value() == "service-from-env"
    assert (settings.api_host, settings.api_port) == ("0.0.0.0", 8080)
    limits = (settings.rate_limit_jobs, settings.rate_limit_enhance, settings.rate_limit_health)
    assert limits == ("5/minute", "6/minute", "7/minute")
    assert (settings.max_body_bytes, settings.max_metadata_bytes, settings.callback_tolerance_seconds) == (
        2048, 512, 60,
    )  # fmt: skip
    assert not (settings.data_dir / "secrets").exists()
    assert "jwt-from-env" not in repr(settings)


@pytest.mark.parametrize("url", ["postgres://u@h/db", "postgresql://u@h/db", "postgresql+psycopg://u@h/db"])
def test_postgres_urls_use_psycopg3(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("OURVIDZ_DATABASE_URL", url)
    assert Settings().database_url == "postgresql+psycopg://u@h/db"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OURVIDZ_MODEL_PROFILE", "huge"),
        ("OURVIDZ_ENVIRONMENT", "dev"),
        ("OURVIDZ_BACKGROUND_NICE", "20"),
        ("OURVIDZ_BACKGROUND_NICE", "-5"),
        ("OURVIDZ_GATEWAY_DISPATCHES", "sometimes"),
    ],
)
def test_invalid_choices_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_embedded_secrets_are_generated_private_and_reused() -> None:
    first = Settings()
    secrets_dir = first.data_dir / "secrets"
    assert stat.S_IMODE(secrets_dir.stat().st_mode) == 0o700
    for name in ("jwt_secret", "callback_secret", "webhook_secret", "service_key"):
        assert stat.S_IMODE((secrets_dir / name).stat().st_mode) == 0o600
    assert first.jwt_secret is not None and first.callback_secret is not None
    assert len(first.jwt_secret.get_secret_value()) >= 32
    assert first.jwt_secret.get_secret_value() != first.callback_secret.get_secret_value()
    second = Settings()
    assert second.jwt_secret == first.jwt_secret and second.callback_secret == first.callback_secret
    names = ["callback_secret", "jwt_secret", "service_key", "webhook_secret"]
    assert sorted(p.name for p in secrets_dir.iterdir()) == names
    assert first.webhook_secret is not None
    webhook = first.webhook_secret.get_secret_value()
    assert webhook.startswith("whsec_") and len(base64.b64decode(webhook.removeprefix("whsec_"))) == 32


def test_a_set_secret_wins_over_the_generated_one(monkeypatch: pytest.MonkeyPatch) -> None:
    generated = Settings().jwt_secret
    monkeypatch.setenv("OURVIDZ_JWT_SECRET", "chosen")
    settings = Settings()
    assert settings.jwt_secret is not None and settings.jwt_secret.get_secret_value() == "chosen"
    assert settings.jwt_secret != generated


def test_processes_starting_together_agree_on_one_secret() -> None:
    code = "from ourvidz.config import Settings; print(Settings().jwt_secret.get_secret_value())"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(6)
    ]
    outputs = {proc.communicate(timeout=60)[0].strip() for proc in procs}
    assert all(proc.returncode == 0 for proc in procs)
    assert len(outputs) == 1 and outputs != {""}


def test_production_refuses_to_start_without_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OURVIDZ_ENVIRONMENT", "production")
    monkeypatch.setenv("OURVIDZ_JWT_SECRET", "set")
    monkeypatch.setenv("OURVIDZ_WEBHOOK_SECRET", "whsec_c2V0")
    monkeypatch.setenv("OURVIDZ_SERVICE_KEY", "set")
    with pytest.raises(ValidationError, match="needs these secrets set: OURVIDZ_CALLBACK_SECRET") as info:
        Settings()
    assert "JWT" not in str(info.value) and "WEBHOOK" not in str(info.value)
    monkeypatch.delenv("OURVIDZ_JWT_SECRET")
    monkeypatch.delenv("OURVIDZ_WEBHOOK_SECRET")
    monkeypatch.delenv("OURVIDZ_SERVICE_KEY")
    with pytest.raises(ValidationError, match="OURVIDZ_JWT_SECRET, OURVIDZ_CALLBACK_SECRET, OURVIDZ_WEBHOOK"):
        Settings()


def test_empty_secret_file_is_an_error_not_an_empty_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets_dir = Settings().data_dir / "secrets"
    (secrets_dir / "jwt_secret").write_text("\n")
    with pytest.raises(ValidationError, match="is empty"):
        Settings()


def test_the_configuration_page_is_generated_from_the_settings() -> None:
    """docs/configuration.md is `python -m ourvidz.settings_doc`'s output: every setting, its default and
    its own description."""
    documented = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    assert documented == settings_doc.render(), "run: python -m ourvidz.settings_doc > docs/configuration.md"
    assert all(f"`OURVIDZ_{name.upper()}`" in documented for name in Settings.model_fields)
