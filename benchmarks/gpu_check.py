"""One GPU check: the CUDA / AMP / compile / ONNX Runtime / TensorRT / NCCL paths, end to end, in one command.

    make gpu-check                                   # python benchmarks/gpu_check.py
    python benchmarks/gpu_check.py [--work DIR] [--out JSON] [--device cuda:0]
    python benchmarks/gpu_check.py --smoke           # the same steps on the CPU, tiny sizes (CI)

On one CUDA GPU (sized for at most 8 minutes on a current data-centre GPU), through the real CLI
(`reidprune data synth | train | prune | eval | measure | export`, each from a temporary YAML
config, run in this process) and the public Python API where the CLI has no equivalent:

1. data: a Market-1501-scale synthetic set (1,501 identities, `data synth --workers`), reused
   when WORK/data already holds it;
2. train_vit: a TransReID-B (ViT-B/16, 256x128, stride 12, SIE, JPM) for a few epochs under bf16
   autocast; train_fp16: a few steps of fp16 autocast with gradient scaling from those weights;
3. prune_heads + prune_tokens: entropy heads 25 %, then AMG tokens 25 % (skip mode) on the
   head-pruned model, each with distillation fine-tuning from its teacher (a short schedule);
   train_resnet + prune_bafd: a ResNet-50 re-ID baseline and BAFD 50 % with extraction;
4. eval_gpu_vs_cpu: the compressed ViT's test features, ranked with distances on the GPU and
   on the CPU: the metrics must agree;
5. throughput: batch 256 images/s, eager and `torch.compile`, baseline vs compressed (ViT and
   ResNet), and each speed-up against its GMACs ratio (efficiency);
6. onnx: export, then ONNX Runtime's CUDA provider on the graph (a clear skip line where the
   installed onnxruntime has none); tensorrt: `export --check tensorrt` on each model, and an
   engine build where the `tensorrt` package is installed;
7. ddp: one 2-process `torchrun` training step when the machine has two GPUs (else a skip line).

Every figure goes into one JSON (benchmarks/results/gpu_check.json by default, --out); any error
stops the run with `gpu-check FAILED at <step>: <reason>`, the JSON written with what was done,
and exit code 1. `--smoke` runs every step on the CPU at tiny sizes (under 2 minutes): bf16
autocast runs on the CPU, the CUDA-only steps (fp16 with GradScaler, ONNX Runtime's CUDA
provider, TensorRT engine, 2-GPU DDP) are skipped with a line saying why, and torch.compile uses
its "eager" backend (graph capture without inductor's C++ build, which takes minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

RESULTS = Path(__file__).parent / "results" / "gpu_check.json"
GPU_BUDGET_S = 480.0  # the 8 minutes

# What each mode runs. Sizes only: the steps are the same.
PROFILES: dict[str, dict[str, Any]] = {
    "gpu": {
        "ids": 1501,  # Market-1501's identity count: ~38k images at 128x64, upscaled to 256x128
        "synth_size": "128x64",
        "vit": {"name": "transreid_base", "kwargs": {"num_cameras": 6}},
        "resnet": {"name": "resnet50_bafd", "kwargs": {}},
        "height": 256,
        "width": 128,
        "batch_size": 64,
        "test_batch_size": 256,
        "num_workers": 8,
        "vit_epochs": 3,
        "resnet_epochs": 1,
        "max_steps": 0,  # full epochs for the baseline
        "finetune_steps": 60,  # the short distillation schedule: 1 epoch capped at this many steps
        "fp16_steps": 20,
        "calib_batches": 8,
        "bench_batch": 256,
        "bench_iters": 20,
        "bench_warmup": 3,
        "min_time": 1.0,
        "compile_backend": "inductor",
        "measure_dtype": "bfloat16",
    },
    "smoke": {
        "ids": 8,
        "synth_size": "128x64",
        "vit": {
            "name": "transreid_base",
            "kwargs": {
                "num_cameras": 6,
                "patch_size": 8,
                "stride": 8,
                "embed_dim": 32,
                "depth": 3,
                "head_dim": 8,
                "num_heads": [4, 4],
                "mlp_hidden": [64, 64],
                "jpm_num_heads": [4, 4],
            },
        },
        "resnet": {"name": "resnet50_bafd", "kwargs": {"stage_planes": [4, 8, 8, 16]}},
        "height": 64,
        "width": 32,
        "batch_size": 16,
        "test_batch_size": 64,
        "num_workers": 0,
        "vit_epochs": 1,
        "resnet_epochs": 1,
        "max_steps": 2,
        "finetune_steps": 2,
        "fp16_steps": 2,
        "calib_batches": 2,
        "bench_batch": 16,
        "bench_iters": 2,
        "bench_warmup": 1,
        "min_time": 0.1,
        "compile_backend": "eager",
        "measure_dtype": "float32",
    },
}


class CheckFailed(RuntimeError):
    """A step that ran but whose result is wrong (e.g. GPU and CPU metrics differ)."""


class GpuCheck:
    def __init__(self, mode: str, work: Path, out: Path, device: str) -> None:
        self.mode, self.work, self.out, self.device = mode, work, out, device
        self.p = PROFILES[mode]
        self.result: dict[str, Any] = {"mode": mode, "steps": {}, "passed": False, "error": None}
        self.start = time.perf_counter()

    # ---- plumbing ------------------------------------------------------------------------------
    def cli(self, *args: str) -> None:
        """Run `reidprune ARGS` in this process (the same command `python -m reidprune` runs)."""
        import typer

        from reidprune.cli import _register, app

        if not getattr(self, "_registered", False):
            _register()
            self._registered = True
        print(f"$ reidprune {' '.join(args)}", flush=True)
        command = typer.main.get_command(app)
        try:
            code = command.main(list(args), prog_name="reidprune", standalone_mode=False)
        except SystemExit as exit_:  # typer.Exit on an error line
            code = exit_.code
        if code not in (None, 0):
            raise CheckFailed(
                f"`reidprune {' '.join(args)}` exited with code {code} (its error line is above)"
            )

    def config(self, name: str, body: dict[str, Any]) -> Path:
        path = self.work / "configs" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(body, sort_keys=False))
        return path

    def data_section(self) -> dict[str, Any]:
        p = self.p
        return {
            "format": "market1501",
            "root": str(self.work / "data"),
            "height": p["height"],
            "width": p["width"],
            "batch_size": p["batch_size"],
            "num_instances": 4,
            "test_batch_size": p["test_batch_size"],
            "num_workers": p["num_workers"],
            "cache_images": True,  # decoded once into memory: the loader keeps up with the GPU
            "random_erasing": 0.0,
            "val_ids": 0,
        }

    def experiment(self, name: str, model: dict[str, Any], **sections: Any) -> dict[str, Any]:
        return {
            "name": name,
            "output_dir": str(self.work / "runs" / name),
            "seed": 0,
            "device": self.device,
            "data": self.data_section(),
            "model": model,
            **sections,
        }

    def step(self, name: str, fn: Callable[[], dict[str, Any]]) -> None:
        print(f"\n=== gpu-check {self.mode}: {name} ===", flush=True)
        start = time.perf_counter()
        try:
            figures = fn()
        except BaseException as err:
            self.result["steps"][name] = {"status": "failed", "seconds": time.perf_counter() - start}
            self.fail(name, err)
            raise
        figures.setdefault("status", "ok")
        figures["seconds"] = time.perf_counter() - start
        self.result["steps"][name] = figures
        if figures["status"] == "skipped":
            print(f"gpu-check: {name} skipped: {figures['reason']}", flush=True)
        self.cuda_free()

    def skip(self, reason: str, **extra: Any) -> dict[str, Any]:
        return {"status": "skipped", "reason": reason, **extra}

    def fail(self, name: str, err: BaseException) -> None:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if not isinstance(err, CheckFailed | KeyboardInterrupt):
            traceback.print_exc()
            message = f"{type(err).__name__}: {message}"
        self.result["error"] = {"step": name, "message": message}
        self.write()
        print(f"\ngpu-check FAILED at {name}: {message} (partial results in {self.out})", file=sys.stderr)

    def write(self) -> None:
        from reidprune.atomic import write_json

        self.result["seconds_total"] = time.perf_counter() - self.start
        write_json(self.out, self.result)

    def cuda_free(self) -> None:
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def metrics(self, run: str) -> dict[str, Any]:
        return json.loads((self.work / "runs" / run / "metrics.json").read_text())

    # ---- steps ---------------------------------------------------------------------------------
    def environment(self) -> dict[str, Any]:
        import onnxruntime
        import torch

        info: dict[str, Any] = {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "onnxruntime": onnxruntime.__version__,
            "onnxruntime_providers": onnxruntime.get_available_providers(),
            "cpu_count": os.cpu_count(),
            "device": self.device,
            "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        }
        if self.mode == "gpu":
            if not torch.cuda.is_available():
                raise CheckFailed(
                    "no CUDA GPU visible to torch (torch.cuda.is_available() is False); "
                    "run with --smoke for the CPU version"
                )
            info["bf16_supported"] = torch.cuda.is_bf16_supported()
        return info

    def data(self) -> dict[str, Any]:
        from reidprune.data.synth import read_manifest

        root = self.work / "data"
        manifest = read_manifest(root)
        wanted = {"ids": self.p["ids"], "size": self.p["synth_size"]}
        reused = manifest is not None and _same_set(manifest, wanted)
        if not reused:
            workers = str(min(16, os.cpu_count() or 1))
            self.cli(
                "data", "synth", "--out", str(root), "--ids", str(self.p["ids"]),
                "--size", self.p["synth_size"], "--workers", workers, *(["--force"] if manifest else []),
            )  # fmt: skip
            manifest = read_manifest(root)
        assert manifest is not None
        images = manifest["images"]
        loader = {
            k: self.data_section()[k]
            for k in ("num_workers", "cache_images", "batch_size", "test_batch_size")
        }
        return {
            "root": str(root),
            "reused": reused,
            "ids": self.p["ids"],
            "images": images,
            "total": sum(images.values()),
            "loader": loader,
        }

    def train_vit(self) -> dict[str, Any]:
        p = self.p
        cfg = self.experiment(
            "vit_base",
            dict(p["vit"]),
            train={
                "epochs": p["vit_epochs"],
                "optimizer": "adamw",
                "lr": 3e-4,
                "warmup_epochs": 1,
                "amp": "bf16",
                "max_steps_per_epoch": p["max_steps"],
                "eval_every": 0,
                "progress": False,
                "log_every": 50,
            },
        )
        self.cli("train", "-c", str(self.config("vit_base", cfg)), "--overwrite")
        log = _train_log(self.work / "runs" / "vit_base")
        if log["amp"] != "bfloat16":
            raise CheckFailed(f"train.amp=bf16 ran with amp={log['amp']}")
        return {"epochs": p["vit_epochs"], **log, **_test_of(self.metrics("vit_base"))}

    def train_fp16(self) -> dict[str, Any]:
        import torch

        if not torch.cuda.is_available() or not self.device.startswith("cuda"):
            return self.skip(
                "fp16 autocast with GradScaler needs a CUDA device (train.amp=fp16 is refused on the CPU)"
            )
        cfg = self.experiment(
            "vit_fp16",
            {**self.p["vit"], "weights": str(self.work / "runs" / "vit_base" / "final")},
            train={
                "epochs": 1,
                "optimizer": "adamw",
                "lr": 1e-5,
                "warmup_epochs": 0,
                "amp": "fp16",
                "max_steps_per_epoch": self.p["fp16_steps"],
                "eval_every": 0,
                "progress": False,
                "log_every": 5,
            },
        )
        self.cli("train", "-c", str(self.config("vit_fp16", cfg)), "--overwrite")
        log = _train_log(self.work / "runs" / "vit_fp16")
        losses = log["losses"]
        if log["amp"] != "float16" or not losses or not all(abs(v) < float("inf") for v in losses):
            raise CheckFailed(
                f"fp16 training: amp={log['amp']}, step losses {losses} (expected float16, finite)"
            )
        return log

    def prune(
        self,
        name: str,
        weights: Path,
        method: str,
        rate: float,
        options: dict[str, Any],
        model: dict[str, Any],
    ) -> dict[str, Any]:
        cfg = self.experiment(
            name,
            {**model, "weights": str(weights)},
            train={
                "optimizer": "adamw",
                "lr": 1e-4,
                "warmup_epochs": 0,
                "amp": "bf16",
                "distill": "soft",
                "distill_alpha": 0.5,
                "distill_tau": 4.0,
                "max_steps_per_epoch": self.p["finetune_steps"],
                "eval_every": 0,
                "progress": False,
            },
            prune={
                "method": method,
                "rate": rate,
                "rounds": 1,
                "finetune_epochs": 0,
                "final_epochs": 1,
                "calib_batches": self.p["calib_batches"],
                "options": options,
            },
        )
        self.cli("prune", "-c", str(self.config(name, cfg)), "--overwrite")
        summary = self.metrics(name)
        figures = {"method": method, "rate": rate}
        for which in ("unpruned", "pruned"):
            entry = summary[which]
            figures[which] = {
                "params": entry["params"],
                "gmacs": entry["gmacs"],
                **{k: v for k, v in (entry.get("test") or {}).items() if k in ("mAP", "rank1", "mINP")},
            }
        figures["gmacs_ratio"] = figures["unpruned"]["gmacs"] / figures["pruned"]["gmacs"]
        return figures

    def train_resnet(self) -> dict[str, Any]:
        p = self.p
        cfg = self.experiment(
            "resnet_base",
            dict(p["resnet"]),
            train={
                "epochs": p["resnet_epochs"],
                "optimizer": "adamw",
                "lr": 3e-4,
                "warmup_epochs": 0,
                "amp": "bf16",
                "max_steps_per_epoch": p["max_steps"],
                "eval_every": 0,
                "progress": False,
            },
        )
        self.cli("train", "-c", str(self.config("resnet_base", cfg)), "--overwrite")
        return {"epochs": p["resnet_epochs"], **_test_of(self.metrics("resnet_base"))}

    def eval_gpu_vs_cpu(self) -> dict[str, Any]:
        """The compressed ViT's features once; metrics ranked on the GPU and on the CPU must agree."""
        import dataclasses

        import torch

        from reidprune import models
        from reidprune.config import load_config
        from reidprune.data import build_dataset, build_loaders
        from reidprune.evaluate import extract_features, reid_metrics

        model_dir = self.work / "runs" / "vit_tokens" / "model"
        json_path = self.work / "eval_vit_tokens.json"
        self.cli(
            "eval",
            str(model_dir),
            "-c",
            str(self.work / "configs" / "vit_tokens.yaml"),
            "--device",
            self.device,
            "--json",
            str(json_path),
        )
        cfg = load_config(self.work / "configs" / "vit_tokens.yaml")
        splits = build_dataset(cfg.data)
        loaders = build_loaders(
            cfg.data, dataclasses.replace(splits, train=[], val_query=[], val_gallery=[], val=[])
        )
        device = torch.device(self.device)
        net = models.load(model_dir, map_location=device)
        query = extract_features(
            net, loaders.query, flip=cfg.eval.flip, normalize=cfg.eval.normalize, device=device
        )
        gallery = extract_features(
            net, loaders.gallery, flip=cfg.eval.flip, normalize=cfg.eval.normalize, device=device
        )
        on_device = reid_metrics(query, gallery, cfg.eval, device=device)
        on_cpu = reid_metrics(query, gallery, cfg.eval, device="cpu")
        keys = [k for k in on_cpu if isinstance(on_cpu[k], float)]
        diff = max(abs(on_device[k] - on_cpu[k]) for k in keys)
        # equal up to float rounding of distances (a near-tie may swap two gallery images)
        if diff > 0.05 or on_device["num_queries"] != on_cpu["num_queries"]:
            raise CheckFailed(
                f"metrics with {device} distances differ from CPU ones by {diff:.4f} points: {on_device} vs {on_cpu}"
            )
        return {
            "device": str(device),
            "queries": len(query),
            "gallery": len(gallery),
            "metrics_device": {k: on_device[k] for k in keys},
            "metrics_cpu": {k: on_cpu[k] for k in keys},
            "max_abs_diff_points": diff,
            "cli_eval": json.loads(json_path.read_text())["metrics"],
        }

    def throughput(self) -> dict[str, Any]:
        pairs = {
            "vit": (self.work / "runs" / "vit_base" / "final", self.work / "runs" / "vit_tokens" / "model"),
            "resnet50": (
                self.work / "runs" / "resnet_base" / "final",
                self.work / "runs" / "resnet_bafd" / "model",
            ),
        }
        json_path = self.work / "measure.json"
        dirs = [str(d) for pair in pairs.values() for d in pair]
        self.cli(
            "measure", *dirs, "--device", self.device, "--batch-size", str(self.p["bench_batch"]),
            "--dtype", self.p["measure_dtype"], "--min-time", str(self.p["min_time"]), "--json", str(json_path),
        )  # fmt: skip
        measured = {m["model"]: m for m in json.loads(json_path.read_text())["models"]}
        figures: dict[str, Any] = {
            "batch_size": self.p["bench_batch"],
            "dtype": self.p["measure_dtype"],
            "compile_backend": self.p["compile_backend"],
        }
        if self.p["compile_backend"] != "inductor":
            figures["compile_note"] = "smoke mode: torch.compile with the eager backend (graph capture only)"
        for family, (base, small) in pairs.items():
            rows = {}
            for which, directory in (("baseline", base), ("compressed", small)):
                m = measured[str(directory)]
                rows[which] = {
                    "params": m["params"],
                    "gmacs": m["gmacs"],
                    "eager_measure_ips": m["speed"]["throughput_ips"],
                    "latency_ms_b1": m["speed"]["latency_ms_b1"],
                    **self.timed_forms(directory),
                }
            gmacs_ratio = rows["baseline"]["gmacs"] / rows["compressed"]["gmacs"]
            entry: dict[str, Any] = {**rows, "gmacs_ratio": gmacs_ratio}
            for form in ("eager", "compiled"):
                speedup = rows["compressed"][f"{form}_ips"] / rows["baseline"][f"{form}_ips"]
                entry[f"{form}_speedup"] = speedup
                entry[f"{form}_efficiency"] = speedup / gmacs_ratio
            figures[family] = entry
        return figures

    def timed_forms(self, directory: Path) -> dict[str, float]:
        """Batch images/s of the deploy form, eager and compiled, in the measure dtype (same loop)."""
        import torch

        from reidprune import models
        from reidprune.measure import prepare_for_inference

        device = torch.device(self.device)
        dtype = getattr(torch, self.p["measure_dtype"])
        net = (
            prepare_for_inference(models.load(directory, map_location=device))
            .to(device=device, dtype=dtype)
            .eval()
        )
        compiled = torch.compile(net, backend=self.p["compile_backend"])
        height, width = net.arch.img_size
        batch = torch.randn(self.p["bench_batch"], 3, height, width, device=device, dtype=dtype)
        batch = batch.contiguous(memory_format=torch.channels_last)
        camids = (
            torch.zeros(len(batch), dtype=torch.long, device=device)
            if getattr(net.arch, "num_cameras", 0)
            else None
        )
        out: dict[str, float] = {}
        for form, fn in (("eager", net), ("compiled", compiled)):
            start = time.perf_counter()
            out[f"{form}_ips"] = _images_per_second(
                fn, batch, camids, self.p["bench_iters"], self.p["bench_warmup"], device
            )
            out[f"{form}_seconds_incl_warmup"] = time.perf_counter() - start
        return out

    def onnx(self) -> dict[str, Any]:
        import numpy as np
        import onnxruntime as ort
        import torch

        from reidprune import models
        from reidprune.export.runtime import create_session

        model_dir = self.work / "runs" / "vit_tokens" / "model"
        graph = self.work / "onnx" / "vit_tokens.onnx"
        self.cli("export", "--model", str(model_dir), "--format", "onnx", "--out", str(graph))
        report = json.loads(graph.with_name("vit_tokens.export.json").read_text())
        figures: dict[str, Any] = {
            "graph": str(graph),
            "opset": report["opset"],
            "cpu_check": report["check"],
        }
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            figures["cuda_provider"] = self.skip(
                f"the installed onnxruntime {ort.__version__} has no CUDAExecutionProvider "
                f"(providers: {', '.join(ort.get_available_providers())}); install onnxruntime-gpu to run it"
            )
            print(f"gpu-check: onnx CUDA provider skipped: {figures['cuda_provider']['reason']}", flush=True)
            return figures
        net = models.load(model_dir).eval()
        session = create_session(graph, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
        used = session.get_providers()
        if used[0] != "CUDAExecutionProvider":
            raise CheckFailed(f"ONNX Runtime fell back to {used} for {graph}")
        images = torch.randn(8, 3, *net.arch.img_size)
        feeds = {"images": images.numpy()}
        camids = None
        if any(i.name == "camids" for i in session.get_inputs()):
            camids = torch.zeros(8, dtype=torch.long)
            feeds["camids"] = camids.numpy()
        start = time.perf_counter()
        runs = 10
        for _ in range(runs):
            outputs = session.run(None, feeds)
        seconds = (time.perf_counter() - start) / runs
        with torch.inference_mode():
            reference = net(images, camids) if camids is not None else net(images)
        expected = reference.embedding.numpy()
        diff = float(np.abs(outputs[0] - expected).max())
        scale = max(1.0, float(np.abs(expected).max()))
        if diff > 5e-3 * scale:  # cuDNN / cuBLAS rounding (TF32 where ORT enables it), not 1e-4 as on the CPU
            raise CheckFailed(
                f"ONNX Runtime CUDA differs from PyTorch by {diff:.3g} (scale {scale:.3g}) on {graph}"
            )
        figures["cuda_provider"] = {
            "status": "ok",
            "providers": used,
            "max_abs_diff": diff,
            "batch8_ms": seconds * 1e3,
        }
        return figures

    def tensorrt(self) -> dict[str, Any]:
        from reidprune.export.tensorrt import tensorrt_available

        why = tensorrt_available()
        engine = why is None
        figures: dict[str, Any] = {"engine": engine}
        for name, directory in (
            ("vit_baseline", self.work / "runs" / "vit_base" / "final"),
            ("vit_compressed", self.work / "runs" / "vit_tokens" / "model"),
            ("resnet50_extracted", self.work / "runs" / "resnet_bafd" / "model"),
        ):
            graph = self.work / "tensorrt" / f"{name}.onnx"
            self.cli(
                "export",
                "--model",
                str(directory),
                "--out",
                str(graph),
                "--check",
                "tensorrt",
                # engines for the deployed (compressed) forms: a ViT-B engine build takes minutes
                *(["--engine"] if engine and name != "vit_baseline" else []),
            )
            info = json.loads(graph.with_name(f"{name}.export.json").read_text())["tensorrt"]
            figures[name] = {
                k: info[k] for k in ("passed", "opset", "op_counts", "notes", "tensorrt_version") if k in info
            }
            if "engine" in info:
                figures[name]["engine"] = info["engine"]
        if not engine:
            figures["engine_skipped"] = (
                f"no TensorRT engine built: {why}; the graphs were checked against TensorRT's op list only"
            )
            print(f"gpu-check: tensorrt engine skipped: {why}", flush=True)
        return figures

    def ddp(self) -> dict[str, Any]:
        import torch

        count = torch.cuda.device_count() if self.device.startswith("cuda") else 0
        if count < 2:
            where = (
                f"{count} CUDA GPU{'s' if count != 1 else ''}"
                if self.device.startswith("cuda")
                else "the CPU (smoke)"
            )
            return self.skip(
                f"a 2-process torchrun DDP step needs 2 GPUs, found {where}; CPU (gloo) DDP is covered by tests/train/test_train_ddp.py"
            )
        cfg = self.experiment(
            "vit_ddp",
            {**self.p["vit"], "weights": str(self.work / "runs" / "vit_base" / "final")},
            train={
                "epochs": 1,
                "optimizer": "adamw",
                "lr": 1e-5,
                "warmup_epochs": 0,
                "amp": "bf16",
                "max_steps_per_epoch": 3,
                "eval_every": 0,
                "progress": False,
            },
        )
        cfg["device"] = "cuda"
        path = self.config("vit_ddp", cfg)
        torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
        command = [
            torchrun,
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "reidprune",
            "train",
            "-c",
            str(path),
            "--overwrite",
        ]
        print("$ " + " ".join(command), flush=True)
        done = subprocess.run(command, check=False, timeout=300)
        if done.returncode != 0:
            raise CheckFailed(
                f"2-process torchrun DDP training exited with code {done.returncode} (its output is above)"
            )
        log = _train_log(self.work / "runs" / "vit_ddp")
        if log["world_size"] != 2:
            raise CheckFailed(f"torchrun --nproc_per_node 2 trained with world_size {log['world_size']}")
        return {"processes": 2, **log}

    # ---- the run -------------------------------------------------------------------------------
    def run(self) -> int:
        vit_model = self.p["vit"]
        steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("environment", self.environment),
            ("data", self.data),
            ("train_vit", self.train_vit),
            ("train_fp16", self.train_fp16),
            (
                "prune_heads",
                lambda: self.prune(
                    "vit_heads",
                    self.work / "runs" / "vit_base" / "final",
                    "head-entropy",
                    0.25,
                    {},
                    vit_model,
                ),
            ),
            (
                "prune_tokens",
                lambda: self.prune(
                    "vit_tokens",
                    self.work / "runs" / "vit_heads" / "model",
                    "token-amg",
                    0.25,
                    {"mode": "skip", "depth_discount": 0.015},
                    vit_model,
                ),
            ),
            ("train_resnet", self.train_resnet),
            (
                "prune_bafd",
                lambda: self.prune(
                    "resnet_bafd",
                    self.work / "runs" / "resnet_base" / "final",
                    "filter-bafd",
                    0.5,
                    {},
                    self.p["resnet"],
                ),
            ),
            ("eval_gpu_vs_cpu", self.eval_gpu_vs_cpu),
            ("throughput", self.throughput),
            ("onnx", self.onnx),
            ("tensorrt", self.tensorrt),
            ("ddp", self.ddp),
        ]
        try:
            for name, fn in steps:
                self.step(name, fn)
        except BaseException:
            return 1
        total = time.perf_counter() - self.start
        self.result["passed"] = True
        if self.mode == "gpu":
            self.result["within_budget"] = total <= GPU_BUDGET_S
        self.write()
        skipped = [n for n, s in self.result["steps"].items() if s["status"] == "skipped"]
        print(
            f"\ngpu-check {self.mode} passed in {total:.0f} s ({len(steps) - len(skipped)} steps ran, skipped: {', '.join(skipped) or 'none'}); wrote {self.out}"
        )
        return 0


