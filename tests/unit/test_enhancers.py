"""The enhancer chain (chat worker -> local model -> rules) against a real chat worker on loopback and
a tiny local model: answers, slowness, failures, garbage, and the templates chosen by tier."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ourvidz.catalog import get_job_type
from ourvidz.jobs.enhancement import FALLBACK_STRATEGY, LOCAL_FALLBACK_STRATEGY, Enhancers, enhance
from ourvidz.policy import ContentPolicy, ContentTier
from ourvidz.prompts import count_tokens
from ourvidz.prompts.chat import ChatWorker
from ourvidz.prompts.templates import Template, Templates, default_templates
from tests.peers import PEERS_ALLOWED, FakeChatWorker

SDXL = get_job_type("sdxl_image_fast")
PROMPT = "a lighthouse at dusk"


def _chat(worker: FakeChatWorker, protocol: str = "openai") -> Enhancers:
    return Enhancers(ChatWorker(worker.url, protocol, PEERS_ALLOWED))  # type: ignore[arg-type]


@pytest.fixture
def worker() -> Iterator[FakeChatWorker]:
    chat = FakeChatWorker()
    yield chat
    chat.stop()


def test_the_chat_worker_rewrites_the_prompt(worker: FakeChatWorker) -> None:
    result = enhance(PROMPT, SDXL, _chat(worker), policy=ContentPolicy())
    assert (result.strategy, result.prompt) == ("chat_worker", f"echo: {PROMPT}")
    (request,) = worker.requests
    assert (
        request["messages"][0]["role"] == "system"
        and "Stable Diffusion XL" in request["messages"][0]["content"]
    )
    assert request["messages"][1] == {"role": "user", "content": PROMPT}


def test_a_long_answer_is_fitted_to_the_budget(worker: FakeChatWorker) -> None:
    worker.reply = ", ".join(f"a distinct detail {n}" for n in range(80))
    result = enhance(PROMPT, SDXL, _chat(worker))
    assert result.strategy == "chat_worker" and result.compression_applied
    assert count_tokens(result.prompt, "sdxl") == result.token_count <= 75


@pytest.mark.parametrize(
    "breakage",
    ["down", "garbage", "empty", "not json", "higher tier", "prohibited"],
)
def test_a_failing_chat_worker_falls_back_to_rules(worker: FakeChatWorker, breakage: str) -> None:
    if breakage == "down":
        worker.healthy = False
    else:
        worker.reply = {
            "garbage": b'{"choices": []}', "empty": "   ", "not json": b"<html>oops</html>",
            "higher tier": "a zorblax at dusk", "prohibited": "a zorblax with a child",
        }[breakage]  # fmt: skip
    result = enhance(PROMPT, SDXL, _chat(worker), policy=ContentPolicy())
    assert result.strategy == FALLBACK_STRATEGY and result.prompt.startswith(PROMPT)
    assert worker.requests, "the chat worker was asked first"


def test_a_slow_chat_worker_is_not_waited_for(worker: FakeChatWorker) -> None:
    worker.delay = 10.0
    started = time.perf_counter()
    result = enhance(PROMPT, SDXL, Enhancers(ChatWorker(worker.url, egress=PEERS_ALLOWED), timeout=0.3))
    assert result.strategy == FALLBACK_STRATEGY
    assert time.perf_counter() - started < 5, "gave up at its timeout, not when the worker answered"


def test_an_unreachable_chat_worker_falls_back(worker: FakeChatWorker) -> None:
    url = worker.url
    worker.stop()
    assert (
        enhance(PROMPT, SDXL, Enhancers(ChatWorker(url, egress=PEERS_ALLOWED))).strategy == FALLBACK_STRATEGY
    )


def test_without_a_chat_worker_the_rules_enhancer_answers() -> None:
    result = enhance(PROMPT, get_job_type("video_high"))
    assert result.strategy == "rules" and "smooth motion" in result.prompt


def test_the_system_prompt_follows_the_prompt_tier(worker: FakeChatWorker) -> None:
    policy = ContentPolicy()
    enhance(PROMPT, SDXL, _chat(worker), policy=policy)
    enhance("a zorblax at dusk", SDXL, _chat(worker), policy=policy)  # a shipped placeholder term
    artistic, explicit = (request["messages"][0]["content"] for request in worker.requests)
    defaults = default_templates()
    assert artistic == defaults.enhancement_prompt(SDXL, ContentTier.ARTISTIC)
    assert explicit == defaults.enhancement_prompt(SDXL, ContentTier.EXPLICIT) != artistic


def test_an_operator_template_replaces_the_rules_style() -> None:
    rules = Template("mine", "rules", "sdxl", None, ContentTier.ARTISTIC, "a photo of {prompt}, film grain")
    result = enhance(PROMPT, SDXL, templates=Templates([rules]))
    assert (result.strategy, result.prompt) == ("rules", f"a photo of {PROMPT}, film grain")


def test_an_ourvidz_chat_worker_is_asked_through_its_enhance_endpoint(worker: FakeChatWorker) -> None:
    result = enhance(PROMPT, SDXL, _chat(worker, "ourvidz"), policy=ContentPolicy())
    assert (result.strategy, result.prompt) == ("chat_worker", f"echo: {PROMPT}")
    assert worker.paths == ["/enhance"] and worker.requests[0]["messages"][-1]["content"] == PROMPT


def test_the_local_model_answers_without_a_chat_worker(tiny_llm: Path) -> None:
    result = enhance(PROMPT, SDXL, Enhancers(local_model=tiny_llm), policy=ContentPolicy())
    assert result.strategy == "local_llm" and result.prompt and result.token_count <= 75


def test_a_failing_chat_worker_falls_back_to_the_local_model(worker: FakeChatWorker, tiny_llm: Path) -> None:
    worker.healthy = False
    result = enhance(
        PROMPT, SDXL, Enhancers(ChatWorker(worker.url, egress=PEERS_ALLOWED), local_model=tiny_llm)
    )
    assert result.strategy == LOCAL_FALLBACK_STRATEGY and worker.requests


def test_a_broken_local_model_falls_back_to_rules(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    result = enhance(PROMPT, SDXL, Enhancers(local_model=tmp_path))
    assert result.strategy == FALLBACK_STRATEGY and result.prompt.startswith(PROMPT)
