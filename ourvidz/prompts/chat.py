"""The chat-worker enhancer: an OpenAI-compatible `/v1/chat/completions` server (vLLM, llama.cpp)
rewrites the prompt; the answer is fitted to the job type's token budget like any other prompt.

Anything but a usable answer (refused connection, timeout, HTTP error, malformed or empty reply)
raises `EnhancerFailed`, so the caller can fall back to the rules enhancer and say so.
"""

from __future__ import annotations

from typing import Any

import httpx

from ourvidz.catalog import JobType
from ourvidz.prompts.budget import count_tokens, fit_prompt
from ourvidz.prompts.rules import Enhancement

STRATEGY = "chat_worker"
MAX_REPLY_CHARS = 4000
SYSTEM_PROMPT = (
    "You rewrite prompts for a {model} {output} generator. Keep the subject and every detail the user "
    "gave, add concrete visual detail (composition, lighting, style), and stay under {words} words. "
    "Answer with the prompt only, no preamble."
)


class EnhancerFailed(RuntimeError):
    """The enhancer gave no usable prompt; the reason is safe to log (it never holds the prompt)."""


def chat_completion(url: str, messages: list[dict[str, str]], timeout: float, **options: Any) -> str:
    """One reply of the chat worker at `url`; raises EnhancerFailed on anything unusable."""
    try:
        answer = httpx.post(
            f"{url.rstrip('/')}/v1/chat/completions", json={"messages": messages, **options}, timeout=timeout
        )
        answer.raise_for_status()
        content = answer.json()["choices"][0]["message"]["content"]
    except httpx.TimeoutException:
        raise EnhancerFailed(f"no answer within {timeout:g} s") from None
    except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise EnhancerFailed(f"{type(exc).__name__}: {exc}") from None
    if not isinstance(content, str) or not content.strip():
        raise EnhancerFailed("empty or non-text reply")
    return content.strip()


def system_prompt(job_type: JobType) -> str:
    model = "Stable Diffusion XL" if job_type.family == "sdxl" else "Wan 2.1"
    return SYSTEM_PROMPT.format(model=model, output=job_type.output, words=job_type.token_budget * 2 // 3)


def chat_enhance(url: str, prompt: str, job_type: JobType, timeout: float) -> Enhancement:
    """The chat worker's rewrite of `prompt`, within the job type's token budget."""
    messages = [{"role": "system", "content": system_prompt(job_type)}, {"role": "user", "content": prompt}]
    reply = chat_completion(url, messages, timeout, max_tokens=job_type.token_budget * 2, temperature=0.7)
    if len(reply) > MAX_REPLY_CHARS:
        raise EnhancerFailed(f"reply longer than {MAX_REPLY_CHARS} characters")
    fitted = fit_prompt(reply.strip().strip('"').strip(), job_type.family, job_type.token_budget)
    if not fitted.text.strip():
        raise EnhancerFailed("nothing left of the reply after fitting")
    return Enhancement(
        prompt=fitted.text, strategy=STRATEGY, token_count=fitted.token_count, budget=fitted.budget,
        compression_applied=fitted.compression_applied,
        original_token_count=count_tokens(prompt, job_type.family), added=[], dropped=fitted.dropped,
        truncated=fitted.truncated,
    )  # fmt: skip
