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
