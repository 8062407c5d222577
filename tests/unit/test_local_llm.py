"""The local LLM enhancer with a real (tiny, random-weight) causal LM loaded from disk: no mocks."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest

from ourvidz.catalog import get_job_type
from ourvidz.policy import ContentPolicy, ContentTier
from ourvidz.prompts import local_llm
from ourvidz.prompts.budget import count_tokens
from ourvidz.prompts.chat import EnhancerFailed
from ourvidz.prompts.local_llm import STRATEGY, loaded_model, local_completion, local_enhance
from tests.tiny_llm import build_tiny_llm, vocabulary

PROMPT = "a quiet lighthouse at dusk over the river"
SYSTEM = "Rewrite the prompt as a detailed image description."
MESSAGES = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]
WORDS = set(vocabulary())


def cached_keys(folder: Path) -> list[tuple[Path, str]]:
    return [key for key in local_llm._CACHE if key[0] == folder.resolve()]


def test_the_tiny_vocabulary_is_neutral() -> None:
    verdict = ContentPolicy().classify(" ".join(sorted(WORDS)), requested=ContentTier.UNRESTRICTED)
    assert (verdict.tier, verdict.category) == (ContentTier.ARTISTIC, None)
    assert len(WORDS) >= 150


def test_a_completion_is_text_from_the_model_vocabulary(tiny_llm: Path) -> None:
    reply = local_completion(tiny_llm, "cpu", MESSAGES, max_new_tokens=12)
    words = reply.split()
    assert 0 < len(words) <= 12
    assert set(words) <= WORDS
    assert reply == reply.strip()


@pytest.mark.parametrize(("job_name", "family"), [("sdxl_image_fast", "sdxl"), ("video_high", "wan")])
def test_local_enhance_fits_the_job_type_budget(tiny_llm: Path, job_name: str, family: str) -> None:
    job_type = get_job_type(job_name)
    result = local_enhance(tiny_llm, "cpu", PROMPT, job_type, SYSTEM)
    assert result.strategy == STRATEGY == "local_llm"
    assert result.budget == job_type.token_budget
    assert 0 < count_tokens(result.prompt, family) <= job_type.token_budget
    assert result.token_count == count_tokens(result.prompt, family)
    assert result.original_token_count == count_tokens(PROMPT, family)
    # The model writes up to twice the budget: the reply had to be fitted.
    assert result.compression_applied or result.truncated
    assert set(result.prompt.replace(",", " ").split()) <= WORDS


def test_greedy_decoding_gives_the_same_output_for_the_same_input(tiny_llm: Path) -> None:
    job_type = get_job_type("sdxl_image_fast")
    first = local_enhance(tiny_llm, "cpu", PROMPT, job_type, SYSTEM)
    second = local_enhance(tiny_llm, "cpu", PROMPT, job_type, SYSTEM)
    assert first == second
    other = local_completion(tiny_llm, "cpu", [{"role": "user", "content": "snow"}], max_new_tokens=12)
    assert other != local_completion(tiny_llm, "cpu", MESSAGES, max_new_tokens=12)


def test_the_model_is_loaded_once_per_process(tiny_llm: Path) -> None:
    first = local_completion(tiny_llm, "cpu", MESSAGES, max_new_tokens=8)
    model, tokenizer, _ = loaded_model(tiny_llm, "cpu")
    second = local_completion(tiny_llm / "." / ".." / tiny_llm.name, "cpu", MESSAGES, max_new_tokens=8)
    assert first == second
    assert cached_keys(tiny_llm) == [(tiny_llm.resolve(), "cpu")]
    again_model, again_tokenizer, _ = loaded_model(tiny_llm, "cpu")
    assert (again_model, again_tokenizer) == (model, tokenizer)
    assert again_model is model and not model.training


def test_threads_racing_to_load_share_one_model(tmp_path: Path) -> None:
    folder = build_tiny_llm(tmp_path / "fresh")
    replies: list[str] = []

    def complete() -> None:
        replies.append(local_completion(folder, "cpu", MESSAGES, max_new_tokens=8))

    threads = [threading.Thread(target=complete) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(replies) == 4 and len(set(replies)) == 1
    assert cached_keys(folder) == [(folder.resolve(), "cpu")]


def test_a_missing_folder_fails_without_quoting_the_prompt(tmp_path: Path) -> None:
    folder = tmp_path / "nowhere"
    with pytest.raises(EnhancerFailed) as failure:
        local_enhance(folder, "cpu", PROMPT, get_job_type("sdxl_image_fast"), SYSTEM)
    assert "cannot load" in str(failure.value)
    assert PROMPT not in str(failure.value) and "lighthouse" not in str(failure.value)
    assert cached_keys(folder) == []


def test_corrupt_weights_fail_without_quoting_the_prompt(tiny_llm: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(tiny_llm, tmp_path / "corrupt"))
    (folder / "model.safetensors").write_bytes(b"\x00not a safetensors file" * 10)
    with pytest.raises(EnhancerFailed) as failure:
        local_enhance(folder, "cpu", PROMPT, get_job_type("sdxl_image_fast"), SYSTEM)
    assert "cannot load" in str(failure.value)
    assert "lighthouse" not in str(failure.value)
    assert cached_keys(folder) == []  # not cached: a repaired folder loads on the next call


def test_a_generation_error_fails_without_quoting_the_prompt(tiny_llm: Path) -> None:
    malformed = [{"role": "system", "content": PROMPT}, {"role": "user"}]  # the chat template needs content
    with pytest.raises(EnhancerFailed, match="generation failed") as failure:
        local_completion(tiny_llm, "cpu", malformed, max_new_tokens=8)
    assert "lighthouse" not in str(failure.value)


def test_a_prompt_that_fills_the_context_fails(tiny_llm: Path) -> None:
    long_prompt = " ".join(["lighthouse"] * 600)  # the tiny model has 512 positions
    with pytest.raises(EnhancerFailed, match="no room left") as failure:
        local_enhance(tiny_llm, "cpu", long_prompt, get_job_type("sdxl_image_fast"), SYSTEM)
    assert "lighthouse" not in str(failure.value)


def test_a_model_that_stops_at_once_gives_an_empty_reply(tiny_llm: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(tiny_llm, tmp_path / "mute"))
    settings = json.loads((folder / "generation_config.json").read_text())
    vocab_size = json.loads((folder / "config.json").read_text())["vocab_size"]
    settings["suppress_tokens"] = [i for i in range(vocab_size) if i != settings["eos_token_id"]]
    (folder / "generation_config.json").write_text(json.dumps(settings))
    with pytest.raises(EnhancerFailed, match="empty reply") as failure:
        local_enhance(folder, "cpu", PROMPT, get_job_type("sdxl_image_fast"), SYSTEM)
    assert "lighthouse" not in str(failure.value)


def test_a_tokenizer_without_chat_template_gets_a_plain_transcript(tmp_path: Path) -> None:
    folder = build_tiny_llm(tmp_path / "plain", chat_template=False)
    _, tokenizer, _ = loaded_model(folder, "cpu")
    assert not tokenizer.chat_template
    reply = local_completion(folder, "cpu", MESSAGES, max_new_tokens=12)
    assert reply and set(reply.split()) <= WORDS
    result = local_enhance(folder, "cpu", PROMPT, get_job_type("sdxl_image_fast"), SYSTEM)
    assert result.strategy == "local_llm" and 0 < count_tokens(result.prompt, "sdxl") <= 75
