"""Moving a job along its life cycle, and telling the world about each move.

`move` is the one writer of a job's status: it checks the move against the state machine
(`ourvidz.job_status`), stamps the times, records why a job failed, and returns the `Move`. A move
is announced once its transaction has committed (`Announcer`): a Prefect event
`ourvidz.job.<status>` always (realtime clients get it from there), and for a final status the job's
webhook, when it has one. The webhook's first attempt is made by the announcer (inline, or in the
background where a client is waiting for an answer); the deliver-webhooks flow makes the later ones.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from ourvidz.config import Settings, get_settings
from ourvidz.db.models import Image, Job, Video
from ourvidz.db.types import utcnow
from ourvidz.job_status import JobStatus, check_transition
from ourvidz.jobs.errors import MAX_MESSAGE_CHARS, Failure
from ourvidz.orchestration.events import emit_job_event
from ourvidz.webhooks import WebhookSender, first_attempt

logger = logging.getLogger(__name__)
BACKGROUND_WEBHOOK_THREADS = 4


@dataclass(frozen=True, slots=True)
class Move:
    """One status change of a job, with what its announcement carries."""

    job_id: uuid.UUID
    user_id: uuid.UUID
    job_type: str
    status: JobStatus
    previous: JobStatus
    webhook_url: str | None = None
    failure: Failure | None = None
    reason: str | None = None  # a cancellation's reason
    assets: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    @property
    def webhook_event(self) -> str:
        return f"job.{self.status}"

    def payload(self) -> dict[str, Any]:
        """The event's and the webhook's body."""
        body: dict[str, Any] = {
            "job_id": str(self.job_id),
            "status": str(self.status),
            "job_type": self.job_type,
        }
        if self.failure is not None:
            body["error"], body["error_code"] = self.failure.message, self.failure.code
        elif self.reason is not None:
            body["error"] = self.reason
        if self.assets:
            body["assets"] = list(self.assets)
        return body


def move(
    session: Session,
    job: Job,
    target: JobStatus,
    *,
    failure: Failure | None = None,
    reason: str | None = None,
    assets: Iterable[dict[str, Any]] = (),
) -> Move:
    """Move `job` (locked by the caller's transaction) to `target`, or raise `IllegalTransition`."""
    previous = job.status
    new = check_transition(previous, target)
    now = utcnow()
    if new is JobStatus.PROCESSING:
        job.attempts += 1
        job.started_at = job.progressed_at = now
    elif new is JobStatus.QUEUED:  # back in the queue after its run was lost
        job.started_at = job.progressed_at = None
        job.progress = 0
    else:
        job.completed_at = now
        if new is JobStatus.COMPLETED:
            job.progress = 100
        else:  # the placeholder rows say why no file will come
            for model, row_id in ((Image, job.image_id), (Video, job.video_id)):
                row = session.get(model, row_id) if row_id else None
                if row is not None and row.status != "completed":
                    row.status = str(new)
    if failure is not None:
        failure = Failure(failure.code[:64], failure.message[:MAX_MESSAGE_CHARS])
        job.error_code, job.error_message = failure.code, failure.message
    elif reason is not None:
        job.error_message = reason[:MAX_MESSAGE_CHARS]
    job.status = new
    return Move(
        job.id, job.user_id, job.job_type, new, previous, job.webhook_url, failure, reason, tuple(assets)
    )


class Announcer:
    """Announces committed moves: the event at once, a final move's first webhook attempt inline or, with
    `background`, on a few threads of this process (so a slow receiver never holds up an answer or a
    flow run). The webhook was queued with the move (`conclude`), so an attempt that dies with the
    process is made by deliver-webhooks."""

    def __init__(
        self, sessions: sessionmaker[Session], sender: WebhookSender | None, *, background: bool = False
    ) -> None:
        self.sessions = sessions
        self.sender = sender
        self._pool = ThreadPoolExecutor(BACKGROUND_WEBHOOK_THREADS, "ourvidz-webhook") if background else None

    def __call__(self, *moves: Move) -> None:
        for done in moves:
            emit_job_event(str(done.status), done.job_id, done.user_id, done.job_type, done.payload())
            if done.status.is_final and done.webhook_url:
                if self._pool is not None:
                    self._pool.submit(self._webhook, done)
                else:
                    self._webhook(done)

    def _webhook(self, done: Move) -> None:
        if self.sender is None:
            logger.error("job %s has a webhook but no webhook secret is configured", done.job_id)
            return
        try:
            first_attempt(
                self.sessions, self.sender, url=str(done.webhook_url), job_id=done.job_id,
                event_type=done.webhook_event, payload=done.payload(),
            )  # fmt: skip
        except Exception as exc:  # recorded where it could be; the deliver-webhooks flow tries again
            logger.warning("webhook of job %s not delivered yet: %s", done.job_id, exc)

    def close(self) -> None:
        """Wait for the background attempts still running (a process that stops lets them finish)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)


_SHARED: dict[tuple[sessionmaker[Session], int], tuple[Settings, Announcer]] = {}
_SHARED_LOCK = threading.Lock()


def default_announcer(sessions: sessionmaker[Session]) -> Announcer:
    """This process's announcer for the job database of `sessions`, sending webhooks as its settings
    say, in the background: whoever ends a job (a flow run holding a GPU slot, the dispatcher,
    recovery) never waits for a receiver. Attempts still running when the process exits are waited
    for (the pool's threads are joined at exit)."""
    settings = get_settings()  # new settings (tests clear the cache): another announcer
    key = (sessions, id(settings))  # the settings are kept with it, so their id is not reused
    with _SHARED_LOCK:
        if key not in _SHARED:  # the sender resolves the stack's own services: once, not per job
            _SHARED[key] = (settings, Announcer(sessions, WebhookSender.of(settings), background=True))
        return _SHARED[key][1]
