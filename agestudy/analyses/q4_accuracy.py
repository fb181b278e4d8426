"""Q4: the final test accuracy's 95 % interval, and when accuracy first passed 75 %.

Nothing is measured again: the accuracy is the analysed run's ``test/accuracy`` metric and
the number of test images its params ``data.test_0`` + ``data.test_1``; the interval is
Wilson's. When validation accuracy first passed 75 % comes from the run itself when it held
out a validation split, else from its study's best trial (the same configuration trained on
part of train/: a final run trains on all of it). The training accuracy's first pass comes
from the run's own ``train/acc`` history. Everything goes to ``q4/accuracy.json``.

How the configuration was chosen goes to ``q4/selection.json`` (``selection.selection``): the
study and its objective, the accuracy the configuration was chosen by (the best trial's
validation accuracy with its standard error on the split's images, or its cross-validated mean
with the folds' sd and each fold's score; a plain run's own validation accuracy) and the test
accuracy minus that estimate, within its noise or not, each number with the run it came from.
Sections 4, 6 and 10 of the report read it from there.
"""

from __future__ import annotations

from agestudy.analyses.selection import selection
from agestudy.analyses.stats import wilson_interval
from agestudy.runs import (
    FIRST_VAL_ACC75_SECONDS,
    FIRST_VAL_ACC75_STEP,
    TEST_ACCURACY,
    TRAIN_ACC,
    TRAIN_ITERATIONS,
    TRAIN_SECONDS,
    VAL_BEST_ACC,
    best_trial_run,
    has_metric,
    logged_number,
    metric_history,
    run_metric,
)

TARGET = 0.75


def _int_param(params: dict, key: str) -> int | None:
    try:
        return int(float(params[key]))
    except (KeyError, TypeError, ValueError):
        return None


def _has_val(run) -> bool:
    return _int_param(run.data.params, "data.n_val") not in (None, 0) or has_metric(run.data.metrics, VAL_BEST_ACC)


def first_pass(run, is_own: bool) -> dict:
    """When validation accuracy first reached 75 % in ``run`` (the metrics training logged), with its context."""
    params, metrics = run.data.params, run.data.metrics
    step = run_metric(metrics, FIRST_VAL_ACC75_STEP)
    val_fraction = logged_number(params.get("val_fraction"))
    return {"run_id": run.info.run_id, "is_own": is_own, "reached": step is not None, "step": step,
            "seconds": run_metric(metrics, FIRST_VAL_ACC75_SECONDS),
            "best_val_acc": run_metric(metrics, VAL_BEST_ACC),
            "iterations": run_metric(metrics, TRAIN_ITERATIONS),
            "train_seconds": run_metric(metrics, TRAIN_SECONDS),
            "val_fraction": val_fraction,
            "train_fraction": 1 - val_fraction if val_fraction is not None else None,
            "evals_per_epoch": params.get("evals_per_epoch", "?")}


def run(ctx) -> dict:
    analysed = ctx.analysed_run()
    params = analysed.data.params
    accuracy = run_metric(analysed.data.metrics, TEST_ACCURACY)
    counts = [_int_param(params, f"data.test_{c}") for c in (0, 1)]
    n_test = sum(c or 0 for c in counts)
    out = {"accuracy": accuracy, "n_test": n_test, "ci_low": None, "ci_high": None, "correct": None}
    if accuracy is not None and n_test:
        out["ci_low"], out["ci_high"] = wilson_interval(accuracy, n_test)
        out["correct"] = round(accuracy * n_test)

    # validation's first pass: the run itself if it had a validation split, else its best trial
    trial = best_trial_run(ctx.client, analysed)
    out["first75"] = None
    if _has_val(analysed):
        out["first75"] = first_pass(analysed, is_own=True)
    elif trial is not None and trial.info.run_id != ctx.run_id and _has_val(trial):
        out["first75"] = first_pass(trial, is_own=False)

    # training accuracy (a running mean over log_every iterations of augmented batches)
    train = metric_history(ctx.client, ctx.run_id, TRAIN_ACC)
    out["train75_step"] = next((step for step, value in train if value >= TARGET), None)
    out["train_acc_points"] = len(train)
    ctx.log_table("accuracy", out)
    chosen = selection(ctx.client, analysed)
    ctx.log_table("selection", chosen)

    first = out["first75"] or {}
    headline = {"ci_low": out["ci_low"], "ci_high": out["ci_high"], "correct": out["correct"],
                "n_test": n_test, "first_val_acc75_step": first.get("step"),
                "train_acc75_step": out["train75_step"], "selection_estimate": chosen["estimate"],
                "selection_gap": chosen["gap"]}
    ctx.log_metrics(headline)  # None values are left out
    return {k: v for k, v in headline.items() if v is not None}
