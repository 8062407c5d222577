"""A tiny causal LM and tokenizer built offline (random weights), saved like a real model folder.

It is loaded with the same `from_pretrained(..., local_files_only=True)` code that loads real weights.
The vocabulary holds neutral landscape and photography words only; every word of the shipped
content-policy vocabularies is left out, so whatever the model says is neutral.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
from transformers import (
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

UNK, PAD, BOS, EOS = "<unk>", "<pad>", "<s>", "</s>"
ROLES = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIALS = (UNK, PAD, BOS, EOS, *ROLES)
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|> ' + message['content'] + ' </s> ' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
_WORD_TEXT = """
a an the of in on at over under near by with and from into across along through above below beyond
lighthouse dusk dawn mist fog river lake sea ocean shore coast beach cliff cliffs rock rocks harbor pier
boat sail wave waves tide mountain mountains hill hills valley meadow field forest tree trees pine oak
willow grass flowers wildflowers moss fern path road bridge stone cabin barn village town city skyline
tower castle ruins desert dunes sand canyon glacier snow ice waterfall stream creek pond island horizon
sky clouds cloud sun sunset sunrise moon stars night evening morning noon twilight storm rain thunder
rainbow golden silver amber blue azure teal green emerald crimson orange violet purple gray white
black warm cool soft hard bright dim dark pale vivid muted misty foggy calm still quiet distant
light shadow shadows glow haze reflection reflections silhouette backlight backlit rim ambient diffuse
natural sunlight moonlight lantern candle fire smoke cinematic dramatic moody serene peaceful rustic
wide shot close medium aerial panorama panoramic view angle low high frame framing composition
symmetry depth focus sharp bokeh blur detail detailed texture grain film analog photo photograph
photography portrait landscape lens telephoto macro exposure long aperture shutter tripod camera
color palette tone contrast saturation highlights hdr matte glossy painting watercolor oil sketch
style mood atmosphere scene vista travel autumn winter spring summer season leaves maple birch
"""
WORDS = tuple(_WORD_TEXT.split())


def policy_words(root: Path | None = None) -> set[str]:
    """Every word of every term in the shipped content-policy vocabularies (lower-cased)."""
    root = root or Path(__file__).resolve().parents[1] / "ourvidz" / "vocabularies"
    words: set[str] = set()
    for path in root.rglob("*.txt"):
        for line in path.read_text(encoding="utf-8-sig").splitlines():
            term = line.split("#", 1)[0].strip().lower()
            words.update(word for word in re.split(r"[\s\-]+", term) if word)
    return words


def vocabulary() -> list[str]:
    """The tiny model's words: WORDS without duplicates and without any content-policy word."""
    excluded = policy_words()
    return [word for word in dict.fromkeys(WORDS) if word.lower() not in excluded]


def build_tiny_llm(folder: Path, *, chat_template: bool = True) -> Path:
    """Save a tiny LlamaForCausalLM and its word-level tokenizer into `folder`; returns `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {token: index for index, token in enumerate([*SPECIALS, *vocabulary()])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    # Registered as special added tokens, or Whitespace splits "<|user|>" into "<", "|", "user", ...
    # and decoding with skip_special_tokens=True would keep them.
    backend.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in SPECIALS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token=UNK, pad_token=PAD, bos_token=BOS, eos_token=EOS,
        extra_special_tokens=list(ROLES),
    )  # fmt: skip
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, intermediate_size=64, max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    # Random weights would happily emit <unk> or role tokens and stop at any length. This tiny model only
    # says words and never stops before max_new_tokens, so every reply is checkable text that goes beyond
    # the job type's budget (max_new_tokens is twice the budget) and has to be fitted.
    unwanted = [tokenizer.convert_tokens_to_ids(token) for token in SPECIALS]
    model.generation_config = GenerationConfig(
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, suppress_tokens=unwanted,
    )  # fmt: skip
    model.save_pretrained(folder)

    sentence = "<|user|> a lighthouse at dusk soft golden light </s>"
    reloaded = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    if reloaded(sentence)["input_ids"] != tokenizer(sentence)["input_ids"] or len(reloaded) != len(tokenizer):
        raise RuntimeError(f"the tokenizer saved in {folder} does not load back with the same ids")
    return folder
