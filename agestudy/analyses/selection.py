"""How a configuration was chosen, and how far the estimate it was chosen by lies from test/ (q4, q6).

A study compares its trials by one number each, its objective (``studies/*.toml``):

- ``val_acc`` / ``val_auc``: the trial's last validation score on one validation split of
  train/ (``data.n_val`` images, a param of the trial's run). Its noise is that score's standard
  error: sqrt(p (1 - p) / n) for an accuracy, Hanley & McNeil's for a ROC AUC (on the split's
  class counts, which the stratified split takes in train/'s proportions). Scores within
  ``NOISE_SE`` = 2 standard errors of each other cannot be told apart.
- ``cv_accuracy`` / ``cv_auc``: the mean over the folds of a stratified k-fold cross-validation
  of train/ (the trial's run logs ``cv/mean_acc``, ``cv/sd_acc``, ... and each fold's score).
  Its noise is the folds' spread, one standard deviation (studies/cv.toml: "a difference
  between two configurations smaller than about their sd is not a difference").

``study_protocol`` (q6): how a study compared its trials, its best trial's noise, and which
completed trials lie within that noise of the best. ``selection`` (q4): for the analysed run,
the accuracy it was chosen by (its study's best trial's validation accuracy or cross-validated
mean accuracy; a plain run's own validation accuracy) with that estimate's noise, and the gap
from the run's test accuracy. Each number comes with the run and the metric or param it was
read from; nothing is retrained.
"""

from __future__ import annotations

import math

from agestudy.analyses.stats import auc_se, binomial_se, trial_value
from agestudy.runs import (
    BEST_TRIAL_TAG,
    CV_FOLD_ACC,
    CV_MEAN_ACC,
    CV_N_FOLDS,
    CV_SD_ACC,
    CV_SD_AUC,
    OBJECTIVE_TAG,
    ROLE_FINAL,
    ROLE_TAG,
    ROLE_TRIAL,
    STUDY_TAG,
    STUDY_TRIALS_COMPLETE,
    TEST_ACCURACY,
    TRIAL_TAG,
    VAL_FINAL_ACC,
    active_run,
    best_trial_run,
    find_runs,
    logged_number,
    metric_history,
    run_metric,
    study_run,
)
from agestudy.studies import CV_OBJECTIVES

NOISE_SE = 2  # a validation score's noise: this many standard errors
RUN_ID_COLUMN = "user_attrs_mlflow_run_id"  # study/trials.csv: the trial's MLflow run (agestudy.tune's RUN_ID_ATTR)


def _int(value) -> int | None:
    number = logged_number(value)
    return int(number) if number is not None else None


def _within(value: float | None, reference: float | None, noise: float | None) -> bool | None:
    if value is None or reference is None or noise is None or not math.isfinite(noise):
        return None
    return abs(value - reference) <= noise + 1e-12


def validation_facts(run) -> dict:
    """The validation split a run held out, from its params: images, share of train/, images fitted."""
    params = run.data.params
    n_val = _int(params.get("data.n_val"))
    return {"n_val": n_val, "val_fraction": logged_number(params.get("val_fraction")),
            "n_fit": _int(params.get("data.n_train_used")), "image_weight": 1 / n_val if n_val else None}


# the items of an estimate (``accuracy_estimate``), all None when a run gives none
NO_ESTIMATE = dict.fromkeys((
    "kind",  # "validation" | "cv"
    "estimate_run_id", "estimate", "estimate_metric",  # the accuracy, the run and its metric that hold it
    "se", "sd", "sd_metric",  # validation: the standard error; cv: the folds' sd and its metric
    "noise", "noise_rule", "noise_multiple",  # half-width of the noise band: noise_multiple x se ("se") or x sd ("sd")
    "n_val", "val_fraction", "n_fit", "image_weight",  # validation: the split (validation_facts)
    "folds", "repeats", "n_folds", "fold_acc", "fold_metric",  # cv: the folds and each one's accuracy
))


