"""The text encoders' tokenizers as `tokenizers` files, shipped with the package so that counting a
prompt's tokens needs neither transformers nor torch (the gateway) nor a model hub.

`clip.json.gz`: OpenAI CLIP's BPE (SDXL's two encoders; ids as OpenAI's and open_clip's vocabulary
give them; its decoder turns each word's `</w>` into a space, so a decoded text ends in one).
`umt5.json.gz`: the UMT5 stand-in (a unigram over the same word pieces, shaped like UMT5's: pad 0, eos 1,
unk 2; UMT5's own vocabulary is not available offline). `ourvidz.generation.tokenizers` builds
the transformers tokenizers of the tiny pipelines from the same files; a unit test keeps them equal.
"""

from __future__ import annotations

import gzip
from functools import cache
from importlib import resources

from tokenizers import Tokenizer


@cache
def shipped_json(name: str) -> str:
    """The tokenizer file `name` (`clip`, `umt5`) as JSON text."""
    return gzip.decompress((resources.files(__package__) / f"{name}.json.gz").read_bytes()).decode()


@cache
def shipped_tokenizer(name: str) -> Tokenizer:
    """A shared `tokenizers.Tokenizer` (its encode/decode are thread-safe; never set padding on it)."""
    return Tokenizer.from_str(shipped_json(name))
