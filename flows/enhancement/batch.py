"""Batch enhancement: a list of prompts through the same enhancer chain as generation jobs, with the
results as a table artifact, so an operator can review a template or model change on real prompts."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import acreate_table_artifact

from tasks.enhancement import enhance_prompt

ARTIFACT_KEY = "batch-enhancement"


@flow(name="enhance-prompts", log_prints=True)
async def enhance_prompts(prompts: list[str], job_type: str = "sdxl_image_fast") -> list[dict[str, Any]]:
    futures = [enhance_prompt.submit(prompt, job_type) for prompt in prompts]
    results = [future.result() for future in futures]
    table = [_row(prompt, result) for prompt, result in zip(prompts, results, strict=True)]
    await acreate_table_artifact(
        key=ARTIFACT_KEY,
        table=table,
        description=f"{len(prompts)} prompts enhanced for {job_type}",
    )
    return results


def _row(prompt: str, result: dict[str, Any]) -> dict[str, Any]:
    return {
        "prompt": prompt, "enhanced": result["enhanced_prompt"], "strategy": result["enhancement_strategy"],
        "tokens": f"{result['token_count']}/{result['token_budget']}",
    }  # fmt: skip
