"""Token budgets and the rules enhancer, checked against the real CLIP and UMT5-shaped tokenizers."""

from __future__ import annotations

import pytest
from transformers import PreTrainedTokenizerBase

from ourvidz.catalog import JOB_TYPES, get_job_type
from ourvidz.generation.tokenizers import clip_tokenizer, umt5_tokenizer
from ourvidz.prompts import (
    DEFAULT_STYLE,
    QUALITY_STYLE,
    count_tokens,
    default_style,
    fit_prompt,
    rules_enhance,
    split_phrases,
)
from ourvidz.prompts.conversation import conversation_prompt

SUBJECT = "a weathered lighthouse keeper on a rocky cliff"
DETAILS = [f"detail number {n} of the harbour scene" for n in range(30)]
LONG_PROMPT = ", ".join([SUBJECT, *DETAILS])
BPE_MARKERS = ("</w>", "▁", "<|", "</s>", "<pad>", "\ufffd")


@pytest.fixture(scope="module")
def clip() -> PreTrainedTokenizerBase:
    return clip_tokenizer()


@pytest.fixture(scope="module")
def umt5() -> PreTrainedTokenizerBase:
    return umt5_tokenizer()


def clip_count(clip: PreTrainedTokenizerBase, text: str) -> int:
    ids = clip(text)["input_ids"]
    assert ids[0] == clip.bos_token_id and ids[-1] == clip.eos_token_id
    return len(ids) - 2


def umt5_count(umt5: PreTrainedTokenizerBase, text: str) -> int:
    ids = umt5(text)["input_ids"]
    assert ids[-1] == umt5.eos_token_id
    return len(ids) - 1


def family_count(clip: PreTrainedTokenizerBase, umt5: PreTrainedTokenizerBase, text: str, family: str) -> int:
    return clip_count(clip, text) if family == "sdxl" else umt5_count(umt5, text)


def assert_clean(text: str) -> None:
    assert not any(marker in text for marker in BPE_MARKERS), text
    assert text == text.strip(" ,;"), text
    assert "  " not in text


# count_tokens


@pytest.mark.parametrize(
    "text",
    [
        "a photo of a cat",
        "",
        "Photorealistic!!, 8K; don't stop",
        "a red fox\n\nsitting  in snow",
        LONG_PROMPT,
    ],
)
def test_sdxl_count_matches_clip_tokenizer(clip: PreTrainedTokenizerBase, text: str) -> None:
    assert count_tokens(text, "sdxl") == clip_count(clip, text)


def test_wan_count_uses_the_umt5_tokenizer(
    umt5: PreTrainedTokenizerBase, clip: PreTrainedTokenizerBase
) -> None:
    text = "Photorealistic harbour at dusk, cafés by the water"
    assert count_tokens(text, "wan") == umt5_count(umt5, text)
    assert count_tokens(text, "wan") != count_tokens(text, "sdxl")  # a different vocabulary, not CLIP's


def test_unknown_family_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown model family"):
        count_tokens("a cat", "flux")


# fit_prompt


def test_under_budget_prompt_is_unchanged() -> None:
    fitted = fit_prompt("  a red fox,   sitting\tin snow ", "sdxl", 75)
    assert fitted.text == "a red fox, sitting in snow"
    assert not fitted.compression_applied and not fitted.truncated and fitted.dropped == []
    assert fitted.token_count == fitted.original_token_count == count_tokens(fitted.text, "sdxl")


def test_exactly_at_budget_is_unchanged(clip: PreTrainedTokenizerBase) -> None:
    budget = clip_count(clip, LONG_PROMPT)
    fitted = fit_prompt(LONG_PROMPT, "sdxl", budget)
    assert fitted.text == LONG_PROMPT and fitted.token_count == budget and not fitted.compression_applied


def test_duplicates_are_removed_first_and_can_be_enough(clip: PreTrainedTokenizerBase) -> None:
    unique = [SUBJECT, "sharp focus", "golden hour", "sea mist"]
    prompt = ", ".join(
        [*unique[:2], "Sharp  Focus!", *unique[2:], "A weathered  Lighthouse keeper on a rocky cliff."]
    )
    deduplicated = ", ".join(unique)
    budget = clip_count(clip, deduplicated)
    assert clip_count(clip, prompt) > budget

    fitted = fit_prompt(prompt, "sdxl", budget)
    assert fitted.text == deduplicated  # every distinct phrase kept, in order
    assert fitted.dropped == ["Sharp Focus!", "A weathered Lighthouse keeper on a rocky cliff."]
    assert fitted.compression_applied and not fitted.truncated
    assert fitted.token_count == clip_count(clip, fitted.text) <= budget


