"""The job life cycle in the database: create, start, end (outputs, usage, announcement), cancel and
worker reports, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks.webhooks import Webhook

from ourvidz.db.models import ContentRefusal, Image, Job, Profile, UsageLog, Video, WebhookDelivery
from ourvidz.db.session import sessions_for
from ourvidz.job_status import JobStatus
from ourvidz.jobs.callbacks import WorkerReport, apply_report
from ourvidz.jobs.cancel import cancel_job
from ourvidz.jobs.conclude import conclude
from ourvidz.jobs.create import JobRequest, add_job, create_job, ensure_profile
from ourvidz.jobs.enhancement import apply_enhancement
from ourvidz.jobs.errors import PUBLIC_MESSAGES, WORKER_FAILED, Conflict, Failure, InvalidJob, NotFound
from ourvidz.jobs.lifecycle import Announcer
from ourvidz.jobs.outputs import Output
from ourvidz.jobs.progress import set_progress
from ourvidz.jobs.recovery import RunFate, recover_job
from ourvidz.jobs.references import ReferenceRules
from ourvidz.jobs.start import JobNotRunnable, JobRejected, start_job
from ourvidz.orchestration.runs import FlowRuns
from ourvidz.policy import MODERATION, ContentProhibited, ContentTier, ContentTierNotAllowed
from ourvidz.registry.workers import forget, register
from ourvidz.webhooks import WebhookSender
from tests.peers import PEERS_ALLOWED, FakeChatWorker, Receiver
from tests.unit.conftest import Emitted

SECRET = "whsec_" + "c2VjcmV0LWZvci13ZWJob29rLXRlc3RzLTMyYnl0ZXM="
SENDER = WebhookSender(SECRET, PEERS_ALLOWED)
PEER_RULES = ReferenceRules(egress=PEERS_ALLOWED)  # webhook receivers here are test peers


def _job(
    sessions: sessionmaker[Session], user: uuid.UUID, job_type: str = "sdxl_image_fast", **kw: Any
) -> Job:
    request = JobRequest(user_id=user, job_type=job_type, prompt="a quiet harbour", **kw)
    return create_job(sessions, request, rules=PEER_RULES).job


def _row(sessions: sessionmaker[Session], job_id: uuid.UUID) -> Job:
    with sessions() as session:
        return session.get_one(Job, job_id)


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"job_type": "sdxl_video"}, "INVALID_JOB_TYPE"),
        ({"prompt": "   "}, "MISSING_PROMPT"),
        ({"prompt": None}, "MISSING_PROMPT"),
        ({"prompt": "x" * 2001}, "PROMPT_TOO_LONG"),
        ({"metadata": {"width": 1001}}, "INVALID_PARAMETERS"),
        ({"metadata": {"num_images": 2}}, "INVALID_PARAMETERS"),
        ({"metadata": {"bucket": "../etc"}}, "INVALID_PARAMETERS"),
        ({"metadata": {"content_tier": "anything"}}, "INVALID_PARAMETERS"),
        ({"metadata": {"note": "x" * 20_000}}, "METADATA_TOO_LARGE"),
        ({"webhook_url": "not a url"}, "INVALID_PARAMETERS"),
    ],
)
def test_a_bad_request_is_refused_with_its_code_and_records_nothing(
    sessions: sessionmaker[Session], user: uuid.UUID, fields: dict[str, Any], code: str
) -> None:
    request = {"user_id": user, "job_type": "sdxl_image_fast", "prompt": "a quiet harbour", **fields}
    with pytest.raises(InvalidJob) as refused:
        create_job(sessions, JobRequest(**request))
    assert refused.value.code == code
    with sessions() as session:
        assert session.scalar(select(func.count()).where(Job.user_id == user)) == 0


def test_rows_named_by_a_request_must_be_the_callers(
    sessions: sessionmaker[Session], user: uuid.UUID
) -> None:
    other = uuid.uuid4()
    ensure_profile(sessions, other)
    theirs = _job(sessions, other)
    with pytest.raises(NotFound, match="image"):
        _job(sessions, user, image_id=theirs.image_id)
    job = _job(sessions, user, job_type="wan_video_fast")
    assert (job.job_type, job.queue, job.format, job.quality, job.status) == (
        "video_fast", "wan", "video", "fast", JobStatus.QUEUED,
    )  # fmt: skip


def test_a_single_seed_starts_the_seeds_of_every_image(
    sessions: sessionmaker[Session], user: uuid.UUID
) -> None:
    job = _job(sessions, user, metadata={"num_images": 3, "seed": 41})
    assert start_job(sessions, job.id, None).request.seeds == (41, 42, 43)


def test_idempotency_key_returns_the_same_job(sessions: sessionmaker[Session], user: uuid.UUID) -> None:
    first = _job(sessions, user, idempotency_key="click-1")
    assert _job(sessions, user, idempotency_key="click-1").id == first.id
    assert _job(sessions, user, idempotency_key="click-2").id != first.id
    other_user = uuid.uuid4()
    ensure_profile(sessions, other_user)
    assert _job(sessions, other_user, idempotency_key="click-1").id != first.id


def test_a_racing_retry_gets_the_first_job(migrated_url: str) -> None:
    """Two requests with one key, the second checking before the first commits: the unique constraint
    stops the second insert and it answers with the first job."""
    sessions = sessions_for(migrated_url)
    user = uuid.uuid4()
    ensure_profile(sessions, user)
    request = JobRequest(
        user_id=user, job_type="sdxl_image_fast", prompt="a quiet harbour", idempotency_key="k"
    )
    with ThreadPoolExecutor(1) as pool, sessions.begin() as first:
        mine = add_job(first, request)
        second = pool.submit(create_job, sessions, request)
        time.sleep(0.5)  # the second request now waits on the first one's uncommitted row
        assert not second.done()
    retried = second.result(timeout=30)
    assert (retried.created, retried.job.id) == (False, mine.job.id)
    with sessions() as session:
        assert session.scalar(select(func.count()).where(Job.idempotency_key == "k")) == 1


def test_two_first_jobs_of_a_new_user_at_once_both_succeed(migrated_url: str) -> None:
    """The second request, which saw no profile either, waits on the first one's profile row and then
    uses it instead of failing on the duplicate key."""
    sessions = sessions_for(migrated_url)
    new_user = uuid.uuid4()
    request = JobRequest(user_id=new_user, job_type="sdxl_image_fast", prompt="a quiet harbour")
    with ThreadPoolExecutor(1) as pool, sessions.begin() as first:
        mine = add_job(first, request)
        second = pool.submit(create_job, sessions, request)
        time.sleep(0.5)
    other = second.result(timeout=30)
    assert other.created and other.job.id != mine.job.id
    with sessions() as session:
        assert session.scalar(select(func.count()).where(Job.user_id == new_user)) == 2
        assert session.get(Profile, new_user) is not None


def test_start_moves_a_queued_job_to_processing_once_and_says_so(
    sessions: sessionmaker[Session], user: uuid.UUID, emitted: Emitted
) -> None:
    job = _job(sessions, user, metadata={"num_images": 3, "seeds": [1, 2, 3], "steps": 5})
    run_id = uuid.uuid4()
    spec = start_job(sessions, job.id, run_id)
    assert (spec.request.seeds, spec.request.steps, spec.bucket) == ((1, 2, 3), 5, "sdxl_image_fast")
    row = _row(sessions, job.id)
    assert (row.status, row.attempts, row.flow_run_id) == (JobStatus.PROCESSING, 1, run_id)
    with pytest.raises(JobNotRunnable):
        start_job(sessions, job.id, uuid.uuid4())
    with pytest.raises(NotFound):
        start_job(sessions, uuid.uuid4(), None)
    assert emitted(job.id) == ["ourvidz.job.processing"]


@pytest.mark.parametrize(
    ("allowed", "verified", "requested", "ok"),
    [
        (ContentTier.ARTISTIC, False, "artistic", True),
        (ContentTier.ARTISTIC, True, "explicit", False),
        (ContentTier.EXPLICIT, False, "explicit", False),
        (ContentTier.EXPLICIT, True, "explicit", True),
        (ContentTier.EXPLICIT, True, "unrestricted", False),
        (ContentTier.UNRESTRICTED, True, "unrestricted", True),
    ],
)
def test_content_tier_permission(
    sessions: sessionmaker[Session], allowed: ContentTier, verified: bool, requested: str, ok: bool
) -> None:
    """Checked when the job is asked for, and again when it starts: a profile may change meanwhile."""
    user_id = uuid.uuid4()
    ensure_profile(sessions, user_id, tier=allowed, age_verified=verified)
    metadata = {"content_tier": requested}
    request = JobRequest(user_id=user_id, job_type="sdxl_image_fast", prompt="x", metadata=metadata)
    if ok:
        assert start_job(sessions, create_job(sessions, request).job.id, None).content_tier == requested
        return
    with pytest.raises(ContentTierNotAllowed):
        create_job(sessions, request)
    _set_profile(sessions, user_id, ContentTier.UNRESTRICTED, True)
    job = create_job(sessions, request).job  # recorded while the profile allowed it
    _set_profile(sessions, user_id, allowed, verified)
    with pytest.raises(JobRejected) as info:
        start_job(sessions, job.id, None)
    assert info.value.failure.code == "CONTENT_TIER_NOT_ALLOWED"
    row = _row(sessions, job.id)
    assert (row.status, row.error_code) == (JobStatus.FAILED, "CONTENT_TIER_NOT_ALLOWED")
    assert row.error_message and not row.error_message.startswith("CONTENT_TIER_NOT_ALLOWED")


def _set_profile(
    sessions: sessionmaker[Session], user_id: uuid.UUID, tier: ContentTier, verified: bool
) -> None:
    with sessions.begin() as session:
        profile = session.get_one(Profile, user_id)
        profile.content_tier_allowed, profile.age_verified = tier, verified


def test_prompt_content_decides_the_tier_and_prohibited_is_refused_for_everyone(
    sessions: sessionmaker[Session],
) -> None:
    """The prompt's own words count, not only the tier the job asks for (placeholder vocabulary)."""
    artistic, open_user = uuid.uuid4(), uuid.uuid4()
    ensure_profile(sessions, artistic)
    ensure_profile(sessions, open_user, tier=ContentTier.UNRESTRICTED, age_verified=True)

    def request(user_id: uuid.UUID, prompt: str) -> JobRequest:
        return JobRequest(user_id=user_id, job_type="sdxl_image_fast", prompt=prompt)

    with pytest.raises(ContentTierNotAllowed):
        create_job(sessions, request(artistic, "a zorblax scene"))
    allowed = create_job(sessions, request(open_user, "a zorblax scene")).job
    assert start_job(sessions, allowed.id, None).content_tier is ContentTier.EXPLICIT
    with pytest.raises(ContentProhibited) as refused:
        create_job(sessions, request(open_user, "zorblax, a minor"))
    assert "zorblax" not in str(refused.value)


