"""Q4: the run's test accuracy, with the interval and the 75 % passes analysis q4 logged.

The accuracy, the training facts and whether the run held out a validation split are the
run's own metrics and params (so a run without an analysis still shows them); the Wilson
interval, the count of right images and when accuracy first passed 75 % come from the analysis,
and so does how the configuration was chosen (the study, the estimate it was chosen by with its
noise, the gap from the test accuracy: ``q4/selection.json``, which sections 6 and 10 read too).
"""

from __future__ import annotations

from agestudy.report.sections.sources import read_analysis, table
from agestudy.runs import TEST_ACCURACY, TEST_BALANCED_ACCURACY, TRAIN_ITERATIONS, TRAIN_SECONDS, run_metric

ACCURACY = "q4/accuracy.json"
SELECTION = "q4/selection.json"
SOURCES = {
    "ci_low": table(ACCURACY, "ci_low", optional=True),  # Wilson 95 % interval of test/accuracy
    "ci_high": table(ACCURACY, "ci_high", optional=True),
    "correct": table(ACCURACY, "correct", optional=True),  # int: test images right
    # dict (null when no linked run has validation): run_id, is_own, reached, step, seconds, best_val_acc,
    # iterations, train_seconds, val_fraction, train_fraction, evals_per_epoch
    "first75": table(ACCURACY, "first75", optional=True),
    "train75_step": table(ACCURACY, "train75_step", optional=True),  # first train_acc >= 75 %, or null
    "train_acc_points": table(ACCURACY, "train_acc_points"),  # int: points of the run's train/acc history
    # dict: how the configuration was chosen (agestudy/analyses/selection.py, selection): source ("study" |
    # "own"), study, study_run_id, objective, n_complete, best_trial, best_trial_run_id, n_train, members,
    # estimate_members; the estimate: kind ("validation" | "cv" | null), estimate, estimate_run_id,
    # estimate_metric, se (validation) or sd, sd_metric (cv), noise, noise_rule ("se" | "sd"), noise_multiple,
    # n_val, val_fraction, n_fit, image_weight (validation), folds, repeats, n_folds, fold_acc, fold_metric (cv);
    # test_accuracy, test_metric, gap (test minus estimate), within (bool: inside the noise)
    "selection": table(SELECTION),
}


def build(ctx) -> dict:
    run = ctx.run
    return {
        **read_analysis(ctx, "q4", SOURCES),
        "accuracy": run_metric(run.metrics, TEST_ACCURACY),
        "balanced_accuracy": run_metric(run.metrics, TEST_BALANCED_ACCURACY),
        "n_test": ctx.data["n_test"],  # params data.test_0 + data.test_1, as on the title page
        "own_has_val": ctx.data["n_val"] not in (None, 0),  # the run held out a validation split (param data.n_val)
        "eval_flip": str(run.params.get("eval_flip", "False")).lower() == "true",
        "iterations": run_metric(run.metrics, TRAIN_ITERATIONS),
        "train_seconds": run_metric(run.metrics, TRAIN_SECONDS),
    }