def test_lowest_priority_phrases_are_dropped_before_truncating(clip: PreTrainedTokenizerBase) -> None:
    fitted = fit_prompt(LONG_PROMPT, "sdxl", 75)
    phrases = split_phrases(fitted.text)
    assert not fitted.truncated and fitted.compression_applied
    assert phrases == [SUBJECT, *DETAILS[: len(phrases) - 1]]  # the head survives, whole phrases only
    assert fitted.dropped == DETAILS[len(phrases) - 1 :][::-1]  # the last phrase went first
    assert fitted.token_count == clip_count(clip, fitted.text) <= 75
    assert fitted.original_token_count == clip_count(clip, LONG_PROMPT)
    # Stopped as soon as it fitted: the last dropped phrase would not have fitted back in.
    assert clip_count(clip, f"{fitted.text}, {fitted.dropped[-1]}") > 75


def test_explicit_priorities_drop_the_lowest_first(clip: PreTrainedTokenizerBase) -> None:
    phrases = [SUBJECT, "golden hour", "extra phrase one", "sea mist", "extra phrase two"]
    prompt = ", ".join(phrases)
    budget = clip_count(clip, f"{SUBJECT}, golden hour, sea mist")
    fitted = fit_prompt(prompt, "sdxl", budget, priorities=[2, 1, 0, 1, 0])
    assert fitted.text == f"{SUBJECT}, golden hour, sea mist"
    assert fitted.dropped == ["extra phrase two", "extra phrase one"]

    with pytest.raises(ValueError, match="priorities"):
        fit_prompt(prompt, "sdxl", 3, priorities=[1, 0])


def test_subject_phrase_survives(clip: PreTrainedTokenizerBase) -> None:
    budget = clip_count(clip, SUBJECT)
    fitted = fit_prompt(", ".join([SUBJECT, "aaa bbb ccc", "ddd"]), "sdxl", budget)
    assert fitted.text == SUBJECT and not fitted.truncated

    two = fit_prompt(LONG_PROMPT, "sdxl", clip_count(clip, f"{SUBJECT}, {DETAILS[0]}"), protected=2)
    assert split_phrases(two.text) == [SUBJECT, DETAILS[0]]


def test_truncation_fits_exactly_and_decodes_cleanly(clip: PreTrainedTokenizerBase) -> None:
    subject = "A Lighthouse Keeper " + " ".join(f"walks slowly along pier {n}" for n in range(30))
    prompt = f"{subject}, golden hour, sea mist"
    fitted = fit_prompt(prompt, "sdxl", 75)
    assert fitted.truncated and fitted.compression_applied
    assert fitted.dropped == ["sea mist", "golden hour"]  # dropped before the subject was cut
    assert fitted.token_count == clip_count(clip, fitted.text) == 75  # whole one-token words: exact
    assert subject.startswith(fitted.text)  # the user's own spelling, not CLIP's lower-cased decode
    assert_clean(fitted.text)


def test_a_single_giant_phrase_is_truncated(clip: PreTrainedTokenizerBase) -> None:
    phrase = " ".join(["Photorealistic harbour"] * 80)
    fitted = fit_prompt(phrase, "sdxl", 75, protected=0)
    assert fitted.truncated and fitted.dropped == []
    assert 70 <= fitted.token_count == clip_count(clip, fitted.text) <= 75
    assert phrase.startswith(fitted.text)
    assert_clean(fitted.text)


@pytest.mark.parametrize("family", ["sdxl", "wan"])
def test_a_giant_word_is_cut_inside_the_word(
    clip: PreTrainedTokenizerBase, umt5: PreTrainedTokenizerBase, family: str
) -> None:
    word = "Supercalifragilisticexpialidocious" * 10
    fitted = fit_prompt(word, family, 20)
    assert fitted.truncated and fitted.text
    assert 0 < family_count(clip, umt5, fitted.text, family) == fitted.token_count <= 20
    assert word.startswith(fitted.text)
    assert_clean(fitted.text)


