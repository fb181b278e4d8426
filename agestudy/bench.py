"""Training throughput on this machine: agestudy's loop against two standard PyTorch loops,
the model alone, and the device's own peak, all on the same model and the same data.

    python -m agestudy.bench --data path/to/cacd                      # the default ensemble
    python -m agestudy.bench --data path/to/cacd --model baseline --members 1
    python -m agestudy.bench --data path/to/cacd --scale-to 40000     # CACD-sized, repeated in memory

The loops, each timed over whole training steps (data, forward, backward, optimiser step):
- notebook: torchvision ImageFolder, per-image PIL transforms, a DataLoader in the main
  process, fp32: the lab's own notebook;
- tuned standard: the same transforms in DataLoader worker processes with pinned memory and
  non-blocking copies, autocast in agestudy's precision, channels_last: what a competent
  engineer writes;
- agestudy: ``engine.next_batch`` + ``engine.train_step``, exactly what training runs;
- model alone: ``engine.train_step`` on one batch already on the device, no data pipeline
  at all: no loop can beat it.
An ensemble (``--members``) is the same grouped network in every loop, fed M batches a step.
Images/s count the images each member sees (batch size x steps / seconds). The loops take
turns for ``--rounds`` rounds and each is reported by its median round, so that a change in the
machine's load reaches every loop alike (on a 2-core CPU one 30-step timing varies by 10-15 %).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from agestudy import device as devices
from agestudy.cli import HelpFormatter
from agestudy.config import TrainConfig
from agestudy.data import ImageSet, load_data, resolve_data_root
from agestudy.data.augment import PIXEL_MEAN, PIXEL_STD
from agestudy.engine import Trainer, next_batch, setup_training, train_step
from agestudy.errors import UserError, cli_entry
from agestudy.models import MODELS, STEM_STRIDES, create_model

# ----------------------------------------------------------------------------- the loops

@dataclass
class Loop:
    """A training loop ready to be timed: where its batches come from and what one step does."""

    batches: Iterator
    step: Callable
    batch_size: int  # images a step, per member
    device: torch.device

    def throughput(self, steps: int, warmup: int) -> float:
        """images/s over ``steps`` whole iterations (fetching the batch included) after ``warmup``
        untimed ones."""
        for _ in range(warmup):
            self.step(*next(self.batches))
        synchronize(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            self.step(*next(self.batches))
        synchronize(self.device)
        return steps * self.batch_size / (time.perf_counter() - start)


def folder_loader(root, cfg: TrainConfig, batch_images: int, scale_to: int, workers: int, pin: bool):
    """An ImageFolder DataLoader over train/ with per-image PIL transforms (lab-notebook style)."""
    from torchvision import datasets, transforms

    transform = transforms.Compose([
        transforms.RandomCrop(cfg.crop, padding=cfg.padding),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize([PIXEL_MEAN] * 3, [PIXEL_STD] * 3),
    ])
    dataset = datasets.ImageFolder(str(root / "train"), transform=transform)
    if scale_to and len(dataset.samples) < scale_to:  # the file list repeated, like the tensor for agestudy
        repeats = -(-scale_to // len(dataset.samples))
        dataset.samples = (dataset.samples * repeats)[:scale_to]
        dataset.targets = [label for _, label in dataset.samples]
    return torch.utils.data.DataLoader(dataset, batch_size=batch_images, shuffle=True, drop_last=True,
                                       num_workers=workers, pin_memory=pin, persistent_workers=workers > 0,
                                       prefetch_factor=4 if workers else None)


def standard_loop(root, cfg: TrainConfig, scale_to: int, tuned: bool, workers: int) -> Loop:
    """A standard loop: notebook (``tuned=False``) or tuned (workers, pinned memory, AMP, channels_last)."""
    device = devices.select_device(cfg.device)
    batch, members = cfg.batch_for(device.type), cfg.members
    precision = cfg.precision if tuned else "fp32"  # cfg is resolved: a concrete precision
    loader = folder_loader(root, cfg, batch * members, scale_to, workers if tuned else 0,
                           tuned and device.type == "cuda")
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, **cfg.model_kwargs()).to(device)
    if tuned:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr_for(batch), fused=tuned)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def step(x, y):
        x, y = x.to(device, non_blocking=tuned), y.to(device, non_blocking=tuned)
        if tuned:  # member m trains on images [m*B, (m+1)*B) of the loader's batch
            x = x.contiguous(memory_format=torch.channels_last)
        with devices.autocast(device, precision):
            logits = model.member_logits(x)
        loss = F.cross_entropy(logits.float().reshape(-1, 2), y.view(members, -1).T.reshape(-1)) * members
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    def batches():
        # one loader for every round: its workers stay up, as in a real training run (and refill
        # their queue while the other loops take their turn: a head start, if any, for this loop)
        while True:
            yield from loader

    return Loop(batches(), step, batch, device)


def agestudy_loop(t: Trainer) -> Loop:
    """agestudy's training loop: the engine's own batch and step functions."""
    def batches():
        step = 0
        while True:
            yield next_batch(t, step)
            step += 1

    return Loop(batches(), lambda x, y: train_step(t, x, y), t.batch_size, t.device)


def model_alone_loop(t: Trainer) -> Loop:
    """``train_step`` on one batch already on the device: the model's own speed."""
    x, y = next_batch(t, 0)

    def same_batch():
        while True:
            yield x, y

    return Loop(same_batch(), lambda a, b: train_step(t, a, b), t.batch_size, t.device)


