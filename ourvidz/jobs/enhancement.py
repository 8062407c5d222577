"""The prompt a job is generated from: the original, or the enhancer chain's version for enhanced job
types (and jobs that ask with `metadata.enhance`).

The chain, in order: the registered chat worker, the local transformers model (when
OURVIDZ_ENHANCER_MODEL_PATH is set), then the rules enhancer, which is always there. An enhancer
that fails, times out, answers garbage or changes the content tier is passed over, and the result's
strategy says so (`local_llm_fallback`, `rules_fallback`). System prompts and rules templates come
from the prompt-template cache, chosen by model family, quality and the prompt's content tier.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from ourvidz.catalog import JobType, get_job_type
from ourvidz.config import Settings, get_settings
from ourvidz.db.models import Job
from ourvidz.egress import EgressPolicy, policies
from ourvidz.jobs.content import check_content, content_policy, refusals_recorded
from ourvidz.jobs.spec import JobSpec
from ourvidz.policy import ContentPolicy, ContentProhibited, ContentTier, tier_permitted
from ourvidz.prompts import Enhancement, rules_enhance
from ourvidz.prompts.chat import ChatWorker, EnhancerFailed, chat_enhance
from ourvidz.prompts.local_llm import local_enhance
from ourvidz.prompts.templates import Templates, default_templates, prompt_cache
from ourvidz.registry.workers import registered_chat_worker

NO_ENHANCEMENT = "none"
PROVIDED = "provided"  # the client sent the prompt to generate from, enhanced on its side
FALLBACK_STRATEGY = "rules_fallback"
LOCAL_FALLBACK_STRATEGY = "local_llm_fallback"
logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Enhancers:
    """The enhancers a call may try before the rules enhancer, and how long the chat worker gets."""

    chat: ChatWorker | None = None
    local_model: Path | None = None
    device: str = "cpu"
    timeout: float = 10.0
    model: str | None = None  # the request's choice among the chat worker's models, if it has several


def enhancers_for(
    sessions: sessionmaker[Session], settings: Settings, worker_egress: EgressPolicy | None = None
) -> Enhancers:
    """What this process can use now: the registered chat worker (called through `worker_egress`, the
    process's worker URL policy) and the configured local model."""
    egress = worker_egress or policies(settings)[1]
    return Enhancers(
        chat=registered_chat_worker(sessions, egress), local_model=settings.enhancer_model_path,
        device=settings.enhancer_model_device, timeout=settings.enhancer_timeout_seconds,
    )  # fmt: skip


def templates_for(sessions: sessionmaker[Session], settings: Settings) -> Templates:
    return prompt_cache(sessions, settings.prompt_cache_check_seconds).current()


def enhance(
    prompt: str,
    job_type: JobType,
    enhancers: Enhancers | None = None,
    *,
    policy: ContentPolicy | None = None,
    templates: Templates | None = None,
) -> Enhancement:
    """The enhanced prompt for a job type, within its token budget, from the first enhancer of the
    chain that gives a usable answer (checked against `policy` when given)."""
    enhancers = enhancers or Enhancers()
    templates = templates or default_templates()
    tier = policy.classify(prompt).tier if policy is not None else ContentTier.ARTISTIC
    system_prompt = templates.enhancement_prompt(job_type, tier)
    failed = False
    if enhancers.chat is not None:
        try:
            result = chat_enhance(
                enhancers.chat, prompt, job_type, system_prompt, enhancers.timeout, enhancers.model
            )
            _same_content(policy, prompt, result.prompt)
            return result
        except EnhancerFailed as exc:
            logger.warning("chat-worker enhancement failed, next enhancer used: %s", exc)
            failed = True
    if enhancers.local_model is not None:
        try:
            result = local_enhance(enhancers.local_model, enhancers.device, prompt, job_type, system_prompt)
            _same_content(policy, prompt, result.prompt)
            return replace(result, strategy=LOCAL_FALLBACK_STRATEGY) if failed else result
        except EnhancerFailed as exc:
            logger.warning("local-model enhancement failed, rules enhancer used: %s", exc)
            failed = True
    result = rules_enhance(prompt, job_type, templates.rules_template(job_type, tier))
    return replace(result, strategy=FALLBACK_STRATEGY) if failed else result


def _same_content(policy: ContentPolicy | None, original: str, enhanced: str) -> None:
    if policy is None:
        return
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
    if spec.enhance and spec.prompt:  # a promptless exact copy has nothing to enhance
        settings = get_settings()
        result = enhance(
            spec.prompt, spec.job_type, enhancers_for(sessions, settings), policy=content_policy(settings),
            templates=templates_for(sessions, settings),
        )  # fmt: skip
        prompt, strategy, details = result.prompt, result.strategy, enhancement_metadata(result)
    elif given := spec.metadata.get("enhanced_prompt"):
        prompt, strategy = given, PROVIDED
    with refusals_recorded(sessions), sessions.begin() as session:
        check_content(session, spec.user_id, prompt, spec.content_tier)
        job = session.get_one(Job, spec.id)
        job.enhanced_prompt = prompt
        job.enhancement_strategy = strategy
        if details is not None:
            job.meta = {**(job.meta or {}), "enhancement": details}
    return prompt


def review_enhancement(sessions: sessionmaker[Session], prompt: str, job_type: str) -> dict[str, Any]:
    """One prompt through the enhancer chain as a job's enhance stage runs it, for an operator to review
    (the batch-enhancement flow); a prohibited prompt is refused: reported, never enhanced."""
    settings = get_settings()
    kind, policy = get_job_type(job_type), content_policy(settings)
    if policy.classify(prompt).category is not None:
        return {
            "job_type": job_type, "enhanced_prompt": "", "enhancement_strategy": "refused",
            "error": ContentProhibited.code, "token_count": 0, "token_budget": kind.token_budget,
        }  # fmt: skip
    templates = templates_for(sessions, settings)
    result = enhance(prompt, kind, enhancers_for(sessions, settings), policy=policy, templates=templates)
    return {
        "job_type": job_type, "enhanced_prompt": result.prompt, "enhancement_strategy": result.strategy,
        **enhancement_metadata(result),
    }  # fmt: skip
