"""Q7: what RandomCrop does to an image, and what it buys.

The picture: original images beside several random crops of each (RandomCrop alone), and
beside the analysed run's full training augmentation.

The measurement comes from the ``augmentation`` study (``python -m agestudy.tune --study
augmentation``): its trials (tag agestudy.study=augmentation, role trial, param random_crop
true/false) in the analysed run's experiment and on the same data. Tuning trials never look
at test/, so this analysis loads each trial's weights and measures them here: accuracy on
test/ and on the images the trial trained on (centre crop, at most MAX_TRAIN_EVAL of them),
whose difference is the train/test gap. Validation accuracy is the trial's own (last
evaluation). Without such trials nothing is trained here: the table says the ablation was
not run and gives the command.

The ablation table: the latest ``augmentation`` study run's ``study/trials.csv``, its
objective grouped by the values of random_crop, padding and flip (``q7/ablation.json``), as
the study itself measured them (validation objective, nothing reloaded).
"""

from __future__ import annotations

import csv
import io
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from agestudy import device as devices
from agestudy.analyses import ANALYSIS_VIEW
from agestudy.analyses.stats import ablation_groups
from agestudy.data import AugmentConfig
from agestudy.data.augment import save_augmentation_grid
from agestudy.plots import plt
from agestudy.predict import predict_proba
from agestudy.runs import (
    DATA_FINGERPRINT_TAG,
    MODEL_DIR,
    OBJECTIVE_TAG,
    ROLE_TRIAL,
    STUDY_TRIALS,
    TRIAL_TAG,
    VAL_BEST_ACC,
    VAL_FINAL_ACC,
    find_runs,
    latest_study_run,
    run_metric,
)

STUDY = "augmentation"
ABLATED = ("random_crop", "padding", "flip")  # the study's searched options, one table block each
MAX_TRAIN_EVAL = 2000  # training images measured per trial: enough for the gap, cheap on CACD's 36k
GRID_IMAGES = 3  # per class
GRID_VERSIONS = 6


def _accuracy(model, images, labels, cfg, device) -> float:
    p1 = predict_proba(model, images, ANALYSIS_VIEW, cfg.augment(), device)
    return float(((p1 >= 0.5).long() == labels).double().mean())


def find_trials(ctx) -> list:
    """Finished trials of the augmentation study in the analysed run's experiment, on the same data."""
    runs = find_runs(ctx.client, [ctx.experiment_id], role=ROLE_TRIAL, study=STUDY, status="FINISHED",
                     max_results=1000)
    return [r for r in runs if r.data.tags.get(DATA_FINGERPRINT_TAG) == ctx.data.fingerprint
            and r.data.params.get("random_crop") in ("True", "False")]


def measure_trial(ctx, run, tmp: Path) -> dict:
    from agestudy.checkpoint import load_model

    params, metrics = run.data.params, run.data.metrics
    row = {"run_id": run.info.run_id, "trial": run.data.tags.get(TRIAL_TAG),
           "random_crop": params["random_crop"] == "True", "padding": int(params.get("padding", 0)),
           "flip": params.get("flip") == "True", "epochs": int(params.get("epochs", 0)),
           "val_acc": run_metric(metrics, VAL_FINAL_ACC), "best_val_acc": run_metric(metrics, VAL_BEST_ACC),
           "train_acc": None, "test_acc": None, "gap": None}
    try:
        model_dir = ctx.client.download_artifacts(run.info.run_id, MODEL_DIR, str(tmp / run.info.run_id))
        model, cfg = load_model(model_dir)
    except Exception:  # noqa: BLE001 - a trial without weights still has its validation accuracy
        row["note"] = "no model artifact: validation accuracy only"
        return row
    model = devices.prepare_model(model, ctx.device).eval()
    test = ctx.data.test
    fitted = cfg.split(ctx.data.train)[0]
    if len(fitted) > MAX_TRAIN_EVAL:  # a fixed random subset: the same for every trial
        keep = torch.randperm(len(fitted), generator=torch.Generator().manual_seed(0))[:MAX_TRAIN_EVAL]
        fitted = fitted.subset(keep.sort().values)
    row["test_acc"] = _accuracy(model, test.images, test.labels, cfg, ctx.device)
    row["train_acc"] = _accuracy(model, fitted.images, fitted.labels, cfg, ctx.device)
    row["gap"] = row["train_acc"] - row["test_acc"]
    row["n_train_measured"] = len(fitted)
    return row


def ablation(ctx) -> dict:
    """The augmentation study's objective per value of each ablated option (its trials.csv, COMPLETE trials)."""
    analysed = ctx.analysed_run()
    study = latest_study_run(ctx.client, analysed.info.experiment_id, STUDY)
    if study is None:
        return {"study_run_id": None, "groups": {}}
    rows = list(csv.DictReader(io.StringIO(ctx.read_artifact(study.info.run_id, STUDY_TRIALS) or "")))
    groups = {name: ablation_groups(rows, name) for name in ABLATED}
    return {"study_run_id": study.info.run_id,
            "objective": study.data.tags.get(OBJECTIVE_TAG, "val_acc"),
            "same_data": study.data.tags.get(DATA_FINGERPRINT_TAG) == analysed.data.params.get("data.fingerprint"),
            "groups": {name: found for name, found in groups.items() if found}}


