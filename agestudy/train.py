"""Train one model on the lab's data and track everything in MLflow.

    python -m agestudy.train --data path/to/cacd --epochs 30

Pipeline, top to bottom: load_data (decoded once, cached) -> carve a validation split
from train/ -> train_one_epoch with batched tensor augmentation, validating several
times per epoch -> measure the final model once on test/ -> log metrics, figures,
per-image predictions and the weights to one MLflow run.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

from agestudy import device as devices
from agestudy.data import AugmentConfig, ImageSet, LabData, augment_batch, eval_batch, load_data, resolve_data_root
from agestudy.data.augment import save_augmentation_grid
from agestudy.errors import UserError, cli_entry
from agestudy.models import MODELS, Ensemble, count_parameters, create_model, model_knobs


@dataclass
class TrainConfig:
    """Everything that defines a training run; logged as MLflow params. Plain data."""

    model: str = "efficient"
    width: int = 16  # efficient: channels of the first stage
    depth: int = 1  # efficient: residual blocks per stage
    dropout: float = 0.2
    members: int = 3  # > 1: an ensemble of that many networks, each with its own init, shuffle and augmentation
    stem_stride: int = 2  # efficient: 4 shrinks the image 4x before the first stage, 2 keeps more detail
    hidden: int = 256  # baseline: units of the hidden linear layer
    epochs: int = 60
    batch_size: int = 64
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 2e-3
    weight_decay: float = 0.05
    momentum: float = 0.9  # sgd only
    label_smoothing: float = 0.1
    warmup_epochs: float = 1.0
    ema: float = 0.0  # decay of an exponential moving average of the weights (e.g. 0.998); 0 = off
    mixup: float = 0.0  # alpha of mixup's Beta(alpha, alpha) mixing weight; 0 = off
    crop: int = 88
    padding: int = 4
    flip: bool = True
    jitter: float = 0.1
    random_crop: bool = True
    scale: float = 0.0  # random zoom range (e.g. 0.1 = +-10 %), 0 = off
    rotate: float = 0.0  # random rotation range in degrees, 0 = off
    eval_flip: bool = True  # test-time: average the prediction of the centre crop and of its mirror
    val_fraction: float = 0.1
    evals_per_epoch: int = 4
    log_every: int = 10  # iterations between training-loss points
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # auto | fp32 | bf16 | fp16

    def augment(self) -> AugmentConfig:
        return AugmentConfig(crop=self.crop, padding=self.padding, flip=self.flip, jitter=self.jitter,
                             random_crop=self.random_crop, scale=self.scale, rotate=self.rotate,
                             eval_flip=self.eval_flip)

    def model_kwargs(self) -> dict:
        knobs = {"width": self.width, "depth": self.depth, "dropout": self.dropout, "hidden": self.hidden,
                 "crop": self.crop, "stem_stride": self.stem_stride, "members": self.members}
        return {k: v for k, v in knobs.items() if k in model_knobs(self.model)}

    def validate(self) -> None:
        if self.model not in MODELS:
            raise UserError(f"unknown model {self.model!r}; choose one of: {', '.join(MODELS)}")
        if self.optimizer not in ("adamw", "sgd"):
            raise UserError(f"unknown optimizer {self.optimizer!r}: use adamw or sgd")
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 2, "batch size must be >= 2"),
            (self.lr > 0, "learning rate must be > 0"),
            (self.weight_decay >= 0, "weight decay must be >= 0"),
            (0 <= self.dropout < 1, "dropout must be in [0, 1)"),
            (0 <= self.label_smoothing < 1, "label smoothing must be in [0, 1)"),
            (16 <= self.crop <= 100, "crop must be between 16 and 100 pixels"),
            (self.padding >= 0, "padding must be >= 0"),
            (0 <= self.jitter < 1, "jitter must be in [0, 1)"),
            (0 <= self.scale < 0.5, "scale (zoom range) must be in [0, 0.5)"),
            (0 <= self.rotate <= 45, "rotate must be between 0 and 45 degrees"),
            (self.stem_stride in (2, 4), "stem stride must be 2 or 4"),
            (1 <= self.members <= 16, "members must be between 1 and 16"),
            (0 <= self.val_fraction < 1, "validation fraction must be in [0, 1)"),
            (self.evals_per_epoch >= 1, "evals per epoch must be >= 1"),
            (0 <= self.ema < 1, "ema decay must be in [0, 1)"),
            (self.mixup >= 0, "mixup alpha must be >= 0"),
            (self.width >= 4 and self.depth >= 0, "width must be >= 4 and depth >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)


@dataclass
class FitResult:
    model: torch.nn.Module
    history: dict[str, list[tuple[int, float]]]
    best_val_acc: float
    final_val_acc: float
    final_val_auc: float
    iterations: int
    train_seconds: float
    images_per_second: float
    first_75: tuple[int, float] | None  # (iteration, seconds) when validation accuracy first reached 75 %
    precision: str  # fp32 / bf16 / fp16, as chosen for this run


# ----------------------------------------------------------------------------- evaluation

@torch.no_grad()
def predict_proba(model, images: torch.Tensor, cfg: AugmentConfig, device, precision: str = "fp32",
                  batch_size: int = 256) -> torch.Tensor:
    """P(label 1) for each uint8 image, from the centre crop (averaged with its mirror if ``cfg.eval_flip``)."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = eval_batch(images[start : start + batch_size], cfg).to(device).contiguous(memory_format=torch.channels_last)
        with devices.autocast(device, precision):
            p1 = torch.softmax(model(x).float(), dim=1)[:, 1]
            if cfg.eval_flip:
                p1 = (p1 + torch.softmax(model(x.flip(-1)).float(), dim=1)[:, 1]) / 2
        out.append(p1.cpu())
    return torch.cat(out) if out else torch.empty(0)


