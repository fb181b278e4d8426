"""Q2: freshly initialised networks against chance: pooled accuracy, its interval, the test (analysis q2)."""

from __future__ import annotations

from agestudy.report.sections.sources import figure, metric, read_analysis

SOURCES = {
    "n_networks": metric("n_networks"),  # int: untrained networks (seeds) measured
    "pooled_accuracy": metric("pooled_accuracy"),  # float in [0, 1]
    "ci_low": metric("ci_low"),  # 95 % interval of the pooled accuracy
    "ci_high": metric("ci_high"),
    "p_value": metric("binom_pvalue"),  # binomial test of H0: accuracy = 0.5
    "n_significant": metric("n_significant", optional=True),  # networks with p < 0.05
    "accuracy_min": metric("accuracy_min", optional=True),
    "accuracy_max": metric("accuracy_max", optional=True),
    "majority_accuracy": metric("majority_accuracy", optional=True),
    "trained_accuracy": metric("trained_accuracy", optional=True),
    "histogram": figure("q2/p1_histograms.png"),  # histogram of predicted P(label 1)
    "accuracy_plot": figure("q2/accuracy.png", optional=True),  # per-seed accuracy with intervals
}


def build(ctx) -> dict:
    return read_analysis(ctx, "q2", SOURCES)
