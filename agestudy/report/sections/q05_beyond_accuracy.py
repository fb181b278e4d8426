"""Q5: beyond accuracy: the run's own test metrics and figures, and what analysis q5 adds."""

from __future__ import annotations

from agestudy.report.sections.sources import figure, metric, read_analysis
from agestudy.runs import CONFUSION_PLOT, RELIABILITY_PLOT, ROC_PLOT, TEST_MEASURES, measure_metric, run_metric

SOURCES = {
    "auc_ci_low": metric("auc_ci_low"),  # bootstrap 95 % interval of the ROC AUC
    "auc_ci_high": metric("auc_ci_high"),
    "temperature": metric("temperature", optional=True),  # temperature scaling factor
    "ece_after": metric("ece_after", optional=True),
    "brier_after": metric("brier_after", optional=True),
    "class0_recall": metric("class0_recall", optional=True),
    "class1_recall": metric("class1_recall", optional=True),
    "class0_precision": metric("class0_precision", optional=True),
    "class1_precision": metric("class1_precision", optional=True),
    "class0_margin_mean": metric("class0_margin_mean", optional=True),  # mean of p1 - p0
    "class1_margin_mean": metric("class1_margin_mean", optional=True),
    "class0_margin_var": metric("class0_margin_var", optional=True),
    "class1_margin_var": metric("class1_margin_var", optional=True),
    "margin_histograms": figure("q5/margin_histograms.png"),
    "reliability_after": figure("q5/reliability_after.png", optional=True),
}


def build(ctx) -> dict:
    run, store = ctx.run, ctx.store
    return {
        **read_analysis(ctx, "q5", SOURCES),
        # what the training run measured on test/ and drew: "accuracy", "roc_auc", ...
        "metrics": {m: run_metric(run.metrics, measure_metric(m)) for m in TEST_MEASURES},
        "roc": store.figure(run.id, ROC_PLOT),
        "reliability": store.figure(run.id, RELIABILITY_PLOT),
        "confusion": store.figure(run.id, CONFUSION_PLOT),
    }
