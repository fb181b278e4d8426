"""The main job: an Optuna study over training options, every trial an MLflow run, then a final refit.

    python -m agestudy.tune                                  # studies/default.toml on the default data
    python -m agestudy.tune --study quick --n-trials 4
    python -m agestudy.tune --workers 2                      # two processes on one study
    python -m agestudy.tune --storage postgresql://u:p@host/db --tracking-uri http://host:5000   # several machines

Flow: load and check the study file -> load the data (decoded once) -> open or resume the
Optuna study -> fail the trials of dead workers -> one MLflow parent run for the study ->
trials as child runs (pruned on validation accuracy) -> study plots and trial table on the
parent run -> retrain the best configuration on all of train/ and measure it on test/
(the run tagged ``agestudy.role=final``, which the report uses).

With a cross-validated objective (``cv_accuracy``, ``cv_auc``) a trial's run trains nothing
itself: its child runs (role ``fold``) train one model per fold of a repeated stratified
k-fold split of train/, and the trial's run logs each fold's score (``cv/fold_acc``, step =
the fold's index) and their mean and spread (``cv/mean_acc``, ``cv/sd_acc``). The pruner
sees the running mean after each fold.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from agestudy import device as devices
from agestudy.cli import HelpFormatter
from agestudy.data import LabData, load_data, resolve_data_root
from agestudy.errors import UserError, cli_entry
from agestudy.runs import (
    BEST_TRIAL_RUN_TAG,
    BEST_TRIAL_TAG,
    CV_FOLD_ACC,
    CV_FOLD_AUC,
    CV_MEAN_ACC,
    CV_MEAN_AUC,
    CV_N_FOLDS,
    CV_SD_ACC,
    CV_SD_AUC,
    DATA_FINGERPRINT_TAG,
    DESCRIPTION_TAG,
    ERROR_TAG,
    FOLD_TAG,
    OBJECTIVE_METRICS,
    OBJECTIVE_TAG,
    PARENT_RUN_TAG,
    PRUNED_NAME_SUFFIX,
    PRUNED_TAG,
    PRUNER_TAG,
    REPEAT_TAG,
    ROLE_FINAL,
    ROLE_FOLD,
    ROLE_STUDY,
    ROLE_TAG,
    ROLE_TRIAL,
    SAMPLER_TAG,
    STORAGE_SCHEMES,
    STORAGE_TAG,
    STUDY_BEST_VALUE,
    STUDY_EPOCHS_SAVED,
    STUDY_HISTORY_PLOT,
    STUDY_IMPORTANCES,
    STUDY_IMPORTANCES_PLOT,
    STUDY_SLICE_PLOT,
    STUDY_TAG,
    STUDY_TRIALS,
    STUDY_TRIALS_COMPLETE,
    STUDY_TRIALS_FAILED,
    STUDY_TRIALS_PRUNED,
    SUMMARY_STEP,
    SYNTHETIC_SENTENCE,
    SYNTHETIC_TAG,
    SYNTHETIC_WARNING,
    TEST_ACCURACY,
    TEST_ECE,
    TEST_ROC_AUC,
    TRIAL_TAG,
    VAL_FINAL_ACC,
    VAL_FINAL_AUC,
    WARNING_TAG,
    check_reachable,
    find_runs,
    redact_uri,
    scrub,
    with_current_names,
)
from agestudy.studies import OBJECTIVES, StudySpec, load_study

STORAGE_DIR = Path("mlruns") / "optuna"
RUN_ID_ATTR = "mlflow_run_id"
PARENT_ATTR = "mlflow_parent_run_id"


# ----------------------------------------------------------------------------- Optuna pieces

def default_storage_url(spec: StudySpec) -> str:
    return str((STORAGE_DIR / f"{spec.name}.journal").resolve())


def open_storage(url: str):
    """An RDB URL (postgresql://, mysql://, sqlite://) with heartbeats, else a journal file."""
    import optuna
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    if "://" in url:
        check_reachable(url, "the Optuna study storage", STORAGE_SCHEMES)
        engine_kwargs = {"pool_pre_ping": True}
        if url.startswith("sqlite"):
            engine_kwargs["connect_args"] = {"timeout": 120}  # wait for a lock instead of failing
        try:
            # heartbeats let a worker on any machine notice a trial whose worker died
            return RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=20, grace_period=60)
        except Exception as err:  # noqa: BLE001 - a wrong URL or an unreachable server is the user's to fix
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(f"cannot open the study storage {redact_uri(url)}: {scrub(reason, url)}") from None
    path = Path(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    # one append-only file, safe for several processes on one machine (file locks)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return JournalStorage(JournalFileBackend(str(path)))


def create_sampler(spec: StudySpec):
    import optuna

    s = spec.sampler
    if s["type"] == "random":
        return optuna.samplers.RandomSampler(seed=s.get("seed"))
    if s["type"] == "grid":
        return optuna.samplers.GridSampler({p.name: p.choices for p in spec.space}, seed=s.get("seed"))
    return optuna.samplers.TPESampler(seed=s.get("seed"), n_startup_trials=s.get("n_startup_trials", 5),
                                      multivariate=s.get("multivariate", True))


def create_pruner(spec: StudySpec):
    import optuna

    p = spec.pruner
    if p["type"] == "none":
        return optuna.pruners.NopPruner()
    if p["type"] == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=p.get("min_resource", 2),
                                              reduction_factor=p.get("reduction_factor", 3))
    return optuna.pruners.MedianPruner(n_startup_trials=p.get("n_startup_trials", 3),
                                       n_warmup_steps=p.get("n_warmup_steps", 2))


