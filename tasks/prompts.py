"""Prompt-cache and enhancement tasks; each calls one core function of `ourvidz`."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from ourvidz.catalog import get_job_type
from ourvidz.config import get_settings
from ourvidz.db.session import sessions_for
from ourvidz.jobs.content import content_policy
from ourvidz.jobs.enhancement import enhance, enhancement_metadata, enhancers_for, templates_for
from ourvidz.policy import ContentProhibited
from ourvidz.prompts.templates import bump_version
from tasks.retry import database_unreachable
from tasks.stages import DB_RETRIES


@task(name="refresh-templates", cache_policy=NO_CACHE, retry_condition_fn=database_unreachable, **DB_RETRIES)
def refresh_templates(force: bool) -> dict[str, Any]:
    """Bump the prompt-cache version (only when the templates changed, unless forced)."""
    sessions = sessions_for(get_settings().database_url)
    return bump_version(sessions, reason="scheduled refresh", only_if_changed=not force)


@task(name="enhance-prompt", cache_policy=NO_CACHE, retry_condition_fn=database_unreachable, **DB_RETRIES)
def enhance_prompt(prompt: str, job_type: str) -> dict[str, Any]:
    """One prompt through the enhancer chain, as the generation flow's enhance stage runs it; a
    prohibited prompt is refused (reported, never enhanced)."""
    settings = get_settings()
    sessions = sessions_for(settings.database_url)
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
