"""The moderation layer (optional): a moderation model the operator runs, asked about every text that
needs a tier above artistic.

A Llama Guard class model behind an OpenAI-compatible endpoint (vLLM, llama.cpp server, ...),
registered like the chat worker (``POST /update-worker-url`` with ``workerType: moderation``). It gets
the text as a user turn and answers ``safe``, or ``unsafe`` and the codes of the categories it found
(Llama Guard's ``S1``..``S14``). Codes the operator maps to a prohibited category
(``OURVIDZ_MODERATION_CATEGORIES``) refuse the text; other codes (sexual content itself, on this
platform) do not. Configured but unreachable, slow past its timeout, or answering nonsense: the text is
not allowed through (fail closed, `ContentCheckUnavailable`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import httpx

from ourvidz.egress import EgressPolicy
from ourvidz.policy.tiers import ContentCheckUnavailable, ProhibitedCategory

MODERATION = "moderation"  # the kind of its registration
_CODE = re.compile(r"\b[A-Z]\d{1,2}\b")


@dataclass(frozen=True, slots=True)
class Moderator:
    url: str
    model: str
    timeout: float
    categories: dict[str, ProhibitedCategory]  # the model's category code -> what it refuses as
    egress: EgressPolicy = field(default_factory=EgressPolicy)

    def verdict(self, text: str) -> ProhibitedCategory | None:
        """The prohibited category the model finds in `text`, None when it finds none that counts."""
        body = {
            "model": self.model, "messages": [{"role": "user", "content": text}],
            "max_tokens": 20, "temperature": 0,
        }  # fmt: skip
        try:
            with self.egress.client(timeout=self.timeout) as client:
                answer = client.post(f"{self.url.rstrip('/')}/v1/chat/completions", json=body)
                answer.raise_for_status()
                content = answer.json()["choices"][0]["message"]["content"]
        except httpx.TimeoutException:
            raise ContentCheckUnavailable(
                f"the moderation model gave no answer within {self.timeout:g} s"
            ) from None
        except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as exc:
            raise ContentCheckUnavailable(
                f"the moderation model cannot be asked: {type(exc).__name__}"
            ) from None
        if not isinstance(content, str):
            raise ContentCheckUnavailable("the moderation model answered something that is not text")
        words = content.strip().lower().split()
        if words[:1] == ["safe"]:
            return None
        if words[:1] != ["unsafe"]:
            raise ContentCheckUnavailable("the moderation model answered neither safe nor unsafe")
        for code in _CODE.findall(content.upper()):
            if code in self.categories:
                return self.categories[code]
        return None
