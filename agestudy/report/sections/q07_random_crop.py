"""Q7: RandomCrop: the run's augmentation, the augmentation study's ablation and analysis q7's measurements."""

from __future__ import annotations

from agestudy.report.sections.sources import figure, read_analysis, table
from agestudy.runs import AUGMENTATIONS_PLOT

ABLATION = "q7/ablation.json"
SOURCES = {
    "crop_grid": figure("q7/random_crop_grid.png"),  # RandomCrop alone on a few training images
    # the augmentation study's objective by value: {"random_crop"|"padding"|"flip": [{value, n, mean, std}]}
    # ({} when there is no augmentation study yet)
    "groups": table(ABLATION, "groups"),
    "study_run_id": table(ABLATION, "study_run_id", optional=True),  # that study's run
    "objective": table(ABLATION, "objective", optional=True),
    "same_data": table(ABLATION, "same_data", optional=True),
    # dict: status ("measured" | "not_run"), groups {"with"|"without": {"val_acc"|"test_acc"|"train_acc"|"gap":
    # {"n", "mean", "std"}}}, tests {"val_acc"|"test_acc": {"welch_t", "p_value"}}, command (str)
    "effect": table("q7/effect.json"),
    "effect_plot": figure("q7/effect.png", optional=True),
}
CONFIG = ("random_crop", "crop", "padding", "flip", "jitter")  # the run's augmentation params, as logged


def build(ctx) -> dict:
    view = read_analysis(ctx, "q7", SOURCES)
    return {**view, "study": ctx.store.run(view["study_run_id"]),
            "grid": ctx.store.figure(ctx.run.id, AUGMENTATIONS_PLOT),
            "config": {k: ctx.run.params.get(k) for k in CONFIG}}