def test_final_prompt_is_checked_again(sessions: sessionmaker[Session]) -> None:
    """A profile downgraded after its job started: the enhance stage refuses the prompt."""
    user_id = uuid.uuid4()
    ensure_profile(sessions, user_id, tier=ContentTier.EXPLICIT, age_verified=True)
    job = create_job(
        sessions, JobRequest(user_id=user_id, job_type="sdxl_image_fast", prompt="zorblax at dusk")
    ).job
    spec = start_job(sessions, job.id, None)
    with sessions.begin() as session:
        session.get_one(Profile, user_id).age_verified = False
    with pytest.raises(ContentTierNotAllowed):
        apply_enhancement(sessions, spec)


@pytest.mark.parametrize(
    ("column", "value", "code"),
    [
        ("job_type", "sdxl_video", "INVALID_JOB_TYPE"),
        ("original_prompt", "   ", "MISSING_PROMPT"),
        ("original_prompt", "x" * 2001, "PROMPT_TOO_LONG"),
        ("meta", {"steps": 0}, "INVALID_PARAMETERS"),
    ],
)
def test_rows_that_cannot_run_are_failed_with_a_code_once(
    sessions: sessionmaker[Session], user: uuid.UUID, emitted: Emitted, column: str, value: object, code: str
) -> None:
    job = _job(sessions, user)
    with sessions.begin() as session:
        setattr(session.get_one(Job, job.id), column, value)
    with pytest.raises(JobRejected) as info:
        start_job(sessions, job.id, None)
    assert info.value.failure.code == code
    row = _row(sessions, job.id)
    assert (row.status, row.error_code, row.attempts) == (JobStatus.FAILED, code, 0)
    assert emitted(job.id) == ["ourvidz.job.failed"]