def accuracy_estimate(client, run) -> dict:
    """The accuracy a run estimates for its configuration without test/, with its noise (``NO_ESTIMATE``'s items).

    A cross-validated trial's run: the folds' mean accuracy ``cv/mean_acc``, noise one sd over the
    folds (``cv/sd_acc``), each fold's score (``cv/fold_acc``, in the order trained). A run with a
    validation split: its final validation accuracy ``val/final_acc`` on ``data.n_val`` images, noise
    ``NOISE_SE`` binomial standard errors. Any other run: every item None.
    """
    metrics, params, run_id = run.data.metrics, run.data.params, run.info.run_id
    mean = run_metric(metrics, CV_MEAN_ACC)
    if mean is not None:
        folds = [value for _, value in metric_history(client, run_id, CV_FOLD_ACC)]
        sd = run_metric(metrics, CV_SD_ACC)
        n_folds = run_metric(metrics, CV_N_FOLDS)
        return {**NO_ESTIMATE, "kind": "cv", "estimate_run_id": run_id, "estimate": mean,
                "estimate_metric": CV_MEAN_ACC, "sd": sd, "sd_metric": CV_SD_ACC, "noise": sd, "noise_rule": "sd",
                "noise_multiple": 1, "folds": _int(params.get("cv.folds")), "repeats": _int(params.get("cv.repeats")),
                "n_folds": int(n_folds) if n_folds is not None else len(folds), "fold_acc": folds,
                "fold_metric": CV_FOLD_ACC}
    facts = validation_facts(run)
    accuracy = run_metric(metrics, VAL_FINAL_ACC)
    if not facts["n_val"] or accuracy is None:
        return dict(NO_ESTIMATE)
    se = binomial_se(accuracy, facts["n_val"])
    return {**NO_ESTIMATE, **facts, "kind": "validation", "estimate_run_id": run_id, "estimate": accuracy,
            "estimate_metric": VAL_FINAL_ACC, "se": se, "noise": NOISE_SE * se, "noise_rule": "se",
            "noise_multiple": NOISE_SE}


def selection(client, analysed) -> dict:
    """How the analysed run's configuration was chosen, the accuracy it was chosen by, and the gap from test/.

    ``source``: "study" (a study's final run: the estimate is its best trial's, ``best_trial_run``),
    "own" (any other run: the estimate is its own validation accuracy, when it held out a split).
    ``gap`` is the run's test accuracy minus the estimate; ``within`` whether it lies within the
    estimate's noise. ``members`` / ``estimate_members``: the networks the run and the estimate's
    run trained (a refit may be a larger ensemble than its trials).
    """
    tags, params = analysed.data.tags, analysed.data.params
    is_final = tags.get(ROLE_TAG) == ROLE_FINAL
    study = study_run(client, analysed) if is_final else None
    chooser = best_trial_run(client, analysed) if is_final else analysed  # the run whose estimate chose it
    test = run_metric(analysed.data.metrics, TEST_ACCURACY)
    out = {
        "source": "study" if is_final else "own",
        "run_id": analysed.info.run_id,
        "role": tags.get(ROLE_TAG),
        "study": tags.get(STUDY_TAG) if is_final else None,
        "study_run_id": study.info.run_id if study is not None else None,
        "objective": study.data.tags.get(OBJECTIVE_TAG) if study is not None else None,
        "n_complete": _int(run_metric(study.data.metrics, STUDY_TRIALS_COMPLETE)) if study is not None else None,
        "best_trial": _int(tags.get(BEST_TRIAL_TAG)) if is_final else None,
        "best_trial_run_id": chooser.info.run_id if is_final and chooser is not None else None,
        "n_train": _int(params.get("data.n_train_used")),
        "members": _int(params.get("members")),
        "estimate_members": _int(chooser.data.params.get("members")) if chooser is not None else None,
        "test_accuracy": test, "test_metric": TEST_ACCURACY,
        **(accuracy_estimate(client, chooser) if chooser is not None else NO_ESTIMATE),
    }
    out["gap"] = test - out["estimate"] if test is not None and out["estimate"] is not None else None
    out["within"] = _within(test, out["estimate"], out["noise"])
    return out


