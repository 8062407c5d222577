"""A chat turned into an SDXL prompt: what the user said, newest wishes kept first, within CLIP's
75 usable tokens, so a playground conversation can be sent straight to an SDXL job."""

from __future__ import annotations

from collections.abc import Sequence

from ourvidz.prompts.budget import JOINER, Fitted, fit_prompt, split_phrases

SDXL_BUDGET = 75


def conversation_prompt(user_messages: Sequence[str], budget: int = SDXL_BUDGET) -> Fitted:
    """The user's messages (oldest first) as one prompt; over budget, older phrases go first and the
    newest message's first phrase (its subject) is never dropped."""
    phrases: list[str] = []
    priorities: list[int] = []
    for age, message in enumerate(user_messages):
        for phrase in split_phrases(message):
            phrases.append(phrase)
            priorities.append(age)  # a later message outranks an earlier one
    newest = [index for index, age in enumerate(priorities) if age == len(user_messages) - 1]
    return fit_prompt(JOINER.join(phrases), "sdxl", budget, protected=newest[:1], priorities=priorities)
