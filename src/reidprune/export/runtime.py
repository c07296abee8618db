"""ONNX Runtime sessions, and `OnnxModel`: an exported graph behind the reidprune model interface
(`GraphModel`, which `reidprune.export.openvino.OpenVinoModel` shares).

    onnx_model = OnnxModel("out/model.onnx")
    metrics = evaluate_reid(onnx_model, loaders.query, loaders.gallery, cfg.eval)   # same code path

`OnnxModel` is an `nn.Module` without parameters whose `forward(images, camids=None)` returns a
`ModelOutput`, and whose `arch` is the exported model's architecture (read from the graph's
metadata), so `reidprune.evaluate` (feature extraction, flip averaging, CMC / mAP, top-k) and
`reidprune.measure.benchmark_speed` treat it exactly like the PyTorch model. Inputs are moved to
the CPU as float32; a graph with a static batch is fed in chunks of that size (the last chunk padded).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from reidprune.export.errors import ExportError
from reidprune.export.wrapper import CAMIDS, EMBEDDING, IMAGES
from reidprune.models.output import ModelOutput

META_ARCH = "reidprune.arch"
META_SIGNATURE = "reidprune.signature"


def create_session(
    path: str | Path, threads: int | None = None, providers: list[str] | None = None, spinning: bool = True
) -> Any:
    """An InferenceSession with all graph optimisations. threads: intra-op threads (default: torch's
    current setting, so that ONNX Runtime and PyTorch are compared on the same number of cores);
    providers: default CPU only. spinning=False stops idle pool threads from busy-waiting after a
    run (ONNX Runtime's default spins, which lowers its own latency but takes cores from whatever
    runs next, e.g. PyTorch in an interleaved comparison)."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = int(threads) if threads else torch.get_num_threads()
    options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: ORT's warnings about unused initialisers are noise here
    try:
        return ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
    except Exception as err:  # ORT raises its own exception types (InvalidGraph, Fail, ...)
        raise ExportError(f"{path}: ONNX Runtime cannot load the graph: {err}") from None


@dataclass
class OnnxArch:
    """The architecture facts evaluation needs, for graphs without reidprune metadata."""

    family: str = "onnx"
    img_size: list[int] = field(default_factory=lambda: [256, 128])
    num_cameras: int = 0
    num_classes: int = 0


def arch_from_metadata(meta: dict[str, str], inputs: dict[str, list[Any]], path: Path) -> Any:
    """The model architecture from a graph's reidprune metadata, else the facts its `inputs`
    ({name: shape, None or a str for a free axis}) give."""
    if META_ARCH in meta:
        from reidprune.models.registry import arch_from_dict

        return arch_from_dict(json.loads(meta[META_ARCH]), where=f"{path} metadata")
    images = inputs.get(IMAGES)
    if images is None or len(images) != 4 or not all(isinstance(s, int) for s in images[2:]):
        raise ExportError(
            f"{path}: expected an input '{IMAGES}' of shape (B, 3, H, W) with fixed H and W; "
            f"inputs are {inputs}"
        )
    cameras = 0
    if CAMIDS in inputs:
        cameras = int(json.loads(meta.get(META_SIGNATURE, "{}")).get("num_cameras", 1) or 1)
    return OnnxArch(img_size=[int(images[2]), int(images[3])], num_cameras=cameras)


class GraphModel(nn.Module):
    """An exported graph behind the reidprune model interface; subclasses set `path`, `arch`,
    `input_names`, `output_names` and `static_batch`, and implement `run`.

    forward(images (B, 3, H, W), camids (B,) or None) -> ModelOutput(embedding (B, D), logits [(B, C)]).
    Outputs are float32 CPU tensors; a static-batch graph is fed in chunks of its batch size.
    """

    path: Path
    arch: Any
    input_names: list[str]
    output_names: list[str]
    static_batch: int | None

    def run(self, output_names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The named outputs for one feed {input name: array} (ONNX Runtime's `session.run` signature)."""
        raise NotImplementedError

    def _check_names(self) -> None:
        if IMAGES not in self.input_names or EMBEDDING not in self.output_names:
            raise ExportError(
                f"{self.path}: expected inputs '{IMAGES}' [+ '{CAMIDS}'] and an output '{EMBEDDING}'; "
                f"the graph has inputs {self.input_names} and outputs {self.output_names}"
            )

    def extra_repr(self) -> str:
        return f"path={str(self.path)!r}, static_batch={self.static_batch}"

    def _run(self, images: np.ndarray, camids: np.ndarray | None) -> list[np.ndarray]:
        feed = {IMAGES: images}
        if CAMIDS in self.input_names:
            feed[CAMIDS] = camids if camids is not None else np.zeros(images.shape[0], dtype=np.int64)
        return self.run(self.output_names, feed)

    def _run_static(self, images: np.ndarray, camids: np.ndarray | None) -> list[np.ndarray]:
        size, count = int(self.static_batch or 1), images.shape[0]
        parts: list[list[np.ndarray]] = []
        for start in range(0, count, size):
            chunk = images[start : start + size]
            cams = camids[start : start + size] if camids is not None else None
            pad = size - chunk.shape[0]
            if pad:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
                cams = np.concatenate([cams, np.repeat(cams[-1:], pad)]) if cams is not None else None
            parts.append([out[: size - pad] for out in self._run(chunk, cams)])
        return [np.concatenate(outs) for outs in zip(*parts, strict=True)]

    def forward(self, images: Tensor, camids: Tensor | None = None) -> ModelOutput:
        pixels = np.ascontiguousarray(images.detach().to("cpu", torch.float32).numpy())
        cams = camids.detach().to("cpu", torch.int64).reshape(-1).numpy() if camids is not None else None
        if self.static_batch is not None and pixels.shape[0] != self.static_batch:
            outputs = self._run_static(pixels, cams)
        else:
            outputs = self._run(pixels, cams)
        named = dict(zip(self.output_names, (torch.from_numpy(np.asarray(o)) for o in outputs), strict=True))
        logits = [named[n] for n in self.output_names if n.startswith("logits")]
        return ModelOutput(embedding=named[EMBEDDING], logits=logits)


class OnnxModel(GraphModel):
    """An ONNX graph (exported by `export_onnx`) run by ONNX Runtime, called like a reidprune model
    (see `GraphModel`). `threads` / `providers` / `spinning` as in `create_session`."""

    def __init__(
        self,
        path: str | Path,
        threads: int | None = None,
        providers: list[str] | None = None,
        spinning: bool = True,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.session = create_session(self.path, threads, providers, spinning)
        meta = dict(self.session.get_modelmeta().custom_metadata_map)
        shapes = {i.name: list(i.shape) for i in self.session.get_inputs()}
        self.arch = arch_from_metadata(meta, shapes, self.path)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._check_names()
        batch_dim = next(i for i in self.session.get_inputs() if i.name == IMAGES).shape[0]
        self.static_batch = int(batch_dim) if isinstance(batch_dim, int) else None

    def run(self, output_names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(output_names, feed)
