"""The distillation teacher: frozen, deterministic, and still returning its training outputs.

Re-ID models return logits and pre-neck features only in training mode, but a teacher must be
deterministic: no dropout or stochastic depth, batch-norm with its running statistics (the AMG
TransReID seed ran its teacher in train mode, so its targets were noisy and its BN statistics
drifted). `freeze_teacher` therefore puts every module whose numerics depend on the mode (batch /
instance norm, dropout, drop-path and similar "drop" modules) in eval mode, and sets the other
modules, the containers that only choose which outputs to return, to training mode. Parameters
get requires_grad False; the teacher is run once per batch under no_grad.
"""

from __future__ import annotations

from torch import Tensor, nn

from reidprune.models.output import ModelOutput

# modules whose computation differs between train and eval mode
_MODE_DEPENDENT = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.modules.dropout._DropoutNd,
)


def is_mode_dependent(module: nn.Module) -> bool:
    """Norm layers with running statistics, dropout, drop-path / drop-block (by class name)."""
    return isinstance(module, _MODE_DEPENDENT) or "drop" in type(module).__name__.lower()


def freeze_teacher(teacher: nn.Module) -> nn.Module:
    """Freeze `teacher` in place (see the module docstring) and return it. Cheap; call it again
    after anything that may have called `.train()` on it."""
    for module in teacher.modules():
        module.training = not is_mode_dependent(module)
    teacher.requires_grad_(False)
    return teacher


def is_frozen(teacher: nn.Module) -> bool:
    """True when every mode-dependent module is in eval mode and no parameter requires a gradient."""
    modes_ok = all(not m.training for m in teacher.modules() if is_mode_dependent(m))
    return modes_ok and not any(p.requires_grad for p in teacher.parameters())


def teacher_forward(teacher: nn.Module, images: Tensor, camids: Tensor | None) -> ModelOutput:
    """One teacher pass with no autograd graph. images: (B, 3, H, W); camids: (B,) or None."""
    from torch import no_grad

    with no_grad():
        return teacher(images, camids=camids)
