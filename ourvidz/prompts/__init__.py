"""Prompt enhancement: token budgets and enhancers."""

from ourvidz.prompts.budget import Fitted, count_tokens, fit_prompt, split_phrases, tokenizer_for
from ourvidz.prompts.rules import DEFAULT_STYLE, QUALITY_STYLE, Enhancement, default_style, rules_enhance

__all__ = [
    "DEFAULT_STYLE",
    "QUALITY_STYLE",
    "Enhancement",
    "Fitted",
    "count_tokens",
    "default_style",
    "fit_prompt",
    "rules_enhance",
    "split_phrases",
    "tokenizer_for",
]
