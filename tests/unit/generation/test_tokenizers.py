"""The tiny pipelines carry the real CLIP tokenizer and a UMT5-shaped one."""

from __future__ import annotations

from transformers import CLIPTokenizer, T5Tokenizer

from ourvidz.generation.runtime import GenerationRuntime
from ourvidz.generation.tokenizers import clip_tokenizer, umt5_tokenizer
from ourvidz.prompts.tokenizers import shipped_tokenizer

CAT_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]


def test_clip_ids_match_openai_clip() -> None:
    tokenizer = clip_tokenizer()
    assert tokenizer("a photo of a cat").input_ids == CAT_IDS
    assert tokenizer("A  Photo of a CAT").input_ids == CAT_IDS  # CLIP lower-cases and folds spaces
    assert tokenizer.model_max_length == 77
    padded = tokenizer("word " * 200, padding="max_length", truncation=True, max_length=77).input_ids
    assert len(padded) == 77 and padded[0] == 49406 and padded[-1] == 49407


def test_saved_tiny_sdxl_loads_both_real_tokenizers(runtime: GenerationRuntime) -> None:
    pipe = runtime.executor.run(lambda pipelines: pipelines.get("sdxl")).result()
    for tokenizer in (pipe.tokenizer, pipe.tokenizer_2):
        assert isinstance(tokenizer, CLIPTokenizer)
        assert tokenizer("a photo of a cat").input_ids == CAT_IDS
        assert tokenizer.model_max_length == 77
    assert pipe.tokenizer_2.pad_token == "!" and pipe.tokenizer.pad_token == "<|endoftext|>"


def test_umt5_shaped_tokenizer(runtime: GenerationRuntime) -> None:
    pipe = runtime.executor.run(lambda pipelines: pipelines.get("wan")).result()
    for tokenizer in (umt5_tokenizer(), pipe.tokenizer):
        assert isinstance(tokenizer, T5Tokenizer)
        ids = tokenizer("a photo of a cat").input_ids
        assert ids[-1] == tokenizer.eos_token_id == 1 and tokenizer.pad_token_id == 0
        assert len(ids) == 6  # whole words, not letters
        assert tokenizer.model_max_length == 512
    assert pipe.text_encoder.config.vocab_size == len(pipe.tokenizer)


TEXTS = [
    "a photo of a cat", "A Lighthouse at dusk, café; 15yo? no!!  émoji 🙂", "it's what they'd've done",
    "portrait, 85mm, f/1.8 — bokeh", "x" * 300, "", "zorblax  quux\tflim\nflam",
]  # fmt: skip


def test_the_shipped_tokenizer_files_are_the_transformers_tokenizers() -> None:
    """The gateway counts tokens with the shipped files (no transformers, no torch); the tiny pipelines
    use transformers tokenizers built from the same vocabulary: the same ids, with and without
    BOS/EOS, and the same decoding."""
    for name, tokenizer in (("clip", clip_tokenizer()), ("umt5", umt5_tokenizer())):
        shipped = shipped_tokenizer(name)
        for text in TEXTS:
            assert shipped.encode(text).ids == tokenizer(text).input_ids, (name, text)
            ids = shipped.encode(text, add_special_tokens=False).ids
            assert ids == tokenizer(text, add_special_tokens=False).input_ids, (name, text)
            decoded = tokenizer.decode(ids, skip_special_tokens=True)
            assert shipped.decode(ids).strip() == decoded.strip(), (name, text)  # CLIP's ends in a space
