"""requirements.lock is current: it pins exactly what `make setup` installed."""

from __future__ import annotations

import re
import sysconfig
from importlib import metadata
from pathlib import Path

LOCK = Path(__file__).resolve().parents[2] / "requirements.lock"
NOT_LOCKED = {"pip", "setuptools", "ourvidz"}  # the installer, and the project itself (editable)
# Only what pip installed: importing setuptools puts its vendored copies (packaging, jaraco...) on sys.path.
SITE = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_lock_pins_every_installed_package_at_its_version() -> None:
    import setuptools  # noqa: F401  # as other tests may have: its vendored packages must not count

    locked = dict(line.split("==", 1) for line in LOCK.read_text().split() if not line.startswith("#"))
    locked = {_name(name): version for name, version in locked.items()}
    installed = {
        _name(dist.metadata["Name"]): dist.version
        for dist in metadata.distributions(path=SITE)
        if _name(dist.metadata["Name"]) not in NOT_LOCKED
    }
    assert installed == locked, "run `make lock` after changing dependencies, and commit requirements.lock"
