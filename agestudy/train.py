"""Train one model on the lab's data and track everything in MLflow.

    python -m agestudy.train --data path/to/cacd --epochs 30

Pipeline, top to bottom: load_data (decoded once, cached) -> carve a validation split
from train/ -> engine.fit (the step loop, validating several times per epoch) -> measure
the final model once on test/ -> log metrics, figures, per-image predictions and the
weights to one MLflow run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import asdict, fields
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from agestudy import device as devices
from agestudy.checkpoint import load_model, save_model
from agestudy.cli import HelpFormatter
from agestudy.config import TrainConfig
from agestudy.data import LabData, load_data, resolve_data_root
from agestudy.data.augment import save_augmentation_grid
from agestudy.engine import fit
from agestudy.errors import cli_entry
from agestudy.models import MODELS, count_parameters
from agestudy.predict import evaluation_view, predict_proba
from agestudy.runs import (
    AUGMENTATIONS_PLOT,
    AUTO_TAG,
    CONFUSION_PLOT,
    DATA_FINGERPRINT_TAG,
    DESCRIPTION_TAG,
    ERROR_TAG,
    FIRST_VAL_ACC75_SECONDS,
    FIRST_VAL_ACC75_STEP,
    LEARNING_CURVE_PLOT,
    MISCLASSIFIED_PLOT,
    MODEL_PARAMETERS,
    PARENT_RUN_TAG,
    PRUNED_NAME_SUFFIX,
    PRUNED_TAG,
    REGISTERED_VERSION_TAG,
    RELIABILITY_PLOT,
    ROC_PLOT,
    ROLE_TAG,
    ROLE_TRAIN,
    SUMMARY_STEP,
    SYNTHETIC_SENTENCE,
    SYNTHETIC_TAG,
    SYNTHETIC_WARNING,
    TEST_ACCURACY,
    TEST_ECE,
    TEST_ROC_AUC,
    TRAIN_IMAGES_PER_SECOND,
    TRAIN_ITERATIONS,
    TRAIN_SECONDS,
    VAL_BEST_ACC,
    VAL_FINAL_ACC,
    VAL_FINAL_AUC,
    WARNING_TAG,
    measure_metric,
    predictions_artifact,
)

__all__ = ["TrainConfig", "load_model", "train_and_log", "main"]


# ----------------------------------------------------------------------------- tracked run

def artifact_file(out_dir: Path, artifact: str) -> Path:
    """Where to write ``artifact`` (a path from agestudy.runs) so that logging out_dir puts it there."""
    path = out_dir / artifact
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def log_test_evaluation(model, data: LabData, cfg: TrainConfig, device, precision: str, out_dir: Path,
                        prefix: str = "test") -> dict[str, float]:
    """Measure the model on test/: metrics (test/accuracy, ...) plus ROC, reliability, confusion, gallery and
    predictions CSV."""
    from agestudy import metrics as M
    from agestudy.plots import gallery

    test = data.test
    aug = cfg.augment()
    p1 = predict_proba(model, test.images, evaluation_view(aug), aug, device, precision, batch_size=512).numpy()
    labels = test.labels.numpy()
    values = M.classification_metrics(labels, p1)
    preds = (p1 >= 0.5).astype(int)
    M.plot_roc(labels, p1, artifact_file(out_dir, ROC_PLOT), title=f"ROC on {prefix}")
    M.plot_reliability(labels, p1, artifact_file(out_dir, RELIABILITY_PLOT), title=f"Reliability on {prefix}")
    M.plot_confusion(labels, preds, artifact_file(out_dir, CONFUSION_PLOT), title=f"Confusion matrix on {prefix}")
    # the most confidently misclassified images: largest probability given to the wrong class
    wrong = np.flatnonzero(preds != labels)
    wrong = wrong[np.argsort(-np.abs(p1[wrong] - 0.5))][:32]
    captions = [f"true {labels[i]}, p1={p1[i]:.2f}" for i in wrong]
    gallery(test.images[torch.as_tensor(wrong, dtype=torch.long)].numpy() if len(wrong) else [], captions,
                   artifact_file(out_dir, MISCLASSIFIED_PLOT), title="Most confidently misclassified test images")
    with open(artifact_file(out_dir, predictions_artifact(prefix)), "w", encoding="utf-8") as fh:
        fh.write("file,label,p0,p1\n")
        for name, label, p in zip(test.files, labels, p1):
            safe = '"' + name.replace('"', '""') + '"'
            fh.write(f"{safe},{label},{1 - p:.6f},{p:.6f}\n")
    return {measure_metric(k): v for k, v in values.items()}


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


def auto_fields(cfg: TrainConfig) -> list[str]:
    """The options left to "auto", whose values the run resolved for its machine and data."""
    zero_means_auto = ["batch_size", "epochs", "stem_stride"] + ([] if cfg.epochs else ["train_images"])  # else unused
    return [name for name, value in (("device", cfg.device), ("precision", cfg.precision)) if value == "auto"] + \
        [name for name in zero_means_auto if not getattr(cfg, name)]


def run_description(what: str, cfg: TrainConfig, data: LabData, train, val, test: bool) -> str:
    """The run's description in words: what was trained, on which data, how it was measured."""
    network = f"{cfg.members} x {cfg.model}" if cfg.members > 1 else cfg.model
    held_out = f", {len(val):,} held out for validation" if val is not None else ", no validation split"
    measured = f"measured on test/ ({len(data.test):,} images)" if test else "never shown test/"
    text = (f"{what}: {network} (width {cfg.width}, crop {cfg.crop}) trained on {len(train):,} images of "
            f"{data.root}{held_out}; {measured}.")
    return text + (" " + SYNTHETIC_SENTENCE if data.synthetic else "")


