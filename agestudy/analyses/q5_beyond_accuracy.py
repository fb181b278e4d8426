"""Q5: beyond accuracy.

On test/ (centre crop, as training measured it):
- per true class, the mean and variance of the margin p1 - p0 (the lab's suggestion) and of
  the probability given to the true class, with their histograms;
- the ROC curve and its AUC with a percentile bootstrap 95 % interval (test images resampled);
- precision, recall and F1 per class, and the confusion matrix;
- calibration: reliability diagram, expected calibration error (15 bins) and Brier score,
  before and after temperature scaling. The temperature is fitted (minimum log loss) on the
  run's validation split; a run trained on all of train/ has none, so then it is fitted by
  2-fold cross-fitting on test/ (fit on one half, apply to the other, and back), never on
  the images it is measured on.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import optimize
from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

from agestudy import metrics as M
from agestudy.plots import plt

N_BOOTSTRAP = 1000


def fit_temperature(margin: np.ndarray, labels: np.ndarray) -> float:
    """The T > 0 minimising the log loss of sigmoid(margin / T); margin = logit1 - logit0.

    With two classes, softmax(z / T)[1] = sigmoid((z1 - z0) / T): one number to fit.
    """
    sign = 2.0 * labels - 1.0

    def nll(log_t: float) -> float:
        return float(np.mean(np.logaddexp(0.0, -sign * margin / np.exp(log_t))))

    best = optimize.minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(best.x))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free


def bootstrap_auc(labels: np.ndarray, p1: np.ndarray, n_boot: int, seed: int = 0) -> tuple[float, float, int]:
    """Percentile 95 % interval of the ROC AUC over resampled test sets (both classes present)."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    aucs = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        y = labels[idx]
        if y.min() == y.max():
            continue
        aucs.append(roc_auc_score(y, p1[idx]))
    if not aucs:
        return float("nan"), float("nan"), 0
    lo, hi = np.percentile(aucs, [2.5, 97.5])
    return float(lo), float(hi), len(aucs)


