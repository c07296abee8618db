"""Running a module on the runtime a model will be deployed with, as a timed callable.

- "onnxruntime": the module is exported to ONNX (TorchScript exporter, opset 18, a dynamic batch
  axis as `export.export_onnx` writes deployed graphs: ORT plans static shapes differently) and
  run by an ONNX Runtime CPU session with `threads` intra-op threads, pool threads not spinning
  (as `reidprune bench` runs graphs);
- "torch": PyTorch eager in its deploy form (`measure.deploy.prepare_for_inference`: BatchNorm
  folded, channels_last) on the CPU with `threads` threads;
- "cuda": the same deploy form on the current CUDA device (synchronised around every call).
"""

from __future__ import annotations

import contextlib
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from reidprune.budget.cache import Setting
from reidprune.errors import CompressionError
from reidprune.measure.deploy import prepare_for_inference
from reidprune.measure.timing import cpu_name, torch_threads

RUNTIMES = ("onnxruntime", "torch", "cuda")
OPSET = 18


def check_runtime(runtime: str) -> str:
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
    if runtime == "cuda" and not torch.cuda.is_available():
        raise ValueError("runtime 'cuda': no CUDA device is available here; use 'onnxruntime' or 'torch'")
    return runtime


def setting_for(runtime: str, batch: int, threads: int | None) -> Setting:
    """The cache key of a measurement: this machine, `runtime` and its version, threads, batch."""
    check_runtime(runtime)
    if batch < 1:
        raise ValueError(f"batch {batch}: expected a positive number of images")
    threads = int(threads) if threads else torch.get_num_threads()
    if runtime == "onnxruntime":
        import onnxruntime

        return Setting(cpu_name(), runtime, onnxruntime.__version__, threads, batch)
    if runtime == "cuda":
        name = torch.cuda.get_device_name(torch.cuda.current_device())
        return Setting(name, runtime, f"{torch.__version__}+cuda{torch.version.cuda}", 1, batch)
    return Setting(cpu_name(), runtime, torch.__version__, threads, batch)


class Runner:
    """Turns (module, example inputs) into a callable that runs it on the runtime of `setting`.

    Use as a context manager: graphs are written to a temporary folder removed on exit, and
    PyTorch's threads are set to the setting's for the duration.
    """

    def __init__(self, setting: Setting) -> None:
        self.setting = setting
        self.device = torch.device("cuda", torch.cuda.current_device()) if setting.runtime == "cuda" else None
        self._stack = contextlib.ExitStack()
        self._folder: Path | None = None
        self._count = 0

    def __enter__(self) -> Runner:
        self._folder = Path(
            self._stack.enter_context(tempfile.TemporaryDirectory(prefix="reidprune-latency-"))
        )
        if self.setting.runtime != "cuda":
            self._stack.enter_context(torch_threads(self.setting.threads))
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()

    @property
    def folder(self) -> Path:
        """Where this runner writes its graphs (removed on exit)."""
        if self._folder is None:
            raise RuntimeError("use Runner as a context manager")
        return self._folder

    def callable(self, module: nn.Module, inputs: tuple[Tensor, ...]) -> Callable[[], Any]:
        """A no-argument call of `module(*inputs)` on the runtime (inputs fixed, outputs discarded)."""
        module = module.eval()
        if self.setting.runtime == "onnxruntime":
            return self._onnx(module, inputs)
        try:
            deployed = prepare_for_inference(module)
        except CompressionError:  # not traceable by torch.fx: time it as it is
            deployed = module
        inputs = tuple(_deploy_input(t) for t in inputs)
        if self.device is not None:
            deployed, inputs = deployed.to(self.device), tuple(t.to(self.device) for t in inputs)

        def run() -> Any:
            with torch.inference_mode():
                return deployed(*inputs)

        return run

    def _onnx(self, module: nn.Module, inputs: tuple[Tensor, ...]) -> Callable[[], Any]:
        from reidprune.export.runtime import create_session

        self._count += 1
        path = self.folder / f"probe{self._count}.onnx"
        names = [f"input{i}" for i in range(len(inputs))]
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about Python values are expected
            torch.onnx.export(
                module, inputs, str(path), dynamo=False, input_names=names, output_names=["output"],
                dynamic_axes={n: {0: "batch"} for n in (*names, "output")}, opset_version=OPSET,
                do_constant_folding=True,
            )  # fmt: skip
        session = create_session(path, threads=self.setting.threads, spinning=False)
        wanted = {i.name for i in session.get_inputs()}  # the exporter drops inputs it does not use
        feeds = {n: t.numpy() for n, t in zip(names, inputs, strict=True) if n in wanted}
        return lambda: session.run(None, feeds)


def _deploy_input(tensor: Tensor) -> Tensor:
    return tensor.contiguous(memory_format=torch.channels_last) if tensor.dim() == 4 else tensor
