"""A damaged or hand-edited model directory is refused with a CheckpointError naming the file and key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reidprune.errors import CheckpointError, UnknownModelError
from reidprune.models import create, load, load_checkpoint, registry, save
from reidprune.models.registry import arch_from_dict


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = create("vit_tiny_reid", depth=1, img_size=[32, 16], num_classes=3)
    return save(model, tmp_path_factory.mktemp("saved") / "tiny")


def _copy(saved: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    target.mkdir()
    for name in ("model.json", "weights.safetensors"):
        (target / name).write_bytes((saved / name).read_bytes())
    return target


def _edit_json(directory: Path, change) -> Path:  # type: ignore[no-untyped-def]
    path = directory / "model.json"
    description = json.loads(path.read_text())
    description = change(description) or description
    path.write_text(json.dumps(description))
    return path


def _set_arch(key: str, value):  # type: ignore[no-untyped-def]
    def change(description: dict) -> None:
        description["arch"][key] = value

    return change


@pytest.mark.parametrize("keep", [0, 7, 0.5], ids=["empty", "header-cut", "half"])
def test_truncated_weights_name_the_file(saved: Path, tmp_path: Path, keep: float) -> None:
    directory = _copy(saved, tmp_path)
    weights = directory / "weights.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: int(len(data) * keep)] if isinstance(keep, float) else data[:keep])
    pattern = r"copy/weights\.safetensors: not a readable safetensors file, truncated or corrupt"
    with pytest.raises(CheckpointError, match=pattern):
        load(directory)
    fresh = create("vit_tiny_reid", depth=1, img_size=[32, 16], num_classes=3)
    with pytest.raises(CheckpointError, match=pattern):  # the same file given as model.weights
        load_checkpoint(fresh, directory)


def test_garbage_weights_name_the_file(saved: Path, tmp_path: Path) -> None:
    directory = _copy(saved, tmp_path)
    (directory / "weights.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match=r"weights\.safetensors: not a readable safetensors file"):
        load(directory)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: [d], r"model\.json: expected a JSON object, got a list"),
        (
            lambda d: d.update(format_version="1"),
            r"model\.json: key 'format_version': expected an integer, got '1'",
        ),
        (
            lambda d: d.update(arch=[1, 2]),
            r"model\.json: expected keys 'format'='reidprune' and 'arch' \(an object\)",
        ),
        (lambda d: d.update(metadata=[1]), r"model\.json: key 'metadata': expected an object"),
        (lambda d: d.update(plan="head"), r"model\.json: key 'plan': expected an object, got str"),
        (
            lambda d: d.update(plan={"method": "head-entropy", "rate": 0.5, "heads": [1]}),
            r"model\.json: key 'plan': unknown key\(s\) \['heads'\]",
        ),
        (
            lambda d: d.update(plan={"method": "head-entropy", "rate": "half"}),
            r"model\.json: key 'plan': key 'rate': expected a number, got 'half'",
        ),
        (lambda d: d.update(plan={"rate": 0.5}), r"key 'plan': key 'method': expected a string, got None"),
        (
            lambda d: d.update(plan={"method": "m", "rate": 0.5, "previous": [3]}),
            r"key 'plan': key 'previous': expected a list of plan objects",
        ),
    ],
    ids=[
        "list",
        "version-string",
        "arch-list",
        "metadata-list",
        "plan-string",
        "plan-key",
        "plan-rate",
        "plan-method",
        "plan-previous",
    ],
)
def test_malformed_description_is_refused(saved: Path, tmp_path: Path, change, message: str) -> None:  # type: ignore[no-untyped-def]
    directory = _copy(saved, tmp_path)
    _edit_json(directory, change)
    with pytest.raises(CheckpointError, match=message):
        load(directory)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("embed_dim", -96, r"key 'embed_dim': expected an integer in \[0, 1048576\], got int -96"),
        ("embed_dim", 1e8, r"key 'embed_dim': expected an integer, got float 100000000.0"),
        (
            "embed_dim",
            100_000_000,
            r"key 'embed_dim': expected an integer in \[0, 1048576\], got int 100000000",
        ),
        ("embed_dim", "192", r"key 'embed_dim': expected an integer, got str '192'"),
        ("embed_dim", 0, r"key 'embed_dim': expected >= 1, got 0"),
        ("head_dim", 0, r"key 'head_dim': expected >= 1, got 0"),
        ("num_heads", [3] * 10**6, r"key 'num_heads': expected at most 1024 entries \(got 1000000\)"),
        ("num_heads", [0], r"key 'num_heads': every block needs at least one head, got \[0\]"),
        ("img_size", [-32, 16], r"key 'img_size\[0\]': expected an integer in \[0, 1048576\], got int -32"),
        ("num_classes", True, r"key 'num_classes': expected an integer, got bool True"),
        ("norm_eps", float("nan"), r"key 'norm_eps': expected a finite number, got float nan"),
        ("qkv_bias", 1, r"key 'qkv_bias': expected true or false, got int 1"),
        ("depth", 12, r"unknown key\(s\) \['depth'\] in the ViTArch architecture"),
    ],
)
def test_bad_architecture_values_are_refused_naming_the_key(
    saved: Path, tmp_path: Path, key: str, value: object, message: str
) -> None:
    directory = _copy(saved, tmp_path)
    _edit_json(directory, _set_arch(key, value))
    with pytest.raises(CheckpointError, match=r"copy/model\.json: .*" + message):
        load(directory)


def test_an_absurd_total_size_is_refused_before_allocating() -> None:
    # each value is within bounds, the product is not: 2 blocks x 2 x 2^19 x 2^16 weights
    values = {"family": "vit", "embed_dim": 2**16, "num_heads": [1, 1], "head_dim": 64,
              "mlp_hidden": [2**19, 2**19]}  # fmt: skip
    with pytest.raises(CheckpointError, match=rf"at most {registry.MAX_PARAMETERS:,} are accepted"):
        arch_from_dict(values, where="model.json")


def test_unknown_family_is_named() -> None:
    with pytest.raises(UnknownModelError, match=r"model.json: unknown model family '\['vit'\]'"):
        arch_from_dict({"family": ["vit"]}, where="model.json")


def test_interpolation_text_stays_literal(tmp_path: Path) -> None:
    # model.json is plain JSON: a ${...} is text, never resolved from the environment
    text = "${oc.env:HOME}"
    model = create("vit_tiny_reid", depth=1, img_size=[32, 16], num_classes=3)
    directory = save(model, tmp_path / "m", metadata={"note": text})
    _edit_json(directory, lambda d: d.update(plan={"method": text, "rate": 0.0, "details": {"k": text}}))
    loaded = load(directory)
    assert loaded.compression_plan.method == text
    assert loaded.compression_plan.details == {"k": text}
    again = load(save(loaded, tmp_path / "again", metadata={"note": text}))
    description = json.loads((tmp_path / "again" / "model.json").read_text())
    assert again.compression_plan.method == text and description["metadata"] == {"note": text}


def test_interpolation_in_an_architecture_string_is_not_resolved(saved: Path, tmp_path: Path) -> None:
    directory = _copy(saved, tmp_path)
    _edit_json(directory, _set_arch("head", "${oc.env:HOME}"))
    with pytest.raises(CheckpointError, match=r"key 'head': '\$\{oc.env:HOME\}' is not one of linear"):
        load(directory)


@pytest.mark.parametrize("method", ["amg", "topk"])
def test_token_reduced_models_pass_the_size_check(tmp_path: Path, method: str) -> None:
    # AMG reducers build index tensors with torch.nonzero, which the meta device cannot run
    from reidprune.compress.tokens import prune_tokens

    dense = create("vit_tiny_reid", depth=2, img_size=[32, 16], num_classes=3).eval()
    options = {"mode": "skip", "selection": "random"} if method == "amg" else {}
    pruned, _ = prune_tokens(dense, method, 0.4, **options)
    assert load(save(pruned, tmp_path / method)).arch == pruned.arch