def _complete(rows: list[dict]) -> list[tuple[int, float, dict]]:
    """(number, value, row) of a trial table's completed trials with a finite value."""
    done = []
    for row in rows:
        value, number = logged_number(trial_value(row)), _int(row.get("number"))
        if str(row.get("state", "")).upper() == "COMPLETE" and value is not None and number is not None:
            done.append((number, value, row))
    return done


def _trial_run(client, study, row: dict, number: int):
    """A trial's MLflow run: the id the trial table holds, else the study's trial run with that number."""
    trial = active_run(client, row.get(RUN_ID_COLUMN))
    if trial is None:
        found = find_runs(client, [study.info.experiment_id], role=ROLE_TRIAL, study=study.data.tags.get(STUDY_TAG),
                          extra={TRIAL_TAG: str(number)}, max_results=1)
        trial = found[0] if found else None
    return trial


def study_protocol(client, study, rows: list[dict]) -> dict:
    """How a study compared its trials (``rows``: its study/trials.csv) and how many lie within noise of the best.

    The noise is the best trial's: ``NOISE_SE`` standard errors of its validation score on the
    split's ``data.n_val`` images, or one sd of its cross-validation folds (``cv/sd_acc``,
    ``cv/sd_auc``), in the objective's units. ``within_trials``: the completed trials whose
    objective is at most that far below the best's (the best among them).
    """
    objective = study.data.tags.get(OBJECTIVE_TAG, "val_acc")
    cv = objective in CV_OBJECTIVES
    complete = _complete(rows)
    out = {"objective": objective, "kind": "cv" if cv else "validation", "study_run_id": study.info.run_id,
           "n_complete": len(complete), "best_trial": None, "best_trial_run_id": None, "best_value": None,
           "se": None, "sd": None, "sd_metric": None, "noise": None, "noise_rule": "sd" if cv else "se",
           "noise_multiple": 1 if cv else NOISE_SE, "n_within": None, "within_trials": [], "n_val": None,
           "val_fraction": None, "n_fit": None, "image_weight": None, "folds": None, "repeats": None, "n_folds": None}
    if not complete:
        return out
    number, best, row = max(complete, key=lambda item: item[1])  # the first of equal bests, as Optuna's best_trial
    out.update(best_trial=number, best_value=best)
    trial = _trial_run(client, study, row, number)
    if trial is None:
        return out
    out["best_trial_run_id"] = trial.info.run_id
    metrics, params = trial.data.metrics, trial.data.params
    if cv:
        out["sd_metric"] = CV_SD_AUC if objective == "cv_auc" else CV_SD_ACC
        out["sd"] = out["noise"] = run_metric(metrics, out["sd_metric"])
        n_folds = run_metric(metrics, CV_N_FOLDS)
        out.update(folds=_int(params.get("cv.folds")), repeats=_int(params.get("cv.repeats")),
                   n_folds=int(n_folds) if n_folds is not None else None)
    else:
        out.update(validation_facts(trial))
        n_val = out["n_val"]
        if objective == "val_auc":  # the stratified split holds train/'s class proportions
            counts = [_int(params.get(f"data.train_{c}")) or 0 for c in (0, 1)]
            n1 = round(n_val * counts[1] / sum(counts)) if n_val and sum(counts) else 0
            se = auc_se(best, (n_val or 0) - n1, n1)
        else:
            se = binomial_se(best, n_val or 0)
        out["se"] = se if math.isfinite(se) else None
        out["noise"] = NOISE_SE * out["se"] if out["se"] is not None else None
    if out["noise"] is not None:
        out["within_trials"] = sorted(n for n, value, _ in complete if _within(value, best, out["noise"]))
        out["n_within"] = len(out["within_trials"])
    return out
