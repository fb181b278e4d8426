"""Training throughput: agestudy's loop against a lab-notebook loop, same model, same data.

    python -m agestudy.bench --data path/to/cacd

The reference loop is written the way a lab notebook does it: torchvision ImageFolder,
per-image PIL transforms (RandomCrop, RandomHorizontalFlip, ToTensor, Normalize), a
DataLoader and fp32. agestudy's loop trains from the decoded-once uint8 tensor with
batched augmentation, channels_last and the precision its auto-selection picks.
Both count images/s over whole training steps (data, forward, backward, optimizer step).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F

from agestudy import device as devices
from agestudy.data import AugmentConfig, augment_batch, load_data, resolve_data_root
from agestudy.errors import UserError, cli_entry
from agestudy.models import MODELS, create_model
from agestudy.train import TrainConfig, make_optimizer


def naive_loop_throughput(root, cfg: TrainConfig, steps: int, warmup: int) -> float:
    """images/s of the lab-notebook loop."""
    from torchvision import datasets, transforms

    transform = transforms.Compose([
        transforms.RandomCrop(cfg.crop, padding=cfg.padding),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize([0.5] * 3, [0.25] * 3),
    ])
    dataset = datasets.ImageFolder(str(root / "train"), transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, drop_last=True)
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, **cfg.model_kwargs())
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    return _timed(iter_forever(loader), lambda x, y: _step(model, optimizer, x, y), steps, warmup, cfg.batch_size)


def agestudy_loop_throughput(root, cfg: TrainConfig, steps: int, warmup: int, cache_dir=None) -> tuple[float, str, float]:
    """(images/s, precision chosen, seconds to load the decoded split) of agestudy's loop."""
    t0 = time.perf_counter()
    data = load_data(root, cache_dir, verbose=False)
    load_seconds = time.perf_counter() - t0
    device, model, optimizer = _agestudy_model(cfg)
    precision = devices.choose_precision(model, device, cfg.crop, cfg.batch_size, cfg.precision)
    generator = torch.Generator().manual_seed(cfg.seed)
    augment = cfg.augment()
    train = data.train

    def batches():
        while True:
            order = torch.randperm(len(train), generator=generator)
            for b in range(len(order) // cfg.batch_size):
                idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                x = augment_batch(train.images[idx], augment, generator).to(device)
                yield x.contiguous(memory_format=torch.channels_last), train.labels[idx].to(device)

    step = _training_step(model, optimizer, device, precision)
    return _timed(batches(), step, steps, warmup, cfg.batch_size), precision, load_seconds


def bare_model_throughput(cfg: TrainConfig, precision: str, steps: int, warmup: int) -> float:
    """images/s of training steps on one fixed random batch already in memory: the model's own
    speed in the chosen precision, with no data pipeline at all. No loop can beat it."""
    device, model, optimizer = _agestudy_model(cfg)
    x = torch.randn(cfg.batch_size, 3, cfg.crop, cfg.crop, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (cfg.batch_size,), device=device)

    def same_batch():
        while True:
            yield x, y

    return _timed(same_batch(), _training_step(model, optimizer, device, precision), steps, warmup, cfg.batch_size)


def training_flops_per_image(cfg: TrainConfig, batch: int = 8) -> float:
    """Floating-point operations of one training step (forward + backward), per image."""
    from torch.utils.flop_counter import FlopCounterMode

    model = create_model(cfg.model, **cfg.model_kwargs())
    x = torch.randn(batch, 3, cfg.crop, cfg.crop)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), torch.zeros(batch, dtype=torch.long)).backward()
    return counter.get_total_flops() / batch


def matmul_ceiling_gflops(n: int = 1024, repeats: int = 20, dtype=torch.float32) -> float:
    """GFLOP/s of a large matrix product in ``dtype``: what these cores can do at best on dense maths."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def iter_forever(loader):
    while True:
        yield from loader


def _agestudy_model(cfg: TrainConfig):
    """(device, model, optimizer) as agestudy's training sets them up: channels_last, fused AdamW."""
    device = devices.select_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = devices.prepare_model(create_model(cfg.model, **cfg.model_kwargs()), device)
    model.train()
    return device, model, make_optimizer(model, cfg)