def _group(rows: list[dict], key: str) -> dict:
    values = np.array([r[key] for r in rows if r.get(key) is not None], dtype=float)
    if not len(values):
        return {"n": 0, "mean": None, "std": None}
    return {"n": int(len(values)), "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0}


def run(ctx) -> dict:
    cfg = ctx.cfg
    train = ctx.data.train
    shown = torch.cat([torch.nonzero(train.labels == c).flatten()[:GRID_IMAGES] for c in (0, 1)])
    pad = cfg.padding or 4  # a run trained without padding still gets a visible RandomCrop
    crop_only = AugmentConfig(crop=cfg.crop, padding=pad, flip=False, jitter=0.0, random_crop=True)
    save_augmentation_grid(train.images[shown], crop_only, ctx.path("random_crop_grid.png"),
                           n_versions=GRID_VERSIONS, seed=0,
                           title=f"RandomCrop({cfg.crop}, padding={pad}) alone: original, then random crops")
    save_augmentation_grid(train.images[shown], cfg.augment(), ctx.path("training_augmentation_grid.png"),
                           n_versions=GRID_VERSIONS, seed=0,
                           title=f"The run's training augmentation: RandomCrop({cfg.crop}, padding={cfg.padding}) "
                                 f"{'on' if cfg.random_crop else 'OFF'}, flip={cfg.flip}, jitter={cfg.jitter}")
    ctx.log_figure(ctx.path("random_crop_grid.png"))
    ctx.log_figure(ctx.path("training_augmentation_grid.png"))
    ctx.log_table("ablation", ablation(ctx))

    trials = find_trials(ctx)
    command = f"python -m agestudy.tune --study {STUDY} --data {ctx.data.root}"
    if not trials:
        ctx.log_table("effect", {
            "status": "not_run",
            "message": f"No finished trials of the '{STUDY}' study on this data (fingerprint {ctx.data.fingerprint}) "
                       "in this experiment: the effect of RandomCrop was not measured. Run the ablation, then "
                       "analyse again.",
            "command": command,
        })
        ctx.log_metrics({"n_trials": 0})
        return {"n_trials": 0}

    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure_trial(ctx, r, Path(tmp)) for r in trials]
    rows.sort(key=lambda r: (not r["random_crop"], int(r["trial"] or 0)))
    groups = {}
    for name, flag in (("with", True), ("without", False)):
        chosen = [r for r in rows if r["random_crop"] == flag]
        groups[name] = {key: _group(chosen, key) for key in ("val_acc", "test_acc", "train_acc", "gap")}
    tests = {}
    for key in ("val_acc", "test_acc"):
        a = [r[key] for r in rows if r["random_crop"] and r[key] is not None]
        b = [r[key] for r in rows if not r["random_crop"] and r[key] is not None]
        if len(a) >= 2 and len(b) >= 2:
            with warnings.catch_warnings():  # identical accuracies: scipy warns, the p-value says it
                warnings.simplefilter("ignore", RuntimeWarning)
                t = stats.ttest_ind(a, b, equal_var=False)
            tests[key] = {"welch_t": float(t.statistic), "p_value": float(t.pvalue)}
    ctx.log_table("effect", {
        "status": "measured",
        "procedure": f"Finished trials of the '{STUDY}' study (random search over random_crop, padding, flip; "
                     "no pruning), same experiment and data. val_acc: the trial's last validation accuracy. "
                     f"test_acc / train_acc: measured here from the trial's weights, centre crop; train_acc on "
                     f"the images the trial fitted (at most {MAX_TRAIN_EVAL}, a fixed random subset). "
                     "gap = train_acc - test_acc. Welch t-tests when both groups have >= 2 trials. Other "
                     "options (padding, flip) vary between trials: see the per-trial rows.",
        "command": command,
        "groups": groups,
        "tests": tests,
        "trials": rows,
    })
    _plot_effect(rows, ctx.path("effect.png"))
    ctx.log_figure(ctx.path("effect.png"))

    headline = {"n_trials": len(rows), "n_trials_with": groups["with"]["val_acc"]["n"],
                "n_trials_without": groups["without"]["val_acc"]["n"]}
    for name in ("with", "without"):
        for key in ("val_acc", "test_acc", "train_acc", "gap"):
            if groups[name][key]["mean"] is not None:
                headline[f"{name}_{key}"] = groups[name][key]["mean"]
    for key in ("val_acc", "test_acc"):
        if f"with_{key}" in headline and f"without_{key}" in headline:
            headline[f"{key}_gain"] = headline[f"with_{key}"] - headline[f"without_{key}"]
    ctx.log_metrics(headline)
    return headline


def _plot_effect(rows, path) -> None:
    keys = [("train_acc", "train (fitted images)"), ("val_acc", "validation"), ("test_acc", "test")]
    fig, ax = plt.subplots(figsize=(7, 4))
    rng = np.random.default_rng(0)
    for g, (flag, colour, label) in enumerate(((True, "C0", "with RandomCrop"), (False, "C3", "without"))):
        labelled = False
        for i, (key, _) in enumerate(keys):
            values = [r[key] for r in rows if r["random_crop"] == flag and r[key] is not None]
            if not values:
                continue
            x = i + (g - 0.5) * 0.3
            ax.bar(x, np.mean(values), width=0.28, color=colour, alpha=0.35, label=None if labelled else label)
            labelled = True
            ax.scatter(x + rng.uniform(-0.06, 0.06, len(values)), values, color=colour, s=18, zorder=3)
    ax.set_xticks(range(len(keys)), [name for _, name in keys])
    ax.set_ylabel("accuracy")
    values = [r[k] for r in rows for k, _ in keys if r[k] is not None]
    ax.set_ylim(max(0.0, min(values) - 0.05), min(1.0, max(values) + 0.05))
    ax.set_title("RandomCrop on / off: accuracy per trial (dots) and mean (bars)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