class _NoInterruptTraceback(logging.Filter):
    """Ctrl-C or SIGTERM inside a trial: Optuna logs the trial's failure with the interrupted
    training's traceback. Its one-line message stays; the traceback goes (an interrupt is not a
    bug, and cli_entry says "interrupted")."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[0] is not None and issubclass(record.exc_info[0], KeyboardInterrupt):
            record.exc_info = record.exc_text = None
        return True


def open_study(spec: StudySpec, storage_url: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for handler in logging.getLogger("optuna").handlers:
        if not any(isinstance(f, _NoInterruptTraceback) for f in handler.filters):
            handler.addFilter(_NoInterruptTraceback())
    study = optuna.create_study(study_name=spec.name, storage=open_storage(storage_url), direction="maximize",
                                sampler=create_sampler(spec), pruner=create_pruner(spec), load_if_exists=True)
    if study.metric_names is None:  # optuna-dashboard then names the objective instead of "Objective 0"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # set_metric_names is marked experimental
            study.set_metric_names([OBJECTIVES[spec.objective]])
        study.set_user_attr("description", spec.description.strip() or spec.name)
    return study


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_dead_trials(study) -> list[int]:
    """Mark as FAILED the RUNNING trials whose worker process on this machine is gone.

    RDB storages also do this by heartbeat for workers on other machines.
    """
    import optuna
    from optuna.trial import TrialState

    if isinstance(study._storage, optuna.storages.RDBStorage):
        optuna.storages.fail_stale_trials(study)
    failed = []
    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs
        if attrs.get("worker_host") == host and not _process_alive(int(attrs.get("worker_pid", -1))):
            try:
                # the reason first: a finished trial can no longer be changed
                study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", "worker died (stale trial)")
                study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
                failed.append(trial.number)
            except Exception:  # noqa: BLE001 - another worker got there first
                pass
    return failed


def close_orphan_runs(study) -> list[str]:
    """MLflow runs of failed trials that were left RUNNING (worker killed) end as FAILED."""
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    client, closed = MlflowClient(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        if not run_id:
            continue
        try:
            run = client.get_run(run_id)
        except Exception:  # noqa: BLE001 - run deleted by hand
            continue
        # a cross-validated trial's run and the fold run it was training
        folds = find_runs(client, [run.info.experiment_id], role=ROLE_FOLD, status="RUNNING",
                          extra={PARENT_RUN_TAG: run_id})
        for orphan in [run, *folds]:
            if orphan.info.status == "RUNNING":
                client.set_tag(orphan.info.run_id, ERROR_TAG, trial.user_attrs.get("fail_reason", "worker died"))
                client.set_terminated(orphan.info.run_id, status="FAILED")
                closed.append(orphan.info.run_id)
    return closed


# ----------------------------------------------------------------------------- trials

def objective_value(spec: StudySpec, scores: dict) -> float:
    return scores["auc"] if spec.objective == "val_auc" else scores["acc"]


def make_objective(spec: StudySpec, data: LabData, parent_run_id: str, progress: bool, system_metrics: bool = True):
    import optuna

    from agestudy.train import train_and_log

    # images a trial trains on (train/ less its validation split): sets the scale-aware epoch count
    n_trial_train = len(data.train) - round(len(data.train) * spec.trial_config({}).val_fraction)

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker_host", socket.gethostname())
        trial.set_user_attr("worker_pid", os.getpid())
        values = {p.name: p.suggest(trial) for p in spec.space}
        cfg = spec.trial_config(values)
        searched = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
        searched = searched or "no searched option"
        if spec.cv:
            return cross_validate(trial, spec, cfg, data, parent_run_id, searched, progress, system_metrics)
        state = {"evals": 0, "value": float("nan"), "epochs": 0, "steps": []}

        def on_validation(step, epoch, scores):
            state["evals"] += 1
            state["steps"].append(step)
            state["value"] = objective_value(spec, scores)
            state["epochs"] = epoch + 1
            # report once per validation; the step is the validation index, comparable across batch sizes
            trial.report(state["value"], state["evals"])
            return trial.should_prune()  # True stops the training: a pruned trial

        epochs = cfg.epochs_for(n_trial_train, devices.select_device(cfg.device).type)
        trial.set_user_attr("epochs_planned", epochs)
        tags = {ROLE_TAG: ROLE_TRIAL, STUDY_TAG: spec.name, TRIAL_TAG: str(trial.number)}
        run = train_and_log(cfg, data, run_name=f"{spec.name}-trial-{trial.number}", tags=tags,
                            parent_run_id=parent_run_id, on_validation=on_validation, test=False, progress=progress,
                            system_metrics=system_metrics,
                            description=f"Trial {trial.number} of study '{spec.name}' ({searched}), scored by "
                                        f"{OBJECTIVES[spec.objective]}",
                            on_run_start=lambda run_id: trial.set_user_attr(RUN_ID_ATTR, run_id))
        trial.set_user_attr(f"last_{spec.objective}", state["value"])
        # Optuna counts validations 1, 2, ...; the trial's MLflow run logged them at these iterations
        trial.set_user_attr("mlflow_step_of_validation", state["steps"])
        if run.stopped:
            # epochs trained so far, in fractions of an epoch (validations happen within epochs); where it
            # stopped, as Optuna counts (validations) and as MLflow does (iterations: the runs' step axis)
            trial.set_user_attr("epochs_done", state["evals"] / cfg.evals_per_epoch)
            trial.set_user_attr("pruned_at_validation", state["evals"])
            trial.set_user_attr("pruned_at_iteration", state["steps"][-1] if state["steps"] else None)
            raise optuna.TrialPruned(f"pruned at epoch {state['epochs']} ({spec.objective} {state['value']:.4f})")
        trial.set_user_attr("epochs_done", epochs)
        return state["value"]

    return objective


def cross_validate(trial, spec: StudySpec, cfg, data: LabData, parent_run_id: str, searched: str, progress: bool,
                   system_metrics: bool = True) -> float:
    """A cross-validated trial: one model per fold of a repeated stratified k-fold split of train/
    (TrainConfig.fold), each a child run (role ``fold``) of the trial's run, which trains nothing
    itself and logs the folds' scores, their mean and standard deviation. Returns the mean of
    the folds' final validation accuracy (or ROC AUC); the pruner sees the running mean after
    each fold (step = folds done). test/ is never touched."""
    import statistics
    from dataclasses import asdict

    import mlflow
    import optuna
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from agestudy.train import train_and_log

    client = MlflowClient()
    total = spec.folds * spec.repeats
    name = f"{spec.name}-trial-{trial.number}"
    key = "auc" if spec.objective == "cv_auc" else "acc"
    repeated = f", repeated {spec.repeats} times with new folds" if spec.repeats > 1 else ""
    about = (f"Trial {trial.number} of study '{spec.name}' ({searched}), scored by {OBJECTIVES[spec.objective]}: "
             f"the mean over a {spec.folds}-fold stratified cross-validation of train/{repeated} ({total} models, "
             f"its child runs, each scored on the fold it held out); never shown test/.")
    tags = {PARENT_RUN_TAG: parent_run_id, ROLE_TAG: ROLE_TRIAL, STUDY_TAG: spec.name, TRIAL_TAG: str(trial.number),
            DESCRIPTION_TAG: about + (" " + SYNTHETIC_SENTENCE if data.synthetic else ""),
            SYNTHETIC_TAG: str(data.synthetic).lower(), DATA_FINGERPRINT_TAG: data.fingerprint}
    if data.synthetic:
        tags[WARNING_TAG] = SYNTHETIC_WARNING
    run_id = client.create_run(client.get_run(parent_run_id).info.experiment_id, run_name=name, tags=tags).info.run_id
    trial.set_user_attr(RUN_ID_ATTR, run_id)
    cv_params = {"cv.folds": spec.folds, "cv.repeats": spec.repeats}
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in {**asdict(cfg), **cv_params}.items()])
    fold_train = len(data.train) - round(len(data.train) / spec.folds)
    epochs = cfg.epochs_for(fold_train, devices.select_device(cfg.device).type)
    trial.set_user_attr("epochs_planned", epochs * total)
    scores = {"acc": [], "auc": []}
    status = "FAILED"
    try:
        # index: the fold's place in the order trained (0 .. folds x repeats - 1), as MLflow numbers it;
        # Optuna's step is the number of folds done (index + 1)
        for index, (repeat, fold) in enumerate(itertools.product(range(spec.repeats), range(spec.folds))):
            done = index + 1
            where = f"fold {fold + 1} of {spec.folds}"
            where += f", repeat {repeat + 1} of {spec.repeats}" if spec.repeats > 1 else ""
            fold_params = {**cv_params, "cv.fold": fold, "cv.repeat": repeat}
            result = train_and_log(
                cfg, data, run_name=f"{name}-fold-{index}", parent_run_id=run_id, test=False, progress=progress,
                tags={ROLE_TAG: ROLE_FOLD, STUDY_TAG: spec.name, TRIAL_TAG: str(trial.number), FOLD_TAG: str(fold),
                      REPEAT_TAG: str(repeat)},
                system_metrics=system_metrics, split=cfg.fold(data.train, spec.folds, fold, repeat),
                description=f"Trial {trial.number} of study '{spec.name}' ({searched}), {where} of its "
                            "cross-validation: validated on the fold it holds out",
                on_run_start=lambda _, params=fold_params: mlflow.log_params(params))
            scores["acc"].append(result.metrics[VAL_FINAL_ACC])
            scores["auc"].append(result.metrics[VAL_FINAL_AUC])
            now = int(time.time() * 1000)
            client.log_batch(run_id, metrics=[Metric(CV_FOLD_ACC, scores["acc"][-1], now, index),
                                              Metric(CV_FOLD_AUC, scores["auc"][-1], now, index)])
            running = statistics.fmean(scores[key])
            trial.set_user_attr("epochs_done", epochs * done)
            trial.set_user_attr("cv_folds", scores[key])  # each fold's score, in the order trained
            trial.report(running, done)
            if done < total and trial.should_prune():  # a trial with all its folds done is complete
                trial.set_user_attr("pruned_after_folds", done)
                status = "KILLED"
                client.set_tag(run_id, PRUNED_TAG, "true")
                client.update_run(run_id, name=name + PRUNED_NAME_SUFFIX)
                raise optuna.TrialPruned(f"pruned after {done} of {total} folds "
                                         f"(mean {spec.objective} so far {running:.4f})")
        summary = {CV_MEAN_ACC: statistics.fmean(scores["acc"]), CV_SD_ACC: statistics.stdev(scores["acc"]),
                   CV_MEAN_AUC: statistics.fmean(scores["auc"]), CV_SD_AUC: statistics.stdev(scores["auc"]),
                   CV_N_FOLDS: total}
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, SUMMARY_STEP) for k, v in summary.items()])
        mean, sd = (summary[CV_MEAN_AUC], summary[CV_SD_AUC]) if key == "auc" else \
            (summary[CV_MEAN_ACC], summary[CV_SD_ACC])
        trial.set_user_attr("cv_mean", mean)
        trial.set_user_attr("cv_sd", sd)
        trial.set_user_attr(f"last_{spec.objective}", mean)
        status = "FINISHED"
        return mean
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except optuna.TrialPruned:
        raise
    except Exception as err:
        client.set_tag(run_id, ERROR_TAG, f"{type(err).__name__}: {err}"[:4000])
        raise
    finally:
        client.set_terminated(run_id, status=status)


def run_worker(spec: StudySpec, storage_url: str, data: LabData, parent_run_id: str, n_trials: int,
               timeout: float | None, progress: bool, system_metrics: bool = True) -> None:
    """Run trials until the study holds ``n_trials`` finished (complete or pruned) ones."""
    import optuna
    from optuna.trial import TrialState

    study = open_study(spec, storage_url)
    if _finished_count(study) >= n_trials:
        return
    failures_at_start = len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))

    def stop_when_done(study, trial):
        # failed trials do not count towards the target, but endless failures stop the study
        failed = len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,))) - failures_at_start
        if _finished_count(study) >= n_trials or failed >= max(3, n_trials):
            study.stop()

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    study.optimize(make_objective(spec, data, parent_run_id, progress, system_metrics), timeout=timeout,
                   callbacks=[stop_when_done], catch=(Exception,), gc_after_trial=True)


def _finished_count(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


# ----------------------------------------------------------------------------- study summary and refit

def parent_run(study, spec: StudySpec, storage_url: str, data: LabData) -> str:
    """The study's MLflow parent run: created once, found again on resume."""
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    run_id = study.user_attrs.get(PARENT_ATTR)
    if run_id:
        try:
            client.get_run(run_id)
            return run_id
        except Exception:  # noqa: BLE001 - the run store changed: start a new parent
            pass
    tags = {
        ROLE_TAG: ROLE_STUDY, STUDY_TAG: spec.name, STORAGE_TAG: redact_uri(storage_url),  # no password in tags
        SAMPLER_TAG: json.dumps(spec.sampler), PRUNER_TAG: json.dumps(spec.pruner),
        OBJECTIVE_TAG: spec.objective, SYNTHETIC_TAG: str(data.synthetic).lower(),
        DATA_FINGERPRINT_TAG: data.fingerprint,
    }
    tags[DESCRIPTION_TAG] = study_description(spec, data)
    with mlflow.start_run(run_name=f"study-{spec.name}", tags=tags) as run:
        mlflow.log_params({"study.file": str(spec.path), "study.n_trials": spec.n_trials,
                           "study.space": json.dumps([p.__dict__ for p in spec.space])[:6000],
                           "study.fixed": json.dumps(spec.fixed)[:6000],
                           **({"study.folds": spec.folds, "study.repeats": spec.repeats} if spec.cv else {})})
        run_id = run.info.run_id
    study.set_user_attr(PARENT_ATTR, run_id)
    return run_id