def log_run_setup(cfg: TrainConfig, data: LabData, train, val, auto: list[str], tags: dict, test: bool) -> None:
    """What the active run is, before it trains: every option (resolved) and the data as params, its
    tags (the synthetic warning among them), and its data splits as MLflow dataset inputs."""
    import mlflow

    from agestudy.tracking import log_splits

    mlflow.log_params({**asdict(cfg), **data_params(data), "data.n_train_used": len(train),
                       "data.n_val": len(val) if val is not None else 0})
    mlflow.set_tags({SYNTHETIC_TAG: str(data.synthetic).lower(), AUTO_TAG: ",".join(auto),
                     DATA_FINGERPRINT_TAG: data.fingerprint, **tags})
    if data.synthetic:
        mlflow.set_tag(WARNING_TAG, SYNTHETIC_WARNING)
    log_splits(data, train, val, test=test)


def summary_metrics(result, has_val: bool) -> dict[str, float]:
    """The run's summaries, logged once each at SUMMARY_STEP (a number, not a curve)."""
    final = {TRAIN_SECONDS: result.train_seconds, TRAIN_IMAGES_PER_SECOND: result.images_per_second,
             TRAIN_ITERATIONS: result.iterations, MODEL_PARAMETERS: count_parameters(result.model)}
    if has_val:
        final.update({VAL_BEST_ACC: result.best_val_acc, VAL_FINAL_ACC: result.final_val_acc,
                      VAL_FINAL_AUC: result.final_val_auc})
    if result.first_75:
        final.update({FIRST_VAL_ACC75_STEP: result.first_75[0], FIRST_VAL_ACC75_SECONDS: result.first_75[1]})
    return final


class TrainedRun(NamedTuple):
    run_id: str
    metrics: dict
    stopped: bool  # on_validation stopped it early (a pruned trial): the run ended KILLED


