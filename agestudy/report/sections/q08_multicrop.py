"""Q8: multi-crop prediction against the centre crop, with McNemar's test (analysis q8)."""

from __future__ import annotations

from agestudy.report.sections.sources import figure, metric, read_analysis

SOURCES = {
    "centre_accuracy": metric("q8_centre_accuracy"),
    "multicrop_accuracy": metric("q8_multicrop_accuracy"),
    "multicrop_n": metric("q8_multicrop_n"),  # int: crops averaged
    "gain": metric("q8_gain"),  # multicrop - centre accuracy
    "gain_ci_low": metric("q8_gain_ci_low", optional=True),
    "gain_ci_high": metric("q8_gain_ci_high", optional=True),
    "mcnemar_p": metric("q8_mcnemar_p"),
    "mcnemar_b": metric("q8_mcnemar_b"),  # right with the centre crop only
    "mcnemar_c": metric("q8_mcnemar_c"),  # right with multi-crop only
    "tencrop_accuracy": metric("q8_tencrop_accuracy", optional=True),
    "curve": figure("q8/accuracy_vs_crops.png"),  # accuracy against the number of crops
}


def build(ctx) -> dict:
    return read_analysis(ctx, "q8", SOURCES)