def evaluate(model, subset: ImageSet, cfg: AugmentConfig, device, precision: str) -> dict[str, float]:
    """Cross-entropy loss, accuracy and ROC AUC on a split (centre crop)."""
    p1 = predict_proba(model, subset.images, cfg, device, precision).double().clamp(1e-7, 1 - 1e-7)
    labels = subset.labels
    loss = -torch.where(labels == 1, p1.log(), (1 - p1).log()).mean().item()
    acc = ((p1 >= 0.5).long() == labels).double().mean().item()
    auc = float(roc_auc_score(labels.numpy(), p1.numpy())) if len(labels.unique()) == 2 else float("nan")
    return {"loss": loss, "acc": acc, "auc": auc}


# ----------------------------------------------------------------------------- training

def make_optimizer(model, cfg: TrainConfig):
    # no weight decay on biases and BatchNorm parameters: decaying them only hurts
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    # fused: one kernel for the whole update instead of a dozen elementwise passes (~4 % of a CPU step)
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=True)


def ema_update(decay: float):
    """EMA of the weights whose decay ramps up from 0: the random initial weights are forgotten
    within a few dozen steps instead of lingering for ~1/(1-decay) steps."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged) -> None:
        n = int(num_averaged)
        d = min(decay, (1 + n) / (10 + n))
        floats = [(a, c) for a, c in zip(averaged, current) if a.is_floating_point()]
        if floats:
            torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], 1 - d)
        for a, c in zip(averaged, current):
            if not a.is_floating_point():  # e.g. BatchNorm's batch counter
                a.copy_(c)

    return update


def make_scheduler(optimizer, total_steps: int, warmup_steps: int):
    """Linear warm-up, then cosine decay to zero, stepped every iteration."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_one_epoch(model, optimizer, scheduler, train: ImageSet, cfg: TrainConfig, device, precision: str,
                    generator: torch.Generator, step: int, on_step: Callable[[int, float, float], None],
                    bar=None) -> int:
    """One pass over the shuffled training images; returns the global iteration count.

    An ensemble's members each see their own shuffle and their own augmentations: on real faces
    a pair fed the same batches gained nothing over one network, while averaging two separately
    trained runs gained about 0.9 point of test accuracy.
    """
    model.train()
    augment = cfg.augment()
    networks = list(model.members) if isinstance(model, Ensemble) else [model]
    orders = [torch.randperm(len(train), generator=generator) for _ in networks]
    n_batches = len(train) // cfg.batch_size  # drop the ragged last batch: BatchNorm dislikes tiny ones
    for b in range(n_batches):
        loss, correct = 0.0, 0.0
        for network, order in zip(networks, orders):
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            member_loss, member_correct = member_step(network, train, idx, augment, cfg, device, precision,
                                                      generator)
            loss = loss + member_loss  # members' weights are disjoint: each gets exactly its own gradient
            correct += member_correct
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss.item()} at iteration {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        step += 1
        # the curve shows the mean member loss and accuracy on the members' own batches
        on_step(step, loss.item() / len(networks), correct / (len(networks) * cfg.batch_size))
        if bar is not None:
            bar.update(cfg.batch_size)
    return step


def member_step(network, train: ImageSet, idx: torch.Tensor, augment: AugmentConfig, cfg: TrainConfig, device,
                precision: str, generator: torch.Generator) -> tuple[torch.Tensor, float]:
    """Forward one network on one augmented batch: (loss to back-propagate, number of correct predictions)."""
    x = augment_batch(train.images[idx], augment, generator).to(device, non_blocking=True)
    x = x.contiguous(memory_format=torch.channels_last)
    y = train.labels[idx].to(device, non_blocking=True)
    if cfg.mixup > 0:
        # mixup: train on blends of two images with the same blend of their labels
        lam = float(np.random.default_rng(int(torch.randint(2**31, (1,), generator=generator))).beta(
            cfg.mixup, cfg.mixup))
        partner = torch.randperm(len(idx), generator=generator).to(device)
        x = lam * x + (1 - lam) * x[partner]
    with devices.autocast(device, precision):
        logits = network(x)
    logits = logits.float()
    loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
    if cfg.mixup > 0:
        loss = lam * loss + (1 - lam) * F.cross_entropy(logits, y[partner], label_smoothing=cfg.label_smoothing)
    return loss, float((logits.argmax(1) == y).sum())


def fit(cfg: TrainConfig, train: ImageSet, val: ImageSet | None, log: Callable[[dict, int], None],
        on_validation: Callable[[int, int, float], None] | None = None, progress: bool = True) -> FitResult:
    """Train a fresh model; validate ``evals_per_epoch`` times per epoch.

    ``log(metrics, step)`` receives every curve point; ``on_validation(step, epoch, {"acc", "auc", "loss"})``
    may raise to stop early (Optuna pruning).
    """
    device = devices.select_device(cfg.device)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    model = devices.prepare_model(create_model(cfg.model, **cfg.model_kwargs()), device)
    # The averaged weights (BatchNorm statistics too) are smoother than the last step's:
    # they are what we validate and keep.
    ema = (torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=ema_update(cfg.ema), use_buffers=True)
           if cfg.ema else None)
    kept = ema.module if ema is not None else model
    precision = devices.choose_precision(model, device, cfg.crop, cfg.batch_size, cfg.precision)
    if len(train) < cfg.batch_size:
        raise UserError(f"only {len(train)} training images for batch size {cfg.batch_size}: lower --batch-size")
    optimizer = make_optimizer(model, cfg)
    steps_per_epoch = len(train) // cfg.batch_size
    total_steps = steps_per_epoch * cfg.epochs
    scheduler = make_scheduler(optimizer, total_steps, int(cfg.warmup_epochs * steps_per_epoch))
    eval_points = {round(steps_per_epoch * (k + 1) / cfg.evals_per_epoch) for k in range(cfg.evals_per_epoch)}
    augment = cfg.augment()

    history: dict[str, list[tuple[int, float]]] = {}
    running = {"loss": 0.0, "acc": 0.0, "n": 0}
    state = {"best": 0.0, "last": float("nan"), "last_auc": float("nan"), "first_75": None, "epoch": 0}
    start = time.perf_counter()
    eval_seconds = 0.0

    def record(metrics: dict, step: int):
        for k, v in metrics.items():
            history.setdefault(k, []).append((step, float(v)))
        log(metrics, step)

    def on_step(step: int, loss: float, acc: float):
        nonlocal eval_seconds
        if ema is not None:
            ema.update_parameters(model)
        running["loss"] += loss
        running["acc"] += acc
        running["n"] += 1
        if step % cfg.log_every == 0 or step == total_steps:
            n = running["n"]
            record({"train_loss": running["loss"] / n, "train_acc": running["acc"] / n,
                    "lr": scheduler.get_last_lr()[0]}, step)
            if bar is not None:
                elapsed = time.perf_counter() - start - eval_seconds
                bar.set_postfix(loss=f"{running['loss'] / n:.3f}", acc=f"{running['acc'] / n:.3f}",
                                val=f"{state['last']:.3f}", ips=f"{step * cfg.batch_size / elapsed:.0f}")
            running.update(loss=0.0, acc=0.0, n=0)
        in_epoch = step - state["epoch"] * steps_per_epoch
        if val is not None and len(val) and in_epoch in eval_points:
            t0 = time.perf_counter()
            scores = evaluate(kept, val, augment, device, precision)
            val_acc = scores["acc"]
            model.train()
            eval_seconds += time.perf_counter() - t0
            state["last"] = val_acc
            state["best"] = max(state["best"], val_acc)
            if state["first_75"] is None and val_acc >= 0.75:
                state["first_75"] = (step, time.perf_counter() - start)
            state["last_auc"] = scores["auc"]
            record({"val_loss": scores["loss"], "val_acc": val_acc, "val_auc": scores["auc"]}, step)
            if on_validation is not None:
                on_validation(step, state["epoch"], scores)

    step = 0
    bar = None
    for epoch in range(cfg.epochs):
        state["epoch"] = epoch
        bar = tqdm(total=steps_per_epoch * cfg.batch_size, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="img",
                   disable=not progress, leave=False, dynamic_ncols=True)
        step = train_one_epoch(model, optimizer, scheduler, train, cfg, device, precision, generator, step,
                               on_step, bar)
        bar.close()
        if progress and val is not None:
            print(f"epoch {epoch + 1}/{cfg.epochs}: val_acc {state['last']:.4f}", file=sys.stderr)
    seconds = time.perf_counter() - start
    train_seconds = seconds - eval_seconds
    return FitResult(
        model=kept,
        history=history,
        best_val_acc=state["best"],
        final_val_acc=state["last"],
        final_val_auc=state["last_auc"],
        iterations=step,
        train_seconds=seconds,
        images_per_second=step * cfg.batch_size / max(train_seconds, 1e-9),
        first_75=state["first_75"],
        precision=precision,
    )