def _training_step(model, optimizer, device, precision: str):
    """agestudy's step: forward in the chosen precision, loss and update in fp32."""

    def step(x, y):
        with devices.autocast(device, precision):
            logits = model(x)
        return _step(model, optimizer, x, y, logits)

    return step


def _step(model, optimizer, x, y, logits=None):
    logits = model(x) if logits is None else logits
    loss = F.cross_entropy(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def _timed(batches, step, steps: int, warmup: int, batch_size: int) -> float:
    """Time `steps` whole iterations (fetching the batch included) after `warmup` untimed ones."""
    for _ in range(warmup):
        step(*next(batches))
    start = time.perf_counter()
    for _ in range(steps):
        step(*next(batches))
    return steps * batch_size / (time.perf_counter() - start)


@cli_entry
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agestudy.bench",
        description="Measure training throughput (images/s, whole pipeline) of agestudy's loop and of a "
                    "lab-notebook loop (ImageFolder + per-image PIL transforms + DataLoader + fp32) on the same "
                    "model and data; prints the speed-up ratio last.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data", help="lab-layout folder (default: $AGESTUDY_DATA, ./data or the SYNTHETIC demo)")
    parser.add_argument("--model", default="baseline", choices=sorted(MODELS),
                        help="network trained by both loops (baseline = the lab's CNN)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--crop", type=int, default=88)
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per loop")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", help="agestudy's loop: auto, fp32, bf16 or fp16")
    parser.add_argument("--cache-dir")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        raise UserError("--steps must be >= 1 and --warmup >= 0")
    threads = devices.configure_threads()
    cfg = TrainConfig(model=args.model, batch_size=args.batch_size, crop=args.crop, device=args.device,
                      precision=args.precision, padding=4, members=1)
    cfg.validate()
    root = resolve_data_root(args.data, args.cache_dir).resolve()
    load_data(root, args.cache_dir, verbose=True)  # fill the decode cache before timing anything
    print(f"model {cfg.model}, batch {cfg.batch_size}, crop {cfg.crop}, {threads} threads, "
          f"device {devices.select_device(cfg.device)}", flush=True)
    ours, precision, load_seconds = agestudy_loop_throughput(root, cfg, args.steps, args.warmup, args.cache_dir)
    print(f"agestudy loop : {ours:8.1f} images/s  (cached tensors, batched augmentation, channels_last, "
          f"{precision}; cached split loaded in {load_seconds:.2f} s)", flush=True)
    bare = bare_model_throughput(cfg, precision, args.steps, args.warmup)
    print(f"model alone   : {bare:8.1f} images/s  (one random batch in memory, {precision}, no data pipeline): "
          f"agestudy's loop runs at {ours / bare:.0%} of it", flush=True)
    naive = naive_loop_throughput(root, cfg, args.steps, args.warmup)
    print(f"notebook loop : {naive:8.1f} images/s  (ImageFolder + PIL transforms + DataLoader, fp32)", flush=True)
    # Where the ceiling is: the model's own arithmetic, against the best dense-maths rate of these
    # cores in each loop's precision (bf16 can be several times fp32 on CPUs with AVX512-BF16 or AMX).
    flops = training_flops_per_image(cfg)
    ceilings = {"fp32": matmul_ceiling_gflops()}
    if precision != "fp32":
        ceilings[precision] = matmul_ceiling_gflops(dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
    print(f"model arithmetic: {flops / 1e6:.0f} MFLOP per training image; agestudy loop at "
          f"{ours * flops / 1e9:.0f} GFLOP/s ({precision}), notebook loop at {naive * flops / 1e9:.0f} GFLOP/s (fp32)",
          flush=True)
    for name, gflops in ceilings.items():
        print(f"{name} matmul ceiling of this machine: {gflops:.0f} GFLOP/s -> at most "
              f"{gflops * 1e9 / flops:.0f} images/s for this model in {name}", flush=True)
    print(f"speed-up ratio: {ours / naive:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