def train_and_log(cfg: TrainConfig, data: LabData, run_name: str | None = None, tags: dict | None = None,
                  parent_run_id: str | None = None, on_validation=None, on_run_start=None, test: bool = True,
                  progress: bool = True, system_metrics: bool = True, description: str | None = None,
                  register: bool = False, split: tuple | None = None) -> TrainedRun:
    """Train, evaluate on test/ (unless ``test=False``: tuning trials never look at it), and log
    everything to one MLflow run.

    ``description`` becomes the run's MLflow description (a default one says what was trained on what);
    ``register`` logs the network as an MLflow model and makes it the registered model's ``best``.
    The run ends FINISHED, KILLED (interrupted, or stopped by ``on_validation``: pruned) or FAILED
    (error), never left RUNNING.
    """
    import mlflow

    from agestudy import metrics as M
    from agestudy.tracking import MetricBuffer, environment_tags, log_classifier, system_metrics_available

    device = devices.select_device(cfg.device)
    train, val = split if split is not None else cfg.split(data.train)  # split: (fit, validation), e.g. a CV fold
    # every "auto" made concrete for this machine and data: the logged params and the saved
    # config say exactly what was trained, and the model can be rebuilt on any machine
    auto = auto_fields(cfg)
    cfg = cfg.resolved(device, len(train))
    # the parent link as a plain tag: the parent may live in another process or be finished (resume)
    link = {PARENT_RUN_TAG: parent_run_id} if parent_run_id else None
    sample_system = system_metrics and system_metrics_available()  # system/cpu_utilization_percentage, ...
    with mlflow.start_run(run_name=run_name, tags=link, log_system_metrics=sample_system) as run:
        run_id = run.info.run_id
        if on_run_start is not None:
            on_run_start(run_id)
        about = run_description(description or "A training run", cfg, data, train, val, test)
        log_run_setup(cfg, data, train, val, auto, {**(tags or {}), DESCRIPTION_TAG: about}, test)
        buffer = MetricBuffer(run_id)
        status = "FAILED"
        try:
            result = fit(cfg, train, val, buffer.log, on_validation, progress)
            buffer.flush()
            if result.stopped:
                status = "KILLED"
                mlflow.set_tag(PRUNED_TAG, "true")
                if run_name:  # the runs table shows KILLED like FAILED: the name says it was pruned
                    mlflow.MlflowClient().update_run(run_id, name=run_name + PRUNED_NAME_SUFFIX)
                return TrainedRun(run_id, {}, True)
            precision = result.precision
            mlflow.set_tags(environment_tags(str(device), precision))
            final = summary_metrics(result, has_val=val is not None)
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp)
                if test:
                    final.update(log_test_evaluation(result.model, data, cfg, device, precision, out))
                M.plot_learning_curve(result.history, artifact_file(out, LEARNING_CURVE_PLOT),
                                      title=f"Learning curves ({cfg.model})")
                save_model(result.model, cfg, out)
                shown = torch.cat([torch.nonzero(train.labels == c).flatten()[:3] for c in (0, 1)])
                save_augmentation_grid(train.images[shown], cfg.augment(), artifact_file(out, AUGMENTATIONS_PLOT),
                                       seed=cfg.seed)
                mlflow.log_metrics(final, step=SUMMARY_STEP)
                mlflow.log_artifacts(str(out))
            if register:
                version = log_classifier(result.model, cfg.augment(), register=True, description=about)
                mlflow.set_tag(REGISTERED_VERSION_TAG, version)
            status = "FINISHED"
            return TrainedRun(run_id, final, False)
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        except Exception as err:
            mlflow.set_tag(ERROR_TAG, f"{type(err).__name__}: {err}"[:4000])
            raise
        finally:
            buffer.flush()
            mlflow.end_run(status=status)


# ----------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m agestudy.train",
        description="Train one age classifier (label 0: aged 20-26, label 1: aged 52-62) on the lab's folders "
                    "and log the run to MLflow: learning curves, test metrics (accuracy, ROC AUC, calibration), "
                    "figures, per-image predictions and the weights.",
        formatter_class=HelpFormatter,
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
    io.add_argument("--no-system-metrics", action="store_true",
                    help="do not sample CPU/GPU utilisation and memory into the run (system/... metrics)")
    add_training_options(parser.add_argument_group("model and training (all logged as MLflow params)"))
    return parser


def add_training_options(group) -> None:
    """One --flag per TrainConfig field, with its type, default and help (config.py): read them back
    with ``config_from_args``."""
    for f in fields(TrainConfig):
        flag, text = "--" + f.name.replace("_", "-"), f.metadata["help"]
        if f.name == "model":
            group.add_argument(flag, default=f.default, choices=sorted(MODELS), help=text)
        elif f.type in (bool, "bool"):
            group.add_argument(flag, default=f.default, action=argparse.BooleanOptionalAction, help=text)
        else:
            caster = {"int": int, "float": float, "str": str}[f.type if isinstance(f.type, str) else f.type.__name__]
            group.add_argument(flag, type=caster, default=f.default, help=text)


def config_from_args(args, **overrides) -> TrainConfig:
    """The TrainConfig of parsed ``add_training_options`` flags (checked on construction)."""
    return TrainConfig(**{**{f.name: getattr(args, f.name) for f in fields(TrainConfig)}, **overrides})


@cli_entry
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)  # checked here, before the data
    devices.configure_threads()
    from agestudy.tracking import setup_tracking, shown_store

    setup_tracking(args.tracking_uri, args.experiment)  # a wrong store fails before the data is loaded
    root = resolve_data_root(args.data, args.cache_dir)
    data = load_data(root, args.cache_dir, progress=not args.quiet)
    run_id, final, _ = train_and_log(cfg, data, run_name=args.run_name, progress=not args.quiet,
                                     tags={ROLE_TAG: ROLE_TRAIN}, system_metrics=not args.no_system_metrics)
    print(f"run {run_id} ({shown_store(args.tracking_uri)})")
    print(f"test accuracy {final[TEST_ACCURACY]:.4f}  ROC AUC {final[TEST_ROC_AUC]:.4f}  "
          f"ECE {final[TEST_ECE]:.4f}  training {final[TRAIN_SECONDS]:.0f} s  "
          f"{final[TRAIN_IMAGES_PER_SECOND]:.0f} images/s")
    if data.synthetic:
        print("*** trained on SYNTHETIC demo data: these numbers say nothing about real faces ***")
    return 0


if __name__ == "__main__":
    sys.exit(main())
