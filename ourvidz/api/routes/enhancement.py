"""Prompt enhancement (spec section 2) and the prompt cache's admin endpoints.

enhance-prompt runs the same enhancer chain as the generation flow's enhance stage, after the
content policy.
"""

from __future__ import annotations

from dataclasses import replace

from fastapi import APIRouter, Response

from ourvidz.api.deps import Admin, GatewayDep, User
from ourvidz.api.errors import ApiError
from ourvidz.api.schemas import (
    EnhancePromptRequest,
    EnhancePromptResponse,
    SimpleResponse,
)
from ourvidz.catalog import UnknownJobType, get_job_type
from ourvidz.jobs.content import check_text
from ourvidz.jobs.enhancement import (
    enhance,
    enhancement_metadata,
    enhancers_for,
    templates_for,
    validate_enhancer,
)
from ourvidz.prompts.templates import Templates, bump_version, read_templates

router = APIRouter(tags=["enhancement"])
# The spec's `model_used`, by enhancement strategy.
MODEL_USED = {
    "chat_worker": "chat_worker", "local_llm": "local_llm", "local_llm_fallback": "local_llm",
    "rules": "rules", "rules_fallback": "rules",
}  # fmt: skip


@router.post("/enhance-prompt", response_model=EnhancePromptResponse)
def enhance_prompt(
    body: EnhancePromptRequest, response: Response, user: User, gw: GatewayDep
) -> EnhancePromptResponse:
    gw.limits.hit("enhance", user.user_id, response)
    try:
        job_type = get_job_type(body.job_type)
    except UnknownJobType as exc:
        raise ApiError(400, "INVALID_JOB_TYPE", str(exc), {"valid": exc.valid}) from None
    policy = gw.policy()
    check_text(gw.sessions, user.user_id, body.prompt, policy=policy)
    enhancers = replace(enhancers_for(gw.sessions, gw.settings), model=body.selected_model)
    result = enhance(
        body.prompt, job_type, enhancers, policy=policy,
        templates=templates_for(gw.sessions, gw.settings),
    )  # fmt: skip
    metadata = {
        "original_length": len(body.prompt), "enhanced_length": len(result.prompt),
        "expansion_percentage": f"{(len(result.prompt) / len(body.prompt) - 1) * 100:.1f}",
        "job_type": job_type.name, "format": body.format or job_type.format,
        "quality": body.quality or job_type.quality, "is_sdxl": job_type.family == "sdxl",
        "is_video": job_type.output == "video", "enhancement_strategy": result.strategy,
        "model_used": MODEL_USED.get(result.strategy, "rules"), "version": "1",
        **enhancement_metadata(result),
    }  # fmt: skip
    return EnhancePromptResponse(
        original_prompt=body.prompt, enhanced_prompt=result.prompt, enhancement_strategy=result.strategy,
        enhancement_metadata=metadata,
        optimization={"token_count": result.token_count, "token_budget": result.budget,
                      "compression_applied": result.compression_applied},
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
    cases = validate_enhancer(gw.policy(), templates, enhancers_for(gw.sessions, gw.settings))
    failed = [case for case in cases if not case["passed"]]
    return SimpleResponse(
        success=not failed and not skipped,
        message=f"{len(cases) - len(failed)} of {len(cases)} cases passed",
        details={"templates": len(templates.all), "skipped_templates": skipped, "cases": cases},
    )
