"""Run every experiment YAML in configs/ as configured, on tiny data: does each recipe run?

Each config runs through the real command line (`python -m reidprune train|prune -c <yaml> ...`)
with only these overrides:
- data: a tiny tree in the config's own format and layout (Market-1501, DukeMTMC-reID,
  Occluded-Duke, MSMT17 lists, ImageFolder; the builders of tests/data/fixtures.py, 2-3 identities
  over 2 cameras), batch 4 (2 identities x 2 images for the PK sampler), test batch 4,
  num_workers 0, at most 1 calibration batch;
- epochs: train.epochs, prune.finetune_epochs and prune.final_epochs become 1 (0 stays 0), and
  train.warmup_epochs at most the epochs left;
- paths: output_dir under --work; model.weights / train.teacher under runs/ (a baseline, or step 1
  of a cascade) come from running that config first; any other weights (ImageNet, torchvision,
  DeiT, TransReID or LA checkpoints, which are not here) become the configured model with random
  weights, saved with `reidprune.save`.
Rounds, rates, options, models and input sizes stay as the YAML says.

Per config it records ok / fail, seconds, the peak RSS of the job's process and the size of the
saved compression plan (JSON characters); writes benchmarks/results/run_configs.json and prints a
table.

    python benchmarks/run_configs.py                    # all 40 (hours on 2 CPU cores: ViT-B rounds)
    python benchmarks/run_configs.py --only 'amg_la/la_tiny*'
    python benchmarks/run_configs.py --list
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs"
RESULTS = ROOT / "benchmarks" / "results" / "run_configs.json"
BATCH, INSTANCES = 4, 2
TAIL = 1500  # characters of a failed job's output kept in the results


def config_paths(pattern: str | None = None) -> list[Path]:
    """Every YAML under configs/ (sub-folders included), or those whose configs/-relative path matches
    `pattern` (a glob, or a plain substring)."""
    paths = sorted(CONFIG_DIR.rglob("*.yaml"))
    if pattern:
        paths = [p for p in paths if fnmatch.fnmatch(rel(p), pattern) or pattern in rel(p)]
    return paths


def rel(path: Path) -> str:
    return path.relative_to(CONFIG_DIR).as_posix()


def _fixtures() -> Any:
    """tests/data/fixtures.py (the shared tiny-tree builders), loaded by path."""
    name = "reidprune_tests_data_fixtures"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "data" / "fixtures.py")
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[name] = module
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    return sys.modules[name]


def make_data(fmt: str, root: Path) -> Path:
    """A tiny data set in `fmt`'s own layout under root/fmt (built once)."""
    target = root / fmt
    if target.exists():
        return target
    fixtures = _fixtures()
    if fmt == "market1501":
        fixtures.make_market_tree(target, train=fixtures.market_names([2, 7], [1, 2], per_camera=1))
    elif fmt in ("dukemtmc", "occluded_duke"):
        fixtures.make_duke_tree(target)
    elif fmt == "msmt17":
        fixtures.make_msmt_tree(target)
    elif fmt == "imagefolder":
        fixtures.make_imagefolder_tree(target)
    else:
        raise ValueError(f"no tiny data builder for data.format={fmt}")
    return target


def shrunk(cfg: Any, data_root: Path, output_dir: Path) -> list[str]:
    """The overrides that shrink `cfg` to tiny data and 1-epoch stages (see the module docstring)."""
    overrides = [
        f"data.root={data_root}",
        f"data.batch_size={BATCH}",
        f"data.num_instances={INSTANCES}",
        f"data.test_batch_size={BATCH}",
        "data.num_workers=0",
        f"output_dir={output_dir}",
        "train.progress=false",
    ]
    if cfg.prune.method == "none":
        epochs = min(cfg.train.epochs, 1)
        overrides.append(f"train.epochs={epochs}")
    else:
        prune = cfg.prune
        epochs = min(prune.final_epochs, 1)
        overrides += [
            f"prune.finetune_epochs={min(prune.finetune_epochs, 1)}",
            f"prune.final_epochs={epochs}",
            f"prune.calib_batches={min(prune.calib_batches, 1) if prune.calib_batches else 1}",
        ]
        epochs = max(epochs, min(prune.finetune_epochs, 1))
    if cfg.train.warmup_epochs > epochs:
        overrides.append(f"train.warmup_epochs={epochs}")
    return overrides