def calibrated_test_p1(ctx, test_margin: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, float, str]:
    """Temperature-scaled test P(label 1), the temperature, and where it was fitted."""
    val = ctx.val_set()
    if val is not None and len(val) and len(val.labels.unique()) == 2:
        logits = ctx.logits(val.images).double().numpy()
        t = fit_temperature(logits[:, 1] - logits[:, 0], val.labels.numpy())
        return sigmoid(test_margin / t), t, f"validation split ({len(val)} images, val_fraction {ctx.cfg.val_fraction})"
    # no validation split: 2-fold stratified cross-fitting on test/
    rng = np.random.default_rng(0)
    fold = np.zeros(len(labels), dtype=int)
    for c in (0, 1):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        fold[idx[: len(idx) // 2]] = 1
    out, temps = np.empty_like(test_margin), []
    for f in (0, 1):
        t = fit_temperature(test_margin[fold != f], labels[fold != f])
        out[fold == f] = sigmoid(test_margin[fold == f] / t)
        temps.append(t)
    return out, float(np.mean(temps)), "2-fold cross-fitting on test/ (the run has no validation split)"


def run(ctx) -> dict:
    labels = ctx.data.test.labels.numpy()
    logits = ctx.test_logits().double()
    p1 = torch.softmax(logits, 1)[:, 1].numpy()
    margin_logit = (logits[:, 1] - logits[:, 0]).numpy()
    pred = (p1 >= 0.5).astype(int)
    margin = 2 * p1 - 1  # p1 - p0
    p_true = np.where(labels == 1, p1, 1 - p1)

    per_class = {}
    for c in (0, 1):
        m, pt = margin[labels == c], p_true[labels == c]
        per_class[c] = {"n": int((labels == c).sum()),
                        "margin_mean": float(m.mean()), "margin_var": float(m.var(ddof=1)) if len(m) > 1 else 0.0,
                        "p_true_mean": float(pt.mean()), "p_true_var": float(pt.var(ddof=1)) if len(pt) > 1 else 0.0}
    precision, recall, f1, support = precision_recall_fscore_support(labels, pred, labels=[0, 1], zero_division=0)
    for c in (0, 1):
        per_class[c].update(precision=float(precision[c]), recall=float(recall[c]), f1=float(f1[c]),
                            support=int(support[c]))
    confusion = np.zeros((2, 2), dtype=int)
    np.add.at(confusion, (labels, pred), 1)

    before = M.classification_metrics(labels, p1)
    n_boot = int(ctx.option("q5_bootstrap", N_BOOTSTRAP))
    auc_lo, auc_hi, n_used = bootstrap_auc(labels, p1, n_boot)
    p1_cal, temperature, fitted_on = calibrated_test_p1(ctx, margin_logit, labels)
    after = M.classification_metrics(labels, p1_cal)

    summary = {
        "procedure": "Test images, centre crop. margin = p1 - p0 = 2*p1 - 1; p_true = probability given to the "
                     "true class; variances with ddof=1. AUC interval: percentile bootstrap over "
                     f"{n_used} resampled test sets. ECE: 15 equal-width bins of the top-label confidence. "
                     f"Temperature scaling fitted on: {fitted_on}.",
        "per_class": {f"class_{c}": v for c, v in per_class.items()},
        "roc_auc": before["roc_auc"], "roc_auc_ci95": [auc_lo, auc_hi], "n_bootstrap": n_used,
        "confusion_matrix": {"rows": "true class 0, 1", "columns": "predicted class 0, 1",
                             "counts": confusion.tolist()},
        "calibration": {"temperature": temperature, "fitted_on": fitted_on,
                        "before": {k: before[k] for k in ("accuracy", "ece", "brier", "log_loss")},
                        "after": {k: after[k] for k in ("accuracy", "ece", "brier", "log_loss")}},
        "accuracy": before["accuracy"], "balanced_accuracy": before["balanced_accuracy"],
    }
    ctx.log_table("summary", summary)

    _plot_histograms(margin, p_true, labels, ctx.path("margin_histograms.png"))
    M.plot_roc(labels, p1, ctx.path("roc.png"),
               title=f"ROC on test, AUC 95% CI [{auc_lo:.3f}, {auc_hi:.3f}]")
    M.plot_confusion(labels, pred, ctx.path("confusion.png"), title="Confusion matrix on test")
    M.plot_reliability(labels, p1, ctx.path("reliability_before.png"),
                       title=f"Before temperature scaling (Brier {before['brier']:.3f})")
    M.plot_reliability(labels, p1_cal, ctx.path("reliability_after.png"),
                       title=f"After temperature scaling, T = {temperature:.2f} (Brier {after['brier']:.3f})")
    for name in ("margin_histograms.png", "roc.png", "confusion.png", "reliability_before.png",
                 "reliability_after.png"):
        ctx.log_figure(ctx.path(name))

    headline = {"accuracy": before["accuracy"], "auc": before["roc_auc"], "auc_ci_low": auc_lo,
                "auc_ci_high": auc_hi, "temperature": temperature,
                "ece_before": before["ece"], "ece_after": after["ece"],
                "brier_before": before["brier"], "brier_after": after["brier"],
                "log_loss_before": before["log_loss"], "log_loss_after": after["log_loss"],
                "tn": int(confusion[0, 0]), "fp": int(confusion[0, 1]), "fn": int(confusion[1, 0]),
                "tp": int(confusion[1, 1])}
    for c, values in per_class.items():
        for key in ("margin_mean", "margin_var", "p_true_mean", "p_true_var", "precision", "recall", "f1"):
            headline[f"class{c}_{key}"] = values[key]
    ctx.log_metrics(headline)
    return headline


def _plot_histograms(margin, p_true, labels, path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, values, bins, xlabel in ((axes[0], margin, np.linspace(-1, 1, 41), "margin p1 - p0"),
                                     (axes[1], p_true, np.linspace(0, 1, 41), "probability of the true class")):
        for c, colour in ((0, "C0"), (1, "C1")):
            v = values[labels == c]
            ax.hist(v, bins=bins, alpha=0.55, color=colour,
                    label=f"true class {c}: mean {v.mean():.3f}, var {v.var(ddof=1) if len(v) > 1 else 0:.3f}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test images")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    axes[0].axvline(0, color="grey", ls="--", lw=1)
    axes[1].axvline(0.5, color="grey", ls="--", lw=1)
    fig.suptitle("Per true class: the margin p1 - p0 and the probability of the true class (test/)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