def test_ending_records_outputs_and_credits_and_is_announced_once(
    sessions: sessionmaker[Session], user: uuid.UUID, emitted: Emitted
) -> None:
    job = _job(sessions, user, job_type="video_fast")
    set_progress(sessions, job.id, 50)  # not processing yet: ignored
    spec = start_job(sessions, job.id, None)
    assert apply_enhancement(sessions, spec) == "a quiet harbour"
    set_progress(sessions, job.id, 40)
    assert _row(sessions, job.id).progress == 40
    video = Output(
        "video", 0, "video_fast", f"{user}/{job.id}/0.mp4", width=832, height=480, seed=7, size_bytes=1000,
        frames=81, duration=81 / 16, thumbnail_key=f"{user}/{job.id}/0.webp",
    )  # fmt: skip
    ended = conclude(sessions, job.id, JobStatus.COMPLETED, outputs=[video], prompt="a quiet harbour")
    assert ended is not None and [a["type"] for a in ended.assets] == ["video", "thumbnail"]
    assert conclude(sessions, job.id, JobStatus.FAILED, failure=Failure("X", "late")) is None
    row = _row(sessions, job.id)
    assert (row.status, row.progress, row.error_message, row.error_code) == (
        JobStatus.COMPLETED,
        100,
        None,
        None,
    )
    with sessions() as session:
        stored = session.scalars(select(Video).where(Video.job_id == job.id)).one()
        assert row.video_id == stored.id
        assert (stored.thumbnail_key, stored.frames, stored.fps, stored.seed) == (
            video.thumbnail_key,
            81,
            16,
            7,
        )
        assert session.scalars(select(Image).where(Image.job_id == job.id)).all() == []
        usage = session.scalars(select(UsageLog).where(UsageLog.job_id == job.id)).one()
        assert (usage.credits_consumed, usage.action) == (3, "video_fast")
    assert emitted(job.id) == ["ourvidz.job.processing", "ourvidz.job.completed"]