def test_zero_budget_gives_empty_text() -> None:
    fitted = fit_prompt(LONG_PROMPT, "sdxl", 0)
    assert fitted.text == "" and fitted.token_count == 0 and fitted.truncated
    with pytest.raises(ValueError, match="budget"):
        fit_prompt("a cat", "sdxl", -1)


@pytest.mark.parametrize("name", ["image_fast", "video_high"])
def test_wan_budgets_are_respected_with_the_wan_tokenizer(umt5: PreTrainedTokenizerBase, name: str) -> None:
    job = get_job_type(name)
    assert job.token_budget == (175 if job.quality == "fast" else 250)
    prompt = ", ".join([SUBJECT, *(f"Scene {n} with drifting fog over the Harbour" for n in range(60))])
    assert umt5_count(umt5, prompt) > job.token_budget

    fitted = fit_prompt(prompt, "wan", job.token_budget)
    assert fitted.token_count == umt5_count(umt5, fitted.text) <= job.token_budget
    assert fitted.token_count > job.token_budget - 15  # only whole low-priority phrases were dropped
    assert split_phrases(fitted.text)[0] == SUBJECT and not fitted.truncated
    assert fitted.dropped[0] == "Scene 59 with drifting fog over the Harbour"


# rules_enhance


def test_rules_adds_family_and_quality_phrases() -> None:
    prompt = "a lighthouse on a cliff at dusk"
    made = {
        name: rules_enhance(prompt, get_job_type(name)) for name in ("sdxl_image_fast", "sdxl_image_high")
    }
    made |= {name: rules_enhance(prompt, get_job_type(name)) for name in ("image_fast", "video_high")}

    assert made["sdxl_image_fast"].strategy == "rules"
    assert made["sdxl_image_fast"].prompt == f"{prompt}, highly detailed, sharp focus, professional lighting"
    assert made["sdxl_image_fast"].added == ["highly detailed", "sharp focus", "professional lighting"]
    assert set(QUALITY_STYLE["high"]) <= set(made["sdxl_image_high"].added)
    assert "intricate detail" not in made["sdxl_image_fast"].added
    assert (
        "cinematic composition" in made["image_fast"].added
        and "smooth motion" not in made["image_fast"].added
    )
    assert {"smooth motion", "stable camera", "intricate detail"} <= set(made["video_high"].added)
    for name, enhancement in made.items():
        assert enhancement.prompt.startswith(prompt) and not enhancement.compression_applied
        assert enhancement.added == list(default_style(get_job_type(name)))
        assert enhancement.prompt == ", ".join([prompt, *enhancement.added])


def test_rules_normalises_and_deduplicates_the_prompt(clip: PreTrainedTokenizerBase) -> None:
    enhanced = rules_enhance(
        "a red fox ,, sitting in snow!!;  A Red Fox.\n( soft light )", get_job_type("sdxl_image_fast")
    )
    assert enhanced.prompt.startswith("a red fox, sitting in snow!, (soft light), highly detailed")
    assert enhanced.token_count == clip_count(clip, enhanced.prompt)
    assert enhanced.original_token_count == clip_count(
        clip, "a red fox ,, sitting in snow!!; A Red Fox. (soft light)"
    )
    assert enhanced.original_token_count < enhanced.token_count


def test_rules_does_not_repeat_phrases_the_prompt_has() -> None:
    enhanced = rules_enhance(
        "harbour at dawn, Sharp Focus, in 8K resolution", get_job_type("sdxl_image_high")
    )
    assert "sharp focus" not in enhanced.added and "8k" not in enhanced.added
    assert enhanced.added == ["highly detailed", "professional lighting", "intricate detail"]
    assert enhanced.prompt.casefold().count("sharp focus") == 1
    assert enhanced.prompt.casefold().count("8k") == 1


def test_rules_is_deterministic() -> None:
    job = get_job_type("video7b_high_enhanced")
    short = [rules_enhance("gulls over the harbour", job) for _ in range(3)]
    long = [rules_enhance(f"{LONG_PROMPT}, gulls overhead", job) for _ in range(3)]
    assert short[0] == short[1] == short[2] and short[0].added
    assert long[0] == long[1] == long[2] and long[0].prompt


