"""Q2: freshly initialised networks against chance: pooled accuracy, its interval, the test (analysis q2)."""

from __future__ import annotations

from agestudy.report.sections.sources import figure, metric, read_analysis

SOURCES = {
    "n_networks": metric("q2_n_networks"),  # int: untrained networks (seeds) measured
    "pooled_accuracy": metric("q2_pooled_accuracy"),  # float in [0, 1]
    "ci_low": metric("q2_ci_low"),  # 95 % interval of the pooled accuracy
    "ci_high": metric("q2_ci_high"),
    "p_value": metric("q2_binom_pvalue"),  # binomial test of H0: accuracy = 0.5
    "n_significant": metric("q2_n_significant", optional=True),  # networks with p < 0.05
    "accuracy_min": metric("q2_accuracy_min", optional=True),
    "accuracy_max": metric("q2_accuracy_max", optional=True),
    "majority_accuracy": metric("q2_majority_accuracy", optional=True),
    "trained_accuracy": metric("q2_trained_accuracy", optional=True),
    "histogram": figure("q2/p1_histograms.png"),  # histogram of predicted P(label 1)
    "accuracy_plot": figure("q2/accuracy.png", optional=True),  # per-seed accuracy with intervals
}


def build(ctx) -> dict:
    return read_analysis(ctx, "q2", SOURCES)
