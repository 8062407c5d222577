"""A local transformers causal LM as prompt enhancer: the middle of chat worker -> local LLM -> rules.

It needs no chat worker, only a model folder on disk. Loading takes seconds, so each (folder, device)
is loaded once per process and kept warm; one model object serves every thread, one generation at a time.
Anything but a usable reply raises `EnhancerFailed`, with a reason that never holds the prompt.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from ourvidz.catalog import JobType
from ourvidz.prompts.chat import EnhancerFailed, fitted_enhancement
from ourvidz.prompts.rules import Enhancement

STRATEGY = "local_llm"

_CACHE: dict[tuple[Path, str], tuple[Any, Any, threading.Lock]] = {}
_CACHE_LOCK = threading.Lock()


def loaded_model(path: Path, device: str) -> tuple[Any, Any, threading.Lock]:
    """The process-wide (model, tokenizer, generation lock) of a model folder, loaded on first use."""
    from transformers import AutoModelForCausalLM, AutoTokenizer  # lazily: importing it takes seconds

    key = (Path(path).resolve(), device)
    with _CACHE_LOCK:
        if key not in _CACHE:
            try:
                model = AutoModelForCausalLM.from_pretrained(key[0], local_files_only=True)
                tokenizer = AutoTokenizer.from_pretrained(key[0], local_files_only=True)
                model = model.to(device).eval()
            except Exception as exc:
                raise EnhancerFailed(
                    f"cannot load the local model {key[0].name!r}: {type(exc).__name__}"
                ) from None
            _CACHE[key] = (model, tokenizer, threading.Lock())
        return _CACHE[key]


def _transcript(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"


def local_completion(path: Path, device: str, messages: list[dict[str, str]], max_new_tokens: int) -> str:
    """The local model's greedy reply to `messages`; raises EnhancerFailed on anything unusable."""
    import torch

    model, tokenizer, lock = loaded_model(path, device)
    try:
        text = _transcript(tokenizer, messages)
        # The chat template already writes any BOS token; a plain transcript gets the tokenizer's own.
        inputs = tokenizer(text, return_tensors="pt", add_special_tokens=not tokenizer.chat_template)
        inputs = inputs.to(model.device)
        room = getattr(model.config, "max_position_embeddings", None)
        if room is not None:  # past its context a model writes garbage: stop there instead
            max_new_tokens = min(max_new_tokens, room - inputs["input_ids"].shape[1])
        if max_new_tokens < 1:
            raise EnhancerFailed("no room left for a reply in the local model's context")
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        with lock, torch.inference_mode():
            output = model.generate(
                **inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id
            )
        reply = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    except EnhancerFailed:
        raise
    except Exception as exc:  # the message of a tokenizer or model error may quote the input
        raise EnhancerFailed(f"local generation failed: {type(exc).__name__}") from None
    if not reply.strip():
        raise EnhancerFailed("empty reply from the local model")
    return reply.strip()


def local_enhance(path: Path, device: str, prompt: str, job_type: JobType, system_prompt: str) -> Enhancement:
    """The local model's rewrite of `prompt`, within the job type's token budget."""
    messages = [{"role": "system", "content": system_prompt}, {"role": "user", "content": prompt}]
    reply = local_completion(path, device, messages, max_new_tokens=job_type.token_budget * 2)
    return fitted_enhancement(reply, prompt, job_type, STRATEGY)