class Runner:
    """Runs configs (and the configs they start from) once each, into `work`."""

    def __init__(self, work: Path, python: str = sys.executable) -> None:
        self.work = work
        self.python = python
        self.results: dict[str, dict[str, Any]] = {}
        self.producers = self._producers()

    def _producers(self) -> dict[str, Path]:
        """Model directories that configs write (output_dir/model, /final, /best) -> that config."""
        from reidprune.config import load_config

        produced = {}
        for path in config_paths():
            cfg = load_config(path)
            for sub in ("model",) if cfg.prune.method != "none" else ("final", "best"):
                produced[f"{cfg.output_dir.rstrip('/')}/{sub}"] = path
        return produced

    def run(self, path: Path) -> dict[str, Any]:
        key = rel(path)
        if key not in self.results:
            self.results[key] = self._run(path)
        return self.results[key]

    def _weights(self, value: str, path: Path, overrides: list[str]) -> str:
        """A path for model.weights / train.teacher: a dependency's output, or a random stand-in."""
        producer = self.producers.get(value.rstrip("/"))
        if producer is not None:
            result = self.run(producer)
            if not result["ok"]:
                raise RuntimeError(f"its input {rel(producer)} failed")
            return str(self.work / value)
        return str(self._stand_in(path, overrides))

    def _stand_in(self, path: Path, overrides: list[str]) -> Path:
        """The configured model with random weights, sized to the tiny data's classes."""
        import reidprune
        from reidprune.config import load_config
        from reidprune.data import build_dataset

        directory = self.work / "stand_ins" / rel(path).replace("/", "__").removesuffix(".yaml")
        if not (directory / "model.json").is_file():
            cfg = load_config(path, overrides)
            classes = build_dataset(cfg.data).num_classes
            model = reidprune.create(
                cfg.model.name,
                num_classes=classes,
                img_size=[cfg.data.height, cfg.data.width],
                **cfg.model.kwargs,
            )
            reidprune.save(model, directory)
        return directory

    def _run(self, path: Path) -> dict[str, Any]:
        from reidprune.config import load_config

        cfg = load_config(path)
        command = "train" if cfg.prune.method == "none" else "prune"
        record: dict[str, Any] = {"config": rel(path), "command": command, "method": cfg.prune.method}
        record.update(rounds=cfg.prune.rounds, model=cfg.model.name, input=[cfg.data.height, cfg.data.width])
        output_dir = self.work / cfg.output_dir
        try:
            overrides = shrunk(cfg, make_data(cfg.data.format, self.work / "data"), output_dir)
            if cfg.model.weights:
                overrides.append(f"model.weights={self._weights(cfg.model.weights, path, overrides)}")
            if cfg.train.teacher:
                overrides.append(f"train.teacher={self._weights(cfg.train.teacher, path, overrides)}")
        except Exception as err:  # a failed dependency or data builder: recorded, the others go on
            return {
                **record,
                "ok": False,
                "seconds": 0.0,
                "peak_rss_mb": None,
                "plan_chars": None,
                "error": str(err),
            }
        args = [self.python, "-m", "reidprune", command, "-c", str(path), *overrides]
        print(f"[run_configs] {rel(path)}: {command} ...", flush=True)
        code, seconds, rss, output = run_measured(args)
        record.update(ok=code == 0, seconds=round(seconds, 1), peak_rss_mb=round(rss, 1), args=args[3:])
        record["plan_chars"] = _plan_chars(output_dir, command)
        if code != 0:
            record["error"] = output[-TAIL:]
        print(f"[run_configs] {rel(path)}: {'ok' if code == 0 else 'FAILED'} in {seconds:.0f} s", flush=True)
        return record


