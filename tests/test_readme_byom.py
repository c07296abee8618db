"""README "Bring your own model": the Python example runs as written (random weights, nothing downloaded)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example(heading: str) -> str:
    """The first indented code block after `heading`, dedented."""
    text = README.read_text()
    start = text.index(f"\n{heading}\n")
    block = re.search(r"\n\n((?: {4}.*\n|\n)+)", text[start:])
    assert block is not None, f"README: no code block after {heading}"
    return "\n".join(line[4:] for line in block.group(1).splitlines())


@pytest.mark.slow
def test_the_bring_your_own_model_example_runs_as_written(tmp_path, monkeypatch, capsys) -> None:
    pytest.importorskip("timm")
    pytest.importorskip("torch_pruning")
    pytest.importorskip("torchvision")
    code = readme_example("### Bring your own model")
    assert "from_timm(" in code and "build_foreign(" in code
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(README), "exec"), {"__name__": "readme_example"})
    assert capsys.readouterr().out.splitlines() == ["torch.Size([2, 384])", "torch.Size([2, 1024])"]
    assert (tmp_path / "out/deit3_heads25/model.json").is_file()
    assert (tmp_path / "out/mnv3_fpgm50/weights.safetensors").is_file()
