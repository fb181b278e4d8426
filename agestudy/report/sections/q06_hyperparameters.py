"""Q6: the hyperparameters that matter: analysis q6's measured effects, how the study compared its trials
(objective, split or folds, the best trial's noise and the trials within it), and the study's own figures."""

from __future__ import annotations

from agestudy.report.sections.sources import read_analysis, table
from agestudy.runs import STUDY_HISTORY_PLOT, STUDY_IMPORTANCES_PLOT, STUDY_SLICE_PLOT

EFFECTS = "q6/effects.json"
SOURCES = {
    "source": table(EFFECTS, "source", optional=True),  # "hyperparams" | "own" | null (no study found)
    "study_run_id": table(EFFECTS, "study_run_id", optional=True),  # the study the numbers describe
    "objective": table(EFFECTS, "objective", optional=True),  # "val_acc" | "val_auc" | "cv_accuracy" | "cv_auc"
    "same_data": table(EFFECTS, "same_data", optional=True),  # bool: the study ran on the analysed run's data
    "n_complete": table(EFFECTS, "n_complete"),  # ints: the study's trials by state
    "n_pruned": table(EFFECTS, "n_pruned"),
    "n_failed": table(EFFECTS, "n_failed"),
    "importances": table(EFFECTS, "importances"),  # [[name, fANOVA importance]], largest first
    # list, most important first, of: name, kind ("numeric" | "categorical"), n, importance, rho,
    # low_range, high_range, low_mean, high_mean, diff, direction, strength, groups [{value, n, mean}], best, worst
    "effects": table(EFFECTS, "effects"),
    # dict (null without a study; absent from analysis runs before it): how the trials were compared
    # (agestudy/analyses/selection.py, study_protocol): objective, kind ("validation" | "cv"), study_run_id,
    # n_complete, best_trial, best_trial_run_id, best_value, se or sd, sd_metric, noise, noise_rule ("se" |
    # "sd"), noise_multiple, n_within, within_trials, n_val, val_fraction, n_fit, image_weight, folds, repeats,
    # n_folds
    "protocol": table(EFFECTS, "protocol", optional=True),
}


def build(ctx) -> dict:
    view = read_analysis(ctx, "q6", SOURCES)
    study = ctx.store.run(view["study_run_id"])  # the study's own figures go beside the analysis's numbers
    return {**view, "study": study,
            "importance_figure": ctx.store.figure(study.id, STUDY_IMPORTANCES_PLOT) if study else None,
            "slice_figure": ctx.store.figure(study.id, STUDY_SLICE_PLOT) if study else None,
            "history_figure": ctx.store.figure(study.id, STUDY_HISTORY_PLOT) if study else None}
