"""The prompt a job is generated from: the original, or the enhancer's version for enhanced job types
(and jobs that ask with `metadata.enhance`).

Enhancers in order: the registered chat worker, then the rules enhancer, which is always there. A chat
worker that fails, times out, answers garbage or changes the content tier is passed over, and the
result says so (`rules_fallback`).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from ourvidz.catalog import JobType, get_job_type
from ourvidz.config import get_settings
from ourvidz.db.models import Job
from ourvidz.jobs.content import check_content, content_policy
from ourvidz.jobs.spec import JobSpec
from ourvidz.policy import ContentPolicy, tier_permitted
from ourvidz.prompts import Enhancement, rules_enhance
from ourvidz.prompts.chat import EnhancerFailed, chat_enhance
from ourvidz.registry import registered_chat_url

NO_ENHANCEMENT = "none"
FALLBACK_STRATEGY = "rules_fallback"
logger = logging.getLogger(__name__)


def enhance(
    prompt: str,
    job_type: JobType,
    *,
    chat_url: str | None = None,
    policy: ContentPolicy | None = None,
    timeout: float = 10.0,
) -> Enhancement:
    """The enhanced prompt for a job type, within its token budget: the chat worker's when one is
    given and gives a usable answer (checked against `policy`), else the rules enhancer's."""
    if chat_url is None:
        return rules_enhance(prompt, job_type)
    try:
        result = chat_enhance(chat_url, prompt, job_type, timeout)
        if policy is not None:
            _same_content(policy, prompt, result.prompt)
        return result
    except EnhancerFailed as exc:
        logger.warning("chat-worker enhancement failed, rules enhancer used instead: %s", exc)
        return replace(rules_enhance(prompt, job_type), strategy=FALLBACK_STRATEGY)


def _same_content(policy: ContentPolicy, original: str, enhanced: str) -> None:
    before, after = policy.classify(original), policy.classify(enhanced)
    # the reply may need no tier the prompt's own tier would not permit
    if after.category is not None or not tier_permitted(after.tier, before.tier, age_verified=True):
        raise EnhancerFailed("the reply needs a higher content tier than the prompt")


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
        settings = get_settings()
        result = enhance(
            spec.prompt, spec.job_type, chat_url=registered_chat_url(sessions),
            policy=content_policy(settings), timeout=settings.enhancer_timeout_seconds,
        )  # fmt: skip
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