def test_a_failed_job_keeps_its_code_and_its_placeholder_says_so(
    sessions: sessionmaker[Session], user: uuid.UUID, emitted: Emitted
) -> None:
    job = _job(sessions, user)
    start_job(sessions, job.id, None)
    failure = Failure.of(RuntimeError("the pipeline broke at /srv/models/unet.bin"))
    assert failure == Failure("GENERATION_FAILED", PUBLIC_MESSAGES["GENERATION_FAILED"])
    assert failure.for_operators().endswith("(RuntimeError: the pipeline broke at /srv/models/unet.bin)")
    conclude(sessions, job.id, JobStatus.FAILED, failure=failure)
    row = _row(sessions, job.id)
    assert (row.error_code, row.error_message) == ("GENERATION_FAILED", PUBLIC_MESSAGES["GENERATION_FAILED"])
    with sessions() as session:
        assert session.scalars(select(Image.status).where(Image.job_id == job.id)).one() == "failed"
        assert session.scalar(select(func.count()).where(UsageLog.job_id == job.id)) == 0
    assert emitted(job.id) == ["ourvidz.job.processing", "ourvidz.job.failed"]


def test_an_ending_sends_the_jobs_webhook_signed(
    sessions: sessionmaker[Session], user: uuid.UUID, receiver: Receiver
) -> None:
    job = _job(sessions, user, webhook_url=receiver.url)
    conclude(sessions, job.id, JobStatus.CANCELLED, announcer=Announcer(sessions, SENDER))
    (request,) = receiver.requests
    payload = Webhook(SECRET).verify(request.body, request.headers)
    assert (payload["job_id"], payload["status"]) == (str(job.id), "cancelled")
    with sessions() as session:
        assert session.scalars(
            select(WebhookDelivery.succeeded).where(
                WebhookDelivery.job_id == job.id, WebhookDelivery.attempt > 0
            )
        ).all() == [True]  # attempt 0: queued with the ending


