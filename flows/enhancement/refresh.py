"""The scheduled prompt-cache refresh: picks up templates edited straight in `prompt_templates`.

Every process checks the shared cache version every OURVIDZ_PROMPT_CACHE_CHECK_SECONDS; this flow
moves the version when the active templates changed since the last refresh (or always, with
`force`), so an edit reaches every gateway and worker within one schedule interval plus one check.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import acreate_markdown_artifact

from tasks.enhancement import refresh_templates

ARTIFACT_KEY = "prompt-cache"


@flow(name="refresh-prompt-cache", log_prints=True)
async def refresh_prompt_cache(force: bool = False) -> dict[str, Any]:
    state = refresh_templates(force)
    verdict = "reload requested" if state["changed"] else "unchanged, no reload"
    await acreate_markdown_artifact(
        key=ARTIFACT_KEY,
        markdown=(
            f"**Prompt cache version {state['version']}**: {verdict}\n\n"
            f"- active templates: {state['templates']}\n- fingerprint: `{state['fingerprint']}`\n"
            f"- refreshed at: {state['refreshed_at']}"
        ),
        description="The prompt templates every process serves",
    )
    return state
