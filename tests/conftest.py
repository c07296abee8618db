"""Shared fixtures: small, deterministic, no network."""

from __future__ import annotations

import os

import pytest
import torch

# Two cores on CI: keep intra-op threads bounded so parallel pieces do not oversubscribe.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Latency tables and sensitivity curves a test does not place itself go to a folder of this
    session, never to the user's ~/.cache (and never reuse what an earlier run left there)."""
    os.environ["REIDPRUNE_CACHE"] = str(tmp_path_factory.mktemp("reidprune_cache"))


# ---- data set trees (builders in tests/data/fixtures.py; usable from every test folder) ----


def _data_fixtures():  # type: ignore[no-untyped-def]
    """tests/data/fixtures.py, loaded by path so it works whatever is on sys.path."""
    import importlib.util
    import sys
    from pathlib import Path

    name = "reidprune_tests_data_fixtures"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).parent / "data" / "fixtures.py")
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[name] = module
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    return sys.modules[name]


@pytest.fixture
def make_market_tree():  # type: ignore[no-untyped-def]
    """Factory `make_market_tree(root, train=None, gallery=None, query=None, size=(16, 8)) -> root`:
    a tiny Market-1501 tree (real-style names, a -1 junk and a 0000 distractor image). See
    tests/data/fixtures.py, which also has `market_names(pids, cameras, per_camera)`."""
    return _data_fixtures().make_market_tree


@pytest.fixture
def make_imagefolder_tree():  # type: ignore[no-untyped-def]
    """Factory `make_imagefolder_tree(root, size=(16, 8)) -> root`: train/ and val/ with classes cat, dog."""
    return _data_fixtures().make_imagefolder_tree


@pytest.fixture
def market_root(tmp_path):  # type: ignore[no-untyped-def]
    """A tiny Market-1501 tree: train pids 2, 7, 11; test pids 3, 5 (+ junk, distractor)."""
    return _data_fixtures().make_market_tree(tmp_path / "market")


@pytest.fixture
def imagefolder_root(tmp_path):  # type: ignore[no-untyped-def]
    """A tiny ImageFolder tree: train/{cat,dog} (4 images), val/cat (1 image)."""
    return _data_fixtures().make_imagefolder_tree(tmp_path / "imagefolder")


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):  # type: ignore[no-untyped-def]
    """The embedded synthetic set with 4 identities (2 train, 2 test), generated once per session;
    read-only (copy it before changing anything)."""
    from reidprune.data.synth import generate

    root = tmp_path_factory.mktemp("synth") / "synth_ids4"
    generate(root, ids=4, seed=0)
    return root