def test_a_run_whose_job_was_recovered_changes_nothing(
    sessions: sessionmaker[Session], user: uuid.UUID, emitted: Emitted
) -> None:
    """A hung run that comes back after recovery moved its job onto another run: its outputs and its
    ending are refused; the current run's are kept."""
    job = _job(sessions, user)
    first, second = uuid.uuid4(), uuid.uuid4()
    assert start_job(sessions, job.id, first).flow_run_id == first
    assert recover_job(sessions, job.id, first, RunFate.LOST, "its worker hung") == "requeued"
    start_job(sessions, job.id, second)
    image = Output("image", 0, "sdxl_image_fast", f"{user}/{job.id}/0.png", width=1024, height=1024, seed=7)
    assert conclude(sessions, job.id, JobStatus.COMPLETED, outputs=[image], run_id=first) is None
    assert conclude(sessions, job.id, JobStatus.FAILED, failure=Failure("X", "late"), run_id=first) is None
    assert conclude(sessions, job.id, JobStatus.COMPLETED, outputs=[image], run_id=second) is not None
    row = _row(sessions, job.id)
    assert (row.status, row.attempts, row.flow_run_id, row.error_message) == (
        JobStatus.COMPLETED,
        2,
        second,
        None,
    )
    with sessions() as session:
        assert len(session.scalars(select(Image).where(Image.job_id == job.id)).all()) == 1
        assert session.scalar(select(func.count()).where(UsageLog.job_id == job.id)) == 1
    assert emitted(job.id) == [
        "ourvidz.job.processing", "ourvidz.job.queued", "ourvidz.job.processing", "ourvidz.job.completed",
    ]  # fmt: skip


def test_a_worker_report_moves_the_job_like_the_flow_does(
    sessions: sessionmaker[Session], user: uuid.UUID, emitted: Emitted
) -> None:
    announcer = Announcer(sessions, SENDER)
    job = _job(sessions, user, metadata={"num_images": 3})
    assert apply_report(sessions, WorkerReport(job.id, "processing"), announcer).message == "job processing"
    again = apply_report(sessions, WorkerReport(job.id, "processing"), announcer)
    assert again.message == "job already processing; its runner's lease is renewed"
    keys = [f"{user}/{job.id}/{n}.png" for n in range(3)]
    report = WorkerReport(
        job.id, "completed", [Output("image", n, key=key, width=64) for n, key in enumerate(keys)],
        enhanced_prompt="a quiet harbour, at dusk",
    )  # fmt: skip
    done = apply_report(sessions, report, announcer)
    assert (done.job.status, done.job.enhanced_prompt) == (JobStatus.COMPLETED, "a quiet harbour, at dusk")
    with pytest.raises(Conflict) as refused:
        apply_report(sessions, WorkerReport(job.id, "failed", error_message="late"), announcer)
    assert refused.value.code == "ILLEGAL_TRANSITION"
    with sessions() as session:
        images = session.scalars(
            select(Image).where(Image.job_id == job.id).order_by(Image.image_index)
        ).all()
        assert [(i.bucket, i.storage_key, i.width) for i in images] == [
            ("sdxl_image_fast", k, 64) for k in keys
        ]
        assert session.scalars(select(UsageLog.credits_consumed).where(UsageLog.job_id == job.id)).all() == [
            3
        ]
    assert emitted(job.id) == ["ourvidz.job.processing", "ourvidz.job.completed"]


def test_a_worker_report_of_a_failure_keeps_its_words(
    sessions: sessionmaker[Session], user: uuid.UUID, emitted: Emitted
) -> None:
    job = _job(sessions, user)
    report = WorkerReport(job.id, "failed", error_message="CUDA out of memory")
    apply_report(sessions, report, Announcer(sessions, SENDER))
    row = _row(sessions, job.id)
    assert (row.status, row.error_code, row.error_message) == (
        JobStatus.FAILED,
        WORKER_FAILED,
        "CUDA out of memory",
    )
    with pytest.raises(NotFound):
        apply_report(sessions, WorkerReport(uuid.uuid4(), "failed"), Announcer(sessions, SENDER))
    assert emitted(job.id) == ["ourvidz.job.failed"]


def test_cancelling_a_job_that_no_run_generates_ends_it_at_once(
    sessions: sessionmaker[Session], user: uuid.UUID, emitted: Emitted
) -> None:
    """A queued job not yet dispatched, and one a worker outside Prefect reported processing."""
    queued, reported = _job(sessions, user), _job(sessions, user)
    apply_report(sessions, WorkerReport(reported.id, "processing"), Announcer(sessions, SENDER))
    runs = FlowRuns()  # not opened: neither cancellation may need Prefect
    for job, message in ((queued, "job cancelled before it started"),
                         (reported, "job cancelled (no run was generating it)")):  # fmt: skip
        cancelled = asyncio.run(cancel_job(sessions, runs, job.id, Announcer(sessions, SENDER)))
        assert (cancelled.job.status, cancelled.message) == (JobStatus.CANCELLED, message)
        with pytest.raises(Conflict):
            asyncio.run(cancel_job(sessions, runs, job.id, Announcer(sessions, SENDER)))
    assert emitted(queued.id) == ["ourvidz.job.cancelled"]
    assert emitted(reported.id) == ["ourvidz.job.processing", "ourvidz.job.cancelled"]


