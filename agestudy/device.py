"""Where and how to compute: CUDA when present, else the CPU tuned for speed.

On the CPU we use channels_last memory format, as many threads as cores we may use,
and bf16 autocast only where the processor computes bf16 natively (AVX512-BF16, AMX):
elsewhere bf16 is emulated and slower than fp32. The choice reads the hardware, so the
same command on the same machine always trains in the same precision.
"""

from __future__ import annotations

import contextlib
import os
import warnings

import torch

from agestudy.errors import UserError


def available_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def configure_threads(n: int | None = None) -> int:
    n = n or int(os.environ.get("AGESTUDY_THREADS", 0)) or available_cores()
    torch.set_num_threads(n)
    return n


def select_device(name: str = "auto") -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked, but no CUDA GPU is available (use --device auto or cpu)")
    if name not in ("cpu", "cuda"):
        raise UserError(f"unknown device {name!r}: use auto, cpu or cuda")
    if name == "cuda":
        # batches have fixed shapes: let cuDNN pick its fastest convolution once per shape;
        # fp32 matrix products may use TF32 tensor cores (what autocast does not cover)
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
    return torch.device(name)


def autocast(device: torch.device, precision: str):
    """Context manager for the forward pass in the chosen precision."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp16":
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def prepare_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    return model.to(device=device, memory_format=torch.channels_last)


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True where the CPU computes bf16 in hardware: x86 AVX512-BF16 or AMX, ARM's BF16 extension.

    Elsewhere (most laptops) bf16 is emulated and slower than fp32. Read from the CPU's own
    flags, so the answer is the same whatever the machine's load.
    """
    try:
        text = open(cpuinfo, encoding="utf-8", errors="ignore").read()
    except OSError:
        return False  # not Linux: fp32 is the safe choice
    flags = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def choose_precision(device: torch.device, requested: str = "auto") -> str:
    """'fp32', 'bf16' or 'fp16', decided from the hardware, never from a timing.

    auto: CUDA -> bf16 where the GPU supports it (Ampere and newer), else fp16 (T4, V100: with a
    gradient scaler); CPU -> bf16 only with native bf16 support, else fp32.
    """
    if requested not in ("auto", "fp32", "bf16", "fp16"):
        raise UserError(f"unknown precision {requested!r}: use auto, fp32, bf16 or fp16")
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def compiled(fn):
    """``torch.compile(fn)``, falling back to ``fn`` itself for good if compiling fails (no compiler,
    an unsupported platform): a slower run, never a failed one."""
    try:
        fast = torch.compile(fn, dynamic=False)
    except Exception as err:  # noqa: BLE001 - any failure means: run eagerly
        warnings.warn(f"torch.compile unavailable ({type(err).__name__}: {err}); running eagerly", stacklevel=2)
        return fn
    current = {"fn": fast}

    def call(*args):
        if current["fn"] is fn:
            return fn(*args)
        try:
            return current["fn"](*args)
        except Exception as err:  # noqa: BLE001 - a real error raises again from the eager call
            warnings.warn(f"torch.compile failed ({type(err).__name__}: {str(err)[:200]}); running eagerly",
                          stacklevel=2)
            current["fn"] = fn
            return fn(*args)

    return call
