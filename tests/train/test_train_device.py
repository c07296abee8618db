"""One device resolution for train, eval and measure: "auto" is this rank's GPU, names are checked."""

from __future__ import annotations

import pytest
import torch

from reidprune.errors import ConfigError
from reidprune.train.distributed import resolve_device


@pytest.mark.parametrize(
    ("cuda", "local_rank", "expected"),
    [(False, None, "cpu"), (True, None, "cuda:0"), (True, "1", "cuda:1")],
)
def test_auto_is_this_ranks_gpu_or_the_cpu(
    monkeypatch, cuda: bool, local_rank: str | None, expected: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    if local_rank is None:
        monkeypatch.delenv("LOCAL_RANK", raising=False)
    else:
        monkeypatch.setenv("LOCAL_RANK", local_rank)
    assert resolve_device("auto") == resolve_device(None) == torch.device(expected)


def test_named_devices_are_taken_as_given() -> None:
    assert resolve_device("cuda:2") == torch.device("cuda", 2)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("mps")) == torch.device("mps")


def test_an_unknown_name_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^--device='gpu': expected auto, cpu, cuda, cuda:N or mps$"):
        resolve_device("gpu", key="--device")