# ----------------------------------------------------------------------------- tracked run

def log_test_evaluation(model, data: LabData, cfg: TrainConfig, device, precision: str, out_dir: Path,
                        prefix: str = "test") -> dict[str, float]:
    """Measure the model on test/: metrics plus ROC, reliability, confusion, gallery and predictions CSV."""
    from agestudy import metrics as M

    test = data.test
    p1 = predict_proba(model, test.images, cfg.augment(), device, precision).numpy().astype(np.float64)
    labels = test.labels.numpy()
    values = M.classification_metrics(labels, p1)
    preds = (p1 >= 0.5).astype(int)
    plots = out_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    M.plot_roc(labels, p1, plots / "roc.png", title=f"ROC on {prefix}")
    M.plot_reliability(labels, p1, plots / "reliability.png", title=f"Reliability on {prefix}")
    M.plot_confusion(labels, preds, plots / "confusion.png", title=f"Confusion matrix on {prefix}")
    # the most confidently misclassified images: largest probability given to the wrong class
    wrong = np.flatnonzero(preds != labels)
    wrong = wrong[np.argsort(-np.abs(p1[wrong] - 0.5))][:32]
    captions = [f"true {labels[i]}, p1={p1[i]:.2f}" for i in wrong]
    M.plot_gallery(test.images[torch.as_tensor(wrong, dtype=torch.long)].numpy() if len(wrong) else [], captions,
                   plots / "misclassified.png", title="Most confidently misclassified test images")
    tables = out_dir / "predictions"
    tables.mkdir(parents=True, exist_ok=True)
    with open(tables / f"{prefix}_predictions.csv", "w", encoding="utf-8") as fh:
        fh.write("file,label,p0,p1\n")
        for name, label, p in zip(test.files, labels, p1):
            safe = '"' + name.replace('"', '""') + '"'
            fh.write(f"{safe},{label},{1 - p:.6f},{p:.6f}\n")
    return {f"{prefix}_{k}": v for k, v in values.items()}


