"""Q8: multi-crop prediction against the centre crop, with McNemar's test (analysis q8)."""

from __future__ import annotations

from agestudy.report.sections.sources import figure, metric, read_analysis

SOURCES = {
    "centre_accuracy": metric("centre_accuracy"),
    "multicrop_accuracy": metric("multicrop_accuracy"),
    "multicrop_n": metric("multicrop_n"),  # int: crops averaged
    "gain": metric("gain"),  # multicrop - centre accuracy
    "gain_ci_low": metric("gain_ci_low", optional=True),
    "gain_ci_high": metric("gain_ci_high", optional=True),
    "mcnemar_p": metric("mcnemar_p"),
    "mcnemar_b": metric("mcnemar_b"),  # right with the centre crop only
    "mcnemar_c": metric("mcnemar_c"),  # right with multi-crop only
    "tencrop_accuracy": metric("tencrop_accuracy", optional=True),
    "curve": figure("q8/accuracy_vs_crops.png"),  # accuracy against the number of crops
}


def build(ctx) -> dict:
    return read_analysis(ctx, "q8", SOURCES)
