"""The training engine: one readable step loop, the same on a GPU and on a CPU.

    trainer = setup_training(cfg, train)          # model, optimiser, data on the device
    for step in range(trainer.total_steps):
        x, y = next_batch(trainer, step)          # gather + augment, on the device
        stats = train_step(trainer, x, y)         # forward, backward, update: no host sync
    ...                                           # fit() adds logging, validation and pruning

Why it is fast: the decoded uint8 images move to the training device once; each batch is
gathered and augmented there, batched, with per-sample randomness; an ensemble's members
are one grouped network (``models/members.py``), so N members cost one forward and one
backward; the step never waits for the host (loss and accuracy stay on the device until
a logging point reads them); the precision comes from the hardware (``device.py``).
``bench.py`` times exactly these functions.
"""

from __future__ import annotations

import copy
import math
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

from agestudy import device as devices
from agestudy.config import TrainConfig
from agestudy.data import AugmentConfig, ImageSet, augment_batch
from agestudy.errors import UserError
from agestudy.models import create_model
from agestudy.predict import evaluation_view, predict_proba
from agestudy.runs import TEACHER_PREFIX, TRAIN_ACC, TRAIN_LEARNING_RATE, TRAIN_LOSS, VAL_ACC, VAL_AUC, VAL_LOSS

# An fp16 step skipped by the gradient scaler makes the scheduler warn that it stepped before the
# optimiser; that is the scaler doing its job.
warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before", category=UserWarning)


# ----------------------------------------------------------------------------- set-up

class WeightAverage:
    """Exponential moving average of the weights (BatchNorm statistics too), with a decay that
    ramps up from 0 so the random initial weights are forgotten within a few dozen steps."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.module = copy.deepcopy(model).eval()
        self.decay, self.updates = decay, 0
        pairs = list(zip(self.module.state_dict().values(), model.state_dict().values()))
        self._floats = [(a, c) for a, c in pairs if a.is_floating_point()]
        self._others = [(a, c) for a, c in pairs if not a.is_floating_point()]  # e.g. BatchNorm's batch counter

    @torch.no_grad()
    def update(self) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        self.updates += 1
        torch._foreach_lerp_([a for a, _ in self._floats], [c for _, c in self._floats], 1 - d)
        for a, c in self._others:
            a.copy_(c)


@dataclass
class Trainer:
    """Everything one training run holds; built by ``setup_training``."""

    cfg: TrainConfig  # resolved: no "auto" left
    device: torch.device
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    average: WeightAverage | None
    images: torch.Tensor  # N x 3 x 100 x 100 uint8, on the device
    labels: torch.Tensor  # N int64, on the device
    generator: torch.Generator  # on the device: shuffles and augmentations
    steps_per_epoch: int
    total_steps: int
    augment: AugmentConfig
    member_logits: Callable[[torch.Tensor], torch.Tensor]  # the model's, or its compiled version
    mixup_rng: np.random.Generator | None = None
    teacher: torch.nn.Module | None = None  # --distill: the trained teacher ensemble, in eval mode
    orders: torch.Tensor | None = field(default=None, repr=False)  # members x N: this epoch's shuffles

    # the resolved configuration is the one home of these; the properties only shorten the loop
    @property
    def precision(self) -> str:
        return self.cfg.precision

    @property
    def batch_size(self) -> int:  # per member
        return self.cfg.batch_size

    @property
    def epochs(self) -> int:
        return self.cfg.epochs

    @property
    def members(self) -> int:
        return getattr(self.model, "members", 1)

    @property
    def kept(self) -> torch.nn.Module:
        """The model that is validated and saved: the weight average when there is one."""
        return self.average.module if self.average is not None else self.model


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    # no weight decay on biases and BatchNorm parameters: decaying them only hurts
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=True)
    # fused: one kernel for the whole update instead of a dozen elementwise passes
    return torch.optim.AdamW(groups, lr=lr, fused=True)


def make_scheduler(optimizer, total_steps: int, warmup_steps: int):
    """Linear warm-up, then cosine decay to zero, stepped every iteration."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def setup_training(cfg: TrainConfig, train: ImageSet, device: torch.device | None = None,
                   teacher: torch.nn.Module | None = None) -> Trainer:
    """A fresh model, its optimiser and schedule, and the training images on the device (and the
    teacher whose probabilities it learns, with --distill)."""
    device = device or devices.select_device(cfg.device)
    cfg = cfg.resolved(device, len(train))
    if len(train) < cfg.batch_size:
        raise UserError(f"only {len(train)} training images for batch size {cfg.batch_size}: lower --batch-size")
    torch.manual_seed(cfg.seed)
    model = devices.prepare_model(create_model(cfg.model, **cfg.model_kwargs()), device)
    model.train()
    optimizer = make_optimizer(model, cfg, cfg.lr)
    steps_per_epoch = len(train) // cfg.batch_size  # drop the ragged last batch: BatchNorm dislikes tiny ones
    total_steps = steps_per_epoch * cfg.epochs
    scheduler = make_scheduler(optimizer, total_steps, int(cfg.warmup_epochs * steps_per_epoch))
    # fp16 has a narrow range: scale the loss so small gradients do not underflow to zero
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    member_logits = model.member_logits
    if cfg.compile:
        member_logits = devices.compiled(model.member_logits)
    return Trainer(
        cfg=cfg, device=device, model=model, optimizer=optimizer, scheduler=scheduler,
        scaler=scaler, average=WeightAverage(model, cfg.ema) if cfg.ema else None,
        images=train.images.to(device), labels=train.labels.to(device),
        generator=torch.Generator(device=device).manual_seed(cfg.seed),
        steps_per_epoch=steps_per_epoch, total_steps=total_steps,
        augment=cfg.augment(), member_logits=member_logits,
        mixup_rng=np.random.default_rng(cfg.seed) if cfg.mixup > 0 or cfg.cutmix > 0 else None,
        teacher=teacher.to(device).eval().requires_grad_(False) if teacher is not None else None,
    )