def data_params(data: LabData) -> dict:
    train_counts, test_counts = data.train.class_counts(), data.test.class_counts()
    return {
        "data.root": str(data.root),
        "data.fingerprint": data.fingerprint,
        "data.train_0": train_counts[0], "data.train_1": train_counts[1],
        "data.test_0": test_counts[0], "data.test_1": test_counts[1],
        "data.skipped": sum(r.n_skipped for r in data.reports.values()),
        "data.converted": sum(r.n_converted for r in data.reports.values()),
    }


def save_model(model, cfg: TrainConfig, out_dir: Path) -> None:
    model_dir = out_dir / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, model_dir / "state_dict.pt")
    (model_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2))


# Options added after the first runs were logged, with the value those runs implicitly had.
PRE_ENSEMBLE_DEFAULTS = {"members": 1, "eval_flip": False, "stem_stride": 4, "scale": 0.0, "rotate": 0.0}


def load_model(model_dir: str | Path) -> tuple[torch.nn.Module, TrainConfig]:
    """Rebuild a logged model from its config and state dict (tensors only: weights_only=True)."""
    model_dir = Path(model_dir)
    saved = json.loads((model_dir / "config.json").read_text())
    cfg = TrainConfig(**{**PRE_ENSEMBLE_DEFAULTS, **saved})
    model = create_model(cfg.model, **cfg.model_kwargs())
    model.load_state_dict(torch.load(model_dir / "state_dict.pt", map_location="cpu", weights_only=True))
    return model.eval(), cfg


