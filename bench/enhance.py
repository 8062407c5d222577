"""Prompt enhancement benchmark: the rules enhancer and the content check, in process.

    python bench/enhance.py                    # 500 calls per job type and prompt length
    python bench/enhance.py --calls 2000 --json out.json

For each job type of the catalog and a short and a long (over budget) prompt: p50/p99 of the rules
enhancer (tidy, style phrases, token budget with the real tokenizers) plus the content-policy check of
its output, against the baseline of counting the prompt's tokens once (the least any budget-aware
path does) in the same run. Target: p99 <= 20 ms for the rules enhancer.
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial
from pathlib import Path
from typing import Any

from ourvidz.catalog import JOB_TYPES, JobType
from ourvidz.jobs.enhancement import enhance
from ourvidz.policy import ContentPolicy
from ourvidz.prompts import count_tokens

from report import percentile, publish

PROMPTS = {
    "short": "a lighthouse at dusk, waves on the rocks",
    "long": ", ".join(f"a distinct detail number {n}" for n in range(60)),
}


def timed(call: Any, calls: int) -> list[float]:
    seconds = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return seconds


def enhance_and_check(policy: ContentPolicy, prompt: str, job_type: JobType) -> None:
    """What a request pays: the enhancer, then the content check of what it produced."""
    policy.classify(enhance(prompt, job_type).prompt)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    policy = ContentPolicy()
    results = []
    for job_type in JOB_TYPES.values():
        for length, prompt in PROMPTS.items():
            enhance(prompt, job_type)  # warm-up: tokenizers built once per process
            rules = timed(partial(enhance_and_check, policy, prompt, job_type), args.calls)
            base = timed(partial(count_tokens, prompt, job_type.family), args.calls)
            results.append({
                "job_type": job_type.name, "prompt": length,
                "rules_p50_ms": round(statistics.median(rules) * 1000, 2),
                "rules_p99_ms": round(percentile(rules, 0.99) * 1000, 2),
                "baseline_p50_ms": round(statistics.median(base) * 1000, 2),
                "baseline_p99_ms": round(percentile(base, 0.99) * 1000, 2),
            })  # fmt: skip
    output = {"calls": args.calls, "target_p99_ms": 20, "results": results}
    publish(output, args.json)
    print(f"\n{'job type':<30} {'prompt':<6} {'rules p50':>9} {'p99':>7} {'count p50':>9} {'p99':>7}")
    for r in results:
        print(f"{r['job_type']:<30} {r['prompt']:<6} {r['rules_p50_ms']:>9} {r['rules_p99_ms']:>7} "
              f"{r['baseline_p50_ms']:>9} {r['baseline_p99_ms']:>7}")  # fmt: skip


if __name__ == "__main__":
    main()
