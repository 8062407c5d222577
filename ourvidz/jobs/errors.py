"""Why a job request cannot be done, and why a job failed: stable codes, the same at every entry point.

A `JobError` is raised to the caller (the gateway answers it with the spec's error body, a flow run
started from Prefect fails with `<code>: <message>`); a `Failure` is recorded on a failed job's row.
Content refusals are the policy's own errors (`ourvidz.policy.PolicyError`), with their codes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ourvidz.policy import ContentCheckUnavailable, PolicyError

# Why a job failed, beyond the request checks (INVALID_PARAMETERS, CONTENT_PROHIBITED, ...).
GENERATION_FAILED = "GENERATION_FAILED"  # the pipeline raised (the exception is for operators' eyes only)
TIMEOUT = "TIMEOUT"
OUT_OF_MEMORY = "OUT_OF_MEMORY"
STORAGE_FAILED = "STORAGE_FAILED"  # the files were made but could not be stored
WORKER_LOST = "WORKER_LOST"  # its flow run was lost more often than its attempts allow
WORKER_FAILED = "WORKER_FAILED"  # a worker outside Prefect reported the failure in its own words
MAX_MESSAGE_CHARS = 2000
# what a client reads for a failure an exception caused: no server paths, no exception text
PUBLIC_MESSAGES = {
    GENERATION_FAILED: "generation failed on the worker; the operator's logs have the details",
    TIMEOUT: "generation took longer than the worker allows",
    OUT_OF_MEMORY: "the worker ran out of memory for this job; a smaller size or fewer images may fit",
}


class JobError(Exception):
    """A request about a job that cannot be done as asked."""

    code = "JOB_ERROR"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if code is not None:
            self.code = code


class InvalidJob(JobError):
    """The request is malformed or outside what the job type allows (the client must change it)."""

    code = "INVALID_PARAMETERS"


class NotFound(JobError):
    """The job (or a row it names) does not exist for this caller."""

    code = "NOT_FOUND"


class Forbidden(JobError):
    """The request names something the caller may not use (another user's file)."""

    code = "FORBIDDEN"


class Conflict(JobError):
    """The job's state does not allow this now (already final, an illegal move)."""

    code = "CONFLICT"


class StorageFailed(JobError):
    """The generated files could not be written to storage (the cause is chained, for the logs)."""

    code = STORAGE_FAILED

    def __init__(self) -> None:
        super().__init__("the generated files could not be stored; the operator's logs have the details")


class OrchestratorUnavailable(JobError):
    """Prefect cannot be reached and the request needs it; nothing changed, retry shortly."""

    code = "ORCHESTRATOR_UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a job failed: a code for machines (metrics, clients) and a message for people; `internal`,
    for an exception, says what raised, for operators only (the flow run's state, logs): it is never
    stored on the job nor sent to a client."""

    code: str
    message: str
    internal: str | None = field(default=None, compare=False)

    @classmethod
    def of(cls, exc: BaseException) -> Failure:
        """The failure an exception stands for: a refusal keeps its code and words, anything else is
        sorted by its type and told with the code's public message."""
        if isinstance(exc, JobError | PolicyError | ContentCheckUnavailable):
            cause = exc.__cause__
            return cls(exc.code, str(exc), None if cause is None else f"{type(cause).__name__}: {cause}")
        kind = type(exc).__name__
        lowered = kind.lower()
        if isinstance(exc, TimeoutError) or "timeout" in lowered:
            code = TIMEOUT
        elif "outofmemory" in lowered:
            code = OUT_OF_MEMORY
        else:
            code = GENERATION_FAILED
        return cls(code, PUBLIC_MESSAGES[code], f"{kind}: {exc}")

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def for_operators(self) -> str:
        """The failure with what raised it, for the flow run's state message."""
        return str(self) if self.internal is None else f"{self} ({self.internal})"