def profile_steps(t: Trainer, steps: int, rows: int = 25) -> None:
    """Print where agestudy's step spends its time (torch.profiler over ``steps`` steps): the ops
    that cost the device most, and host time per step against device time per step (a host
    slower than its device means the step is launch-bound)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = t.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    synchronize(t.device)
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        for step in range(steps):
            train_step(t, *next_batch(t, step))
        synchronize(t.device)
    wall = (time.perf_counter() - start) / steps
    events = prof.key_averages()
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    print(events.table(sort_by=key, row_limit=rows, max_name_column_width=60), flush=True)
    summary = f"profile: {wall * 1e3:.2f} ms a step (profiled)"
    if cuda:
        # the kernels themselves (an aten op's device time is its kernels': counting both would count twice)
        kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        device_us = sum(e.self_device_time_total for e in kernels) / steps
        launches = sum(e.count for e in kernels) / steps
        summary += f", device busy {device_us / 1e3:.2f} ms a step, {launches:.0f} kernels a step"
    print(summary, flush=True)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- the ceiling

def training_flops_per_image(cfg: TrainConfig, batch: int = 8) -> float:
    """Floating-point operations of one training step (forward + backward) per image and member."""
    from torch.utils.flop_counter import FlopCounterMode

    model = create_model(cfg.model, **{**cfg.model_kwargs(), "members": 1})
    x = torch.randn(batch, 3, cfg.crop, cfg.crop)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), torch.zeros(batch, dtype=torch.long)).backward()
    return counter.get_total_flops() / batch


def matmul_peak_gflops(device: torch.device, dtype=torch.float32, repeats: int = 20) -> float:
    """GFLOP/s of a large matrix product in ``dtype`` on ``device``: its best rate on dense maths."""
    n = 8192 if device.type == "cuda" else 1024
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    for _ in range(3):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo", errors="ignore")
                  if line.startswith("model name")), "CPU") if sys.platform.startswith("linux") else "CPU"
    native = "with native bf16" if devices.cpu_has_native_bf16() else "without native bf16"
    return f"{model} ({devices.available_cores()} cores, {native})"


# ----------------------------------------------------------------------------- CLI

def repeated(images: ImageSet, n: int) -> ImageSet:
    """``images`` repeated (in memory) up to ``n`` images: a CACD-sized set out of a small one."""
    if not n or len(images) >= n:
        return images
    index = torch.arange(n) % len(images)
    return ImageSet(images.images[index], images.labels[index], [images.files[i] for i in index.tolist()])


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(
        prog="python -m agestudy.bench",
        description="Measure training throughput (images/s through each member, whole steps) on this machine: "
                    "a lab-notebook loop, a tuned standard PyTorch loop, agestudy's loop and the model alone, on "
                    "the same model and data, beside the device's own matrix-product peak. Ratios come last.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--data", help="lab-layout folder (default: $AGESTUDY_DATA, ./data or the SYNTHETIC demo)")
    parser.add_argument("--model", default=defaults.model, choices=sorted(MODELS),
                        help="network trained by every loop (baseline = the lab's CNN)")
    parser.add_argument("--members", type=int, default=defaults.members,
                        help="ensemble size (members trained as one grouped network)")
    parser.add_argument("--width", type=int, default=defaults.width, help="efficient: channels of the first stage")
    parser.add_argument("--stem-stride", type=int, default=defaults.stem_stride, choices=[0, *STEM_STRIDES],
                        help="efficient: how much the stem shrinks the image (0: agestudy's default for the device)")
    parser.add_argument("--batch-size", type=int, default=0, help="per member; 0 = agestudy's default for the device")
    parser.add_argument("--crop", type=int, default=defaults.crop, help="side of the training crop")
    parser.add_argument("--scale-to", type=int, default=0,
                        help="repeat train/ in memory up to this many images (e.g. 40000, CACD's size); 0 = as is")
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per loop")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before each timing")
    parser.add_argument("--rounds", type=int, default=3,
                        help="times each loop is timed, the loops taking turns; each is reported by its median "
                             "round (the notebook loop is timed once)")
    parser.add_argument("--workers", type=int, default=0,
                        help="DataLoader worker processes of the tuned loop; 0 = one per core")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to train")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                        help="agestudy's and the tuned loop's precision (auto: from the hardware)")
    parser.add_argument("--compile", action="store_true", help="torch.compile agestudy's step")
    parser.add_argument("--profile", type=int, default=0, metavar="STEPS",
                        help="also profile this many of agestudy's steps (torch.profiler): the costliest ops")
    parser.add_argument("--skip-notebook", action="store_true", help="do not time the (slow) notebook loop")
    parser.add_argument("--cache-dir", help="where decoded arrays are cached (default ~/.cache/agestudy)")
    return parser


@cli_entry
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if min(args.steps, args.rounds) < 1 or min(args.warmup, args.scale_to, args.workers, args.profile) < 0:
        raise UserError("--steps and --rounds must be >= 1, and --warmup, --scale-to, --workers and --profile >= 0")
    cfg = replace(TrainConfig(), model=args.model, members=args.members, batch_size=args.batch_size,
                  width=args.width, stem_stride=args.stem_stride,
                  crop=args.crop, device=args.device, precision=args.precision, compile=args.compile)
    threads = devices.configure_threads()
    root = resolve_data_root(args.data, args.cache_dir).resolve()
    start = time.perf_counter()
    data = load_data(root, args.cache_dir, verbose=True)  # fills the decode cache before anything is timed
    load_seconds = time.perf_counter() - start
    train = repeated(data.train, args.scale_to)
    cfg = cfg.resolved(devices.select_device(cfg.device), len(train))  # every loop trains exactly this
    t = setup_training(cfg, train)
    workers = args.workers or threads
    print(f"device: {device_name(t.device)}; {threads} torch threads", flush=True)
    stem = f", stem stride {cfg.stem_stride}" if cfg.model == "efficient" else ""
    print(f"model {cfg.model}{stem} x {cfg.members} member(s), batch {t.batch_size} per member, crop {cfg.crop}, "
          f"{t.precision}, {len(train)} training images (decoded split loaded in {load_seconds:.1f} s)", flush=True)

    loops = {"agestudy": agestudy_loop(t), "alone": model_alone_loop(t),
             "tuned": standard_loop(root, cfg, args.scale_to, True, workers)}
    if not args.skip_notebook:
        loops["notebook"] = standard_loop(root, cfg, args.scale_to, False, 0)
    # The loops take turns, round after round, so a change in the machine's load (another job, a
    # CPU's clock) reaches all of them alike; each is reported by its median round.
    rates = {name: [] for name in loops}
    for r in range(args.rounds):
        timed = [name for name in loops if name != "notebook" or r == 0]  # the slow notebook: timed once
        for name in timed:
            rates[name].append(loops[name].throughput(args.steps, args.warmup))
        if args.rounds > 1:
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{name} {rates[name][-1]:.1f}" for name in timed),
                  flush=True)
    results = {name: statistics.median(v) for name, v in rates.items()}
    labels = {
        "agestudy": ("agestudy loop  ", f"data on the device, batched augmentation, ensemble as one network, "
                                        f"{t.precision}"),
        "alone": ("model alone    ", "one batch already on the device"),
        "tuned": ("tuned standard ", f"ImageFolder, {workers} DataLoader workers, pinned memory, {t.precision} "
                                     f"autocast, channels_last"),
        "notebook": ("notebook loop  ", "ImageFolder + PIL transforms in the main process, fp32"),
    }
    for name, value in results.items():
        label, what = labels[name]
        spread = f"median of {len(rates[name])} rounds, {min(rates[name]):.1f}-{max(rates[name]):.1f}; " \
            if len(rates[name]) > 1 else ""
        print(f"{label}: {value:9.1f} images/s  ({spread}{what})", flush=True)

    # Where the ceiling is: the model's arithmetic against this device's dense-maths peak.
    flops = training_flops_per_image(cfg)
    peaks = {"fp32": matmul_peak_gflops(t.device)}
    if t.precision != "fp32":
        peaks[t.precision] = matmul_peak_gflops(t.device, torch.bfloat16 if t.precision == "bf16" else torch.float16)
    achieved = results["agestudy"] * cfg.members * flops / 1e9
    print(f"model arithmetic: {flops / 1e6:.0f} MFLOP per training image and member; agestudy's loop computes "
          f"{achieved:.0f} GFLOP/s", flush=True)
    for name, gflops in peaks.items():
        print(f"{name} matmul peak of this device: {gflops:.0f} GFLOP/s -> at most "
              f"{gflops * 1e9 / (flops * cfg.members):.0f} images/s for this model in {name}", flush=True)
    print(f"ratios: agestudy / model alone {results['agestudy'] / results['alone']:.0%}; "
          f"agestudy / tuned standard {results['agestudy'] / results['tuned']:.2f}x"
          + (f"; agestudy / notebook {results['agestudy'] / results['notebook']:.2f}x"
             if "notebook" in results else ""))
    if args.profile:
        profile_steps(t, args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
