"""Time of the content gate per prompt: the lexical layer alone (the baseline) against lexical +
semantic, in the same run, over the development set's prompts (tests/unit/data/content_devset.jsonl).
The semantic layer runs its model in numpy (what a gateway runs); where sentence-transformers is
installed, the same model through it (torch) is timed too, as the second baseline.

    python bench/content_gate.py [--rounds 5] [--out bench/results/content-gate-<machine>-<date>.json]

Prints JSON and a short table. Target (issue 19): p99 <= 20 ms for lexical + semantic on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import date
from pathlib import Path

from ourvidz.policy import ContentPolicy, ContentTier
from ourvidz.policy.lexical import scan
from ourvidz.policy.semantic import Encoder, _model_folder, _SentenceTransformersModel

DEVSET = Path(__file__).parent.parent / "tests" / "unit" / "data" / "content_devset.jsonl"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = [json.loads(line) for line in DEVSET.read_text(encoding="utf-8").splitlines() if line.strip()]
    cases = [(r["text"], ContentTier(r["tier"]) if r["tier"] else None) for r in rows]
    policy = ContentPolicy(None)
    started = time.perf_counter()
    policy.semantic_layer()
    load_s = time.perf_counter() - started
    vocabulary = policy._snapshot.vocabulary
    for text, requested in cases:  # warm-up
        policy.classify(text, requested)
    torch_policy = _torch_policy()
    times: dict[str, list[float]] = {"lexical": [], "lexical+semantic": []}
    if torch_policy is not None:
        times["lexical+semantic (torch)"] = []
    for _ in range(args.rounds):
        for text, requested in cases:
            t0 = time.perf_counter()
            scan(vocabulary, text, requested)
            t1 = time.perf_counter()
            policy.classify(text, requested)
            t2 = time.perf_counter()
            times["lexical"].append((t1 - t0) * 1000)
            times["lexical+semantic"].append((t2 - t1) * 1000)
            if torch_policy is not None:
                torch_policy.classify(text, requested)
                times["lexical+semantic (torch)"].append((time.perf_counter() - t2) * 1000)
    longest = ("a quiet lighthouse by the sea at dawn, " * 52)[
        :1990
    ] + " zorblax"  # the longest prompt allowed
    times["lexical+semantic, 2,000-char prompt"] = []
    for _ in range(20):
        t0 = time.perf_counter()
        policy.classify(longest)
        times["lexical+semantic, 2,000-char prompt"].append((time.perf_counter() - t0) * 1000)
    result = {
        "benchmark": "content_gate", "date": date.today().isoformat(), "machine": platform.node(),
        "cpu_count": os.cpu_count(), "prompts": len(cases), "rounds": args.rounds,
        "model_load_s": round(load_s, 2), "target_p99_ms": 20.0,
        "layers": {
            name: {"p50_ms": round(statistics.median(v), 3), "p99_ms": round(percentile(v, 0.99), 3),
                   "max_ms": round(max(v), 3)}
            for name, v in times.items()
        },
    }  # fmt: skip
    print(json.dumps(result, indent=2))
    print(f"\n{'layers':38} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, figures in result["layers"].items():
        print(f"{name:38} {figures['p50_ms']:8.2f} {figures['p99_ms']:8.2f} {figures['max_ms']:8.2f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def _torch_policy() -> ContentPolicy | None:
    """The same gate with the model run by sentence-transformers on torch, or None without it."""
    try:
        model = _SentenceTransformersModel(_model_folder(None))
    except ImportError:
        return None
    policy = ContentPolicy(None)
    policy.semantic_layer().encoder = Encoder(model, "sentence-transformers")
    for text in ("warm-up, zorblax", "a lighthouse, zorblax"):
        policy.classify(text)
    return policy


if __name__ == "__main__":
    main()