def _plan_chars(output_dir: Path, command: str) -> int | None:
    model_json = output_dir / ("model" if command == "prune" else "final") / "model.json"
    if not model_json.is_file():
        return None
    plan = json.loads(model_json.read_text()).get("plan")
    return len(json.dumps(plan)) if plan else 0


def run_measured(args: list[str]) -> tuple[int, float, float, str]:
    """Run `args` with this process's environment (plus the checkout's src/ on PYTHONPATH); returns
    (exit code, seconds, peak RSS in MiB of that process, its stdout + stderr)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    with tempfile.TemporaryFile() as log:
        start = time.perf_counter()
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        output = log.read().decode(errors="replace")
    return process.returncode, seconds, usage.ru_maxrss / 1024, output  # ru_maxrss: KiB on Linux


def run_configs(paths: list[Path], work: Path, out: Path | None = None) -> list[dict[str, Any]]:
    """Run `paths` (and whatever they start from) in `work`; one record per config run, in run order.
    With `out`, the results so far are written there after every config (a long run can be read
    while it goes on)."""
    runner = Runner(work)
    start = time.perf_counter()
    for path in paths:
        runner.run(path)
        if out is not None:
            write_results(out, list(runner.results.values()), time.perf_counter() - start)
    return list(runner.results.values())


def write_results(out: Path, results: list[dict[str, Any]], seconds: float) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "seconds": round(seconds, 1),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "runs": results,
    }
    out.write_text(json.dumps(payload, indent=2))


def print_results(results: list[dict[str, Any]]) -> None:
    """A plain-text table (it goes to logs as often as to a terminal), then each failure's last line."""
    header = ("config", "command", "rounds", "ok", "seconds", "peak RSS MiB", "plan chars")
    rows = [
        (
            r["config"],
            r["command"],
            str(r["rounds"]) if r["command"] == "prune" else "",
            "ok" if r["ok"] else "FAIL",
            f"{r['seconds']:.0f}",
            "" if r["peak_rss_mb"] is None else f"{r['peak_rss_mb']:.0f}",
            "" if r["plan_chars"] is None else str(r["plan_chars"]),
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    for r in results:
        if not r["ok"]:
            last = [line for line in r.get("error", "").splitlines() if line.strip()]
            print(f"FAIL {r['config']}: {last[-1] if last else '?'}")


def cheap_first(paths: list[Path]) -> list[Path]:
    """ResNet-18/34 and tiny ViTs before ResNet-50 / small ViTs before ViT-B; fewer rounds first."""
    from reidprune.config import load_config

    def cost(path: Path) -> tuple[int, int, str]:
        cfg = load_config(path)
        name = cfg.model.name
        size = 2 if "base" in name else 1 if ("small" in name or "50" in name) else 0
        return size, cfg.prune.rounds, rel(path)

    return sorted(paths, key=cost)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="configs whose configs/-relative path matches this glob or substring")
    parser.add_argument("--list", action="store_true", help="list the selected configs and exit")
    parser.add_argument(
        "--work", type=Path, help="where data, stand-ins and runs go (default: a temp folder)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results JSON (default {RESULTS})")
    args = parser.parse_args(argv)
    paths = config_paths(args.only)
    if args.list:
        print("\n".join(rel(p) for p in paths))
        return 0
    if not paths:
        print(f"no config matches {args.only!r}")
        return 2
    with tempfile.TemporaryDirectory(prefix="run_configs_") as tmp:
        work = args.work or Path(tmp)
        start = time.perf_counter()
        results = run_configs(cheap_first(paths), work, args.out)
        total = time.perf_counter() - start
    print_results(results)
    print(f"{sum(r['ok'] for r in results)}/{len(results)} ok in {total:.0f} s; results in {args.out}")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
