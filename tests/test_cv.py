"""Cross-validated studies: the folds (TrainConfig.fold), the study file's cv keys, and a tiny CV study end to end."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from itertools import product
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import REPO, rendered_text
from test_tune import env_for, journal, load, runs_of

from agestudy import runs as contract
from agestudy.config import TrainConfig
from agestudy.data import ImageSet
from agestudy.errors import UserError
from agestudy.studies import load_study

# ----------------------------------------------------------------------------- the folds


def image_set(n0: int, n1: int) -> ImageSet:
    labels = torch.tensor([0] * n0 + [1] * n1)[torch.randperm(n0 + n1, generator=torch.Generator().manual_seed(3))]
    n = len(labels)
    return ImageSet(torch.arange(n).view(n, 1), labels, [f"img_{i}.png" for i in range(n)])


def files(images: ImageSet) -> set[str]:
    return set(images.files)


@pytest.mark.parametrize("folds", [2, 3, 5])
def test_folds_are_stratified_disjoint_and_cover_train_once_per_repeat(folds):
    train = image_set(23, 17)
    cfg = TrainConfig(seed=7)
    for repeat in range(2):
        held = []
        for fold in range(folds):
            fit, out = cfg.fold(train, folds, fold, repeat)
            assert not files(fit) & files(out) and files(fit) | files(out) == files(train)
            for label, total in ((0, 23), (1, 17)):  # each class split as evenly as the counts allow
                assert abs(out.class_counts()[label] - total / folds) < 1
            held.append(files(out))
        assert sum(map(len, held)) == len(train) and set.union(*held) == files(train)  # disjoint, cover once


def test_folds_are_deterministic_and_new_for_each_repeat_and_seed():
    train = image_set(30, 30)
    first = [files(TrainConfig(seed=0).fold(train, 5, k, 0)[1]) for k in range(5)]
    assert first == [files(TrainConfig(seed=0).fold(train, 5, k, 0)[1]) for k in range(5)]
    assert first != [files(TrainConfig(seed=0).fold(train, 5, k, 1)[1]) for k in range(5)]  # the next repeat
    assert first != [files(TrainConfig(seed=1).fold(train, 5, k, 0)[1]) for k in range(5)]
    # the fold's images are the ones its indices name (images, labels and files stay aligned)
    fit, out = TrainConfig().fold(train, 5, 2)
    assert [f"img_{int(i)}.png" for i in out.images.flatten()] == out.files
    assert torch.equal(out.labels, train.labels[out.images.flatten()])


def test_too_few_images_of_a_class_for_the_folds_is_a_user_error():
    with pytest.raises(UserError, match="at least 5 images of each class"):
        TrainConfig().fold(image_set(20, 4), 5, 0)


# ----------------------------------------------------------------------------- the study file

CV_KEYS = "[study]\nobjective = '{objective}'\n{extra}\n[space.lr]\ntype = 'categorical'\nchoices = [0.01, 0.02]\n"


@pytest.mark.parametrize("objective, extra, message", [
    ("cv_acc", "", "objective must be one of"),
    ("cv_accuracy", "folds = 1", "folds must be a whole number from 2 to 10"),
    ("cv_accuracy", "folds = 11", "folds must be a whole number from 2 to 10"),
    ("cv_accuracy", "folds = 5.0", "folds must be a whole number"),
    ("cv_accuracy", "folds = true", "folds must be a whole number"),
    ("cv_auc", "repeats = 0", "repeats must be a whole number from 1 to 5"),
    ("cv_auc", "repeats = 6", "repeats must be a whole number from 1 to 5"),
    ("val_acc", "folds = 5", "folds is for a cross-validated objective"),
    ("cv_accuracy", "[fixed]\nval_fraction = 0.2", "val_fraction has no use with a cross-validated objective"),
    ("cv_accuracy", "[sampler]\ntype = 'grid'\n[space.dropout]\ntype = 'float'\nlow = 0.0\nhigh = 0.3",
     "grid sampler takes categorical"),
])
def test_bad_cv_keys_are_refused_before_training(tmp_path, objective, extra, message):
    path = tmp_path / "bad.toml"
    path.write_text(CV_KEYS.format(objective=objective, extra=extra))
    with pytest.raises(UserError, match=message):
        load_study(path)


def test_cv_keys_are_read_and_default_to_five_folds_once(tmp_path):
    path = tmp_path / "ok.toml"
    path.write_text(CV_KEYS.format(objective="cv_auc", extra="repeats = 2"))
    spec = load_study(path)
    assert spec.cv and (spec.folds, spec.repeats) == (5, 2)
    assert spec.trial_config({"lr": 0.01}).val_fraction == pytest.approx(0.2)  # each model holds out one fold
    assert spec.refit_config({"lr": 0.01}).val_fraction == 0.0  # the refit: all of train/
    assert not load_study("default").cv


def test_shipped_cv_study_compares_each_configuration_once_by_five_folds():
    import optuna

    from agestudy.tune import create_sampler

    spec = load_study("cv")
    assert spec.cv and spec.folds == 5 and spec.objective == "cv_accuracy" and spec.pruner["type"] == "none"
    assert spec.sampler["type"] == "grid" and spec.n_trials == spec.grid_size() == 3
    assert "min per trial" in spec.description
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=create_sampler(spec))
    study.optimize(lambda trial: [p.suggest(trial) for p in spec.space] and 0.0, n_trials=spec.grid_size())
    seen = sorted(tuple(t.params[p.name] for p in spec.space) for t in study.trials)
    assert seen == sorted(product(*(p.choices for p in spec.space)))  # every configuration, once


# ----------------------------------------------------------------------------- a tiny CV study end to end

# Like test_tune's TEST_STUDY: tiny trials (4 epochs of a width-8 network on 64x64 crops, batches of 8:
# a fold fits 60 images), here each a 2-fold cross-validation of the small synthetic set's train/.
CV_STUDY = """
[study]
name = "{name}"
objective = "cv_accuracy"
folds = 2
repeats = 1
n_trials = 3

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
epochs = 4
batch_size = 8
crop = 64
padding = 2
evals_per_epoch = 2
optimizer = "sgd"
mixup = 0.0             # the learning trials must beat the one that cannot in 4 epochs: mixup slows so short a run

