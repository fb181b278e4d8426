"""Q6: which hyperparameters matter, measured across a study's completed trials.

The study: the latest ``hyperparams`` study run of the analysed run's experiment (``python -m
agestudy.tune --study hyperparams``, a broad search), else the analysed run's own study.
Its ``study/trials.csv`` gives, per searched hyperparameter, the effect on the objective
(``stats.hyperparameter_effects``: Spearman's rho and the upper-minus-lower-half difference
for a numeric one, the mean per value for a categorical one); its fANOVA importances are
the ones the study run logged. How the trials were compared goes beside them, as ``protocol``
(``selection.study_protocol``): the objective, the validation split's images or the folds, the
best trial's noise (2 standard errors of its validation score, or its folds' sd) and which
completed trials lie within that noise of the best. Nothing is retrained. Everything goes to
``q6/effects.json`` with the id of the study it describes, whose own figures (importances,
slices, history) the report shows beside it.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict

from agestudy.analyses.selection import study_protocol
from agestudy.analyses.stats import hyperparameter_effects
from agestudy.runs import (
    DATA_FINGERPRINT_TAG,
    OBJECTIVE_TAG,
    STUDY_BEST_VALUE,
    STUDY_IMPORTANCES,
    STUDY_TRIALS,
    has_artifact,
    latest_study_run,
    run_metric,
    study_run,
)

STUDY = "hyperparams"


def choose_study(ctx) -> tuple[object | None, str | None]:
    """(study run, "hyperparams" | "own"), or (None, None) when neither has a trial table."""
    analysed = ctx.analysed_run()
    chosen = latest_study_run(ctx.client, analysed.info.experiment_id, STUDY)
    if chosen is not None:
        return chosen, "hyperparams"
    own = study_run(ctx.client, analysed)
    if own is not None and has_artifact(ctx.client, own.info.run_id, STUDY_TRIALS):
        return own, "own"
    return None, None


def run(ctx) -> dict:
    study, source = choose_study(ctx)
    if study is None:
        ctx.log_table("effects", {"source": None, "study_run_id": None, "effects": [], "importances": [],
                                  "n_complete": 0, "n_pruned": 0, "n_failed": 0, "protocol": None})
        ctx.log_metrics({"n_complete": 0})
        return {"n_complete": 0}
    study_id = study.info.run_id
    rows = list(csv.DictReader(io.StringIO(ctx.read_artifact(study_id, STUDY_TRIALS) or "")))
    logged = json.loads(ctx.read_artifact(study_id, STUDY_IMPORTANCES) or "null")
    importances = {str(k): float(v) for k, v in logged.items()} if isinstance(logged, dict) else {}
    states = [str(row.get("state")).upper() for row in rows]
    analysed = ctx.analysed_run()
    fingerprint = analysed.data.params.get("data.fingerprint") or analysed.data.tags.get(DATA_FINGERPRINT_TAG)
    out = {
        "source": source,
        "study_run_id": study_id,
        "objective": study.data.tags.get(OBJECTIVE_TAG, "val_acc"),
        "same_data": study.data.tags.get(DATA_FINGERPRINT_TAG) == fingerprint,
        "n_complete": states.count("COMPLETE"),
        "n_pruned": states.count("PRUNED"),
        "n_failed": states.count("FAIL"),
        "importances": sorted(importances.items(), key=lambda kv: -kv[1]),  # [[name, importance]], largest first
        "effects": [asdict(effect) for effect in hyperparameter_effects(rows, importances)],
        "protocol": study_protocol(ctx.client, study, rows),
    }
    ctx.log_table("effects", out)
    headline = {"n_complete": out["n_complete"], "n_pruned": out["n_pruned"], "n_failed": out["n_failed"],
                "best_value": run_metric(study.data.metrics, STUDY_BEST_VALUE),
                "n_within_noise": out["protocol"]["n_within"]}
    ctx.log_metrics(headline)
    return {k: v for k, v in headline.items() if v is not None}
