"""The token-method table: one module per method, every name defined once, in the model layer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import reidprune.models
from reidprune.errors import CompressionError
from reidprune.models.tokens import ALIASES, METHODS, method_named

MODELS = Path(reidprune.models.__file__).parent


def test_every_name_and_alias_finds_its_method_and_no_alias_is_taken_twice() -> None:
    assert set(METHODS) == {"amg", "topk", "pm", "tome"}
    for name, method in METHODS.items():
        assert method_named(name) is method
        for alias in method.aliases:
            assert method_named(alias) is method
    aliases = [alias for m in METHODS.values() for alias in m.aliases]
    assert len(aliases) == len(set(aliases)) == len(ALIASES)
    assert method_named("token-amg").name == "amg" and method_named("attn-topk").name == "topk"
    with pytest.raises(CompressionError, match="unknown token method 'token-foo'"):
        method_named("token-foo")


@pytest.mark.parametrize(
    "path", [*sorted((MODELS / "tokens").glob("*.py")), MODELS / "vit.py", MODELS / "vit_models.py"]
)
def test_the_vit_and_its_token_methods_do_not_import_compress(path: Path) -> None:
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    assert not {name for name in imported if name.startswith("reidprune.compress")}