def _same_set(manifest: dict[str, Any], wanted: dict[str, Any]) -> bool:
    size = manifest.get("size")
    size_text = "x".join(str(s) for s in size) if isinstance(size, list) else str(size)
    return (
        manifest.get("ids") == wanted["ids"]
        and size_text == wanted["size"]
        and manifest.get("seed", 0) == 0
        and manifest.get("layout", "market1501") == "market1501"
        and not manifest.get("occluded", False)
    )


def _train_log(run: Path) -> dict[str, Any]:
    """The figures of a run's train_log.jsonl: amp, world size, steps, step losses, images/s."""
    path = run / "train_log.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    start = next((r for r in records if r.get("event") == "start"), None)
    steps = [r for r in records if r.get("event") == "step"]
    epochs = [r for r in records if r.get("event") == "epoch"]
    if start is None or not epochs:
        raise CheckFailed(f"{path}: no start / epoch record: the run did not train")
    speeds = [r["images_per_s"] for r in steps if "images_per_s" in r]
    return {
        "amp": start.get("amp"),
        "device": start.get("device"),
        "world_size": start.get("world_size"),
        "steps_per_epoch": start.get("steps_per_epoch"),
        "steps": epochs[-1].get("step"),
        "losses": [r["loss"] for r in steps if "loss" in r],
        "last_epoch": epochs[-1],
        "images_per_s": max(speeds) if speeds else None,
    }


