"""An earlier commit of this repository beside the working tree, to measure before and after in one run.

`earlier(ref)` checks `ref` out into a temporary git worktree (removed afterwards); `env_for(path)` is
what a child process needs to run that tree's code: its folder first on PYTHONPATH, the same virtual
environment (a benchmark across commits that changed dependencies is not supported).
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def earlier(ref: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="ourvidz-before-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), ref], check=True,
                       capture_output=True)  # fmt: skip
        try:
            yield tree
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)


def env_for(tree: Path | None) -> dict[str, str]:
    return {} if tree is None else {"PYTHONPATH": str(tree)}


def describe(ref: str) -> str:
    """`ref` as a short commit id and subject, for the report."""
    return subprocess.run(
        ["git", "-C", str(ROOT), "log", "-1", "--format=%h %s", ref],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
