"""Foreign CNNs (torchvision, timm, torchreid, a user's own factory): build, save and load without pickle.

A foreign model is described by how to build its base plus the shape of every layer:

    model = build_foreign("torchvision:mobilenet_v3_large", num_classes=751)  # random weights
    small, plan = reidprune.compress.prune_filters(model, "fpgm", 0.5)
    reidprune.save(small, "runs/mnv3")      # model.json + weights.safetensors
    small = reidprune.load("runs/mnv3")     # builds the base, resizes the layers, loads the weights

Base strings: "torchvision:NAME" (torchvision.models.get_model, weights=None), "timm:NAME"
(timm.create_model, pretrained=False), "torchreid:NAME" (an OSNet builder of PyPI torchreid,
pretrained=False; its module is loaded on its own, because `import torchreid` pulls in its data
sets and scipy), or a user's "package.module:factory", which runs that import and is allowed
only with `allow_import=True`. Nothing is downloaded. model.json records every Conv2d's
(in, out, groups), every BatchNorm's features and every Linear's (in, out); loading builds the
base, resizes those layers to the saved shapes (sliced layers keep their kernel, stride and
padding) and loads the safetensors weights strictly.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from reidprune.errors import CheckpointError
from reidprune.models.checkpoint_io import load_state_dict_checked
from reidprune.models.plan import CompressionPlan, plan_of

FORMAT = "reidprune-foreign"
FORMAT_VERSION = 1
MODEL_JSON = "model.json"
WEIGHTS = "weights.safetensors"
BASE_ATTR = "reidprune_base"  # {"base": "torchvision:resnet18", "kwargs": {...}} on a built module
LIBRARIES = ("torchvision", "timm", "torchreid")
_WEIGHT_KWARGS = ("weights", "pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path")


def _torchreid_osnet(name: str) -> Any:
    spec = importlib.util.find_spec("torchreid")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(f"base 'torchreid:{name}' needs PyPI torchreid: pip install 'reidprune[cnn]'")
    module_name = "osnet_ain" if "_ain_" in name else "osnet"
    path = Path(next(iter(spec.submodule_search_locations))) / "reid" / "models" / f"{module_name}.py"
    if not path.is_file():
        raise CheckpointError(
            f"base 'torchreid:{name}': {path} not found (only OSNet builders are supported)"
        )
    key = f"reidprune._torchreid_{module_name}"
    module = sys.modules.get(key)
    if module is None:
        module_spec = importlib.util.spec_from_file_location(key, path)
        module = importlib.util.module_from_spec(module_spec)  # type: ignore[arg-type]
        module_spec.loader.exec_module(module)  # type: ignore[union-attr]
        sys.modules[key] = module
    factory = getattr(module, name, None) if name.startswith("osnet") else None
    if factory is None:
        raise CheckpointError(f"base 'torchreid:{name}': expected an OSNet builder of {path.name}")
    return factory


def _user_factory(library: str, name: str, allow_import: bool) -> Any:
    if not allow_import:
        raise CheckpointError(
            f"base '{library}:{name}' imports the Python module '{library}': pass allow_import=True "
            "(CLI --allow-import) only for code you trust"
        )
    try:
        module: ModuleType = importlib.import_module(library)
    except ImportError as err:
        raise CheckpointError(f"base '{library}:{name}': cannot import '{library}' ({err})") from None
    factory = getattr(module, name, None)
    if not callable(factory):
        raise CheckpointError(f"base '{library}:{name}': '{library}' has no callable '{name}'")
    return factory


def build_foreign(base: str, *, allow_import: bool = False, **kwargs: Any) -> nn.Module:
    """Build `base` ("library:name") with random weights and constructor `kwargs` (JSON values),
    remembering both so that `reidprune.save` can write the model without pickle."""
    library, sep, name = base.partition(":")
    if not sep or not library or not name:
        raise CheckpointError(f"model base '{base}': expected 'library:name', e.g. 'torchvision:resnet18'")
    weights = sorted(k for k in kwargs if k in _WEIGHT_KWARGS)
    if weights:
        raise CheckpointError(f"model base '{base}': {weights} not accepted; weights are never downloaded")
    try:
        json.dumps(kwargs)
    except TypeError as err:
        raise CheckpointError(
            f"model base '{base}': constructor kwargs must be JSON values ({err})"
        ) from None
    if library == "torchvision":
        import torchvision

        model = torchvision.models.get_model(name, weights=None, **kwargs)
    elif library == "timm":
        import timm

        model = timm.create_model(name, pretrained=False, **kwargs)
    elif library == "torchreid":
        model = _torchreid_osnet(name)(pretrained=False, **kwargs)
    else:
        model = _user_factory(library, name, allow_import)(**kwargs)
    setattr(model, BASE_ATTR, {"base": base, "kwargs": dict(kwargs)})
    return model


def is_foreign(model: nn.Module) -> bool:
    return isinstance(getattr(model, BASE_ATTR, None), dict)


def layer_shapes(model: nn.Module) -> dict[str, dict[str, int]]:
    """Name -> shape of every Conv2d / BatchNorm2d / Linear (what filter pruning can change)."""
    shapes: dict[str, dict[str, int]] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            shapes[name] = {"in": module.in_channels, "out": module.out_channels, "groups": module.groups}
        elif isinstance(module, nn.BatchNorm2d):
            shapes[name] = {"features": module.num_features}
        elif isinstance(module, nn.Linear):
            shapes[name] = {"in": module.in_features, "out": module.out_features}
    return shapes


def _resize(module: nn.Module, shape: dict[str, int], where: str) -> None:
    """Give `module` fresh (uninitialised) parameters of the saved shape; the weights come next."""

    def empty(param: torch.Tensor | None, *size: int) -> nn.Parameter | None:
        return None if param is None else nn.Parameter(param.new_empty(size))

    if isinstance(module, nn.Conv2d):
        module.in_channels, module.out_channels, module.groups = shape["in"], shape["out"], shape["groups"]
        if shape["in"] % shape["groups"] or shape["out"] % shape["groups"]:
            raise CheckpointError(f"{where}: conv shape {shape} has channels not divisible by groups")
        module.weight = empty(
            module.weight, shape["out"], shape["in"] // shape["groups"], *module.kernel_size
        )
        module.bias = empty(module.bias, shape["out"])
    elif isinstance(module, nn.BatchNorm2d):
        n = module.num_features = shape["features"]
        module.weight, module.bias = empty(module.weight, n), empty(module.bias, n)
        for buffer in ("running_mean", "running_var"):
            if getattr(module, buffer, None) is not None:
                setattr(module, buffer, getattr(module, buffer).new_empty(n))
    elif isinstance(module, nn.Linear):
        module.in_features, module.out_features = shape["in"], shape["out"]
        module.weight = empty(module.weight, shape["out"], shape["in"])
        module.bias = empty(module.bias, shape["out"])
    else:
        raise CheckpointError(f"{where}: saved shape {shape} is for a {type(module).__name__}, not a layer")


def save_foreign(model: nn.Module, directory: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write a model built by `build_foreign` (pruned or not) as model.json + weights.safetensors."""
    if not is_foreign(model):
        raise CheckpointError(
            f"{type(model).__name__} does not say how to build its base: create it with "
            "reidprune.models.build_foreign('torchvision:NAME' | 'timm:NAME' | 'torchreid:NAME', ...)"
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    plan = plan_of(model)
    description = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **getattr(model, BASE_ATTR),
        "layers": layer_shapes(model),
        "plan": plan.to_dict() if plan is not None else None,
        "metadata": metadata or {},
    }
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    # temporary names, then renames (model.json last): an interrupted save leaves no half-written model
    tmp_weights, tmp_json = directory / f".{WEIGHTS}.tmp", directory / f".{MODEL_JSON}.tmp"
    save_file(tensors, str(tmp_weights), metadata={"format": FORMAT})
    tmp_json.write_text(json.dumps(description, indent=2))
    os.replace(tmp_weights, directory / WEIGHTS)
    os.replace(tmp_json, directory / MODEL_JSON)
    return directory


