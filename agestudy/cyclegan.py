"""Question 11 for real: a CycleGAN that ages (G) and rejuvenates (F) faces, judged by the classifier.

    python -m agestudy.cyclegan --data ROOT                  # 64x64, judged by the latest final run
    python -m agestudy.cyclegan --data ROOT --judge RUN_ID --size 96

Pipeline, top to bottom: load train/ (never test/) and split it by age group, X = label 0
(aged 20-26) and Y = label 1 (aged 52-62), resized once to --size on the training device
-> train_cyclegan (the paper's recipe: least-squares GAN, cycle loss lambda 10, identity
loss, Adam 2e-4 beta1 0.5, learning rate constant then decaying linearly to 0, a history
buffer of 50 generated images for the discriminators) with sample grids of the same fixed
test faces every few epochs -> the judge (agestudy/analyses/q11_cyclegan.py) scores real
and translated test faces with a trained age classifier -> everything in one MLflow run
tagged agestudy.role=cyclegan, which section 11 of the report reads.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from agestudy import device as devices
from agestudy.cli import HelpFormatter
from agestudy.errors import UserError, cli_entry
from agestudy.models.cyclegan import to_gan_input, translate
from agestudy.runs import (
    AUTO_TAG,
    CYCLEGAN_LOSS_PLOT,
    CYCLEGAN_PAIRS_PER_SECOND,
    CYCLEGAN_SAMPLES_DIR,
    CYCLEGAN_WEIGHTS,
    DATA_FINGERPRINT_TAG,
    DESCRIPTION_TAG,
    ERROR_TAG,
    INTERRUPTED_TAG,
    JUDGE_RUN_TAG,
    ROLE_CYCLEGAN,
    ROLE_FINAL,
    ROLE_TAG,
    ROLE_TRAIN,
    SUMMARY_STEP,
    SYNTHETIC_SENTENCE,
    SYNTHETIC_TAG,
    SYNTHETIC_WARNING,
    TRAIN_ITERATIONS,
    TRAIN_SECONDS,
    WARNING_TAG,
    cyclegan_metric,
    find_runs,
)

# the training length by device when --train-images is 0: sized so that a 2-core CPU
# finishes faces-dev in under half an hour, and a GPU gets the paper's order of magnitude
CPU_TRAIN_IMAGES = 6_000
GPU_TRAIN_IMAGES = 200_000


@dataclass
class CycleGANConfig:
    size: int = 64  # image side the generators work at (the 100x100 faces are resized)
    width: int = 32  # generator width (channels of the first layer; the residual blocks have 4x)
    blocks: int = 6  # residual blocks of each generator
    disc_width: int = 32
    disc_layers: int = 2  # PatchGAN depth: 2 judges 34x34-pixel patches
    batch_size: int = 0  # 0 = auto: 8 pairs on a CPU, 32 on a GPU
    train_images: int = 0  # images of each group seen; 0 = auto (6,000 on a CPU, 200,000 on a GPU)
    epochs: int = 0  # 0 = as many as give train_images
    lr: float = 2e-4
    beta1: float = 0.5
    decay_from: float = 0.5  # fraction of training after which the learning rate decays linearly to 0
    lambda_cycle: float = 10.0
    lambda_identity: float = 5.0  # the paper's 0.5 x lambda_cycle
    pool_size: int = 50  # history buffer of generated images shown to the discriminators
    samples: int = 6  # test faces per group in the sample grids
    grids: int = 6  # sample grids over the run
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 where native (GPU, AVX512-BF16/AMX CPU), else fp32

    def validate(self) -> None:
        if not 32 <= self.size <= 100 or self.size % 4:
            raise UserError(f"--size must be a multiple of 4 between 32 and 100 (64, 96, 100), not {self.size}")
        for name in ("width", "blocks", "disc_width", "disc_layers", "samples", "grids"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1")
        for name in ("batch_size", "train_images", "epochs", "pool_size"):
            if getattr(self, name) < 0:
                raise UserError(f"--{name.replace('_', '-')} must be >= 0 (0 = auto)")
        if not self.lr > 0 or not 0 <= self.beta1 < 1 or not 0 <= self.decay_from <= 1:
            raise UserError("--lr must be > 0, --beta1 in [0, 1) and --decay-from in [0, 1]")
        if self.lambda_cycle < 0 or self.lambda_identity < 0:
            raise UserError("--lambda-cycle and --lambda-identity must be >= 0")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise UserError(f"--precision must be auto, fp32 or bf16, not {self.precision!r}")

    def resolved(self, device: torch.device, n_per_epoch: int) -> CycleGANConfig:
        """Every auto value made concrete for this device and data (what the run logs)."""
        gpu = device.type == "cuda"
        cfg = CycleGANConfig(**asdict(self))
        cfg.device = device.type
        if cfg.precision == "auto":
            # fp16 (old GPUs) would need loss scaling across four networks: GANs stay in fp32 there
            cfg.precision = "bf16" if devices.choose_precision(device) == "bf16" else "fp32"
        cfg.batch_size = cfg.batch_size or (32 if gpu else 8)
        cfg.train_images = cfg.train_images or (GPU_TRAIN_IMAGES if gpu else CPU_TRAIN_IMAGES)
        cfg.epochs = cfg.epochs or max(1, round(cfg.train_images / n_per_epoch))
        return cfg


# ----------------------------------------------------------------------------- data

def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per-image random horizontal flip and a shift of up to 1/16 of the side (reflect padding):
    the paper's resize-and-crop jitter, on the device."""
    n, _, h, w = x.shape
    flip = torch.rand(n, device=x.device, generator=generator) < 0.5
    x = torch.where(flip.view(n, 1, 1, 1), x.flip(-1), x)
    pad = max(1, h // 16)
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (n,), device=x.device, generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), device=x.device, generator=generator)
    rows = (dy.view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1).expand(n, 3, h, w + 2 * pad)
    x = padded.gather(2, rows)
    cols = (dx.view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w).expand(n, 3, h, w)
    return x.gather(3, cols)


