"""Evaluation metrics and diagnostic figures for the binary age classifier.

Pure numpy / scikit-learn / matplotlib (through agestudy.plots): no torch and no MLflow in here, so the
module can be tested (and re-used on saved predictions) without either.

Conventions used throughout
---------------------------
* ``labels``: 1-D array of ints in {0, 1}; 0 = aged 20-26, 1 = aged 52-62.
* ``p1``: 1-D float array, the predicted probability of label 1.
* The hard prediction is ``p1 >= 0.5`` (ties go to class 1).
* Every plot function writes a PNG to ``path`` (parent directories are
  created), closes its figure, and returns ``pathlib.Path(path)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from agestudy.plots import plt, save
from agestudy.runs import TRAIN_ACC, TRAIN_LOSS, VAL_ACC, VAL_LOSS

__all__ = [
    "CLASS_NAMES",
    "LOG_LOSS_EPS",
    "TARGET_ACCURACY",
    "calibration_bins",
    "expected_calibration_error",
    "classification_metrics",
    "plot_roc",
    "plot_reliability",
    "plot_confusion",
    "plot_learning_curve",
]

CLASS_NAMES = ("0: aged 20-26", "1: aged 52-62")

#: Probabilities are clipped to [eps, 1 - eps] before taking logs, so a
#: confidently wrong prediction costs at most -log(1e-7) ~= 16.1 nats.
LOG_LOSS_EPS = 1e-7

#: Accuracy the lab asks to exceed; drawn as a reference line.
TARGET_ACCURACY = 0.75



# --------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------
def _as_labels_p1(labels, p1) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert inputs to (int64 labels, float64 p1) 1-D arrays."""
    y = np.asarray(labels)
    p = np.asarray(p1, dtype=np.float64)
    if y.ndim != 1 or p.ndim != 1:
        raise ValueError(f"labels and p1 must be 1-D, got shapes {y.shape} and {p.shape}")
    if y.shape != p.shape:
        raise ValueError(f"labels and p1 differ in length: {y.shape[0]} vs {p.shape[0]}")
    if y.size == 0:
        raise ValueError("labels and p1 are empty")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must only contain 0 and 1")
    if not np.all(np.isfinite(p)):
        raise ValueError("p1 contains NaN or inf")
    tol = 1e-6  # tolerate float32 softmax round-off, reject real bugs
    if p.min() < -tol or p.max() > 1 + tol:
        raise ValueError(f"p1 must lie in [0, 1], got range [{p.min()}, {p.max()}]")
    return y.astype(np.int64), np.clip(p, 0.0, 1.0)


def _predict(p1: np.ndarray) -> np.ndarray:
    return (p1 >= 0.5).astype(np.int64)


def _check_n_bins(n_bins) -> int:
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    return int(n_bins)


