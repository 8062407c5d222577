"""The enhancer chain against a real chat worker on loopback: answers, slowness, failures, garbage."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from ourvidz.catalog import get_job_type
from ourvidz.jobs.enhancement import FALLBACK_STRATEGY, enhance
from ourvidz.policy import ContentPolicy
from ourvidz.prompts import count_tokens
from tests.orchestration.peers import FakeChatWorker

SDXL = get_job_type("sdxl_image_fast")
PROMPT = "a lighthouse at dusk"


@pytest.fixture
def worker() -> Iterator[FakeChatWorker]:
    chat = FakeChatWorker()
    yield chat
    chat.stop()


def test_the_chat_worker_rewrites_the_prompt(worker: FakeChatWorker) -> None:
    result = enhance(PROMPT, SDXL, chat_url=worker.url, policy=ContentPolicy())
    assert (result.strategy, result.prompt) == ("chat_worker", f"echo: {PROMPT}")
    (request,) = worker.requests
    assert (
        request["messages"][0]["role"] == "system"
        and "Stable Diffusion XL" in request["messages"][0]["content"]
    )
    assert request["messages"][1] == {"role": "user", "content": PROMPT}


def test_a_long_answer_is_fitted_to_the_budget(worker: FakeChatWorker) -> None:
    worker.reply = ", ".join(f"a distinct detail {n}" for n in range(80))
    result = enhance(PROMPT, SDXL, chat_url=worker.url)
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
    result = enhance(PROMPT, SDXL, chat_url=worker.url, policy=ContentPolicy())
    assert result.strategy == FALLBACK_STRATEGY and result.prompt.startswith(PROMPT)
    assert worker.requests, "the chat worker was asked first"


def test_a_slow_chat_worker_is_not_waited_for(worker: FakeChatWorker) -> None:
    worker.delay = 2.0
    started = time.perf_counter()
    result = enhance(PROMPT, SDXL, chat_url=worker.url, timeout=0.3)
    assert result.strategy == FALLBACK_STRATEGY and time.perf_counter() - started < 1.5


def test_an_unreachable_chat_worker_falls_back(worker: FakeChatWorker) -> None:
    url = worker.url
    worker.stop()
    assert enhance(PROMPT, SDXL, chat_url=url).strategy == FALLBACK_STRATEGY


def test_without_a_chat_worker_the_rules_enhancer_answers() -> None:
    result = enhance(PROMPT, get_job_type("video_high"))
    assert result.strategy == "rules" and "smooth motion" in result.prompt