def train_and_log(cfg: TrainConfig, data: LabData, run_name: str | None = None, tags: dict | None = None,
                  parent_run_id: str | None = None, on_validation=None, on_run_start=None, test: bool = True,
                  progress: bool = True) -> tuple[str, dict]:
    """Train, evaluate on test/ (unless ``test=False``: tuning trials never look at it), and log
    everything to one MLflow run; returns (run_id, final metrics).

    The run ends FINISHED, KILLED (interrupted, pruned) or FAILED (error), never left RUNNING.
    """
    import mlflow

    from agestudy import metrics as M
    from agestudy.tracking import MetricBuffer, environment_tags

    cfg.validate()
    device = devices.select_device(cfg.device)
    train, val = (data.train.split(cfg.val_fraction, cfg.seed) if cfg.val_fraction > 0 else (data.train, None))
    # the parent link as a plain tag: the parent may live in another process or be finished (resume)
    link = {"mlflow.parentRunId": parent_run_id} if parent_run_id else None
    with mlflow.start_run(run_name=run_name, tags=link) as run:
        run_id = run.info.run_id
        if on_run_start is not None:
            on_run_start(run_id)
        mlflow.log_params({**asdict(cfg), **data_params(data), "data.n_train_used": len(train),
                           "data.n_val": len(val) if val is not None else 0})
        mlflow.set_tags({"agestudy.synthetic": str(data.synthetic).lower(),
                         "agestudy.data_fingerprint": data.fingerprint, **(tags or {})})
        if data.synthetic:
            mlflow.set_tag("agestudy.warning", "SYNTHETIC demo data: not real faces")
        buffer = MetricBuffer(run_id)
        status = "FAILED"
        try:
            result = fit(cfg, train, val, buffer.log, on_validation, progress)
            buffer.flush()
            precision = result.precision
            mlflow.set_tags(environment_tags(str(device), precision))
            final = {
                "train_seconds": result.train_seconds,
                "train_images_per_second": result.images_per_second,
                "iterations": result.iterations,
                "n_parameters": count_parameters(result.model),
            }
            if val is not None:
                final.update(best_val_acc=result.best_val_acc, final_val_acc=result.final_val_acc,
                             final_val_auc=result.final_val_auc)
            if result.first_75:
                final.update(first_val_acc75_step=result.first_75[0], first_val_acc75_seconds=result.first_75[1])
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp)
                if test:
                    final.update(log_test_evaluation(result.model, data, cfg, device, precision, out))
                M.plot_learning_curve(result.history, out / "plots" / "learning_curve.png",
                                      title=f"Learning curves ({cfg.model})")
                save_model(result.model, cfg, out)
                shown = torch.cat([torch.nonzero(train.labels == c).flatten()[:3] for c in (0, 1)])
                save_augmentation_grid(train.images[shown], cfg.augment(), out / "plots" / "augmentations.png",
                                       seed=cfg.seed)
                mlflow.log_metrics(final, step=result.iterations)
                mlflow.log_artifacts(str(out))
            status = "FINISHED"
            return run_id, final
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        except Exception as err:
            if type(err).__name__ == "TrialPruned":
                status = "KILLED"
                mlflow.set_tag("agestudy.pruned", "true")
            else:
                mlflow.set_tag("agestudy.error", f"{type(err).__name__}: {err}"[:4000])
            raise
        finally:
            buffer.flush()
            mlflow.end_run(status=status)