def study_description(spec: StudySpec, data: LabData) -> str:
    """The study run's description: the study file's own words, then what it searches and on what."""
    searched = ", ".join(p.name for p in spec.space) or "nothing (fixed configuration)"
    text = (f"{spec.description.strip() or f'Optuna study {spec.name!r}.'}\n\nStudy file {spec.path}; "
            f"objective: {OBJECTIVES[spec.objective]} (each trial's {OBJECTIVE_METRICS[spec.objective]}, maximised); "
            f"searches {searched}; data {data.root}.")
    if spec.cv:
        repeats = f" x {spec.repeats} repeats" if spec.repeats > 1 else ""
        text += (f" Each trial trains {spec.folds * spec.repeats} models: stratified {spec.folds}-fold "
                 f"cross-validation of train/{repeats} (mean and spread over the folds; test/ is never used).")
    return text + ("\n\n" + SYNTHETIC_SENTENCE if data.synthetic else "")


def summarize_study(study, spec: StudySpec, parent_run_id: str) -> dict:
    """Plots and a trial table on the parent run; returns the pruning figures."""
    import mlflow
    import optuna
    from optuna.importance import FanovaImportanceEvaluator
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as ov

    from agestudy.plots import plt

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    planned = sum(t.user_attrs.get("epochs_planned", 0)
                  for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED))
    done = sum(t.user_attrs.get("epochs_done", 0) for t in trials
               if t.state in (TrialState.COMPLETE, TrialState.PRUNED))
    summary = {
        STUDY_TRIALS_COMPLETE: len(complete),
        STUDY_TRIALS_PRUNED: sum(t.state == TrialState.PRUNED for t in trials),
        STUDY_TRIALS_FAILED: sum(t.state == TrialState.FAIL for t in trials),
        STUDY_EPOCHS_SAVED: 1 - done / planned if planned else 0.0,
    }
    if complete:
        summary[STUDY_BEST_VALUE] = study.best_value
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_id=parent_run_id):
        out = Path(tmp)
        (out / STUDY_TRIALS).parent.mkdir(parents=True, exist_ok=True)  # the study/ folder of the artifacts
        plots = {STUDY_HISTORY_PLOT: lambda: ov.plot_optimization_history(study)}
        searched = sorted({k for t in complete for k in t.params})
        if len(complete) >= 2 and searched:
            plots[STUDY_SLICE_PLOT] = lambda: ov.plot_slice(study)
            plots[STUDY_IMPORTANCES_PLOT] = lambda: ov.plot_param_importances(
                study, evaluator=FanovaImportanceEvaluator(seed=0))
        for name, make in plots.items():
            try:
                ax = make()
                fig = (ax.flat[0] if hasattr(ax, "flat") else ax).get_figure()
                fig.set_size_inches(max(6, 3.2 * max(1, len(searched))) if name == STUDY_SLICE_PLOT else 7, 4.5)
                with warnings.catch_warnings():  # Optuna's colour-bar axes do not take tight_layout
                    warnings.simplefilter("ignore", UserWarning)
                    fig.tight_layout()
                fig.savefig(out / name, dpi=100)
                plt.close("all")
            except Exception as err:  # noqa: BLE001 - a plot that cannot be drawn must not lose the study
                warnings.warn(f"could not draw {name}: {err}", stacklevel=2)
        if len(complete) >= 2 and searched:
            try:
                importances = optuna.importance.get_param_importances(
                    study, evaluator=FanovaImportanceEvaluator(seed=0))
                (out / STUDY_IMPORTANCES).write_text(json.dumps(importances, indent=2))
            except Exception as err:  # noqa: BLE001
                warnings.warn(f"could not compute parameter importances: {err}", stacklevel=2)
        table = study.trials_dataframe(attrs=("number", "value", "state", "params", "user_attrs", "duration"))
        table.to_csv(out / STUDY_TRIALS, index=False)
        mlflow.log_artifacts(str(out))
        # once at step 0; a resumed study adds a value only to the numbers that changed
        logged = mlflow.MlflowClient().get_run(parent_run_id).data.metrics
        changed = {k: v for k, v in summary.items() if logged.get(k) != v}
        if changed:
            mlflow.log_metrics(changed, step=SUMMARY_STEP)
    return summary