def test_enhanced_jobs_get_the_rules_enhancer_within_their_budget(
    sessions: sessionmaker[Session], user: uuid.UUID
) -> None:
    long_prompt = ", ".join(f"a distinct detail {n}" for n in range(40))
    for prompt in ("a quiet harbour", long_prompt):
        request = JobRequest(
            user_id=user, job_type="sdxl_image_fast", prompt=prompt, metadata={"enhance": True}
        )
        job = create_job(sessions, request).job
        spec = start_job(sessions, job.id, None)
        enhanced = apply_enhancement(sessions, spec)
        row = _row(sessions, job.id)
        details = row.meta["enhancement"]
        assert (row.enhancement_strategy, row.enhanced_prompt) == ("rules", enhanced)
        assert details["token_count"] <= details["token_budget"] == 75
        if prompt == long_prompt:
            assert details["compression_applied"] is True and enhanced.startswith("a distinct detail 0")
        else:
            assert enhanced.startswith("a quiet harbour, ") and details["added_phrases"]
            assert details["compression_applied"] is False


def test_a_prompt_the_client_enhanced_is_generated_as_sent(
    sessions: sessionmaker[Session], user: uuid.UUID
) -> None:
    metadata = {"enhanced_prompt": "a quiet harbour, soft morning light", "enhance": False}
    request = JobRequest(
        user_id=user, job_type="image7b_fast_enhanced", prompt="a quiet harbour", metadata=metadata
    )
    job = create_job(sessions, request).job
    spec = start_job(sessions, job.id, None)
    assert spec.enhance is False  # the enhanced type's own enhancement is turned off by the client
    assert apply_enhancement(sessions, spec) == "a quiet harbour, soft morning light"
    row = _row(sessions, job.id)
    assert (row.original_prompt, row.enhanced_prompt, row.enhancement_strategy) == (
        "a quiet harbour", "a quiet harbour, soft morning light", "provided",
    )  # fmt: skip


def test_a_client_enhanced_prompt_passes_the_content_policy_too(
    sessions: sessionmaker[Session], user: uuid.UUID
) -> None:
    metadata = {"enhanced_prompt": "a quiet harbour, zorblax, a minor"}  # placeholder vocabulary
    request = JobRequest(
        user_id=user, job_type="sdxl_image_fast", prompt="a quiet harbour", metadata=metadata
    )
    with pytest.raises(ContentProhibited):
        create_job(sessions, request)


def test_a_content_check_that_cannot_answer_fails_the_job_closed(
    sessions: sessionmaker[Session], emitted: Emitted
) -> None:
    """The moderation model registered but down: a job with sexual context is failed (never run
    unchecked, never left queued); refusals are recorded as category, layer and hash only."""
    adult = uuid.uuid4()
    ensure_profile(sessions, adult, tier=ContentTier.EXPLICIT, age_verified=True)
    model = FakeChatWorker()
    model.reply = lambda text: "unsafe\nS4" if "quuxmarker" in text else "safe"
    register(sessions, MODERATION, model.url, "test")
    try:
        refused = JobRequest(
            user_id=adult, job_type="sdxl_image_fast", prompt="two adults, quuxmarker, zorblax"
        )
        with pytest.raises(ContentProhibited):
            create_job(sessions, refused, rules=PEER_RULES)
        job = create_job(
            sessions, JobRequest(user_id=adult, job_type="sdxl_image_fast", prompt="two adults, zorblax"),
            rules=PEER_RULES,
        ).job  # fmt: skip
        model.healthy = False
        with pytest.raises(JobRejected) as info:
            start_job(sessions, job.id, None)
    finally:
        forget(sessions, MODERATION)
        model.stop()
    assert info.value.failure.code == "CONTENT_CHECK_UNAVAILABLE"
    row = _row(sessions, job.id)
    assert (row.status, row.error_code) == (JobStatus.FAILED, "CONTENT_CHECK_UNAVAILABLE")
    assert emitted(job.id) == ["ourvidz.job.failed"]
    with sessions() as session:
        kept = session.scalars(select(ContentRefusal).where(ContentRefusal.user_id == adult)).all()
    assert [(r.category, r.layer, len(r.text_hash)) for r in kept] == [("minors", "moderation", 12)]