@pytest.mark.parametrize("name", sorted(JOB_TYPES))
def test_rules_never_exceeds_the_budget(
    clip: PreTrainedTokenizerBase, umt5: PreTrainedTokenizerBase, name: str
) -> None:
    job = JOB_TYPES[name]
    words = " ".join(f"Stone{n} tower by the sea" for n in range(150))  # one huge phrase
    for prompt in (LONG_PROMPT * 3, words, f"{SUBJECT}, {words}"):
        enhanced = rules_enhance(prompt, job)
        assert enhanced.budget == job.token_budget
        real = family_count(clip, umt5, enhanced.prompt, job.family)
        assert enhanced.token_count == real <= job.token_budget
        assert enhanced.compression_applied and enhanced.added == []  # additions go first
        assert_clean(enhanced.prompt)


def near_budget(clip: PreTrainedTokenizerBase, budget: int) -> str:
    """A user prompt of short phrases that fits `budget` with two to six tokens to spare."""
    phrases = [SUBJECT]
    for n in range(budget):
        if clip_count(clip, ", ".join([*phrases, f"tide pool {n}"])) > budget - 2:
            break
        phrases.append(f"tide pool {n}")
    prompt = ", ".join(phrases)
    assert budget - 6 <= clip_count(clip, prompt) <= budget - 2
    return prompt


def test_rules_drops_added_phrases_before_user_phrases(clip: PreTrainedTokenizerBase) -> None:
    job = get_job_type("sdxl_image_high")
    prompt = near_budget(clip, job.token_budget)
    enhanced = rules_enhance(prompt, job)
    assert enhanced.compression_applied and not enhanced.truncated
    assert enhanced.prompt.startswith(prompt)  # every user phrase kept
    assert enhanced.dropped and set(enhanced.dropped) <= set(default_style(job))
    assert enhanced.added + enhanced.dropped[::-1] == list(default_style(job))  # the last added went first
    assert enhanced.token_count == clip_count(clip, enhanced.prompt) <= job.token_budget


def test_rules_template_replaces_the_default_style() -> None:
    job = get_job_type("video_fast")
    enhanced = rules_enhance("a fox in snow, soft light", job, template="{prompt}, film still, muted colours")
    assert enhanced.prompt == "a fox in snow, soft light, film still, muted colours"
    assert enhanced.added == ["film still", "muted colours"]
    assert not set(DEFAULT_STYLE[("wan", "video")]) & set(split_phrases(enhanced.prompt))

    glued = rules_enhance(
        "a fox in snow", job, template="wide shot; a photo of {prompt} at night, film still"
    )
    assert glued.prompt == "wide shot, a photo of a fox in snow at night, film still"
    assert glued.added == ["wide shot", "film still"]

    repeated = rules_enhance("a fox, film still", job, template="{prompt}, Film Still, grain")
    assert repeated.added == ["grain"] and repeated.prompt == "a fox, film still, grain"


def test_rules_template_parts_are_dropped_first(clip: PreTrainedTokenizerBase) -> None:
    job = get_job_type("sdxl_image_fast")
    prompt = near_budget(clip, job.token_budget)
    enhanced = rules_enhance(prompt, job, template="masterpiece, {prompt}, film still, muted colours")
    assert enhanced.compression_applied and not enhanced.truncated
    assert enhanced.prompt.removeprefix("masterpiece, ").startswith(prompt)  # every user phrase kept
    assert enhanced.dropped[0] == "muted colours"  # the template's phrases, the last one first
    assert set(enhanced.dropped) <= {"masterpiece", "film still", "muted colours"}
    assert enhanced.token_count == clip_count(clip, enhanced.prompt) <= job.token_budget


def test_rules_template_needs_one_placeholder() -> None:
    with pytest.raises(ValueError, match="exactly once"):
        rules_enhance("a fox", get_job_type("image_fast"), template="film still, muted colours")


def test_a_conversation_becomes_an_sdxl_prompt() -> None:
    fitted = conversation_prompt(["a lighthouse", "at dusk, with gulls"])
    assert fitted.text == "a lighthouse, at dusk, with gulls" and not fitted.compression_applied


def test_a_long_conversation_keeps_the_newest_wishes_within_clip_budget() -> None:
    older = [", ".join(f"old detail {m}-{n}" for n in range(10)) for m in range(6)]
    fitted = conversation_prompt([*older, "a red kite over the dunes, evening light"])
    assert fitted.compression_applied and fitted.token_count <= 75 == fitted.budget
    assert count_tokens(fitted.text, "sdxl") == fitted.token_count
    assert "a red kite over the dunes" in fitted.text and "evening light" in fitted.text
    assert "old detail 0-0" not in fitted.text  # the oldest phrases went first