[space.lr]
type = "categorical"
choices = [0.1, 0.05, 1e-9]

[refit]
epochs = 2
"""


@pytest.fixture(scope="module")
def cv_study(synthetic_root, tmp_path_factory):
    """The tiny CV study, tuned and refitted once (no analyses): its folder, study file and Optuna storage."""
    tmp_path = tmp_path_factory.mktemp("cv")
    study_path = tmp_path / "cvt.toml"
    study_path.write_text(CV_STUDY.format(name="cvt"))
    storage = str(journal(tmp_path, "cvt"))
    study = load(study_path, storage)
    for lr in (0.1, 0.05, 1e-9):  # two that learn, then one that cannot: pruned after its first fold
        study.enqueue_trial({"lr": lr})
    proc = subprocess.run([sys.executable, "-m", "agestudy.tune", "--study", str(study_path), "--data",
                           str(synthetic_root), "--cache-dir", str(tmp_path / "cache"), "--experiment", "test",
                           "--quiet", "--storage", storage, "--no-analyze"],
                          capture_output=True, text=True, env=env_for(tmp_path), cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return SimpleNamespace(tmp=tmp_path, study_path=study_path, storage=storage)


def test_cv_study_scores_trials_by_the_mean_of_their_folds_and_refits(cv_study):
    from optuna.trial import TrialState

    tmp_path, study_path, storage = cv_study.tmp, cv_study.study_path, cv_study.storage
    study = load(study_path, storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    assert study.metric_names == ["cross-validated accuracy"]
    client, runs = runs_of(tmp_path)
    parent = next(r for r in runs if r.data.tags.get(contract.ROLE_TAG) == contract.ROLE_STUDY)
    assert parent.data.params["study.folds"] == "2" and "cross-validation" in parent.data.tags[contract.DESCRIPTION_TAG]
    trial_runs = {int(r.data.tags[contract.TRIAL_TAG]): r for r in runs
                  if r.data.tags.get(contract.ROLE_TAG) == contract.ROLE_TRIAL}
    fold_runs = [r for r in runs if r.data.tags.get(contract.ROLE_TAG) == contract.ROLE_FOLD]
    assert sorted(trial_runs) == [0, 1, 2]
    n_train = sum(int(parent_count) for parent_count in (fold_runs[0].data.params["data.train_0"],
                                                         fold_runs[0].data.params["data.train_1"]))

    for trial in study.trials[:2]:
        run = trial_runs[trial.number]
        assert trial.user_attrs["mlflow_run_id"] == run.info.run_id and run.info.status == "FINISHED"
        assert run.data.tags[contract.PARENT_RUN_TAG] == parent.info.run_id
        assert run.data.params["cv.folds"] == "2" and run.data.params["val_fraction"] == "0.5"
        folds = sorted((r for r in fold_runs if r.data.tags[contract.PARENT_RUN_TAG] == run.info.run_id),
                       key=lambda r: int(r.data.tags[contract.FOLD_TAG]))
        assert [r.data.tags[contract.FOLD_TAG] for r in folds] == ["0", "1"]
        assert [r.info.run_name for r in folds] == [f"cvt-trial-{trial.number}-fold-{k}" for k in (0, 1)]
        assert [r.data.params["cv.fold"] for r in folds] == ["0", "1"]
        assert all(r.info.status == "FINISHED" and r.data.tags[contract.TRIAL_TAG] == str(trial.number) for r in folds)
        # the folds held out disjoint halves of train/ and never looked at test/
        assert sum(int(r.data.params["data.n_val"]) for r in folds) == n_train
        assert all(int(r.data.params["data.n_train_used"]) + int(r.data.params["data.n_val"]) == n_train
                   for r in folds)
        assert not any(k.startswith("test/") for r in folds for k in r.data.metrics)
        contexts = {t.value for r in folds for i in client.get_run(r.info.run_id).inputs.dataset_inputs
                    for t in i.tags if t.key == "mlflow.data.context"}
        assert contexts == {"train", "validation"}
        # the objective is the mean of the folds' final validation accuracies; the spread is logged beside it
        accs = [r.data.metrics[contract.VAL_FINAL_ACC] for r in folds]
        assert trial.value == pytest.approx(statistics.fmean(accs))
        assert trial.user_attrs["cv_mean"] == pytest.approx(trial.value)
        assert trial.user_attrs["cv_sd"] == pytest.approx(statistics.stdev(accs))
        assert trial.user_attrs["cv_folds"] == pytest.approx(accs)
        fold_curve = client.get_metric_history(run.info.run_id, contract.CV_FOLD_ACC)
        assert sorted(m.step for m in fold_curve) == [0, 1]  # the fold's index
        assert [m.value for m in sorted(fold_curve, key=lambda m: m.step)] == pytest.approx(accs)
        for key, value in ((contract.CV_MEAN_ACC, trial.value), (contract.CV_SD_ACC, statistics.stdev(accs)),
                           (contract.CV_N_FOLDS, 2)):
            history = client.get_metric_history(run.info.run_id, key)
            assert [m.step for m in history] == [contract.SUMMARY_STEP], key
            assert history[0].value == pytest.approx(value), key
        assert contract.CV_MEAN_AUC in run.data.metrics and contract.CV_SD_AUC in run.data.metrics
        # the pruner saw the running mean after each fold (step: folds done)
        assert trial.intermediate_values == pytest.approx({1: accs[0], 2: statistics.fmean(accs)})

    pruned, pruned_run = study.trials[2], trial_runs[2]
    assert pruned.user_attrs["pruned_after_folds"] == 1 and list(pruned.intermediate_values) == [1]
    assert pruned_run.info.status == "KILLED" and pruned_run.data.tags[contract.PRUNED_TAG] == "true"
    assert pruned_run.info.run_name == "cvt-trial-2 (pruned)"
    assert sum(r.data.tags[contract.PARENT_RUN_TAG] == pruned_run.info.run_id for r in fold_runs) == 1
    assert contract.CV_MEAN_ACC not in pruned_run.data.metrics  # no mean of a cross-validation cut short
    assert parent.data.metrics[contract.STUDY_EPOCHS_SAVED] == pytest.approx(1 - (8 + 8 + 4) / 24)

    finals = [r for r in runs if r.data.tags.get(contract.ROLE_TAG) == contract.ROLE_FINAL]
    assert len(finals) == 1 and finals[0].info.status == "FINISHED"
    final = finals[0]
    best = study.best_trial
    assert final.data.params["val_fraction"] == "0.0" and contract.TEST_ACCURACY in final.data.metrics
    assert int(final.data.params["data.n_train_used"]) == n_train  # refitted on all of train/
    assert final.data.tags[contract.BEST_TRIAL_RUN_TAG] == trial_runs[best.number].info.run_id
    assert "±" in final.data.tags[contract.DESCRIPTION_TAG] and "sd over 2 folds" in final.data.tags[
        contract.DESCRIPTION_TAG]
    assert np.isfinite(final.data.metrics[contract.TEST_ACCURACY])


def test_cv_ensembles_tool_recomputes_each_trials_folds_and_averages_them(cv_study, synthetic_root):
    """tools/cv-ensembles.py re-predicts the stored fold models on the folds they held out: each complete
    trial's recomputed CV accuracy is the one the study logged (the pruned trial, missing a fold, is left out)."""
    study = load(cv_study.study_path, cv_study.storage)
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "cv-ensembles.py"), "--data", str(synthetic_root),
                           "--cache-dir", str(cv_study.tmp / "cache")],
                          capture_output=True, text=True, env=env_for(cv_study.tmp), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("2 configurations, 2 folds, ")
    for trial in study.trials[:2]:
        line = next(x for x in lines if x.strip().startswith(f"cvt trial {trial.number}:"))
        assert float(line.split(":")[1].split("+-")[0]) == pytest.approx(100 * trial.value, abs=0.006)
    assert any(x.startswith("all 2: ") for x in lines)
    counts = [int(part.split(": ")[1]) for part in lines[-1].split("configurations: ")[1].split(", ")]
    assert len(counts) == 3 and sum(counts) == int(lines[0].split(", ")[2].split()[0])  # each face counted once
    bad = subprocess.run([sys.executable, str(REPO / "tools" / "cv-ensembles.py"), "--data", str(synthetic_root),
                          "--tracking-uri", f"sqlite:///{cv_study.tmp / 'none.db'}"],
                         capture_output=True, text=True, env=env_for(cv_study.tmp), timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and bad.stderr.startswith("error:")


def test_a_cv_final_run_is_reported_with_the_folds_it_was_chosen_by(cv_study):
    """Analysis q4 logs the best trial's mean and sd over its folds, each fold's score and the final run's test
    accuracy minus that mean; q6 the trials within one sd of the best. Sections 4 and 6 say so in both languages."""
    from optuna.trial import TrialState

    from agestudy.analyses import run_analyses
    from agestudy.report.render import make_filters

    client, runs = runs_of(cv_study.tmp)
    final = next(r for r in runs if r.data.tags.get(contract.ROLE_TAG) == contract.ROLE_FINAL)
    parent = next(r for r in runs if r.data.tags.get(contract.ROLE_TAG) == contract.ROLE_STUDY)
    optuna_study = load(cv_study.study_path, cv_study.storage)
    best = optuna_study.best_trial
    trial = client.get_run(best.user_attrs["mlflow_run_id"])
    out = run_analyses(final.info.run_id, only="q4,q6", cache_dir=cv_study.tmp / "cache", progress=False)
    assert out["failed"] == {}

    def logged(path):
        folder = cv_study.tmp / "dl" / path.replace("/", "_")
        return json.loads(Path(client.download_artifacts(out["analysis_run_id"], path, str(folder))).read_text())

    chosen, protocol = logged("q4/selection.json"), logged("q6/effects.json")["protocol"]
    folds = [m.value for m in sorted(client.get_metric_history(trial.info.run_id, contract.CV_FOLD_ACC),
                                     key=lambda m: m.step)]
    mean, sd = statistics.fmean(folds), statistics.stdev(folds)
    test = final.data.metrics[contract.TEST_ACCURACY]
    assert (chosen["source"], chosen["kind"], chosen["study"], chosen["objective"]) == ("study", "cv", "cvt",
                                                                                         "cv_accuracy")
    assert chosen["study_run_id"] == parent.info.run_id and chosen["best_trial"] == best.number
    assert chosen["best_trial_run_id"] == chosen["estimate_run_id"] == trial.info.run_id
    assert (chosen["folds"], chosen["repeats"], chosen["n_folds"], len(folds)) == (2, 1, 2, 2)
    assert chosen["estimate"] == pytest.approx(mean) == best.value and chosen["sd"] == pytest.approx(sd)
    assert chosen["fold_acc"] == pytest.approx(folds) and chosen["noise"] == pytest.approx(sd)
    assert chosen["gap"] == pytest.approx(test - mean) and chosen["within"] == (abs(test - mean) <= sd)
    assert chosen["test_accuracy"] == test and chosen["n_train"] == int(final.data.params["data.n_train_used"])
    # q6: the study's trials compared by the folds' mean; within one sd of the best (the pruned one never counts)
    complete = {t.number: t.value for t in optuna_study.trials if t.state == TrialState.COMPLETE}
    assert (protocol["kind"], protocol["n_complete"], protocol["best_trial"]) == ("cv", len(complete), best.number)
    assert protocol["sd"] == pytest.approx(sd) and protocol["sd_metric"] == contract.CV_SD_ACC
    assert protocol["within_trials"] == sorted(n for n, v in complete.items() if v >= best.value - sd - 1e-12)

    texts = rendered_text(client, "test", final.info.run_id, cv_study.tmp / "report")
    en, fr = make_filters("en"), make_filters("fr")
    for text, expected in (
        (texts["en"], [
            f"The configuration is that of the best trial (#{best.number}, run {trial.info.run_id}) of study cvt "
            f"(run {parent.info.run_id}), which compared its trials by cross-validated accuracy",
            "Each trial was a stratified 2-fold cross-validation of train/: 2 models, each trained on the other "
            "folds and scored on the fold it held out.",
            f"The best trial's cross-validated accuracy was {en['pct'](mean)} ± {en['pts'](sd, 1, False)} "
            "(mean ± standard deviation over its 2 folds).",
            f"Fold by fold: {en['pct'](folds[0])}; {en['pct'](folds[1])}.",
            f"Test accuracy minus the estimate: {en['pts'](test - mean)} ({en['pct'](test)} on test/ against "
            f"{en['pct'](mean)}, the mean accuracy over the best trial's folds).",
            ("That lies within" if abs(test - mean) <= sd else "That lies beyond")
            + f" the estimate's noise (one standard deviation of the folds: ±{en['pts'](sd, 1, False)})",
            "Each trial was scored by a stratified 2-fold cross-validation of train/"]),
        (texts["fr"], [
            "Chaque essai était une validation croisée stratifiée de train/ en 2 plis",
            f"Pli par pli : {fr['pct'](folds[0])} ; {fr['pct'](folds[1])}.",
            f"Exactitude sur test/ moins l'estimation : {fr['pts'](test - mean)} ({fr['pct'](test)} sur test/ "
            f"contre {fr['pct'](mean)}, l'exactitude moyenne sur les plis du meilleur essai).",
            "Chaque essai a été noté par une validation croisée stratifiée de train/ en 2 plis"])):
        for sentence in expected:
            assert sentence.replace("\u00a0", " ") in text, (sentence, text[text.find("How this"):][:3000])
    assert "plain training run" not in texts["en"]


def test_cv_study_refuses_folds_the_data_cannot_fill(lab_tree, tmp_path):
    study_path = tmp_path / "big.toml"
    study_path.write_text(CV_STUDY.format(name="big").replace("folds = 2", "folds = 5"))  # 4 images a class
    proc = subprocess.run([sys.executable, "-m", "agestudy.tune", "--study", str(study_path), "--data",
                           str(lab_tree), "--cache-dir", str(tmp_path / "cache"), "--experiment", "test",
                           "--quiet", "--no-refit"],
                          capture_output=True, text=True, env=env_for(tmp_path), cwd=tmp_path, timeout=300)
    assert proc.returncode == 2 and "at least 5 images of each class" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert runs_of(tmp_path)[1] == []  # refused before the study's run or any trial


def test_train_folds_tool_trains_a_fold_as_the_cv_objective_does(cv_study, synthetic_root):
    """tools/train-folds.py, given a trial's configuration, reproduces that trial's fold score; --test scores test/."""
    import json

    study = load(cv_study.study_path, cv_study.storage)
    trial = study.trials[0]
    args = ["--members", "1", "--stem-stride", "4", "--width", "8", "--epochs", "4", "--batch-size", "8",
            "--crop", "64", "--padding", "2", "--evals-per-epoch", "2", "--optimizer", "sgd", "--mixup", "0",
            "--lr", str(trial.params["lr"])]
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "train-folds.py"), "--data", str(synthetic_root),
                           "--cache-dir", str(cv_study.tmp / "cache"), "--folds", "2", "--fold", "1", "--test",
                           "--view", "centre+mirror", "--view", "ten", *args],
                          capture_output=True, text=True, env=env_for(cv_study.tmp), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fold, test = [json.loads(line) for line in proc.stdout.splitlines()]
    assert fold["fold"] == 1 and fold["val_acc"] == pytest.approx(trial.user_attrs["cv_folds"][1], abs=1e-9)
    assert test["fold"] == "test" and 0 <= test["test_acc"] <= 1 and test["test_auc"] > 0.5
    # --view: the same model through other views; the run's own view (centre+mirror here) gives its own scores
    assert fold["views"]["centre+mirror"]["acc"] == pytest.approx(fold["val_acc"], abs=1e-12)
    assert test["views"]["centre+mirror"]["acc"] == pytest.approx(test["test_acc"], abs=1e-12)
    assert 0 <= fold["views"]["ten"]["acc"] <= 1 and 0 <= test["views"]["ten"]["loss"]
    # progress on stderr: the fold's epochs, each printed once, the last one included
    progress = [line for line in proc.stderr.splitlines() if line.startswith("fold 1: epoch ")]
    assert [line.split(",")[0] for line in progress] == [f"fold 1: epoch {e}/4" for e in (1, 2, 3, 4)]

    bad = subprocess.run([sys.executable, str(REPO / "tools" / "train-folds.py"), "--data", str(synthetic_root),
                          "--fold", "1", "--no-such-field", "1"],
                         capture_output=True, text=True, env=env_for(cv_study.tmp), timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "--no-such-field" in bad.stderr
    bad_view = subprocess.run([sys.executable, str(REPO / "tools" / "train-folds.py"), "--data", str(synthetic_root),
                               "--fold", "1", "--view", "eleven"],
                              capture_output=True, text=True, env=env_for(cv_study.tmp), timeout=300)
    assert bad_view.returncode != 0 and "Traceback" not in bad_view.stderr
    assert "unknown view 'eleven'" in bad_view.stderr