class ImagePool:
    """The history buffer (Shrivastava et al., 2017): the discriminators see generated images from
    the last ``size`` generator states, not only the newest, which damps oscillations. Each image
    of a batch is, with probability 1/2, swapped for one in the pool once the pool is full."""

    def __init__(self, size: int, generator: torch.Generator):
        self.size = size
        self.generator = generator
        self.images: torch.Tensor | None = None

    def query(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.detach()
        if self.size == 0:
            return batch
        if self.images is None or len(self.images) < self.size:
            self.images = batch.clone() if self.images is None else torch.cat([self.images, batch])[: self.size]
            return batch
        n = len(batch)
        swap = torch.rand(n, device=batch.device, generator=self.generator) < 0.5
        slots = torch.randint(0, self.size, (n,), device=batch.device, generator=self.generator)
        out = batch.clone()
        out[swap] = self.images[slots[swap]]
        self.images[slots[swap]] = batch[swap]
        return out


class Stream:
    """Endless shuffled batches of one group: a new permutation each pass."""

    def __init__(self, images: torch.Tensor, batch_size: int, generator: torch.Generator):
        self.images, self.batch_size, self.generator = images, batch_size, generator
        self.order, self.pos = None, len(images)

    def next(self) -> torch.Tensor:
        if self.pos + self.batch_size > len(self.images):
            self.order = torch.randperm(len(self.images), device=self.images.device, generator=self.generator)
            self.pos = 0
        index = self.order[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        return self.images[index]


# ----------------------------------------------------------------------------- training

@dataclass
class CycleGANResult:
    G: torch.nn.Module  # young -> old
    F: torch.nn.Module  # old -> young
    cfg: CycleGANConfig
    iterations: int
    train_seconds: float
    history: dict  # metric name -> [(iteration, value)]


def lsgan(scores: torch.Tensor, real: bool) -> torch.Tensor:
    """Least-squares GAN loss: (D - 1)^2 for real, D^2 for fake (Mao et al., 2017)."""
    return F.mse_loss(scores.float(), torch.full_like(scores.float(), 1.0 if real else 0.0))


def generator_losses(G, Fy, DX, DY, x: torch.Tensor, y: torch.Tensor, with_identity: bool = True):
    """The generators' losses on one batch of young faces x and old faces y, and the fakes.

    adv_G / adv_F: G and F fooling D_Y and D_X; cycle: |F(G(x)) - x| + |G(F(y)) - y|;
    identity: |G(y) - y| + |F(x) - x| (a face already in the target group should stay as it is).
    """
    fake_y, fake_x = G(x), Fy(y)
    losses = {
        "adv_G": lsgan(DY(fake_y), True),
        "adv_F": lsgan(DX(fake_x), True),
        "cycle": F.l1_loss(Fy(fake_y).float(), x.float()) + F.l1_loss(G(fake_x).float(), y.float()),
        "identity": (F.l1_loss(G(y).float(), y.float()) + F.l1_loss(Fy(x).float(), x.float()) if with_identity
                     else torch.zeros((), device=x.device)),
    }
    return losses, fake_x, fake_y


def build_networks(cfg: CycleGANConfig, device: torch.device):
    from agestudy.models.cyclegan import Generator, PatchDiscriminator, init_weights

    nets = (Generator(cfg.width, cfg.blocks), Generator(cfg.width, cfg.blocks),
            PatchDiscriminator(cfg.disc_width, cfg.disc_layers), PatchDiscriminator(cfg.disc_width, cfg.disc_layers))
    for net in nets:
        init_weights(net)
        net.to(device=device, memory_format=torch.channels_last)
    return nets


def train_cyclegan(cfg: CycleGANConfig, young: torch.Tensor, old: torch.Tensor, device: torch.device,
                   log=None, on_epoch=None, progress: bool = True) -> CycleGANResult:
    """Train G: young -> old and F: old -> young on float images in [-1, 1] (already on ``device``).

    ``log(metrics, step)`` receives the mean losses about 200 times over the run;
    ``on_epoch(epoch, G, F)`` is called after each epoch (sample grids, checkpoints).
    """
    from tqdm.auto import tqdm

    torch.manual_seed(cfg.seed)
    G, Fy, DX, DY = build_networks(cfg, device)
    opt_g = torch.optim.Adam(itertools.chain(G.parameters(), Fy.parameters()), cfg.lr, betas=(cfg.beta1, 0.999))
    discriminator_params = [*DX.parameters(), *DY.parameters()]
    opt_d = torch.optim.Adam(discriminator_params, cfg.lr, betas=(cfg.beta1, 0.999))
    steps_per_epoch = max(1, max(len(young), len(old)) // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    decay_start = int(total * cfg.decay_from)

    def lr_factor(step: int) -> float:  # constant, then linear to 0 at the last step
        return 1.0 if step < decay_start else max(0.0, 1 - (step - decay_start) / max(1, total - decay_start))

    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lr_factor) for o in (opt_g, opt_d)]
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    streams = Stream(young, cfg.batch_size, gen), Stream(old, cfg.batch_size, gen)
    pools = ImagePool(cfg.pool_size, gen), ImagePool(cfg.pool_size, gen)  # fakes young (for DX), fakes old (DY)
    names = ("adv_G", "adv_F", "cycle", "identity", "D_X", "D_Y")
    sums = torch.zeros(len(names), device=device)
    log_every = max(1, total // 200)
    history: dict[str, list] = {}
    start = time.perf_counter()
    step = 0
    for epoch in range(cfg.epochs):
        G.train(), Fy.train(), DX.train(), DY.train()
        bar = tqdm(total=steps_per_epoch, desc=f"cyclegan epoch {epoch + 1}/{cfg.epochs}", unit="step",
                   disable=not progress, leave=False)
        for _ in range(steps_per_epoch):
            x = augment(streams[0].next(), gen).contiguous(memory_format=torch.channels_last)
            y = augment(streams[1].next(), gen).contiguous(memory_format=torch.channels_last)
            for p in discriminator_params:  # the generators' step needs no gradient for the discriminators
                p.requires_grad_(False)
            with devices.autocast(device, cfg.precision):
                losses, fake_x, fake_y = generator_losses(G, Fy, DX, DY, x, y, with_identity=cfg.lambda_identity > 0)
                loss_g = losses["adv_G"] + losses["adv_F"] + cfg.lambda_cycle * losses["cycle"] + \
                    cfg.lambda_identity * losses["identity"]
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            # discriminators: real against generated images drawn from the history buffers
            for p in discriminator_params:
                p.requires_grad_(True)
            with devices.autocast(device, cfg.precision):
                d_x = 0.5 * (lsgan(DX(x), True) + lsgan(DX(pools[0].query(fake_x)), False))
                d_y = 0.5 * (lsgan(DY(y), True) + lsgan(DY(pools[1].query(fake_y)), False))
            opt_d.zero_grad(set_to_none=True)
            (d_x + d_y).backward()
            opt_d.step()
            for s in schedulers:
                s.step()
            sums += torch.stack([*(losses[k] for k in names[:4]), d_x, d_y]).detach().float()
            step += 1
            bar.update(1)
            if step % log_every == 0 or step == total:
                n = step % log_every or log_every
                values = dict(zip(names, (sums / n).tolist()))  # the only host read: at logging points
                if not all(math.isfinite(v) for v in values.values()):
                    raise FloatingPointError(f"a CycleGAN loss became {values} at step {step}: "
                                             "lower --lr, or use --precision fp32")
                values = {cyclegan_metric(k): v for k, v in values.items()}
                values[cyclegan_metric("lr_factor")] = lr_factor(step)
                for key, value in values.items():
                    history.setdefault(key, []).append((step, value))
                if log is not None:
                    log(values, step)
                sums.zero_()
                bar.set_postfix(cycle=f"{values[cyclegan_metric('cycle')]:.3f}",
                                adv=f"{values[cyclegan_metric('adv_G')]:.3f}")
        bar.close()
        if on_epoch is not None:
            on_epoch(epoch + 1, G, Fy)
    G.eval(), Fy.eval()
    return CycleGANResult(G, Fy, cfg, step, time.perf_counter() - start, history)


def save_sample_grid(G, Fy, young: torch.Tensor, old: torch.Tensor, device, path: Path, title: str) -> Path:
    """Rows: young x, G(x), F(G(x)); old y, F(y), G(F(y)). The same faces in every grid of a run."""
    from agestudy.plots import image_rows

    aged = translate(G, young, device)
    old_rejuv = translate(Fy, old, device)
    rows = [(young, "young x", None), (aged, "G(x): aged", None), (translate(Fy, aged, device), "F(G(x))", None),
            (old, "old y", None), (old_rejuv, "F(y): rejuvenated", None),
            (translate(G, old_rejuv, device), "G(F(y))", None)]
    return image_rows(rows, path, title, cell=0.8, dpi=120)


def plot_losses(history: dict, path: Path, title: str) -> Path:
    from agestudy.plots import plt, save

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    panels = (("adversarial (least squares)", ("adv_G", "adv_F")), ("discriminators", ("D_X", "D_Y")),
              ("reconstruction (L1, [-1, 1] pixels)", ("cycle", "identity")))
    labels = {"adv_G": "G fools D_Y", "adv_F": "F fools D_X"}
    for ax, (name, keys) in zip(axes, panels):
        for key in keys:
            points = history.get(cyclegan_metric(key)) or []
            if points:
                ax.plot([s for s, _ in points], [v for _, v in points], lw=1.2, label=labels.get(key, key))
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save(fig, path, dpi=100)


def save_generators(result: CycleGANResult, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"G": {k: v.cpu() for k, v in result.G.state_dict().items()},
                "F": {k: v.cpu() for k, v in result.F.state_dict().items()},
                "config": asdict(result.cfg)}, path)
    return path


def load_generators(path, device: str | torch.device = "cpu"):
    """(G, F, config) from a saved ``generators.pt`` (plain tensors and numbers: weights_only=True)."""
    from agestudy.models.cyclegan import Generator

    state = torch.load(path, map_location="cpu", weights_only=True)
    cfg = CycleGANConfig(**state["config"])
    nets = []
    for key in ("G", "F"):
        net = Generator(cfg.width, cfg.blocks)
        net.load_state_dict(state[key])
        nets.append(net.to(device).eval())
    return nets[0], nets[1], cfg


# ----------------------------------------------------------------------------- tracked run

def find_judge(client, experiment_id: str, fingerprint: str, requested: str | None):
    """The classifier run that judges: ``--judge``, else the latest finished final run on the same
    data, else the latest finished agestudy.train run on the same data; None when there is none."""
    from agestudy.analyses import get_run

    if requested:
        return get_run(client, requested)
    for role in (ROLE_FINAL, ROLE_TRAIN):
        runs = find_runs(client, experiment_id, role=role, status="FINISHED", max_results=1,
                         extra={DATA_FINGERPRINT_TAG: fingerprint})
        if runs:
            return runs[0]
    return None


def run_cyclegan(cfg: CycleGANConfig, data, experiment_id: str, judge: str | None = None, use_judge: bool = True,
                 run_name: str | None = None, progress: bool = True) -> dict:
    """Train on ``data.train``, judge on ``data.test``, log everything to one MLflow run.

    Returns {"run_id", "judge_run_id", "judge": summary or None, "seconds"}. The run ends
    FINISHED, KILLED (interrupted: the generators so far are still logged) or FAILED.
    """
    import mlflow

    from agestudy.analyses import q11_cyclegan as judging
    from agestudy.tracking import MetricBuffer, environment_tags

    cfg.validate()
    device = devices.select_device(cfg.device)
    auto = [k for k in ("device", "precision") if getattr(cfg, k) == "auto"] + \
        [k for k in ("batch_size", "train_images", "epochs") if not getattr(cfg, k)]
    labels = data.train.labels
    young_u8, old_u8 = data.train.images[labels == 0], data.train.images[labels == 1]
    cfg = cfg.resolved(device, max(len(young_u8), len(old_u8)))
    say = (lambda text: print(text, file=sys.stderr)) if progress else (lambda text: None)
    client = mlflow.tracking.MlflowClient()
    judge_run = find_judge(client, experiment_id, data.fingerprint, judge) if use_judge else None
    if use_judge and judge_run is None:
        say("[cyclegan] no finished final or train run on these data in this store to judge with: training "
            "without the judge (pass --judge RUN_ID, or run python -m agestudy.tune first)")
    # the fixed faces of every sample grid: the first test faces of each group
    test_labels = data.test.labels
    shown_young = to_gan_input(data.test.images[test_labels == 0][: cfg.samples], cfg.size)
    shown_old = to_gan_input(data.test.images[test_labels == 1][: cfg.samples], cfg.size)
    young = to_gan_input(young_u8, cfg.size).to(device)
    old = to_gan_input(old_u8, cfg.size).to(device)
    grid_every = max(1, math.ceil(cfg.epochs / cfg.grids))
    description = (f"CycleGAN between the two age groups of {data.root}/train ({len(young_u8)} young, "
                   f"{len(old_u8)} old faces) at {cfg.size}x{cfg.size}, {cfg.epochs} epochs"
                   + (". " + SYNTHETIC_SENTENCE if data.synthetic else ""))
    tags = {ROLE_TAG: ROLE_CYCLEGAN, SYNTHETIC_TAG: str(data.synthetic).lower(), AUTO_TAG: ",".join(auto),
            DATA_FINGERPRINT_TAG: data.fingerprint, DESCRIPTION_TAG: description,
            **environment_tags(str(device), cfg.precision)}
    if judge_run is not None:
        tags[JUDGE_RUN_TAG] = judge_run.info.run_id
    if data.synthetic:
        tags[WARNING_TAG] = SYNTHETIC_WARNING
    start = time.perf_counter()
    run_name = run_name or f"cyclegan-{cfg.size}px"
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run, \
            tempfile.TemporaryDirectory(prefix="agestudy-cyclegan-") as tmp:
        run_id, out = run.info.run_id, Path(tmp)
        say(f"[cyclegan] run {run_id}: {len(young_u8)} young and {len(old_u8)} old training faces at {cfg.size}px, "
            f"{cfg.epochs} epochs of batch {cfg.batch_size} on {device} ({cfg.precision})")
        from agestudy.train import data_params

        mlflow.log_params({**asdict(cfg), **data_params(data)})
        buffer = MetricBuffer(run_id)
        latest = {}

        def on_epoch(epoch: int, G, Fy) -> None:
            latest.update(G=G, F=Fy, epoch=epoch)
            if epoch % grid_every == 0 or epoch == cfg.epochs:
                path = save_sample_grid(G, Fy, shown_young, shown_old, device,
                                        out / CYCLEGAN_SAMPLES_DIR / f"epoch_{epoch:03d}.png",
                                        f"run {run_id[:8]}, epoch {epoch}/{cfg.epochs}: the same test faces")
                client.log_artifact(run_id, str(path), CYCLEGAN_SAMPLES_DIR)
                G.train(), Fy.train()

        status = "FAILED"
        summary = None
        try:
            result = train_cyclegan(cfg, young, old, device, log=buffer.log, on_epoch=on_epoch, progress=progress)
            buffer.flush()
            save_generators(result, out / CYCLEGAN_WEIGHTS)
            plot_losses(result.history, out / CYCLEGAN_LOSS_PLOT, f"CycleGAN losses, run {run_id[:8]}")
            mlflow.log_metrics({TRAIN_SECONDS: result.train_seconds, TRAIN_ITERATIONS: result.iterations,
                                CYCLEGAN_PAIRS_PER_SECOND: result.iterations * cfg.batch_size / result.train_seconds},
                               step=SUMMARY_STEP)
            for artifact in (CYCLEGAN_WEIGHTS, CYCLEGAN_LOSS_PLOT):
                mlflow.log_artifact(str(out / artifact), str(Path(artifact).parent))
            if judge_run is not None:
                say(f"[cyclegan] judging with run {judge_run.info.run_id} on {len(data.test)} test faces")
                summary = judging.judge_and_log(client, run_id, judge_run, result.G, result.F, data.test, cfg.size,
                                                device, out / "judge")
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            if "G" in latest:  # nothing lost: the generators of the last finished epoch
                partial = CycleGANResult(latest["G"], latest["F"], cfg, 0, 0.0, {})
                saved = save_generators(partial, out / CYCLEGAN_WEIGHTS)
                mlflow.log_artifact(str(saved), str(Path(CYCLEGAN_WEIGHTS).parent))
                mlflow.set_tag(INTERRUPTED_TAG, str(latest["epoch"]))
            raise
        except Exception as err:
            mlflow.set_tag(ERROR_TAG, f"{type(err).__name__}: {err}"[:4000])
            raise
        finally:
            buffer.flush()
            mlflow.end_run(status=status)
    return {"run_id": run_id, "judge_run_id": judge_run.info.run_id if judge_run is not None else None,
            "judge": summary, "seconds": time.perf_counter() - start}


# ----------------------------------------------------------------------------- CLI

HELP = {
    "size": "side of the images the generators work at (multiple of 4, 32-100); the cost grows with its square",
    "width": "generator width: channels of its first layer (the residual blocks have 4x)",
    "blocks": "residual blocks in each generator",
    "disc_width": "discriminator width (channels of its first layer)",
    "disc_layers": "PatchGAN depth: 2 judges 34x34-pixel patches, 3 judges 70x70",
    "batch_size": "pairs (one young, one old face) per step; 0 = 8 on a CPU, 32 on a GPU",
    "train_images": f"faces of each group seen in training; 0 = {CPU_TRAIN_IMAGES:,} on a CPU, "
                    f"{GPU_TRAIN_IMAGES:,} on a GPU",
    "epochs": "passes over the larger group; 0 = as many as give --train-images",
    "lr": "Adam learning rate of all four networks",
    "beta1": "Adam's beta1 (the paper's 0.5)",
    "decay_from": "fraction of training after which the learning rate decays linearly to 0",
    "lambda_cycle": "weight of the cycle loss |F(G(x)) - x| + |G(F(y)) - y|",
    "lambda_identity": "weight of the identity loss |G(y) - y| + |F(x) - x| (0 = none)",
    "pool_size": "history buffer of generated images for the discriminators (0 = none)",
    "samples": "test faces of each group in the sample grids",
    "grids": "sample grids logged over the run",
    "seed": "random seed (initialisation, shuffles, augmentation)",
    "device": "auto (CUDA when there is a GPU), cpu or cuda",
    "precision": "auto (bf16 on a GPU or a CPU with native bf16, else fp32), fp32 or bf16",
}


def build_parser() -> argparse.ArgumentParser:
    defaults = CycleGANConfig()
    parser = argparse.ArgumentParser(
        prog="python -m agestudy.cyclegan",
        description="Question 11: train a CycleGAN between the two age groups of train/ (never test/): G ages "
                    "a young face (20-26 -> 52-62), F rejuvenates an old one. Then a trained age classifier "
                    "(--judge) scores real and translated test faces: how often p(old) rises from x to G(x) "
                    "and p(young) from y to F(y), how many faces change group, the cycle reconstruction "
                    "error and a Frechet distance on the judge's own features, all with 95 %% intervals. "
                    "Everything is one MLflow run (agestudy.role=cyclegan) that the report's section 11 shows.",
        formatter_class=HelpFormatter,
        epilog="Cost, measured at 64 pixels with the defaults: a 2-core CPU trains about 5 pairs a second in "
               "fp32 and 7-8 with native bf16, so the CPU default (6,000 faces of each group) takes 15-20 "
               "minutes whatever the data size; on a GPU the default is 200,000 (about 10 passes over "
               "CACD's 20,000 faces a group). Example:\n"
               "  python -m agestudy.cyclegan --data ROOT --judge RUN_ID",
    )
    io = parser.add_argument_group("data, judge and tracking")
    io.add_argument("--data", help="folder with train/{0,1} and test/{0,1}; default: $AGESTUDY_DATA, ./data, "
                                   "or the built-in SYNTHETIC demo data")
    io.add_argument("--judge", metavar="RUN_ID", help="MLflow run of the classifier that judges (default: the "
                                                      "latest finished final run on the same data, else the "
                                                      "latest agestudy.train run on them)")
    io.add_argument("--no-judge", action="store_true", help="train and log the generators only")
    io.add_argument("--cache-dir", help="where decoded arrays are cached (default ~/.cache/agestudy)")
    io.add_argument("--tracking-uri", help="MLflow store (default: sqlite:///mlruns/mlflow.db, or "
                                           "$MLFLOW_TRACKING_URI)")
    io.add_argument("--experiment", default="agestudy", help="MLflow experiment name")
    io.add_argument("--run-name", help="MLflow run name (default cyclegan-<size>px)")
    io.add_argument("--quiet", action="store_true", help="no progress bars")
    hp = parser.add_argument_group("networks and training (all logged as MLflow params)")
    for name, value in asdict(defaults).items():
        flag = "--" + name.replace("_", "-")
        hp.add_argument(flag, type=type(value), default=value, help=HELP[name])
    return parser


@cli_entry
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cfg = CycleGANConfig(**{name: getattr(args, name) for name in asdict(CycleGANConfig())})
    cfg.validate()
    if args.judge and args.no_judge:
        raise UserError("--judge and --no-judge contradict each other")
    devices.configure_threads()
    from agestudy.data import load_data, resolve_data_root
    from agestudy.tracking import setup_tracking, shown_store

    experiment_id = setup_tracking(args.tracking_uri, args.experiment)  # a wrong store fails before the data
    root = resolve_data_root(args.data, args.cache_dir)
    data = load_data(root, args.cache_dir, progress=not args.quiet)
    out = run_cyclegan(cfg, data, experiment_id, judge=args.judge, use_judge=not args.no_judge, run_name=args.run_name,
                       progress=not args.quiet)
    print(f"run {out['run_id']} ({shown_store(args.tracking_uri)}), {out['seconds'] / 60:.1f} min")
    summary = out["judge"]
    if summary:
        print(f"judge {out['judge_run_id']}: p(aged 52-62) rises from x to G(x) for "
              f"{summary['young']['rise_fraction']:.1%} of {summary['young']['n']} young test faces, "
              f"p(aged 20-26) from y to F(y) for {summary['old']['rise_fraction']:.1%} of {summary['old']['n']} old "
              f"ones; groups flipped {summary['young']['flip_fraction']:.1%} / {summary['old']['flip_fraction']:.1%}; "
              f"cycle L1 {summary['young']['cycle_l1']:.3f} / {summary['old']['cycle_l1']:.3f}")
    if data.synthetic:
        print("*** trained on SYNTHETIC demo data: these numbers say nothing about real faces ***")
    return 0


if __name__ == "__main__":
    sys.exit(main())