# --------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------
def calibration_bins(labels, p1, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Per-bin statistics of the top-label confidence (used by ECE and the plot).

    The confidence of a prediction is the probability of the *predicted* class,
    ``max(p1, 1 - p1)`` (so it lies in [0.5, 1]). ``n_bins`` equal-width bins
    partition [0, 1] as in Guo et al. (2017); bin ``i`` is
    ``(edges[i], edges[i+1]]`` (the first bin also contains 0). With only two
    classes the bins below 0.5 are always empty.

    Returns a dict with ``edges`` (n_bins + 1), and per bin ``count`` (int),
    ``accuracy`` and ``confidence`` (mean over the bin; NaN for empty bins).
    """
    y, p = _as_labels_p1(labels, p1)
    n_bins = _check_n_bins(n_bins)
    pred = _predict(p)
    conf = np.where(pred == 1, p, 1.0 - p)
    correct = (pred == y).astype(np.float64)

    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.digitize(conf, edges[1:-1], right=True)  # edges[i] < c <= edges[i+1]
    count = np.bincount(idx, minlength=n_bins)
    sum_correct = np.bincount(idx, weights=correct, minlength=n_bins)
    sum_conf = np.bincount(idx, weights=conf, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.where(count > 0, sum_correct / count, np.nan)
        confidence = np.where(count > 0, sum_conf / count, np.nan)
    return {"edges": edges, "count": count, "accuracy": accuracy, "confidence": confidence}


def expected_calibration_error(labels, p1, n_bins: int = 15) -> float:
    """Binary top-label expected calibration error (ECE).

    For each sample the predicted class is ``p1 >= 0.5`` and its confidence is
    ``max(p1, 1 - p1)``. Confidences are grouped into ``n_bins`` equal-width
    bins over [0, 1] (see :func:`calibration_bins`), and

        ECE = sum_b (n_b / N) * |accuracy_b - mean_confidence_b|

    where ``accuracy_b`` is the fraction of correct predictions in bin ``b``.
    0 means perfectly calibrated (on this binning); the maximum is 1.
    """
    bins = calibration_bins(labels, p1, n_bins)
    count = bins["count"]
    nonempty = count > 0
    gaps = np.abs(bins["accuracy"][nonempty] - bins["confidence"][nonempty])
    return float(np.sum(count[nonempty] * gaps) / np.sum(count))


def classification_metrics(labels, p1, n_bins: int = 15) -> dict[str, float]:
    """Standard binary metrics from labels and predicted P(label 1).

    Keys: ``accuracy``, ``balanced_accuracy`` (mean per-class recall over the
    classes present in ``labels``), ``roc_auc`` (NaN if only one class is
    present), ``log_loss`` (natural log, p1 clipped to
    [LOG_LOSS_EPS, 1 - LOG_LOSS_EPS]), ``brier`` (mean squared error of p1
    against the 0/1 label) and ``ece`` (:func:`expected_calibration_error`).
    All values are Python floats.
    """
    y, p = _as_labels_p1(labels, p1)
    pred = _predict(p)
    correct = pred == y

    recalls = [correct[y == c].mean() for c in (0, 1) if np.any(y == c)]
    both_classes = len(recalls) == 2
    roc_auc = float(roc_auc_score(y, p)) if both_classes else math.nan

    pc = np.clip(p, LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS)
    log_loss = -np.mean(y * np.log(pc) + (1 - y) * np.log1p(-pc))

    return {
        "accuracy": float(correct.mean()),
        "balanced_accuracy": float(np.mean(recalls)),
        "roc_auc": roc_auc,
        "log_loss": float(log_loss),
        "brier": float(np.mean((p - y) ** 2)),
        "ece": expected_calibration_error(y, p, n_bins),
    }


# --------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------
def plot_roc(labels, p1, path, title: str = "ROC") -> Path:
    """ROC curve with the AUC in the legend and the chance diagonal."""
    y, p = _as_labels_p1(labels, p1)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance (AUC = 0.5)")
    if np.unique(y).size == 2:
        fpr, tpr, _ = roc_curve(y, p)
        auc = roc_auc_score(y, p)
        ax.plot(fpr, tpr, color="C0", lw=2, label=f"model (AUC = {auc:.3f})")
    else:
        ax.text(0.5, 0.35, f"ROC undefined:\nonly class {int(y[0])} present",
                ha="center", va="center", transform=ax.transAxes)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("False positive rate (class 0 predicted as 1)")
    ax.set_ylabel("True positive rate (recall of class 1)")
    ax.set_title(f"{title} (n = {y.size})")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return save(fig, path)


def plot_reliability(labels, p1, path, n_bins: int = 15,
                     title: str = "Reliability diagram") -> Path:
    """Reliability diagram on the top-label confidence, with ECE in the title.

    Top panel: accuracy per confidence bin (bars), the gap to the bin's mean
    confidence (hatched), and the perfect-calibration diagonal. Bottom panel:
    number of samples per bin. Only the confidence range that can occur for a
    binary problem (from the bin containing 0.5 up to 1) is shown.
    """
    bins = calibration_bins(labels, p1, n_bins)
    ece = expected_calibration_error(labels, p1, n_bins)
    edges, count = bins["edges"], bins["count"]
    acc, conf = bins["accuracy"], bins["confidence"]
    width = edges[1] - edges[0]
    centers = (edges[:-1] + edges[1:]) / 2
    ne = count > 0

    fig, (ax, axh) = plt.subplots(
        2, 1, figsize=(5.5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.bar(centers[ne], acc[ne], width=width, color="C0", edgecolor="black",
           lw=0.8, label="accuracy in bin")
    gap_lo = np.minimum(acc[ne], conf[ne])
    ax.bar(centers[ne], np.abs(conf[ne] - acc[ne]), bottom=gap_lo, width=width,
           color="C3", alpha=0.3, edgecolor="C3", hatch="//", lw=0.8,
           label="gap to mean confidence")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    ax.set_ylim(0, 1)
    ax.set_ylabel("Accuracy")
    ax.set_title(f"{title}\nECE = {ece:.3f} ({n_bins} bins, n = {int(count.sum())})")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)

    axh.bar(centers, count, width=width, color="C7", edgecolor="black", lw=0.8)
    axh.set_ylabel("Count")
    axh.set_xlabel("Confidence of predicted class, max(p1, 1 - p1)")
    axh.grid(alpha=0.3)
    # lower edge of the (right-closed) bin that holds confidence 0.5
    lo = edges[int(np.digitize(0.5, edges[1:-1], right=True))]
    axh.set_xlim(lo, 1)
    fig.tight_layout()
    return save(fig, path)


def plot_confusion(labels, preds, path, title: str = "Confusion matrix") -> Path:
    """2x2 confusion matrix (rows = true class) with counts and row percentages."""
    y = np.asarray(labels)
    yp = np.asarray(preds)
    if y.ndim != 1 or y.shape != yp.shape:
        raise ValueError(f"labels and preds must be 1-D of equal length, got {y.shape}, {yp.shape}")
    for name, arr in (("labels", y), ("preds", yp)):
        if not np.all((arr == 0) | (arr == 1)):
            raise ValueError(f"{name} must only contain 0 and 1")
    y, yp = y.astype(np.int64), yp.astype(np.int64)
    cm = np.zeros((2, 2), dtype=np.int64)
    np.add.at(cm, (y, yp), 1)
    row = cm.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(row > 0, cm / np.maximum(row, 1), np.nan)

    fig, ax = plt.subplots(figsize=(5, 4.5))
    im = ax.imshow(np.nan_to_num(frac), cmap="Blues", vmin=0, vmax=1)
    for i in range(2):
        for j in range(2):
            pct = "n/a" if np.isnan(frac[i, j]) else f"{100 * frac[i, j]:.1f} %"
            dark = not np.isnan(frac[i, j]) and frac[i, j] > 0.5
            ax.text(j, i, f"{cm[i, j]}\n({pct})", ha="center", va="center",
                    fontsize=12, color="white" if dark else "black")
    ax.set_xticks([0, 1], labels=CLASS_NAMES)
    ax.set_yticks([0, 1], labels=CLASS_NAMES, rotation=90, va="center")
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    acc = np.trace(cm) / max(int(cm.sum()), 1)
    ax.set_title(f"{title}\naccuracy = {100 * acc:.1f} % (n = {int(cm.sum())})")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    fig.tight_layout()
    return save(fig, path)


def _series(history: Mapping, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    pairs = history.get(key)
    if not pairs:
        return None
    arr = np.asarray([(float(s), float(v)) for s, v in pairs], dtype=np.float64)
    order = np.argsort(arr[:, 0], kind="stable")
    return arr[order, 0], arr[order, 1]


def _panel_keys(history: Mapping, known: Sequence[str], marker: str) -> list[str]:
    extra = sorted(k for k in history if marker in k and k not in known)
    return [k for k in known if k in history] + extra


def plot_learning_curve(history: Mapping[str, Sequence[tuple[float, float]]], path,
                        title: str = "Learning curves") -> Path:
    """Loss (left) and accuracy (right) against training iteration.

    ``history`` maps metric names to lists of ``(step, value)`` pairs. The
    known keys ``train/loss``, ``val/loss``, ``train/acc``, ``val/acc``
    (agestudy.runs) get fixed styles; any other key containing ``loss`` / ``acc`` is added to the
    matching panel. Missing or empty keys are skipped. Accuracies are expected
    as fractions in [0, 1]; a dashed line marks the lab's 0.75 target.
    """
    styles = {
        TRAIN_LOSS: dict(color="C0", lw=1, alpha=0.8, label="train"),
        VAL_LOSS: dict(color="C1", lw=1.5, marker="o", ms=3, label="validation"),
        TRAIN_ACC: dict(color="C0", lw=1, alpha=0.8, label="train"),
        VAL_ACC: dict(color="C1", lw=1.5, marker="o", ms=3, label="validation"),
    }
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = (
        (ax_l, _panel_keys(history, (TRAIN_LOSS, VAL_LOSS), "loss"), "Loss"),
        (ax_a, _panel_keys(history, (TRAIN_ACC, VAL_ACC), "acc"), "Accuracy"),
    )
    for ax, keys, name in panels:
        drawn = 0
        for key in keys:
            s = _series(history, key)
            if s is None:
                continue
            ax.plot(s[0], s[1], **styles.get(key, dict(lw=1.2, label=key)))
            drawn += 1
        if name == "Accuracy":
            ax.axhline(TARGET_ACCURACY, ls="--", color="grey", lw=1,
                       label=f"target {TARGET_ACCURACY:.0%}")
        if drawn == 0:
            ax.text(0.5, 0.5, f"no {name.lower()} data", ha="center", va="center",
                    transform=ax.transAxes, color="grey")
        ax.set_xlabel("Training iteration")
        ax.set_ylabel(name)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path)