def _test_of(metrics: dict[str, Any]) -> dict[str, Any]:
    final = (metrics.get("test") or {}).get("final") or {}
    return {k: final[k] for k in ("mAP", "rank1", "mINP") if k in final}


def _images_per_second(fn: Any, batch: Any, camids: Any, iters: int, warmup: int, device: Any) -> float:
    import torch

    def once() -> None:
        with torch.inference_mode():
            fn(batch, camids) if camids is not None else fn(batch)

    for _ in range(warmup):  # warm-up (and compilation)
        once()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        once()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return iters * len(batch) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--smoke", action="store_true", help="the same steps on the CPU at tiny sizes (CI)")
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help=f"the JSON with every figure (default {RESULTS})"
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=None,
        help="working folder (data, runs); default: a temporary one, removed afterwards (gpu: kept in ./gpu_check_work for reuse)",
    )
    parser.add_argument("--device", default=None, help="cuda[:N] (default cuda; --smoke: cpu)")
    args = parser.parse_args(argv)
    mode = "smoke" if args.smoke else "gpu"
    device = args.device or ("cpu" if args.smoke else "cuda")
    if args.smoke and not device.startswith("cpu"):
        parser.error("--smoke runs on the CPU; drop --device")
    temporary = args.work is None and args.smoke
    work = args.work or (
        Path(tempfile.mkdtemp(prefix="gpu-check-")) if args.smoke else Path("gpu_check_work")
    )
    work.mkdir(parents=True, exist_ok=True)
    try:
        return GpuCheck(mode, work.resolve(), args.out, device).run()
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
