"""Q3: the learning curves, as analysis q3 drew them from the logged metric histories.

Without an analysis the section falls back on the curve the run itself logged
(plots/learning_curve.png).
"""

from __future__ import annotations

from agestudy.report.sections.sources import figure, read_analysis, table
from agestudy.runs import LEARNING_CURVE_PLOT

SUMMARY = "q3/learning_curves.json"
SOURCES = {
    "figure": figure("q3/learning_curves_{lang}.png", optional=True),  # absent when the run logged no curve
    "runs": table(SUMMARY, "runs"),  # ids of the runs whose histories the figure shows (the run, its best trial)
    "has_val": table(SUMMARY, "has_val"),  # bool: the run has validation curves
    "trial_has_val": table(SUMMARY, "trial_has_val"),
    "n_points": table(SUMMARY, "n_points"),
    # null when the run (or its best trial) logged no such curve
    "trial_val_fraction": table(SUMMARY, "trial_val_fraction", optional=True),
    "trial_train_fraction": table(SUMMARY, "trial_train_fraction", optional=True),
    "final_train_acc": table(SUMMARY, "final_train_acc", optional=True),
    "final_train_loss": table(SUMMARY, "final_train_loss", optional=True),
    "trial_best_val_acc": table(SUMMARY, "trial_best_val_acc", optional=True),
    "trial_last_val_acc": table(SUMMARY, "trial_last_val_acc", optional=True),
}


def build(ctx) -> dict:
    return {**read_analysis(ctx, "q3", SOURCES), "logged_figure": ctx.store.figure(ctx.run.id, LEARNING_CURVE_PLOT)}
