"""B16: calibrated static INT8 (and FP16) keeps accuracy, and static INT8 makes ResNet-50 faster at batch 1.

On the embedded synthetic data (no download):

- accuracy: the demo baselines (`src/reidprune/demo.yaml`: LA-Transformer tiny, 64x32;
  `src/reidprune/demo_resnet18.yaml`: ResNet-18 re-ID, 64x32; with --resnet50 also a ResNet-50
  trained with the ResNet-18 recipe) are exported to ONNX, quantised to static INT8 (QDQ, int8
  per-channel weights, uint8 activations, calibrated on 256 training images through the data
  pipeline), also to dynamic INT8 and FP16, and converted to OpenVINO IR (fp32, and the QDQ graph as int8). Every
  variant is evaluated on the test split (query / gallery) by the same `reidprune.evaluate` code.
  Target: static INT8 loses at most 1.0 mAP point against the fp32 graph, in ONNX Runtime.
- speed: ResNet-50 re-ID at the standard 256x128 input (seeded random weights; the speed of a
  graph does not depend on its weight values), calibrated on training images resized to 256x128,
  fp32 against static INT8 at batch 1, in ONNX Runtime (and OpenVINO when installed), timed in
  the same interleaved rounds. Target: static INT8 at least 1.5x faster than fp32 in ONNX Runtime.

The baselines are trained by `reidprune.demo.run_demo` into benchmarks/runs/embedded (shared with
benchmarks/token_accuracy.py; reused when present, delete to retrain); the graphs go to
benchmarks/runs/int8/. Writes benchmarks/results/int8_accuracy.json.

    .venv/bin/python benchmarks/int8_accuracy.py [--resnet50] [--threads N] [--min-time 10]
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reidprune.cli.common import print_table, write_json
from reidprune.demo import RESNET18_CONFIG, run_demo
from reidprune.export import OnnxModel, export_onnx, quantize_int8
from reidprune.export.accuracy import data_config, evaluate_variants
from reidprune.export.benchmark import variant_latency
from reidprune.export.fp16 import convert_fp16
from reidprune.export.static_int8 import ImageCalibrationReader, calibration_loader, quantize_static_int8
from reidprune.models import create, load

HERE = Path(__file__).resolve().parent
RUNS = HERE / "runs"
GRAPHS = RUNS / "int8"
DATA = RUNS / "embedded" / "data"
RESULT = HERE / "results" / "int8_accuracy.json"
MAX_DROP = 1.0  # mAP points, static INT8 against fp32
MIN_SPEEDUP = 1.5  # ResNet-50 fp32 / static INT8 batch-1 latency in ONNX Runtime
CALIBRATION_IMAGES = 256
HAS_OPENVINO = importlib.util.find_spec("openvino") is not None


def demo_baseline(
    root: Path, model: str = "vit", config: Path | None = None, overrides: tuple[str, ...] = ()
) -> Path:
    """The trained baseline of `run_demo(root, model=...)` (trained there unless already present:
    run_demo reuses it); returns its model directory."""
    result = run_demo(
        root,
        config=config,
        overrides=["train.progress=false", *overrides],
        variants=(),
        export=False,
        report=False,
        model=model,
        timing_seconds=0.5,
    )
    return result.output_dir / "baseline" / "final"


def baselines(resnet50: bool) -> dict[str, Path]:
    """{name: trained model directory}, training what is missing with the demo recipes."""
    dirs = {
        "demo-vit": demo_baseline(RUNS / "embedded"),
        "resnet18": demo_baseline(RUNS / "embedded", "resnet18"),
    }
    if resnet50:  # the ResNet-18 recipe on the ResNet-50 re-ID model, reading the same data
        overrides = (f"data.root={DATA}", "model.name=resnet50_reid", "name=demo_resnet50_baseline")
        dirs["resnet50"] = demo_baseline(RUNS / "embedded_resnet50", "resnet18", RESNET18_CONFIG, overrides)
    return dirs


def static_int8(model: nn.Module, folder: Path, cfg: Any) -> tuple[Path, Path, dict[str, nn.Module]]:
    """The fp32 ONNX graph of `model` in `folder`, its static INT8 form (calibrated on
    CALIBRATION_IMAGES training images through the data pipeline of `cfg`), and both converted to
    OpenVINO IR as {variant name: runnable model} when OpenVINO is installed ({} otherwise)."""
    fp32 = export_onnx(model, folder / "model.onnx").path
    reader = ImageCalibrationReader(calibration_loader(cfg, CALIBRATION_IMAGES), fp32)
    static = quantize_static_int8(fp32, folder / "model.int8-static.onnx", reader)["path"]
    openvino: dict[str, nn.Module] = {}
    if HAS_OPENVINO:
        from reidprune.export.openvino import OpenVinoModel, export_openvino

        openvino["openvino fp32"] = OpenVinoModel(export_openvino(model, fp32, folder / "model.xml")["path"])
        xml = export_openvino(model, static, folder / "model.int8-static.xml", approximate=True)["path"]
        openvino["openvino int8-static"] = OpenVinoModel(xml)
    return fp32, static, openvino


def graphs(model: nn.Module, name: str, cfg: Any) -> dict[str, nn.Module]:
    """Every deployable form of `model`: {variant name: runnable model}."""
    folder = GRAPHS / name
    fp32, static, openvino = static_int8(model, folder, cfg)
    dynamic = quantize_int8(fp32, folder / "model.int8.onnx")["path"]
    half = convert_fp16(fp32, folder / "model.fp16.onnx")["path"]
    return {
        "pytorch": model,
        "ort fp32": OnnxModel(fp32, spinning=False),
        "ort int8-static": OnnxModel(static, spinning=False),
        "ort int8 (dynamic)": OnnxModel(dynamic, spinning=False),
        "ort fp16": OnnxModel(half, spinning=False),
        **openvino,
    }


def accuracy(dirs: dict[str, Path], min_time: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows, summary = [], []
    for name, path in dirs.items():
        model = load(path).eval()
        cfg = data_config(DATA, model.arch.img_size)
        variants = graphs(model, name, cfg)
        metrics = evaluate_variants(variants, cfg)
        latency = variant_latency(variants, batch=1, min_time=min_time)
        for variant, m in metrics.items():
            rows.append(
                {
                    "model": name,
                    "variant": variant,
                    "mAP": m["mAP"],
                    "rank-1": m["rank1"],
                    "mAP change": m["mAP"] - metrics["ort fp32"]["mAP"],
                    "b1 (ms)": latency[variant]["median_ms"],
                }
            )
        drop = metrics["ort fp32"]["mAP"] - metrics["ort int8-static"]["mAP"]
        summary.append(
            {
                "target": "B16",
                "what": f"{name}: static INT8 mAP drop (ORT)",
                "value": drop,
                "goal": f"<= {MAX_DROP}",
                "met": drop <= MAX_DROP,
            }
        )
    return rows, summary


def resnet50_speed(min_time: float) -> tuple[dict[str, Any], dict[str, Any]]:
    torch.manual_seed(0)
    model = create("resnet50_reid", img_size=[256, 128], num_classes=751).eval()
    cfg = data_config(DATA, model.arch.img_size)  # training images resized to 256x128 for calibration
    fp32, static, openvino = static_int8(model, GRAPHS / "resnet50-256x128", cfg)
    variants: dict[str, nn.Module] = {
        "pytorch fp32": model,
        "ort fp32": OnnxModel(fp32, spinning=False),
        "ort int8-static": OnnxModel(static, spinning=False),
        **openvino,
    }
    latency = variant_latency(variants, batch=1, min_time=min_time)
    speedup = latency["ort fp32"]["median_ms"] / latency["ort int8-static"]["median_ms"]
    result = {"latency_b1": latency, "ort_speedup": speedup}
    if HAS_OPENVINO:
        result["openvino_speedup"] = (
            latency["openvino fp32"]["median_ms"] / latency["openvino int8-static"]["median_ms"]
        )
    target = {
        "target": "B16",
        "what": "ResNet-50 256x128 static INT8 speed-up, batch 1 (ORT)",
        "value": speedup,
        "goal": f">= {MIN_SPEEDUP}",
        "met": speedup >= MIN_SPEEDUP,
    }
    return result, target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--resnet50", action="store_true", help="also train and check a ResNet-50 re-ID model"
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for every runtime")
    parser.add_argument(
        "--min-time", type=float, default=10.0, help="seconds of interleaved timing per table"
    )
    parser.add_argument("--speed-only", action="store_true", help="only the ResNet-50 speed check")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rows: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    if not args.speed_only:
        rows, summary = accuracy(baselines(args.resnet50), args.min_time)
        print_table("B16: accuracy (test split, percent) and batch-1 latency of every deployable form", rows)
    speed, target = resnet50_speed(args.min_time)
    summary.append(target)
    print_table(
        "B16: ResNet-50 256x128 batch-1 latency (interleaved medians)",
        [
            {"variant": k, "b1 (ms)": v["median_ms"], "p90 (ms)": v["p90_ms"]}
            for k, v in speed["latency_b1"].items()
        ],
    )
    print_table("int8 targets", summary)
    write_json(
        RESULT,
        {
            "settings": {
                "calibration_images": CALIBRATION_IMAGES,
                "static_int8": "QDQ, int8 symmetric per-channel weights, uint8 per-tensor activations (minmax)",
                "note": "measured under load unless re-run on an idle machine",
                "threads": torch.get_num_threads(),
                "min_time": args.min_time,
                "openvino": HAS_OPENVINO,
            },
            "accuracy": rows,
            "resnet50_speed": speed,
            "summary": summary,
        },
    )
    print(f"wrote {RESULT}")


if __name__ == "__main__":
    main()
