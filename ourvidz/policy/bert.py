"""A BERT-family sentence encoder in numpy: the semantic layer's forward pass without torch.

The gateway checks every prompt above artistic, so it must run the shipped all-MiniLM-L6-v2 (6 layers,
384 wide) itself; with torch and sentence-transformers that costs a gateway host a 1 GB install. The
model is small enough for plain matrix products: weights from its safetensors file, tokens from its
`tokenizer.json` (the `tokenizers` library), and the exact BERT arithmetic (post-layer-norm blocks, erf
GELU). A unit test keeps its vectors equal to sentence-transformers' (where torch is installed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from threadpoolctl import ThreadpoolController
from tokenizers import Encoding, Tokenizer

WINDOW_STRIDE = 32  # tokens two overlapping windows of a long text share
# Products this small run fastest on one BLAS thread (more only contend, with each other and with the
# gateway's concurrent requests); the controller is made once, its limit per call costs ~20 µs.
_BLAS = ThreadpoolController()


class UnsupportedModel(ValueError):
    """The model folder holds no BERT-family encoder this module can run."""


def _erf(x: np.ndarray) -> np.ndarray:
    """erf to 1.5e-7 (Abramowitz and Stegun 7.1.26); numpy has none and BERT's GELU is erf's."""
    sign = np.sign(x)
    x = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-x * x))


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / np.float32(np.sqrt(2.0))))


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


@dataclass(frozen=True)
class _Layer:
    qkv: np.ndarray  # (hidden, 3 * hidden): query, key and value in one product
    qkv_bias: np.ndarray
    out: np.ndarray
    out_bias: np.ndarray
    norm1: tuple[np.ndarray, np.ndarray]
    up: np.ndarray
    up_bias: np.ndarray
    down: np.ndarray
    down_bias: np.ndarray
    norm2: tuple[np.ndarray, np.ndarray]


class BertEncoder:
    """Token vectors (the last hidden state) of a text, window by window."""

    def __init__(self, folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        if (
            config.get("model_type") != "bert"
            or config.get("position_embedding_type", "absolute") != "absolute"
        ):
            raise UnsupportedModel(f"{folder}: model_type {config.get('model_type')!r} is not a BERT encoder")
        if config.get("hidden_act") != "gelu":
            raise UnsupportedModel(f"{folder}: activation {config.get('hidden_act')!r} is not erf GELU")
        weights = load_file(str(folder / "model.safetensors"))
        weights = {key.removeprefix("bert."): value for key, value in weights.items()}
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        window = json.loads((folder / "sentence_bert_config.json").read_text()).get("max_seq_length", 256)
        self.window = min(int(window), int(config["max_position_embeddings"]))
        self.word = weights["embeddings.word_embeddings.weight"]
        self.position = weights["embeddings.position_embeddings.weight"]
        self.token_type = weights["embeddings.token_type_embeddings.weight"][0]
        self.norm = (weights["embeddings.LayerNorm.weight"], weights["embeddings.LayerNorm.bias"])
        self.layers = [
            self._layer(weights, f"encoder.layer.{i}.") for i in range(config["num_hidden_layers"])
        ]
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.window, stride=WINDOW_STRIDE)

    @staticmethod
    def _layer(w: dict[str, np.ndarray], p: str) -> _Layer:
        attention = f"{p}attention.self."
        return _Layer(
            qkv=np.concatenate([w[f"{attention}{n}.weight"] for n in ("query", "key", "value")]).T.copy(),
            qkv_bias=np.concatenate([w[f"{attention}{n}.bias"] for n in ("query", "key", "value")]),
            out=w[f"{p}attention.output.dense.weight"].T.copy(),
            out_bias=w[f"{p}attention.output.dense.bias"],
            norm1=(w[f"{p}attention.output.LayerNorm.weight"], w[f"{p}attention.output.LayerNorm.bias"]),
            up=w[f"{p}intermediate.dense.weight"].T.copy(), up_bias=w[f"{p}intermediate.dense.bias"],
            down=w[f"{p}output.dense.weight"].T.copy(), down_bias=w[f"{p}output.dense.bias"],
            norm2=(w[f"{p}output.LayerNorm.weight"], w[f"{p}output.LayerNorm.bias"]),
        )  # fmt: skip

    def windows(self, text: str) -> list[Encoding]:
        """The text's token windows: one, or overlapping ones past the model's window."""
        encoding = self.tokenizer.encode(text)
        return [encoding, *encoding.overflowing]

    def tokens(self, encoding: Encoding) -> np.ndarray:
        """The last hidden state of one window: (tokens, hidden)."""
        with _BLAS.limit(limits=1, user_api="blas"):
            return self._forward(np.asarray(encoding.ids))

    def _forward(self, ids: np.ndarray) -> np.ndarray:
        x = self.word[ids] + self.position[: len(ids)] + self.token_type
        x = _layer_norm(x, *self.norm, self.eps)
        n, hidden = x.shape
        size = hidden // self.heads
        scale = np.float32(1.0 / np.sqrt(size))
        for layer in self.layers:
            qkv = (x @ layer.qkv + layer.qkv_bias).reshape(n, 3, self.heads, size).transpose(1, 2, 0, 3)
            scores = (qkv[0] @ qkv[1].transpose(0, 2, 1)) * scale
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            context = (scores / scores.sum(axis=-1, keepdims=True)) @ qkv[2]
            attended = context.transpose(1, 0, 2).reshape(n, hidden) @ layer.out + layer.out_bias
            x = _layer_norm(x + attended, *layer.norm1, self.eps)
            mixed = _gelu(x @ layer.up + layer.up_bias) @ layer.down + layer.down_bias
            x = _layer_norm(x + mixed, *layer.norm2, self.eps)
        return x

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit mean-pooled vectors of whole texts (each cut at the model's window, as
        sentence-transformers cuts it)."""
        pooled = [self.tokens(self.windows(text)[0]).mean(axis=0) for text in texts]
        if not pooled:
            return np.zeros((0, self.word.shape[1]), np.float32)
        vectors = np.stack(pooled)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
