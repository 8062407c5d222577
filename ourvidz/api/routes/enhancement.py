"""Prompt enhancement (spec section 2) and the prompt cache's admin endpoints.

enhance-prompt runs the same enhancer chain as the generation flow's enhance stage, after the
content policy.
"""

from __future__ import annotations

import time
from dataclasses import replace

from fastapi import APIRouter, Response

from ourvidz.api.deps import Admin, GatewayDep, User
from ourvidz.api.errors import ApiError
from ourvidz.api.schemas.common import SimpleResponse
from ourvidz.api.schemas.enhancement import EnhancePromptRequest, EnhancePromptResponse
from ourvidz.catalog import JobType, UnknownJobType, get_job_type
from ourvidz.jobs.content import check_text
from ourvidz.jobs.enhancement import (
    NO_ENHANCEMENT,
    enhance,
    enhancement_metadata,
    enhancers_for,
    templates_for,
)
from ourvidz.jobs.regression import summary, validate_enhancer
from ourvidz.policy import ContentTier
from ourvidz.prompts.budget import count_tokens
from ourvidz.prompts.rules import Enhancement
from ourvidz.prompts.templates import Templates, bump_version, read_templates

router = APIRouter(tags=["enhancement"])
# The spec's `model_used`, by enhancement strategy.
MODEL_USED = {
    "chat_worker": "chat_worker", "local_llm": "local_llm", "local_llm_fallback": "local_llm",
    "rules": "rules", "rules_fallback": "rules",
}  # fmt: skip
SKIP_FOR_EXACT_COPY = "skip_for_exact_copy"


@router.post("/enhance-prompt", response_model=EnhancePromptResponse)
def enhance_prompt(
    body: EnhancePromptRequest, response: Response, user: User, gw: GatewayDep
) -> EnhancePromptResponse:
    gw.limits.hit("enhance", user.user_id, response)
    started = time.perf_counter()
    try:
        job_type = get_job_type(body.job_type_name())
    except UnknownJobType as exc:
        raise ApiError(400, "INVALID_JOB_TYPE", str(exc), {"valid": exc.valid}) from None
    if body.exact_copy:
        return _unchanged(body, job_type, SKIP_FOR_EXACT_COPY, started)
    if not body.prompt:
        raise ApiError(400, "MISSING_PROMPT", "Prompt is required and must be a string", {"field": "prompt"})
    policy = gw.policy()
    check_text(gw.sessions, user.user_id, body.prompt, policy=policy)
    if body.skips_enhancement:
        return _unchanged(body, job_type, NO_ENHANCEMENT, started)
    enhancers = replace(enhancers_for(gw.sessions, gw.settings, gw.worker_egress), model=body.model())
    result = enhance(
        body.prompt, job_type, enhancers, policy=policy,
        templates=templates_for(gw.sessions, gw.settings),
    )  # fmt: skip
    tier = policy.classify(body.prompt).tier
    return _answer(body, job_type, result, tier, started)


def _unchanged(
    body: EnhancePromptRequest, job_type: JobType, strategy: str, started: float
) -> EnhancePromptResponse:
    """The prompt as given: an exact copy has none to enhance, `enhancement_model: none` asks for none."""
    prompt = body.prompt or ""
    tokens = count_tokens(prompt, job_type.family) if prompt else 0
    result = Enhancement(
        prompt=prompt, strategy=strategy, token_count=tokens, budget=job_type.token_budget,
        compression_applied=False, original_token_count=tokens, added=[], dropped=[], truncated=False,
    )  # fmt: skip
    return _answer(body, job_type, result, None, started)


def _answer(
    body: EnhancePromptRequest,
    job_type: JobType,
    result: Enhancement,
    tier: ContentTier | None,
    started: float,
) -> EnhancePromptResponse:
    original = body.prompt or ""
    optimization = enhancement_metadata(result)
    expansion = (len(result.prompt) / len(original) - 1) * 100 if original else 0.0
    metadata = {
        "original_length": len(original), "enhanced_length": len(result.prompt),
        "expansion_percentage": f"{expansion:.1f}", "job_type": job_type.name,
        "format": body.format or job_type.format, "quality": body.quality or job_type.quality,
        "is_sdxl": job_type.family == "sdxl", "is_video": job_type.output == "video",
        "enhancement_strategy": result.strategy, "model_used": MODEL_USED.get(result.strategy, "none"),
        "version": "1", "content_mode": None if tier is None else tier.value,
        "template_name": f"{job_type.family}_{job_type.quality}_{(tier or ContentTier.ARTISTIC).value}",
        "execution_time_ms": round((time.perf_counter() - started) * 1000, 1), "cache_hit": False,
        "token_optimization": optimization, **optimization,
    }  # fmt: skip
    return EnhancePromptResponse(
        original_prompt=original, enhanced_prompt=result.prompt, enhancement_strategy=result.strategy,
        enhancement_metadata=metadata, optimization=optimization,
    )  # fmt: skip


@router.post("/refresh-prompt-cache", response_model=SimpleResponse)
def refresh_prompt_cache(_admin: Admin, gw: GatewayDep) -> SimpleResponse:
    """Bump the prompt-cache version: every process reloads its templates within one check interval."""
    state = bump_version(gw.sessions, reason="refresh-prompt-cache")
    return SimpleResponse(message=f"prompt cache version {state['version']}", details=state)


@router.post("/validate-enhancement-fix", response_model=SimpleResponse)
def validate_enhancement_fix(_admin: Admin, gw: GatewayDep) -> SimpleResponse:
    """Run the fixed regression set through the enhancer chain with the templates as they are in the
    table now, so a template change can be checked before a cache refresh sends it out."""
    skipped: dict[str, str] = {}
    with gw.sessions() as session:
        templates = Templates(read_templates(session, skipped))
    cases = validate_enhancer(
        gw.policy(), templates, enhancers_for(gw.sessions, gw.settings, gw.worker_egress)
    )
    return SimpleResponse(
        success=all(case["passed"] for case in cases) and not skipped,
        message=summary(cases),
        details={"templates": len(templates.all), "skipped_templates": skipped, "cases": cases},
    )
