"""The prompt a job is generated from: the original, or the enhancer's version for enhanced job types
(and jobs that ask with `metadata.enhance`). The rules enhancer is the one that is always there; the
chat-worker and local-model enhancers of the enhancement issue will sit in front of it."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from ourvidz.catalog import JobType, get_job_type
from ourvidz.db.models import Job
from ourvidz.jobs.content import check_content
from ourvidz.jobs.spec import JobSpec
from ourvidz.policy import ContentPolicy
from ourvidz.prompts import Enhancement, rules_enhance

NO_ENHANCEMENT = "none"


def enhance(prompt: str, job_type: JobType) -> Enhancement:
    """The enhanced prompt for a job type, within its token budget."""
    return rules_enhance(prompt, job_type)


def enhancement_metadata(result: Enhancement) -> dict[str, Any]:
    """What the spec's `enhancement_metadata` reports about the token budget and compression."""
    return {
        "token_count": result.token_count, "token_budget": result.budget,
        "original_token_count": result.original_token_count,
        "compression_applied": result.compression_applied, "truncated": result.truncated,
        "added_phrases": result.added, "dropped_phrases": result.dropped,
    }  # fmt: skip


def apply_enhancement(sessions: sessionmaker[Session], spec: JobSpec) -> str:
    """Decide the prompt to generate from and record it (and how it was made) on the job.

    The final prompt passes the content check again (raises a PolicyError): an enhancer may add words.
    """
    prompt, strategy, details = spec.prompt, NO_ENHANCEMENT, None
    if spec.enhance:
        result = enhance(spec.prompt, spec.job_type)
        prompt, strategy, details = result.prompt, result.strategy, enhancement_metadata(result)
    with sessions.begin() as session:
        check_content(session, spec.user_id, prompt, spec.content_tier)
        job = session.get_one(Job, spec.id)
        job.enhanced_prompt = prompt
        job.enhancement_strategy = strategy
        if details is not None:
            job.meta = {**(job.meta or {}), "enhancement": details}
    return prompt


# A fixed regression set for template changes: neutral prompts that stress the budget and the tidying.
REGRESSION_PROMPTS = (
    "a lighthouse at dusk",
    "portrait of an old fisherman, weathered face, soft window light",
    "a red fox, a red fox, in fresh snow, in fresh snow, morning mist",
    ", ".join(f"detail number {n}" for n in range(60)),
    "a zorblax in a quiet gallery",  # a shipped placeholder term: the tier must not change
)
REGRESSION_JOB_TYPES = ("sdxl_image_fast", "sdxl_image_high", "image_fast", "video_fast", "video_high")


def validate_enhancer(policy: ContentPolicy) -> list[dict[str, Any]]:
    """Run the regression set through the current enhancer; one result per (prompt, job type).

    A case passes when the enhanced prompt is non-empty, within the token budget, needs the same
    content tier as the original, and is not prohibited.
    """
    cases = []
    for job_type_name in REGRESSION_JOB_TYPES:
        job_type = get_job_type(job_type_name)
        for index, prompt in enumerate(REGRESSION_PROMPTS):
            result = enhance(prompt, job_type)
            before, after = policy.classify(prompt), policy.classify(result.prompt)
            checks = {
                "non_empty": bool(result.prompt.strip()),
                "within_budget": result.token_count <= job_type.token_budget,
                "tier_unchanged": after.tier == before.tier,
                "not_prohibited": after.category is None,
            }
            cases.append({
                "case": index, "job_type": job_type.name, "passed": all(checks.values()), **checks,
                "token_count": result.token_count, "token_budget": job_type.token_budget,
            })  # fmt: skip
    return cases
