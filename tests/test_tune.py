"""Optuna studies end to end: study files, parent/child runs, pruning, failures, refit, kill -9, workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

from agestudy import runs as contract
from agestudy.config import TrainConfig
from agestudy.errors import UserError
from agestudy.studies import load_study

# Tiny trials: 3 epochs of a width-8 network on 64x64 crops of the small synthetic set.
TEST_STUDY = """
[study]
name = "{name}"
objective = "val_acc"
n_trials = {n_trials}

[sampler]
type = "random"
seed = 0

[pruner]
type = "median"
n_startup_trials = 2
n_warmup_steps = 0

[fixed]
model = "efficient"
members = 1
stem_stride = 4
width = 8
epochs = {epochs}
batch_size = 16
crop = 64
padding = 2
evals_per_epoch = 2
val_fraction = 0.25
optimizer = "sgd"
mixup = 0.0             # the good trials must learn in 3 epochs: mixup slows so short a run

[space.lr]
type = "categorical"
choices = [0.05, 0.03, 1e-9, 1e30]

[refit]
epochs = 2
"""


def write_study(tmp_path: Path, name="t", n_trials=4, epochs=3) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(TEST_STUDY.format(name=name, n_trials=n_trials, epochs=epochs))
    return path


def tune_cmd(study: Path, data: Path, tmp_path: Path, *extra) -> list[str]:
    return [sys.executable, "-m", "agestudy.tune", "--study", str(study), "--data", str(data),
            "--cache-dir", str(tmp_path / "cache"), "--experiment", "test", "--quiet", *extra]


def env_for(tmp_path: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "AGESTUDY_THREADS": "1",
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}?timeout=60"}


def runs_of(tmp_path: Path):
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    client = MlflowClient()
    exp = client.get_experiment_by_name("test")
    return client, client.search_runs([exp.experiment_id], max_results=1000)


def journal(tmp_path: Path, name: str) -> Path:
    return tmp_path / "mlruns" / "optuna" / f"{name}.journal"


def load(study_path: Path, storage: str):
    from agestudy.tune import open_study

    return open_study(load_study(study_path), storage)


# ----------------------------------------------------------------------------- study files

@pytest.mark.parametrize("name", ["default", "quick", "augmentation", "hyperparams", "cv", "generalisation"])
def test_shipped_studies_load(name):
    spec = load_study(name)
    assert spec.name == name and spec.space
    spec.trial_config({p.name: (p.choices[0] if p.choices else p.low) for p in spec.space}).validate()


@pytest.mark.parametrize("text, message", [
    ("[study]\nnmae = 'x'\n", "unknown key"),
    ("[space.lr]\ntype = 'float'\nlow = 0.1\nhigh = 0.01\n", "must be below high"),
    ("[space.lr]\ntype = 'float'\nlow = 0\nhigh = 0.1\nlog = true\n", "log range needs low > 0"),
    ("[space.colour]\ntype = 'categorical'\nchoices = ['red']\n", "not a searchable training option"),
    ("[fixed]\nepochs = 'ten'\n", "should be of type int"),
    ("[pruner]\ntype = 'sometimes'\n", "pruner type"),
    ("[space.dropout]\ntype = 'float'\nlow = 0.2\nhigh = 1.5\n", "dropout must be in"),
    ("[study\n", "not valid TOML"),
    ("[variants.big]\nwidht = 32\n", "not a training option"),
    ("[variants.big]\ncrop = 200\n", "crop must be between"),
    ("[variants.ema]\nema = 0.998\n[space.ema]\ntype = 'categorical'\nchoices = [0.0, 0.99]\n",
     "which \\[space\\] searches"),
])
def test_bad_study_files_are_refused_before_training(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        load_study(path)


def test_variants_are_named_configurations_over_fixed(tmp_path):
    path = tmp_path / "v.toml"
    path.write_text("[sampler]\ntype = 'grid'\n[fixed]\nmembers = 1\nwidth = 12\n"
                    "[space.lr]\ntype = 'categorical'\nchoices = [1e-3]\n"
                    "[variants.plain]\n[variants.wide]\nwidth = 24\nema = 0.99\n")
    spec = load_study(path)
    assert spec.grid_size() == 2 and [p.name for p in spec.space] == ["lr", "variant"]
    plain, wide = (spec.trial_config({"lr": 1e-3, "variant": v}) for v in ("plain", "wide"))
    assert (plain.width, plain.ema, plain.members) == (12, TrainConfig().ema, 1)
    assert (wide.width, wide.ema, wide.members, wide.lr) == (24, 0.99, 1, 1e-3)
    assert spec.refit_config({"lr": 1e-3, "variant": "wide"}).width == 24


def test_missing_study_file_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "agestudy.tune", "--study", str(tmp_path / "nope.toml")],
                          capture_output=True, text=True, env=env_for(tmp_path), cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and "study file not found" in proc.stderr and "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------- a whole study

def test_study_tracks_trials_prunes_fails_and_refits(synthetic_root, tmp_path):
    from optuna.trial import TrialState

    study_path = write_study(tmp_path, "full", n_trials=4)
    storage = str(journal(tmp_path, "full"))
    study = load(study_path, storage)
    # fixed first trials make the outcome certain: two good ones, one that cannot learn
    # (pruned against their median), one whose loss explodes (failed)
    for lr in (0.05, 0.03, 1e-9, 1e30):
        study.enqueue_trial({"lr": lr})
    proc = subprocess.run(tune_cmd(study_path, synthetic_root, tmp_path, "--storage", storage, "--n-trials", "4"),
                          capture_output=True, text=True, env=env_for(tmp_path), cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]

    study = load(study_path, storage)
    states = {t.number: t.state for t in study.trials}
    assert states[0] == states[1] == TrialState.COMPLETE
    assert states[2] == TrialState.PRUNED
    assert states[3] == TrialState.FAIL

    client, runs = runs_of(tmp_path)
    parents = [r for r in runs if r.data.tags.get("agestudy.role") == "study"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.data.tags["agestudy.study"] == "full" and "agestudy.sampler" in parent.data.tags
    children = [r for r in runs if r.data.tags.get("agestudy.role") == "trial"]
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)
    by_trial = {int(r.data.tags["agestudy.trial"]): r for r in children}
    assert sorted(by_trial) == sorted(t.number for t in study.trials)  # one child run per trial
    for trial in study.trials:
        assert trial.user_attrs["mlflow_run_id"] == by_trial[trial.number].info.run_id
    assert by_trial[0].info.status == "FINISHED"
    assert by_trial[2].info.status == "KILLED" and by_trial[2].data.tags["agestudy.pruned"] == "true"
    assert by_trial[3].info.status == "FAILED" and "FloatingPointError" in by_trial[3].data.tags["agestudy.error"]
    assert not any(k.startswith("test/") for k in by_trial[0].data.metrics)  # trials never look at test/
    assert len(client.get_metric_history(by_trial[0].info.run_id, contract.VAL_ACC)) == 6

    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "study")}
    assert {"study/optimization_history.png", "study/slice.png", "study/param_importances.png",
            "study/trials.csv"} <= artifacts
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    planned = sum(t.user_attrs["epochs_planned"] for t in finished)
    trained = sum(t.user_attrs["epochs_done"] for t in finished)
    assert study.trials[2].user_attrs["epochs_done"] < 3  # the pruned trial stopped before its last epoch
    assert parent.data.metrics[contract.STUDY_EPOCHS_SAVED] == pytest.approx(1 - trained / planned)
    assert parent.data.metrics[contract.STUDY_EPOCHS_SAVED] > 0

    finals = [r for r in runs if r.data.tags.get("agestudy.role") == "final"]
    assert len(finals) == 1 and finals[0].info.status == "FINISHED"
    assert finals[0].data.params["val_fraction"] == "0.0" and contract.TEST_ACCURACY in finals[0].data.metrics
    assert finals[0].data.tags["agestudy.best_trial"] in ("0", "1")
    # the tuner analysed its final run (questions 1-12's evidence, logged to a child run)
    analysis = client.get_run(finals[0].data.tags["agestudy.analysis_run"])
    assert analysis.data.tags["agestudy.role"] == "analysis"
    assert "q8/gain" in analysis.data.metrics and len(analysis.data.metrics) <= contract.MAX_ANALYSIS_METRICS

    # how the runs read in the MLflow UI: every metric in a section ("train/", "val/", "test/", "model/",
    # "study/"; MLflow's own "system/"), each summary one value at step 0, the schedule apart from the param lr
    for r in (parent, by_trial[0], by_trial[2], finals[0]):
        assert r.data.metrics and all("/" in key for key in r.data.metrics), sorted(r.data.metrics)
    summaries = {
        parent.info.run_id: (contract.STUDY_TRIALS_COMPLETE, contract.STUDY_EPOCHS_SAVED, contract.STUDY_BEST_VALUE),
        by_trial[0].info.run_id: (contract.VAL_BEST_ACC, contract.VAL_FINAL_ACC, contract.TRAIN_ITERATIONS),
        finals[0].info.run_id: (contract.TEST_ACCURACY, contract.TEST_ECE, contract.TRAIN_SECONDS,
                                contract.MODEL_PARAMETERS),
    }
    for run_id, keys in summaries.items():
        for key in keys:
            assert [m.step for m in client.get_metric_history(run_id, key)] == [contract.SUMMARY_STEP], key
    assert len(client.get_metric_history(finals[0].info.run_id, contract.TRAIN_LEARNING_RATE)) > 1
    assert "lr" in by_trial[0].data.params and "lr" not in by_trial[0].data.metrics

    # what the MLflow UI and optuna-dashboard show (issue: runs that read well in both)
    final = finals[0]
    assert by_trial[2].info.run_name == "full-trial-2 (pruned)"  # KILLED looks like a crash: the name says why
    assert by_trial[0].info.run_name == "full-trial-0"
    assert "Trial 0 of study 'full' (lr=0.05)" in by_trial[0].data.tags["mlflow.note.content"]
    assert "SYNTHETIC" in by_trial[0].data.tags["mlflow.note.content"]  # the warning in words
    assert "objective: validation accuracy" in parent.data.tags["mlflow.note.content"]
    assert "Final model of study 'full'" in final.data.tags["mlflow.note.content"]
    contexts = {r: {t.value for i in client.get_run(r).inputs.dataset_inputs for t in i.tags
                    if t.key == "mlflow.data.context"} for r in (final.info.run_id, by_trial[0].info.run_id)}
    assert contexts[final.info.run_id] == {"train", "test"}  # the refit has no validation split
    assert contexts[by_trial[0].info.run_id] == {"train", "validation"}  # trials never see test/
    dataset = client.get_run(final.info.run_id).inputs.dataset_inputs[0].dataset
    assert dataset.digest and '"label_0"' in dataset.profile and str(synthetic_root) in dataset.source

    import mlflow.pyfunc
    import numpy as np

    version = client.get_model_version_by_alias("agestudy-age-classifier", "best")
    assert version.run_id == final.info.run_id == client.get_run(final.info.run_id).info.run_id
    assert final.data.tags["agestudy.registered_version"] == str(version.version)
    assert version.description == final.data.tags["mlflow.note.content"]  # the version says what it is
    assert "P(aged 52-62)" in client.get_registered_model("agestudy-age-classifier").description
    served = mlflow.pyfunc.load_model("models:/agestudy-age-classifier@best")
    faces = np.random.default_rng(1).integers(0, 256, (5, 3, 100, 100), dtype=np.uint8)
    p1 = served.predict(faces)
    assert p1.shape == (5,) and ((p1 >= 0) & (p1 <= 1)).all()
    from agestudy.checkpoint import load_model as load_checkpoint
    from agestudy.predict import evaluation_view, predict_proba

    model, cfg = load_checkpoint(client.download_artifacts(final.info.run_id, "model", str(tmp_path / "dl")))
    import torch

    expected = predict_proba(model, torch.from_numpy(faces), evaluation_view(cfg.augment()), cfg.augment())
    assert np.allclose(p1, expected.numpy(), atol=1e-5)  # the served model is the run's own

    assert study.metric_names == ["validation accuracy"]
    assert study.trials[2].user_attrs["pruned_at_validation"] >= 1
    assert study.trials[2].user_attrs["pruned_at_iteration"] >= 1
    assert "last_val_acc" in study.trials[0].user_attrs
    # Optuna's step k is the k-th validation; the attribute maps it to the MLflow run's step
    val_steps = [m.step for m in client.get_metric_history(by_trial[0].info.run_id, "val/acc")]
    assert study.trials[0].user_attrs["mlflow_step_of_validation"] == sorted(val_steps)
    assert len(study.trials[0].intermediate_values) == len(val_steps)
    study = load(study_path, storage)
    assert study.user_attrs["final_run_id"] == final.info.run_id and "final_test_accuracy" in study.user_attrs

    # running the same command again resumes: no new trial, no second final run
    n_trials_before = len(study.trials)
    proc = subprocess.run(tune_cmd(study_path, synthetic_root, tmp_path, "--storage", storage, "--n-trials", "4"),
                          capture_output=True, text=True, env=env_for(tmp_path), cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(load(study_path, storage).trials) == n_trials_before
    _, runs = runs_of(tmp_path)
    assert sum(r.data.tags.get("agestudy.role") == "final" for r in runs) == 1
    assert sum(r.data.tags.get("agestudy.role") == "study" for r in runs) == 1
    # the resumed study logged no second value of its unchanged summaries
    parent = next(r for r in runs if r.data.tags.get("agestudy.role") == "study")
    assert len(client.get_metric_history(parent.info.run_id, contract.STUDY_TRIALS_COMPLETE)) == 1


# ----------------------------------------------------------------------------- crashes and workers

def _wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_kill_9_loses_no_completed_trial(synthetic_root, tmp_path):
    from optuna.trial import TrialState

    # One trial completes; then the study file asks for very long trials so the kill lands inside the
    # second one however fast the machine is; the resume goes back to short trials.
    study_path = write_study(tmp_path, "crash", n_trials=1, epochs=2)
    storage = str(journal(tmp_path, "crash"))
    for _ in range(3):
        load(study_path, storage).enqueue_trial({"lr": 0.05})
    first = subprocess.run(tune_cmd(study_path, synthetic_root, tmp_path, "--storage", storage, "--no-refit"),
                           capture_output=True, text=True, env=env_for(tmp_path), cwd=tmp_path, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]

    write_study(tmp_path, "crash", n_trials=2, epochs=10_000)
    proc = subprocess.Popen(tune_cmd(study_path, synthetic_root, tmp_path, "--storage", storage, "--no-refit"),
                            env=env_for(tmp_path), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def second_trial_running():
        trials = load(study_path, storage).trials
        return len(trials) >= 2 and trials[1].state == TrialState.RUNNING and "mlflow_run_id" in trials[1].user_attrs

    try:
        _wait_for(second_trial_running, 600, "the second trial to start")
        time.sleep(1)  # inside the second trial's training
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = load(study_path, storage).trials
    assert before[0].state == TrialState.COMPLETE and before[1].state == TrialState.RUNNING
    write_study(tmp_path, "crash", n_trials=2, epochs=2)
    killed_run = before[1].user_attrs["mlflow_run_id"]

    proc = subprocess.run(tune_cmd(study_path, synthetic_root, tmp_path, "--storage", storage, "--no-refit",
                                   "--n-trials", "2"),
                          capture_output=True, text=True, env=env_for(tmp_path), cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 stale trial(s) marked failed" in proc.stderr
    after = load(study_path, storage).trials
    assert after[0].state == TrialState.COMPLETE and after[0].value == before[0].value  # nothing lost
    assert after[1].state == TrialState.FAIL
    assert sum(t.state == TrialState.COMPLETE for t in after) == 2
    client, _ = runs_of(tmp_path)
    assert client.get_run(killed_run).info.status == "FAILED"


def test_sigterm_mid_trial_stops_cleanly_without_a_traceback(synthetic_root, tmp_path):
    """A scheduler's timeout (SIGTERM) inside a trial: exit 130 with "interrupted", Optuna's one-line note of
    the trial's failure but no traceback, the trial's MLflow run ended KILLED (not left RUNNING)."""
    from optuna.trial import TrialState

    study_path = write_study(tmp_path, "term", n_trials=1, epochs=10_000)
    storage = str(journal(tmp_path, "term"))
    load(study_path, storage).enqueue_trial({"lr": 0.05})
    proc = subprocess.Popen(tune_cmd(study_path, synthetic_root, tmp_path, "--storage", storage, "--no-refit"),
                            env=env_for(tmp_path), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)

    def trial_running():
        trials = load(study_path, storage).trials
        return len(trials) == 1 and trials[0].state == TrialState.RUNNING and "mlflow_run_id" in trials[0].user_attrs

    try:
        _wait_for(trial_running, 600, "the trial to start")
        time.sleep(1)  # inside the trial's training
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in stderr, stderr[-3000:]
    assert "Traceback" not in stderr and "Terminated()" in stderr  # SIGTERM: the note stays, the traceback goes
    trial = load(study_path, storage).trials[0]
    assert trial.state == TrialState.FAIL
    client, _ = runs_of(tmp_path)
    assert client.get_run(trial.user_attrs["mlflow_run_id"]).info.status == "KILLED"


def test_two_workers_share_one_study(synthetic_root, tmp_path):
    from optuna.trial import TrialState

    study_path = write_study(tmp_path, "pair", n_trials=4, epochs=2)
    storage = str(journal(tmp_path, "pair"))
    # more queued than needed: a worker may start a fifth trial while the other finishes the
    # fourth, and that one must not sample an lr that fails or gets pruned
    for _ in range(8):
        load(study_path, storage).enqueue_trial({"lr": 0.05})
    proc = subprocess.run(tune_cmd(study_path, synthetic_root, tmp_path, "--storage", storage, "--workers", "2",
                                   "--no-refit"),
                          capture_output=True, text=True, env=env_for(tmp_path), cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "locked" not in proc.stderr
    trials = [t for t in load(study_path, storage).trials if t.state != TrialState.WAITING]  # queued, unstarted
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    # on failure, say why each failed trial failed (Optuna's warnings in the workers' stderr)
    failed = {t.number: t.params for t in trials if t.state == TrialState.FAIL}
    why = [line for line in proc.stderr.splitlines() if "because of the following error" in line]
    assert len(complete) >= 4 and not failed, (failed, why)
    pids = {t.user_attrs["worker_pid"] for t in complete}
    assert len(pids) == 2  # both processes did trials
    _, runs = runs_of(tmp_path)
    children = [r for r in runs if r.data.tags.get("agestudy.role") == "trial"]
    assert sorted(int(r.data.tags["agestudy.trial"]) for r in children) == sorted(t.number for t in trials)
    assert all(r.info.status == "FINISHED" for r in children)
