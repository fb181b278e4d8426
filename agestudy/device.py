"""Where and how to compute: CUDA when present, else the CPU tuned for speed.

On the CPU we use channels_last memory format, as many threads as cores we may use,
and bf16 autocast only where a quick measurement says it is faster (it depends on the
processor and the model: on some CPUs bf16 convolutions are 3x slower).
"""

from __future__ import annotations

import contextlib
import os
import time

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
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked, but no CUDA GPU is available (use --device auto or cpu)")
    if name not in ("cpu", "cuda"):
        raise UserError(f"unknown device {name!r}: use auto, cpu or cuda")
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


def choose_precision(model: torch.nn.Module, device: torch.device, crop: int, batch_size: int,
                     requested: str = "auto") -> str:
    """'fp32', 'bf16' (CPU or GPU) or 'fp16' (GPU). 'auto' times a few training steps of each."""
    if requested not in ("auto", "fp32", "bf16", "fp16"):
        raise UserError(f"unknown precision {requested!r}: use auto, fp32, bf16 or fp16")
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    candidates = ["fp32", "bf16"]
    timings = {p: _time_steps(model, device, crop, batch_size, p) for p in candidates}
    return min(timings, key=timings.get)


def _time_steps(model, device, crop, batch_size, precision, steps: int = 3) -> float:
    """Seconds per forward+backward step on random data; the model's weights are untouched."""
    state = {k: v.clone() for k, v in model.state_dict().items()}  # BatchNorm stats move in train mode
    x = torch.randn(batch_size, 3, crop, crop, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch_size,), device=device)
    model.train()
    best = float("inf")
    for i in range(steps + 1):
        start = time.perf_counter()
        with autocast(device, precision):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        model.zero_grad(set_to_none=True)
        if i:  # the first step pays one-off costs (kernel selection)
            best = min(best, time.perf_counter() - start)
    model.load_state_dict(state)
    return best
