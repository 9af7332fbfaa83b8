"""Which arithmetic a training run computes in: float32, or bfloat16 autocast where the hardware has it.

bfloat16 autocast (convolutions and matrix products in bfloat16, weights, optimiser state and losses in
float32) is the usual recipe on GPUs. On a CPU it pays only where the cores multiply bfloat16 natively:
Intel's AMX tiles. Measured on a 2-core Xeon with AMX (torch 2.14.1, one training step of the quick
profile's width-1/8 models, batch 64): multi-ROI VGG-16 1.17 → 0.52 s, ResNet-18 0.22 → 0.15 s, ResNet-50
0.70 → 0.48 s. Without native bfloat16 it is emulated and slower than float32, so ``auto`` chooses float32
there. Channels-last memory was slower on the same CPU (VGG-16 1.03 s in bfloat16) and is not used.
"""

from __future__ import annotations

import contextlib
import functools
import platform
from pathlib import Path

import torch

#: ``auto``: bfloat16 on a CUDA GPU or a CPU with native bfloat16 matrix units, else float32.
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")


@functools.cache
def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU multiplies bfloat16 matrices natively (x86 AMX-BF16, read from ``/proc/cpuinfo``).

    ``cpuinfo`` is the text of that file (for tests); elsewhere than Linux the answer is False.
    """
    if cpuinfo is None:
        if platform.system() != "Linux":
            return False
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return "amx_bf16" in line.split(":", 1)[-1].split()
    return False


def resolve_precision(precision: str, cuda: bool | None = None) -> str:
    """``fp32`` or ``bf16``: ``auto`` resolved for a run on a CUDA GPU (``cuda``) or on this CPU; ``cuda``
    None: whether this machine has one (where training runs)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if cuda is None:
        cuda = torch.cuda.is_available()
    return "bf16" if cuda or cpu_has_native_bf16() else "fp32"


#: How the book's recipe line names each resolved precision.
DESCRIPTIONS: dict[str, str] = {"fp32": "float32 arithmetic", "bf16": "bfloat16 autocast (weights in float32)"}


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context of a resolved precision on ``device`` (a no-op for ``fp32``)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