# ----------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(
        prog="python -m agestudy.train",
        description="Train one age classifier (label 0: aged 20-26, label 1: aged 52-62) on the lab's folders "
                    "and log the run to MLflow: learning curves, test metrics (accuracy, ROC AUC, calibration), "
                    "figures, per-image predictions and the weights.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    io = parser.add_argument_group("data and tracking")
    io.add_argument("--data", help="folder with train/{0,1} and test/{0,1}; default: $AGESTUDY_DATA, ./data, "
                                   "or the built-in SYNTHETIC demo data")
    io.add_argument("--cache-dir", help="where decoded arrays are cached (default ~/.cache/agestudy)")
    io.add_argument("--tracking-uri", help="MLflow store (default: sqlite:///mlruns/mlflow.db, or "
                                           "$MLFLOW_TRACKING_URI)")
    io.add_argument("--experiment", default="agestudy", help="MLflow experiment name")
    io.add_argument("--run-name", help="MLflow run name")
    io.add_argument("--quiet", action="store_true", help="no progress bars")
    hp = parser.add_argument_group("model and training (all logged as MLflow params)")
    hp.add_argument("--model", default=defaults.model, choices=sorted(MODELS))
    for f in fields(TrainConfig):
        if f.name == "model":
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type in (bool, "bool"):
            hp.add_argument(flag, default=f.default, action=argparse.BooleanOptionalAction)
        else:
            caster = {"int": int, "float": float, "str": str}[f.type if isinstance(f.type, str) else f.type.__name__]
            hp.add_argument(flag, type=caster, default=f.default)
    return parser


@cli_entry
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    cfg.validate()
    devices.configure_threads()
    root = resolve_data_root(args.data, args.cache_dir)
    data = load_data(root, args.cache_dir, progress=not args.quiet)

    from agestudy.tracking import resolve_tracking_uri, setup_tracking

    setup_tracking(args.tracking_uri, args.experiment)
    run_id, final = train_and_log(cfg, data, run_name=args.run_name, progress=not args.quiet,
                                  tags={"agestudy.role": "train"})
    print(f"run {run_id} ({resolve_tracking_uri(args.tracking_uri)})")
    print(f"test accuracy {final['test_accuracy']:.4f}  ROC AUC {final['test_roc_auc']:.4f}  "
          f"ECE {final['test_ece']:.4f}  training {final['train_seconds']:.0f} s  "
          f"{final['train_images_per_second']:.0f} images/s")
    if data.synthetic:
        print("*** trained on SYNTHETIC demo data: these numbers say nothing about real faces ***")
    return 0


if __name__ == "__main__":
    sys.exit(main())