def load_foreign(
    directory: str | Path,
    description: dict[str, Any],
    map_location: str | torch.device = "cpu",
    allow_import: bool = False,
) -> nn.Module:
    """Rebuild a model written by `save_foreign` (its parsed model.json is `description`), in eval mode."""
    directory = Path(directory)
    where = str(directory / MODEL_JSON)
    if description.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{where}: format_version {description['format_version']} is newer than {FORMAT_VERSION}"
        )
    for key in ("base", "kwargs", "layers"):
        if key not in description:
            raise CheckpointError(f"{where}: missing key '{key}'")
    model = build_foreign(description["base"], allow_import=allow_import, **description["kwargs"])
    modules = dict(model.named_modules())
    for name, shape in description["layers"].items():
        module = modules.get(name)
        if module is None:
            raise CheckpointError(f"{where}: layer '{name}' does not exist in {description['base']}")
        _resize(module, shape, f"{where}: layer '{name}'")
    if description.get("plan"):
        model.compression_plan = CompressionPlan.from_dict(description["plan"])  # type: ignore[assignment]
    weights = directory / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{directory}: {WEIGHTS} is missing")
    state = load_file(str(weights), device=str(map_location))
    load_state_dict_checked(model, state, strict=True, where=str(weights))
    return model.to(map_location).eval()


def foreign_description(directory: str | Path) -> dict[str, Any] | None:
    """The parsed model.json of a directory written by `save_foreign`; None for any other directory."""
    path = Path(directory) / MODEL_JSON
    if not path.is_file():
        return None
    try:
        description = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # reidprune's own reader reports it
    return description if isinstance(description, dict) and description.get("format") == FORMAT else None
