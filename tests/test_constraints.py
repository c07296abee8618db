"""constraints.txt pins every dependency of `reidprune[all]` to one version that pyproject.toml allows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]


def pins() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    entries = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    pairs = [re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", entry) for entry in entries]
    assert all(pairs), [e for e, p in zip(entries, pairs, strict=True) if p is None]
    return {canonicalize_name(p[1]): p[2] for p in pairs}


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [
        *project["dependencies"],
        *(r for group in project["optional-dependencies"].values() for r in group),
    ]
    return [Requirement(name) for name in names if not name.startswith("reidprune")]


def test_every_dependency_is_pinned_within_its_lower_bound() -> None:
    pinned = pins()
    for requirement in declared():
        version = pinned.get(canonicalize_name(requirement.name))
        assert version is not None, f"{requirement.name} is not in constraints.txt"
        assert requirement.specifier.contains(version), f"{requirement.name}=={version} vs {requirement}"


def test_the_lock_leaves_reidprune_out_and_pins_the_torch_the_suite_runs_with() -> None:
    pinned = pins()
    assert "reidprune" not in pinned
    assert (pinned["torch"], pinned["torchvision"]) == ("2.14.1", "0.29.1")
