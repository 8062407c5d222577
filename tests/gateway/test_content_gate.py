"""The content gate at the gateway: the moderation model registered like the chat worker (a fake on
loopback answering as Llama Guard does), its refusals, failing closed with the spec's error body, and
the refusals counted per layer in the metrics. `zorblax` is the shipped explicit placeholder."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import httpx
import pytest

from ourvidz.jobs.create import ensure_profile
from ourvidz.policy import MODERATION, ContentTier
from ourvidz.registry.workers import forget
from tests.gateway.conftest import Gateway
from tests.peers import FakeChatWorker

JOB = {"jobType": "sdxl_image_fast", "metadata": {"width": 64, "height": 64, "steps": 2}}


@pytest.fixture
def moderation(gateway: Gateway) -> Iterator[FakeChatWorker]:
    fake = FakeChatWorker()
    fake.reply = lambda text: "unsafe\nS4" if "quuxmarker" in text else "safe"
    registered = httpx.post(
        f"{gateway.url}/update-worker-url", json={"workerType": "moderation", "url": fake.url},
        headers=gateway.service(), timeout=30,
    )  # fmt: skip
    assert registered.status_code == 200, registered.text
    yield fake
    forget(gateway.sessions, MODERATION)
    fake.stop()


def refusals(gateway: Gateway, layer: str) -> float:
    text = httpx.get(f"{gateway.url}/metrics", headers=gateway.service(), timeout=30).text
    found = re.search(rf'ourvidz_content_refusals_total\{{category="minors",layer="{layer}"\}} (\S+)', text)
    assert found, text[:2000]
    return float(found.group(1))


def test_the_moderation_model_allows_refuses_and_fails_closed(
    gateway: Gateway, moderation: FakeChatWorker
) -> None:
    adult = uuid.uuid4()
    ensure_profile(gateway.sessions, adult, tier=ContentTier.EXPLICIT, age_verified=True)

    def queue(prompt: str) -> httpx.Response:
        body = {**JOB, "prompt": prompt}
        return httpx.post(f"{gateway.url}/queue-job", json=body, headers=gateway.headers(adult), timeout=30)

    before = refusals(gateway, "moderation")
    assert queue("two adults at dusk, zorblax").status_code == 201
    assert moderation.requests[-1]["messages"] == [{"role": "user", "content": "two adults at dusk, zorblax"}]

    refused = queue("two adults, quuxmarker, zorblax")
    assert refused.status_code == 403, refused.text
    body = refused.json()
    assert body["code"] == "CONTENT_PROHIBITED" and body["details"]["layer"] == "moderation"
    assert "quuxmarker" not in refused.text
    assert refusals(gateway, "moderation") == before + 1

    moderation.healthy = False
    down = queue("two adults at dawn, zorblax")
    assert down.status_code == 503 and down.headers["retry-after"]
    assert set(down.json()) == {"error", "code", "details", "timestamp"}
    assert down.json()["code"] == "CONTENT_CHECK_UNAVAILABLE"
    asked = len(moderation.requests)
    assert queue("a lighthouse at dawn").status_code == 201  # artistic: not asked, not held up
    assert len(moderation.requests) == asked


def test_semantic_refusals_are_counted(gateway: Gateway) -> None:
    adult = uuid.uuid4()
    ensure_profile(gateway.sessions, adult, tier=ContentTier.EXPLICIT, age_verified=True)
    before = refusals(gateway, "semantic")
    body = {**JOB, "prompt": "a girl who still plays with dolls, zorblax"}
    refused = httpx.post(f"{gateway.url}/queue-job", json=body, headers=gateway.headers(adult), timeout=30)
    assert refused.status_code == 403 and refused.json()["details"]["layer"] == "semantic"
    assert refusals(gateway, "semantic") == before + 1