# ----------------------------------------------------------------------------- the step

def next_batch(t: Trainer, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch ``step``: each member its own images (its own shuffle, reshuffled every epoch) and its
    own augmentations -> ((M*B) x 3 x crop x crop inputs, member-major; B x M labels), on the device."""
    b, m = t.batch_size, t.members
    position = step % t.steps_per_epoch
    if position == 0 or t.orders is None:
        n = len(t.labels)
        t.orders = torch.stack([torch.randperm(n, generator=t.generator, device=t.device) for _ in range(m)])
    idx = t.orders[:, position * b : (position + 1) * b]  # M x B
    # index_select, not images[idx]: the same rows, about 4x faster on a CPU (one copy a row)
    x = augment_batch(t.images.index_select(0, idx.reshape(-1)), t.augment, t.generator)  # (M*B) x 3 x crop x crop
    return x.contiguous(memory_format=torch.channels_last), t.labels[idx].T  # labels: B x M


def mixup_partners(b: int, m: int, generator: torch.Generator, device) -> torch.Tensor:
    """For each of m members, a random partner (0 .. b-1) for each of its b images: M x B."""
    return torch.stack([torch.randperm(b, generator=generator, device=device) for _ in range(m)])


def paste_box(x: torch.Tensor, partner_rows: torch.Tensor, lam: float,
              rng: np.random.Generator) -> tuple[torch.Tensor, float]:
    """CutMix (Yun et al. 2019): a box of about 1 - lam of the image, at a random place (the same for
    the whole batch), copied into image i from image ``partner_rows[i]`` of the batch; returns the
    images and the share of each image that is still its own (the box is clipped at the borders)."""
    h, w = x.shape[-2:]
    side = np.sqrt(1 - lam)
    cy, cx = rng.integers(h), rng.integers(w)
    y0, y1 = np.clip([cy - int(h * side) // 2, cy + int(h * side) // 2], 0, h)
    x0, x1 = np.clip([cx - int(w * side) // 2, cx + int(w * side) // 2], 0, w)
    pasted = x.clone()
    pasted[..., y0:y1, x0:x1] = x[partner_rows, :, y0:y1, x0:x1]  # gathers the boxes only, not whole images
    return pasted, 1 - float((y1 - y0) * (x1 - x0)) / (h * w)


def sharpness_aware_gradient(t: Trainer, loss_and_logits: Callable[[], tuple[torch.Tensor, torch.Tensor]]) -> None:
    """SAM (Foret et al. 2021): replace the gradient in the parameters' .grad by the gradient at the
    worst nearby weights, w + rho * g / ||g||, then return to w (the optimiser updates w with it).
    Each member has its own norm and radius (its slice of every packed tensor), so an ensemble's
    members are perturbed as if each trained alone."""
    m = t.members
    params = [p for p in t.model.parameters() if p.grad is not None]
    # each packed tensor holds the members' slices one after the other along dim 0 (models/members.py)
    norms = torch.stack([torch.linalg.vector_norm(p.grad.float().unflatten(0, (m, -1)), dim=tuple(range(1, p.ndim + 1)))
                         for p in params]).norm(dim=0)  # per member
    # with fp16 the gradient may be inf (the scaler then skips the step): no perturbation then
    scale = torch.where(torch.isfinite(norms), t.cfg.sam / (norms + 1e-12), 0.0)
    steps = []
    for p in params:
        member_scale = scale.repeat_interleave(p.shape[0] // m).view(-1, *[1] * (p.ndim - 1)).to(p.dtype)
        steps.append(torch.nan_to_num(p.grad * member_scale, nan=0.0, posinf=0.0, neginf=0.0))
    # BatchNorm's running statistics: kept as the first pass left them (the perturbed pass updates them
    # too, in the packed buffers, on every path)
    buffers = list(t.model.buffers())
    kept = [b.clone() for b in buffers]
    with torch.no_grad():
        torch._foreach_add_(params, steps)
    try:
        t.optimizer.zero_grad(set_to_none=True)
        t.scaler.scale(loss_and_logits()[0]).backward()
    finally:
        with torch.no_grad():
            for b, value in zip(buffers, kept):
                b.copy_(value)
            torch._foreach_sub_(params, steps)


def train_step(t: Trainer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One optimiser step on a batch from ``next_batch``; returns [mean member loss, accuracy] on the
    device (reading it would wait for the device: only logging points do)."""
    cfg, m = t.cfg, t.members
    mixing = cfg.mixup > 0 or cfg.cutmix > 0
    if mixing:
        # mixup: train on blends of two images with the same blend of their labels; cutmix: on an
        # image with a box pasted from another, labels in proportion to the areas. Each member mixes
        # its own images with each other (its own pairs), never with another member's. With both
        # on, each step takes one of the two at random (as timm does).
        cut = cfg.cutmix > 0 and (cfg.mixup == 0 or t.mixup_rng.random() < 0.5)
        alpha = cfg.cutmix if cut else cfg.mixup
        lam = float(t.mixup_rng.beta(alpha, alpha))
        partner = mixup_partners(y.shape[0], m, t.generator, t.device)  # M x B, within each member
        rows = partner + torch.arange(m, device=t.device)[:, None] * y.shape[0]  # their rows of x (member-major)
        if cut:
            x, lam = paste_box(x, rows.reshape(-1), lam, t.mixup_rng)
        else:
            x = torch.lerp(x, x[rows.reshape(-1)], 1 - lam)  # lam * x + (1 - lam) * partner, in one pass
    targets = None
    if t.teacher is not None:
        # distillation: the targets are the teacher's probabilities for exactly these inputs, mixed and
        # augmented as the student sees them ("consistent teaching", Beyer et al. 2022)
        with torch.no_grad(), devices.autocast(t.device, t.precision):
            teacher_logits = t.teacher(x)  # (M*B) x 2, member-major like x
        classes = teacher_logits.shape[-1]
        targets = teacher_logits.float().softmax(-1).view(m, -1, classes).transpose(0, 1).reshape(-1, classes)

    def loss_and_logits() -> tuple[torch.Tensor, torch.Tensor]:
        with devices.autocast(t.device, t.precision):
            logits = t.member_logits(x)  # B x M x 2
        logits = logits.float().reshape(-1, logits.shape[-1])

        def member_loss(target: torch.Tensor) -> torch.Tensor:
            # mean over images, summed over members: each member gets exactly its own gradient
            return F.cross_entropy(logits, target.reshape(-1), label_smoothing=cfg.label_smoothing) * m

        if targets is not None:
            return F.cross_entropy(logits, targets) * m, logits
        loss = member_loss(y)
        if mixing:
            loss = lam * loss + (1 - lam) * member_loss(y.gather(0, partner.T))  # B x M: each member's partners' labels
        return loss, logits

    t.optimizer.zero_grad(set_to_none=True)
    loss, logits = loss_and_logits()
    t.scaler.scale(loss).backward()
    if cfg.sam > 0:
        sharpness_aware_gradient(t, loss_and_logits)
    if cfg.grad_clip > 0:
        t.scaler.unscale_(t.optimizer)  # clip the true gradients, not the scaled ones
        torch.nn.utils.clip_grad_norm_(t.model.parameters(), cfg.grad_clip)
    t.scaler.step(t.optimizer)  # with fp16: skipped when a gradient is inf or nan
    t.scaler.update()
    t.scheduler.step()
    if t.average is not None:
        t.average.update()
    correct = (logits.argmax(1) == y.reshape(-1)).float().mean()
    return torch.stack([loss.detach() / m, correct])


# ----------------------------------------------------------------------------- evaluation

def evaluate(model, images: torch.Tensor, labels: torch.Tensor, cfg: AugmentConfig, device,
             precision: str, view: str | None = None) -> dict[str, float]:
    """Cross-entropy loss, accuracy and ROC AUC of a split (labels on the CPU), through ``view``
    (agestudy.predict's views; None: the run's own evaluation view)."""
    p1 = predict_proba(model, images, view or evaluation_view(cfg), cfg, device, precision, batch_size=512)
    p1 = p1.clamp(1e-7, 1 - 1e-7)
    loss = -torch.where(labels == 1, p1.log(), (1 - p1).log()).mean().item()
    acc = ((p1 >= 0.5).long() == labels).double().mean().item()
    auc = float(roc_auc_score(labels.numpy(), p1.numpy())) if len(labels.unique()) == 2 else float("nan")
    return {"loss": loss, "acc": acc, "auc": auc}


# ----------------------------------------------------------------------------- the loop

@dataclass
class FitResult:
    model: torch.nn.Module
    history: dict[str, list[tuple[int, float]]]
    best_val_acc: float
    final_val_acc: float
    final_val_auc: float
    iterations: int
    train_seconds: float  # with --distill, the teacher's included
    images_per_second: float  # images per second through each member (batch size x steps / training time)
    first_75: tuple[int, float] | None  # (iteration, seconds) when validation accuracy first reached 75 %
    precision: str  # fp32 / bf16 / fp16, as chosen for this run
    stopped: bool = False  # on_validation asked to stop (a pruned trial)


def as_teacher(metrics: dict) -> dict:
    """The teacher's metrics (or curves) under their names in the student's run."""
    return {TEACHER_PREFIX + name: value for name, value in metrics.items()}


def fit(cfg: TrainConfig, train: ImageSet, val: ImageSet | None, log: Callable[[dict, int], None],
        on_validation: Callable[[int, int, dict], bool] | None = None, progress: bool = True) -> FitResult:
    """Train a fresh model; validate ``evals_per_epoch`` times per epoch.

    ``log(metrics, step)`` receives every curve point; ``on_validation(step, epoch, {"acc", "auc",
    "loss"})`` returns True to stop training early (Optuna pruning).
    """
    teacher = None
    if cfg.distill:
        # the teacher: an ensemble of cfg.distill networks with the same settings, on the same images;
        # its curves are logged under TEACHER_PREFIX (and pass by on_validation: it is never pruned)
        teacher_cfg = replace(cfg, members=cfg.distill, distill=0)
        if progress:
            print(f"[distill] the teacher first: an ensemble of {cfg.distill} networks", file=sys.stderr)
        teacher = fit(teacher_cfg, train, val, lambda metrics, step: log(as_teacher(metrics), step),
                      progress=progress)
        if progress:
            score = f" (teacher {VAL_ACC} {teacher.final_val_acc:.4f})" if val is not None and len(val) else ""
            print(f"[distill] then the model, on the teacher's probabilities{score}", file=sys.stderr)
    t = setup_training(cfg, train, teacher=teacher.model if teacher else None)
    val_images = val.images.to(t.device) if val is not None and len(val) else None
    eval_steps = {e * t.steps_per_epoch + round(t.steps_per_epoch * (k + 1) / cfg.evals_per_epoch)
                  for e in range(t.epochs) for k in range(cfg.evals_per_epoch)}
    stats = torch.zeros(t.total_steps, 2, device=t.device)  # per step: loss, accuracy (read in chunks)
    history: dict[str, list[tuple[int, float]]] = {}
    state = {"best": 0.0, "last": float("nan"), "last_auc": float("nan"), "first_75": None, "read": 0}
    start = time.perf_counter()
    eval_seconds = 0.0

    def record(metrics: dict, step: int):
        for k, v in metrics.items():
            history.setdefault(k, []).append((step, float(v)))
        log(metrics, step)

    def read_training_curve(upto: int):
        """Curve points (mean over each window of log_every steps) up to step ``upto``: the only place
        training statistics leave the device."""
        first = state["read"]
        values = stats[first:upto].cpu().numpy()
        losses = values[:, 0]
        # fp16 may skip a step on overflow (the scaler does); anything else is a real divergence
        if len(losses) and (not np.isfinite(losses).any() or (t.precision != "fp16" and not np.isfinite(losses).all())):
            raise FloatingPointError(f"training loss became {losses[~np.isfinite(losses)][0]} before iteration {upto}")
        ends = [s for s in range(first + 1, upto + 1) if s % cfg.log_every == 0 or s == t.total_steps]
        if not ends:
            return
        lo = first
        for end in ends:
            window = values[lo - first : end - first]
            finite = window[np.isfinite(window[:, 0])]
            lr = t.scheduler.base_lrs[0] * t.scheduler.lr_lambdas[0](end - 1)  # the rate of step `end`
            record({TRAIN_LOSS: finite[:, 0].mean(), TRAIN_ACC: finite[:, 1].mean(), TRAIN_LEARNING_RATE: lr}, end)
            lo = end
        state["read"] = ends[-1]
        if bar is not None:
            elapsed = time.perf_counter() - start - eval_seconds
            bar.set_postfix(loss=f"{finite[:, 0].mean():.3f}", acc=f"{finite[:, 1].mean():.3f}",
                            val=f"{state['last']:.3f}", ips=f"{ends[-1] * t.batch_size / elapsed:.0f}")

    bar = None
    stopped = False
    step = 0
    for step in range(1, t.total_steps + 1):
        epoch = (step - 1) // t.steps_per_epoch
        if (step - 1) % t.steps_per_epoch == 0:
            if bar is not None:
                bar.close()
            bar = tqdm(total=t.steps_per_epoch * t.batch_size, desc=f"epoch {epoch + 1}/{t.epochs}", unit="img",
                       disable=not progress, leave=False, dynamic_ncols=True)
        x, y = next_batch(t, step - 1)
        stats[step - 1] = train_step(t, x, y)
        bar.update(t.batch_size)
        if step in eval_steps or step == t.total_steps:
            read_training_curve(step)
        if step in eval_steps and val_images is not None:
            t0 = time.perf_counter()
            scores = evaluate(t.kept, val_images, val.labels, t.augment, t.device, t.precision)
            eval_seconds += time.perf_counter() - t0
            state["last"], state["last_auc"] = scores["acc"], scores["auc"]
            state["best"] = max(state["best"], scores["acc"])
            if state["first_75"] is None and scores["acc"] >= 0.75:
                state["first_75"] = (step, time.perf_counter() - start)
            record({VAL_LOSS: scores["loss"], VAL_ACC: scores["acc"], VAL_AUC: scores["auc"]}, step)
            if on_validation is not None and on_validation(step, epoch, scores):
                stopped = True
                read_training_curve(step)
                break
        if progress and step % t.steps_per_epoch == 0 and val_images is not None:
            print(f"epoch {epoch + 1}/{t.epochs}: {VAL_ACC} {state['last']:.4f}", file=sys.stderr)
    if bar is not None:
        bar.close()
    if t.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    train_seconds = seconds - eval_seconds
    if teacher is not None:
        history.update(as_teacher(teacher.history))
        seconds += teacher.train_seconds
    return FitResult(
        model=t.kept.eval(), history=history, best_val_acc=state["best"], final_val_acc=state["last"],
        final_val_auc=state["last_auc"], iterations=step,
        train_seconds=seconds, images_per_second=step * t.batch_size / max(train_seconds, 1e-9),
        first_75=state["first_75"], precision=t.precision, stopped=stopped,
    )