def refit_best(study, spec: StudySpec, data: LabData, parent_run_id: str, progress: bool,
               system_metrics: bool = True) -> tuple[str, dict]:
    """Retrain the best trial's configuration on all of train/ and measure it on test/."""
    from mlflow.tracking import MlflowClient

    from agestudy.train import train_and_log

    best = study.best_trial
    client = MlflowClient()
    existing = find_runs(client, [client.get_run(parent_run_id).info.experiment_id], role=ROLE_FINAL,
                         study=spec.name, status="FINISHED", extra={BEST_TRIAL_TAG: str(best.number)}, max_results=1)
    if existing:  # resumed with nothing new: keep the final run we have
        return existing[0].info.run_id, with_current_names(existing[0].data.metrics)
    cfg = spec.refit_config(best.params)
    score = f"{OBJECTIVES[spec.objective]} {best.value:.4f}"
    if "cv_sd" in best.user_attrs:
        score += f" ± {best.user_attrs['cv_sd']:.4f}, sd over {len(best.user_attrs.get('cv_folds', []))} folds"
    tags = {ROLE_TAG: ROLE_FINAL, STUDY_TAG: spec.name, BEST_TRIAL_TAG: str(best.number),
            BEST_TRIAL_RUN_TAG: best.user_attrs.get(RUN_ID_ATTR, "")}
    run_id, final, _ = train_and_log(
        cfg, data, run_name=f"{spec.name}-final", tags=tags, parent_run_id=parent_run_id, progress=progress,
        system_metrics=system_metrics, register=True,
        description=f"Final model of study '{spec.name}': the best trial (#{best.number}, "
                    f"{score}) retrained on all of train/")
    # the study's record of its final model, for optuna-dashboard (a finished trial takes no new attributes)
    study.set_user_attr("final_run_id", run_id)
    for key, metric in (("test_accuracy", TEST_ACCURACY), ("test_roc_auc", TEST_ROC_AUC), ("test_ece", TEST_ECE)):
        study.set_user_attr(f"final_{key}", final.get(metric))
    return run_id, final


