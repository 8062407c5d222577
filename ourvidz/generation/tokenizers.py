"""Real tokenizers without a model hub, as transformers tokenizers for the tiny pipelines.

CLIP: OpenAI CLIP's BPE, from the tokenizer file the package ships (`ourvidz.prompts.tokenizers`), so
ids match OpenAI's CLIP and SDXL (77 tokens). UMT5 stand-in: a unigram tokenizer over the same English
word pieces, since UMT5's own vocabulary is not available offline; it has the interface and padding
behaviour of the real one (and is shipped as its own file for the gateway, kept equal by a test).
"""

from __future__ import annotations

import json
from functools import cache

from transformers import CLIPTokenizer, T5Tokenizer

from ourvidz.prompts.tokenizers import shipped_json

CLIP_MAX_LENGTH = 77
UMT5_MAX_LENGTH = 512
_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"


@cache
def clip_vocabulary() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges) of OpenAI's CLIP BPE: 49408 tokens, BOS 49406, EOS 49407."""
    model = json.loads(shipped_json("clip"))["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in model["merges"]]
    return dict(model["vocab"]), merges  # type: ignore[return-value]


def clip_tokenizer(pad_token: str = _EOS) -> CLIPTokenizer:
    """SDXL's first tokenizer pads with EOS; its second (OpenCLIP bigG) pads with `!`."""
    vocab, merges = clip_vocabulary()
    return CLIPTokenizer(
        vocab=dict(vocab), merges=list(merges), pad_token=pad_token, model_max_length=CLIP_MAX_LENGTH
    )


def umt5_tokenizer() -> T5Tokenizer:
    """A unigram tokenizer over CLIP's word pieces, shaped like UMT5's (pad 0, eos 1, unk 2)."""
    vocab, _ = clip_vocabulary()
    pieces = ["<pad>", "</s>", "<unk>"]
    seen = set(pieces)
    for token in vocab:
        if token in (_BOS, _EOS):
            continue
        piece = "▁" + token.removesuffix("</w>") if token.endswith("</w>") else token
        if piece not in seen:
            seen.add(piece)
            pieces.append(piece)
    # Nearly equal scores: the fewest pieces win, the earlier (more frequent) merge breaks ties.
    scored = [(piece, 0.0 if i < 3 else -1.0 - i * 1e-6) for i, piece in enumerate(pieces)]
    return T5Tokenizer(
        vocab=scored, unk_id=2, extra_ids=0, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
        model_max_length=UMT5_MAX_LENGTH,
    )  # fmt: skip
