"""Real tokenizers without a model hub.

CLIP: the exact BPE vocabulary that open-clip-torch ships (`bpe_simple_vocab_16e6.txt.gz`), turned into
the vocab/merges a transformers `CLIPTokenizer` takes, so ids match OpenAI's CLIP and SDXL (77 tokens).
UMT5 stand-in: a unigram tokenizer over the same English word pieces, since UMT5's own vocabulary is not
available offline; it has the interface and padding behaviour of the real one.
"""

from __future__ import annotations

import gzip
import importlib.util
from functools import cache
from pathlib import Path

from transformers import CLIPTokenizer, T5Tokenizer

CLIP_MAX_LENGTH = 77
UMT5_MAX_LENGTH = 512
_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"
_MERGE_COUNT = 49152 - 256 - 2  # as open_clip.SimpleTokenizer reads the file


def _open_clip_vocab_file() -> Path:
    """Locate the vocabulary file without importing open_clip (which needs torchvision)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("open-clip-torch is not installed; it provides the CLIP BPE vocabulary")
    return Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"


def _bytes_to_unicode() -> list[str]:
    """GPT-2/CLIP's reversible byte -> printable character table, in byte order of the vocabulary."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


@cache
def clip_vocabulary() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges) of OpenAI's CLIP BPE: 49408 tokens, BOS 49406, EOS 49407."""
    with gzip.open(_open_clip_vocab_file(), "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : _MERGE_COUNT + 1]]
    base = _bytes_to_unicode()
    tokens = [*base, *(c + "</w>" for c in base), *("".join(m) for m in merges), _BOS, _EOS]
    return {token: index for index, token in enumerate(tokens)}, merges  # type: ignore[return-value]


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