# ----------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m agestudy.tune",
        description="Run an Optuna study (a TOML file in studies/) over training options. Every trial is an MLflow "
                    "child run of one study run; unpromising trials are pruned; the best configuration is then "
                    "retrained on all of train/ and measured on test/ (MLflow tag agestudy.role=final). Running "
                    "the same command again resumes the same study.",
        formatter_class=HelpFormatter,
        epilog="Data: --data, else $AGESTUDY_DATA, else ./data, else the built-in SYNTHETIC demo data.\n"
               "Study storage: a journal file mlruns/optuna/NAME.journal unless --storage is given "
               "(postgresql://... to share a study between machines).",
    )
    parser.add_argument("--study", help="study file or name of a shipped study (default: studies/default.toml)")
    parser.add_argument("--data", help="folder with train/{0,1} and test/{0,1} (default: $AGESTUDY_DATA, ./data, "
                                       "else the SYNTHETIC demo data)")
    parser.add_argument("--n-trials", type=int, help="total finished trials wanted in the study (default: the file's)")
    parser.add_argument("--timeout", type=float,
                        help="stop starting trials after this many seconds per worker (default: the file's)")
    parser.add_argument("--workers", type=int, default=1, help="processes working on the study on this machine")
    parser.add_argument("--storage", help="Optuna storage: postgresql://user:password@host/db to share a study "
                                          "between machines, or a journal file path (default: "
                                          "mlruns/optuna/STUDY.journal)")
    parser.add_argument("--tracking-uri", help="MLflow store (default sqlite:///mlruns/mlflow.db or "
                                               "$MLFLOW_TRACKING_URI)")
    parser.add_argument("--experiment", default="agestudy", help="MLflow experiment name")
    parser.add_argument("--cache-dir", help="decode cache folder (default ~/.cache/agestudy)")
    parser.add_argument("--no-refit", action="store_true", help="skip the final retraining")
    parser.add_argument("--external", help="folder of outside photos (optionally in 0/ and 1/) for question 10")
    parser.add_argument("--no-analyze", action="store_true", help="skip the analyses of the final run")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--no-system-metrics", action="store_true",
                        help="do not sample CPU/GPU utilisation and memory into the training runs (system/... metrics)")
    parser.add_argument("--worker-of", help=argparse.SUPPRESS)  # internal: parent run id of a spawned worker
    return parser


