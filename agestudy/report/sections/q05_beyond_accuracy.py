"""Q5: beyond accuracy: the run's own test metrics and figures, and what analysis q5 adds."""

from __future__ import annotations

from agestudy.report.sections.sources import figure, metric, read_analysis
from agestudy.runs import CONFUSION_PLOT, RELIABILITY_PLOT, ROC_PLOT, logged_number

SOURCES = {
    "auc_ci_low": metric("q5_auc_ci_low"),  # bootstrap 95 % interval of the ROC AUC
    "auc_ci_high": metric("q5_auc_ci_high"),
    "temperature": metric("q5_temperature", optional=True),  # temperature scaling factor
    "ece_after": metric("q5_ece_after", optional=True),
    "brier_after": metric("q5_brier_after", optional=True),
    "class0_recall": metric("q5_class0_recall", optional=True),
    "class1_recall": metric("q5_class1_recall", optional=True),
    "class0_precision": metric("q5_class0_precision", optional=True),
    "class1_precision": metric("q5_class1_precision", optional=True),
    "class0_margin_mean": metric("q5_class0_margin_mean", optional=True),  # mean of p1 - p0
    "class1_margin_mean": metric("q5_class1_margin_mean", optional=True),
    "class0_margin_var": metric("q5_class0_margin_var", optional=True),
    "class1_margin_var": metric("q5_class1_margin_var", optional=True),
    "margin_histograms": figure("q5/margin_histograms.png"),
    "reliability_after": figure("q5/reliability_after.png", optional=True),
}
RUN_METRICS = ("test_accuracy", "test_balanced_accuracy", "test_roc_auc", "test_log_loss", "test_brier", "test_ece")


def build(ctx) -> dict:
    run, store = ctx.run, ctx.store
    return {
        **read_analysis(ctx, "q5", SOURCES),
        # what the training run measured on test/ and drew: "accuracy", "roc_auc", ...
        "metrics": {k.removeprefix("test_"): logged_number(run.metrics.get(k)) for k in RUN_METRICS},
        "roc": store.figure(run.id, ROC_PLOT),
        "reliability": store.figure(run.id, RELIABILITY_PLOT),
        "confusion": store.figure(run.id, CONFUSION_PLOT),
    }
