"""The top-level packages of reidprune form layers: each imports only the layers listed before it.

    base        atomic -> errors -> schema -> _lazy      (no torch, nothing of ours above)
    data                                                 records, formats, loaders
    models                                               architectures, checkpoints, own format,
                                                         CompressionPlan, forward helpers, loader
    __init__                                             the package root: re-exports models' API
    evaluate                                             features -> distances -> metrics
    measure                                              params, MACs, speed
    compress | train                                     siblings: neither imports the other
    config                                               ExperimentConfig composes every section
    run_folder                                           one run per output folder
    export                                               ONNX / OpenVINO / INT8 / TensorRT, runtime timing
    budget                                               latency tables, the joint budget search
    jobs                                                 train / prune / budget jobs: compress + train
                                                         + evaluate (+ the budget search and its check)
    report -> demo -> cli -> __main__

A package in a later layer may import any earlier one; an import of the same or a later layer
(other than itself) fails with the importing file, line and imported module. Every import counts:
module level, inside functions, relative, and the module paths of lazy package exports
(`lazy_exports` tables), since each is a dependency when it runs. As the layers are ordered, a
passing test also means there is no import cycle between top-level packages.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "reidprune"

LAYERS: tuple[frozenset[str], ...] = tuple(
    frozenset(names.split())
    for names in (
        "atomic",
        "errors",
        "schema",
        "_lazy",
        "data",
        "models",
        "__init__",
        "evaluate",
        "measure",
        "compress train",
        "config",
        "run_folder",
        "export",
        "budget",
        "jobs",
        "report",
        "demo",
        "cli",
        "__main__",
    )
)

# (importing package, imported package): edges allowed against the layers, each with its reason
ALLOWED: dict[tuple[str, str], str] = {
    # deprecated forwarding names of compress/__init__ (moved to reidprune.jobs; one release)
    ("compress", "jobs"): "reidprune.compress.run_schedule / prune_experiment forward to reidprune.jobs",
    # the budget search's public entry point (issue 15 names it reidprune.compress.to_budget)
    ("compress", "budget"): "reidprune.compress.to_budget forwards, lazily, to reidprune.budget.api",
}
# the files the allowed edges may come from (an edge allowed from one file is not allowed from others)
ALLOWED_FILES = {
    ("compress", "jobs"): {"compress/__init__.py"},
    ("compress", "budget"): {"compress/__init__.py"},
}


def layer_of(package: str) -> int:
    for index, names in enumerate(LAYERS):
        if package in names:
            return index
    raise AssertionError(f"src/reidprune/{package}: not in any layer of tests/test_layers.py; add it")


def module_parts(path: Path, root: Path = PACKAGE) -> list[str]:
    parts = ["reidprune", *path.relative_to(root).with_suffix("").parts]
    return parts[:-1] if parts[-1] == "__init__" else parts


def imported_modules(path: Path, root: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, dotted module) for every reidprune module `path` (a file under `root`, the reidprune
    package folder) imports, resolved to absolute names."""
    own = module_parts(path, root)
    package = own if path.name == "__init__.py" else own[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            # `from reidprune import data` imports the subpackage; `from reidprune import create` the root
            found += [
                (node.lineno, f"{module}.{alias.name}" if module == "reidprune" else module)
                for alias in node.names
            ]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "lazy_exports":
            for arg in node.args[1:]:
                found += _lazy_table(path, arg)
    first: dict[str, int] = {}
    for line, name in found:
        if name == "reidprune" or name.startswith("reidprune."):
            first.setdefault(name, line)
    return [(line, name) for name, line in first.items()]


def _lazy_table(path: Path, arg: ast.expr) -> list[tuple[int, str]]:
    """The module paths of a `lazy_exports(__name__, TABLE)` table (a dict literal or a module-level name)."""
    table = arg
    if isinstance(arg, ast.Name):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == arg.id for t in node.targets):
                table = node.value
    if not isinstance(table, ast.Dict):
        return []
    return [
        (v.lineno, v.value) for v in table.values if isinstance(v, ast.Constant) and isinstance(v.value, str)
    ]


def top_package(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    name = parts[1]
    return name if (PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").is_file() else "__init__"


def layer_violations() -> list[str]:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = top_package(".".join(module_parts(path)))
        if path == PACKAGE / "__init__.py":
            source = "__init__"
        rel = path.relative_to(PACKAGE).as_posix()
        for line, module in imported_modules(path):
            target = top_package(module)
            if target == source or layer_of(target) < layer_of(source):
                continue
            if rel in ALLOWED_FILES.get((source, target), set()):
                continue
            problems.append(
                f"src/reidprune/{rel}:{line} imports {module}: {source} may not import {target} "
                f"({target} is {'beside' if layer_of(target) == layer_of(source) else 'above'} it)"
            )
    return problems


def test_every_package_is_in_a_layer() -> None:
    names = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if p.suffix == ".py" or p.is_dir()}
    names = {n for n in names if not n.startswith((".", "__pycache__")) and n != "templates"} | {"__init__"}
    for name in sorted(names):
        if (PACKAGE / name).is_dir() and not (PACKAGE / name / "__init__.py").is_file():
            continue  # data folders (report templates)
        layer_of(name)


def test_packages_import_only_earlier_layers() -> None:
    problems = layer_violations()
    assert not problems, "imports against the layers in tests/test_layers.py:\n" + "\n".join(problems)


def test_allowed_exceptions_are_still_needed() -> None:
    """An allowed edge that no file takes any more is removed from ALLOWED (the list only shrinks)."""
    used = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        source = "__init__" if path == PACKAGE / "__init__.py" else top_package(".".join(module_parts(path)))
        for _, module in imported_modules(path):
            used.add((source, top_package(module)))
    assert set(ALLOWED) == set(ALLOWED_FILES)
    stale = [edge for edge in ALLOWED if edge not in used]
    assert not stale, f"ALLOWED edges no module takes any more (remove them): {stale}"


def test_imports_in_functions_relative_imports_and_lazy_tables_are_found(tmp_path: Path) -> None:
    root = tmp_path / "reidprune"
    (root / "models").mkdir(parents=True)
    module = root / "models" / "probe.py"
    module.write_text(
        "from . import forward\n"
        "from .plan import CompressionPlan\n"
        "import reidprune.data.config\n"
        "def late():\n"
        "    from .. import compress\n"
        "    from reidprune import create\n"
        "__getattr__, __dir__ = lazy_exports(__name__, {'fit': 'reidprune.train.engine'})\n"
    )
    found = imported_modules(module, root)
    assert [name for _, name in found] == [
        "reidprune.models",  # `from . import forward`: the package is enough to know the layer
        "reidprune.models.plan",
        "reidprune.data.config",
        "reidprune.compress",
        "reidprune.create",  # a name of the package root
        "reidprune.train.engine",
    ]
    assert [top_package(name) for _, name in found] == [
        "models",
        "models",
        "data",
        "compress",
        "__init__",
        "train",
    ]