def _spawn_workers(args, k: int, storage_url: str, root: Path, parent_run_id: str, n_trials: int):
    threads = max(1, devices.available_cores() // k)
    env = {**os.environ, "AGESTUDY_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "agestudy.tune", "--study", str(args.study_path), "--data", str(root),
           "--storage", storage_url, "--experiment", args.experiment, "--n-trials", str(n_trials),
           "--worker-of", parent_run_id, "--quiet"]
    if args.tracking_uri:
        cmd += ["--tracking-uri", args.tracking_uri]
    if args.cache_dir:
        cmd += ["--cache-dir", args.cache_dir]
    if args.timeout:
        cmd += ["--timeout", str(args.timeout)]
    if args.no_system_metrics:
        cmd += ["--no-system-metrics"]
    procs = [subprocess.Popen(cmd, env=env) for _ in range(k)]
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        raise
    if any(codes):
        print(f"[tune] worker exit codes: {codes}", file=sys.stderr)


@cli_entry
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    spec = load_study(args.study)
    args.study_path = spec.path
    from agestudy.analyses import check_external

    check_external(args.external)  # a bad path fails now, not after an hour of training
    n_trials = args.n_trials or spec.n_trials
    if n_trials < 1 or args.workers < 1:
        raise UserError("--n-trials and --workers must be >= 1")
    if spec.sampler["type"] == "grid":  # each configuration once: a grid has no more trials to give
        n_trials = min(n_trials, spec.grid_size())
    timeout = args.timeout or spec.timeout
    devices.configure_threads()
    from agestudy.tracking import setup_tracking, shown_store

    root = resolve_data_root(args.data, args.cache_dir)
    # both stores are opened before the data is loaded: a wrong URL or password costs nothing
    setup_tracking(args.tracking_uri, args.experiment)
    storage_url = args.storage or default_storage_url(spec)
    open_storage(storage_url)
    data = load_data(root, args.cache_dir, progress=not args.quiet, verbose=not args.worker_of)
    if spec.cv:  # too few images of a class for the folds: one line now, not a failed trial each
        spec.trial_config({}).fold(data.train, spec.folds, 0)

    if args.worker_of:  # a spawned worker: trials only
        run_worker(spec, storage_url, data, args.worker_of, n_trials, timeout, progress=False,
                   system_metrics=not args.no_system_metrics)
        return 0

    study = open_study(spec, storage_url)
    stale = fail_dead_trials(study)
    closed = close_orphan_runs(study)
    if stale or closed:
        print(f"[tune] resumed: {len(stale)} stale trial(s) marked failed, {len(closed)} orphan run(s) closed",
              file=sys.stderr)
    parent_run_id = parent_run(study, spec, storage_url, data)
    already = _finished_count(study)
    print(f"[tune] study {spec.name!r} ({spec.path}): {already} finished trial(s) so far, target {n_trials}; "
          f"objective {OBJECTIVES[spec.objective]}; storage {redact_uri(storage_url)}", file=sys.stderr)
    start = time.perf_counter()
    if args.workers == 1:
        run_worker(spec, storage_url, data, parent_run_id, n_trials, timeout, progress=not args.quiet,
                   system_metrics=not args.no_system_metrics)
    else:
        _spawn_workers(args, args.workers, storage_url, root, parent_run_id, n_trials)
    study = open_study(spec, storage_url)
    summary = summarize_study(study, spec, parent_run_id)
    print(f"[tune] {summary[STUDY_TRIALS_COMPLETE]} complete, {summary[STUDY_TRIALS_PRUNED]} pruned, "
          f"{summary[STUDY_TRIALS_FAILED]} failed; pruning saved {summary[STUDY_EPOCHS_SAVED]:.0%} "
          f"of the epochs; {time.perf_counter() - start:.0f} s", file=sys.stderr)
    if summary[STUDY_TRIALS_COMPLETE] == 0:
        raise UserError("no trial completed, so there is nothing to refit (see the failed runs in MLflow)")
    print(f"[tune] best trial #{study.best_trial.number}: {OBJECTIVES[spec.objective]} {study.best_value:.4f} "
          f"with {study.best_trial.params}", file=sys.stderr)
    if not args.no_refit:
        run_id, final = refit_best(study, spec, data, parent_run_id, progress=not args.quiet,
                                   system_metrics=not args.no_system_metrics)
        print(f"final run {run_id} ({shown_store(args.tracking_uri)}): test accuracy "
              f"{final[TEST_ACCURACY]:.4f}, ROC AUC {final[TEST_ROC_AUC]:.4f}")
        if not args.no_analyze:
            from agestudy.analyses import run_analyses

            outcome = run_analyses(run_id, external=args.external, data=data, cache_dir=args.cache_dir,
                                   progress=not args.quiet)
            if outcome["failed"]:
                print(f"[tune] analyses that failed: {', '.join(outcome['failed'])} (see the analysis run "
                      f"{outcome['analysis_run_id']})", file=sys.stderr)
    if data.synthetic:
        print("*** this study ran on SYNTHETIC demo data: its numbers say nothing about real faces ***")
    return 0


if __name__ == "__main__":
    sys.exit(main())
