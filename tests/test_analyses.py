"""The analyses of the lab's questions (agestudy.analyses, agestudy.analyze) on a tiny synthetic run.

One module-scoped tiny training run in a temporary MLflow SQLite store; every analysis runs on it
once, and each test checks one question's numbers and that its artifacts are in MLflow.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import rendered_text
from PIL import Image

from agestudy import runs as contract
from agestudy.analyses import QUESTIONS, parse_questions, run_analyses
from agestudy.errors import UserError
from agestudy.models import MODELS, count_parameters, create_model, split_members
from agestudy.predict import predict_proba
from agestudy.train import TrainConfig, load_model, train_and_log

# two epochs must teach the model something: no mixup, which slows so short a run (the default is for ~60 epochs)
TINY = dict(members=1, stem_stride=4, model="efficient", width=8, epochs=2, batch_size=16, crop=64, padding=2,
            precision="fp32", val_fraction=0.2, evals_per_epoch=1, mixup=0.0)
QUICK = {"q5_bootstrap": 200, "q8_bootstrap": 200, "q8_orderings": 10, "q12_steps": 40}


def drawn_face_photo(label: int, index: int, size=(400, 360)) -> Image.Image:
    """A synthetic (drawn, not real) face, enlarged on a plain background: a photo Haar can detect."""
    from agestudy.data.synthetic import _image_rng, render_face

    face = render_face(label, _image_rng(0, "test", label, index)).resize((240, 240), Image.Resampling.BICUBIC)
    photo = Image.new("RGB", size, (90, 110, 130))
    photo.paste(face, ((size[0] - 240) // 2, (size[1] - 240) // 2))
    return photo


def make_external(root: Path) -> Path:
    """Labelled photos with faces (one stored sideways + EXIF rotation, one grayscale), and some without."""
    (root / "0").mkdir(parents=True)
    (root / "1").mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": the pixels are stored sideways
    # (this drawn face is not found when sideways: the test fails if the EXIF rotation is ignored)
    drawn_face_photo(0, 0).rotate(90, expand=True).save(root / "0" / "face_young_sideways.jpg", quality=95, exif=exif)
    drawn_face_photo(1, 0).save(root / "1" / "face_old.jpg", quality=95)
    drawn_face_photo(1, 1).convert("L").save(root / "1" / "face_old_gray.png")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)).save(root / "noise.png")
    Image.new("RGB", (320, 240), (128, 128, 128)).save(root / "0" / "blank.jpg")
    (root / "1" / "broken.jpg").write_bytes(b"not a jpeg at all")
    (root / "notes.txt").write_text("not a photo")
    return root


def all_artifacts(client, run_id: str, path: str | None = None) -> set[str]:
    out = set()
    for item in client.list_artifacts(run_id, path):
        out |= all_artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 1-epoch synthetic run in a temporary MLflow store, analysed once with every question."""
    from mlflow.tracking import MlflowClient

    from agestudy.data import load_data
    from agestudy.data.synthetic import generate
    from agestudy.tracking import setup_tracking

    tmp = tmp_path_factory.mktemp("analyses")
    patch = pytest.MonkeyPatch()
    try:
        patch.chdir(tmp)
        uri = f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}"
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.setenv("AGESTUDY_CACHE", str(tmp / "cache"))
        setup_tracking(uri, "test")
        generate(tmp / "data", per_class=40, seed=0, progress=False)
        data = load_data(tmp / "data", tmp / "cache", progress=False, verbose=False)
        run_id, _, _ = train_and_log(TrainConfig(**TINY), data, progress=False, tags={"agestudy.role": "train"})
        external = make_external(tmp / "external")
        out = run_analyses(run_id, external=external, options=QUICK, progress=False)
        client = MlflowClient()
        model, cfg = load_model(client.download_artifacts(run_id, "model", str(tmp / "model")))
        yield SimpleNamespace(run_id=run_id, out=out, aid=out["analysis_run_id"], client=client, data=data,
                              model=model, cfg=cfg, tmp=tmp, artifacts=all_artifacts(client, out["analysis_run_id"]))
    finally:
        patch.undo()


def table(tiny, path: str, run_id: str | None = None):
    local = tiny.client.download_artifacts(run_id or tiny.aid, path, str(tiny.tmp / "dl" / (run_id or tiny.aid)))
    return json.loads(Path(local).read_text())


def numbers(tiny, question: str, run_id: str | None = None) -> dict:
    """What one question logged with ctx.log_metrics: its table qN/metrics.json."""
    return table(tiny, contract.analysis_metrics_table(question), run_id)


def histories(client, run_id: str) -> dict[str, list[tuple[int, float]]]:
    return {key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
            for key in client.get_run(run_id).data.metrics}


def test_every_analysis_ran_into_a_tagged_child_run(tiny):
    assert tiny.out["failed"] == {}
    assert set(tiny.out["results"]) == set(QUESTIONS)
    child = tiny.client.get_run(tiny.aid)
    parent = tiny.client.get_run(tiny.run_id)
    assert child.info.status == "FINISHED"
    assert child.info.experiment_id == parent.info.experiment_id
    assert child.data.tags["agestudy.role"] == "analysis"
    assert child.data.tags["mlflow.parentRunId"] == tiny.run_id
    assert child.data.tags["agestudy.synthetic"] == "true"
    assert "questions answered about run" in child.data.tags["mlflow.note.content"]
    assert "SYNTHETIC" in child.data.tags["mlflow.note.content"]
    assert child.data.tags["agestudy.analyses"] == ",".join(QUESTIONS)
    assert parent.data.tags["agestudy.analysis_run"] == tiny.aid
    for q in QUESTIONS:  # every question logged its numbers, and a headline metric or two, under qN/
        assert contract.analysis_metrics_table(q) in tiny.artifacts, q
        assert any(k.startswith(f"{q}/") for k in child.data.metrics), q
        for name in contract.ANALYSIS_HEADLINES[q]:
            if numbers(tiny, q).get(name) is not None:
                assert child.data.metrics[contract.analysis_metric(q, name)] == pytest.approx(numbers(tiny, q)[name])
    # a run that reads in the MLflow UI: few metrics, each a number at step 0 (q8's curve apart)
    assert len(child.data.metrics) <= contract.MAX_ANALYSIS_METRICS
    series = {contract.analysis_metric(q, name) for q, names in contract.ANALYSIS_SERIES.items() for name in names}
    for key, points in histories(tiny.client, tiny.aid).items():
        if key not in series:
            assert [step for step, _ in points] == [contract.SUMMARY_STEP], key


def test_q1_layer_table_totals_equal_the_parameter_count(tiny):
    assert {"q1/structure_model.json", "q1/structure_baseline.json", "q1/structure_model.txt",
            "q1/structure_baseline.txt"} <= tiny.artifacts
    logged = table(tiny, "q1/structure_model.json")
    n = count_parameters(tiny.model)
    assert logged["total_parameters"] == sum(r["parameters"] for r in logged["rows"]) == n
    assert numbers(tiny, "q1")["model_parameters"] == n
    assert tiny.client.get_run(tiny.aid).data.metrics["q1/model_parameters"] == n
    assert logged["trainable_parameters"] + logged["non_trainable_parameters"] == n
    assert logged["buffers"] > 0  # BatchNorm running statistics, counted apart
    baseline = table(tiny, "q1/structure_baseline.json")
    assert baseline["total_parameters"] == count_parameters(create_model("baseline", crop=TINY["crop"]))
    first_conv = next(r for r in baseline["rows"] if r["type"] == "Conv2d")
    assert first_conv["formula"] == "3*3*3*32 + 32" and first_conv["parameters"] == 896
    assert first_conv["output_shape"] == [32, TINY["crop"], TINY["crop"]]
    assert baseline["rows"][-1]["output_shape"] == [2]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_q1_formulas_hold_for_every_model(name):
    from agestudy.analyses.q1_structure import evaluate_formula, structure_table

    model = create_model(name, **({"crop": 64} if name == "baseline" else {}))
    logged = structure_table(model, 64)
    assert logged["total_parameters"] == count_parameters(model)
    assert all(evaluate_formula(r["formula"]) == r["parameters"] for r in logged["rows"])
    if name == "baseline":  # the lab's layers, under the names a student knows
        assert {r["type"] for r in logged["rows"]} >= {"Conv2d", "MaxPool2d", "Flatten", "Linear"}



def test_q1_lists_an_ensemble_as_one_member_plus_the_others():
    from agestudy.analyses.q1_structure import evaluate_formula, structure_table

    model = create_model("efficient", members=3, width=8, stem_stride=4)
    single = structure_table(split_members(model)[0], 64)
    logged = structure_table(model, 64)
    assert logged["total_parameters"] == count_parameters(model) == 3 * single["total_parameters"]
    assert all(evaluate_formula(r["formula"]) == r["parameters"] for r in logged["rows"])
    others = [r for r in logged["rows"] if r["name"] == "members.1-2"]
    assert len(others) == 1 and others[0]["parameters"] == 2 * single["total_parameters"]
    assert not any(r["name"].startswith(("members.1.", "members.2.")) for r in logged["rows"])

def test_q2_untrained_networks_have_intervals_around_their_accuracy(tiny):
    assert {"q2/chance.json", "q2/accuracy.png", "q2/p1_histograms.png"} <= tiny.artifacts
    logged = table(tiny, "q2/chance.json")
    assert len(logged["networks"]) >= 10
    for r in logged["networks"] + [logged["pooled"]]:
        assert r["ci_low"] <= r["accuracy"] <= r["ci_high"]
        assert 0 <= r["p_value"] <= 1
    m = numbers(tiny, "q2")
    assert m["n_networks"] >= 10
    assert m["ci_low"] <= m["pooled_accuracy"] <= m["ci_high"]
    n_test = len(tiny.data.test)
    assert logged["pooled"]["n"] == n_test * len(logged["networks"])
    assert m["majority_accuracy"] == pytest.approx(0.5)  # the synthetic test set is balanced
    assert m["uniform_range_low"] < 0.5 < m["uniform_range_high"]


def test_q5_scores_calibration_and_auc_interval(tiny):
    assert {"q5/summary.json", "q5/margin_histograms.png", "q5/roc.png", "q5/confusion.png",
            "q5/reliability_before.png", "q5/reliability_after.png"} <= tiny.artifacts
    m = numbers(tiny, "q5")
    assert m["auc_ci_low"] <= m["auc"] <= m["auc_ci_high"]
    assert m["temperature"] > 0
    assert m["tn"] + m["fp"] + m["fn"] + m["tp"] == len(tiny.data.test)
    # the logged numbers are those of the logged model, on the centre crop (analyses never mirror)
    p1 = predict_proba(tiny.model, tiny.data.test.images, "centre", tiny.cfg.augment()).numpy()
    labels = tiny.data.test.labels.numpy()
    assert m["class0_margin_mean"] == pytest.approx(np.mean(2 * p1[labels == 0] - 1), abs=1e-5)
    assert m["class1_p_true_mean"] == pytest.approx(np.mean(p1[labels == 1]), abs=1e-5)
    summary = table(tiny, "q5/summary.json")
    assert "validation split" in summary["calibration"]["fitted_on"]
    for c in ("class_0", "class_1"):
        assert {"margin_mean", "margin_var", "p_true_mean", "p_true_var", "precision", "recall", "f1"} <= set(
            summary["per_class"][c])


def test_q5_temperature_scaling_fits_a_known_temperature():
    from agestudy.analyses.q5_beyond_accuracy import fit_temperature, sigmoid

    rng = np.random.default_rng(0)
    true_margin = rng.normal(0, 2, 20000)
    labels = (rng.random(20000) < sigmoid(true_margin)).astype(int)
    assert fit_temperature(3 * true_margin, labels) == pytest.approx(3, rel=0.1)  # logits 3x too confident


def test_trial_tables_are_read_whatever_optuna_named_the_objective_column():
    """study/trials.csv names the objective's column "value", or "value_<name>" once the study names its objective."""
    from agestudy.analyses.stats import ablation_groups, hyperparameter_effects, trial_value

    plain = [{"number": str(i), "value": str(0.5 + 0.1 * i), "state": "COMPLETE", "params_flip": str(i % 2 == 0)}
             for i in range(4)]
    named = [{("value_validation accuracy" if k == "value" else k): v for k, v in row.items()} for row in plain]
    assert [trial_value(row) for row in named] == pytest.approx([0.5, 0.6, 0.7, 0.8])
    assert np.isnan(trial_value({"number": "0", "state": "FAIL"}))
    for rows in (plain, named):
        (effect,) = hyperparameter_effects(rows)
        assert effect.n == 4 and effect.best is False and effect.diff == pytest.approx(0.1)
        assert [(g["value"], g["n"]) for g in ablation_groups(rows, "flip")] == [(True, 2), (False, 2)]


def _fake_run(run_id: str, tags=None, params=None, metrics=None):
    """An MLflow Run as agestudy.runs reads it (info, data), without a store."""
    return SimpleNamespace(info=SimpleNamespace(run_id=run_id, experiment_id="0", lifecycle_stage="active"),
                           data=SimpleNamespace(tags=dict(tags or {}), params=dict(params or {}),
                                                metrics=dict(metrics or {})))


class _FakeClient:
    def __init__(self, *runs):
        self.runs = {run.info.run_id: run for run in runs}

    def get_run(self, run_id):
        return self.runs[run_id]

    def search_runs(self, *args, **kwargs):
        return []


def test_standard_errors_of_a_validation_score():
    from agestudy.analyses.stats import auc_se, binomial_se

    assert binomial_se(0.8, 100) == pytest.approx(0.04)
    assert binomial_se(0.8, 232) == pytest.approx(np.sqrt(0.8 * 0.2 / 232))
    assert np.isnan(binomial_se(0.8, 0))
    # Hanley & McNeil at AUC 0.5 is the Mann-Whitney statistic's variance under chance: (n0 + n1 + 1) / (12 n0 n1)
    assert auc_se(0.5, 40, 60) == pytest.approx(np.sqrt(101 / (12 * 40 * 60)))
    assert auc_se(0.9, 40, 60) < auc_se(0.7, 40, 60)  # better separated classes: a surer AUC


@pytest.mark.parametrize("objective", ["val_acc", "val_auc"])
def test_study_protocol_counts_the_trials_within_two_standard_errors_of_the_best(objective):
    """The best trial's noise: 2 standard errors of its score on its validation split's data.n_val images."""
    from agestudy.analyses.selection import study_protocol
    from agestudy.analyses.stats import auc_se, binomial_se

    column = "value_validation accuracy" if objective == "val_acc" else "value_validation ROC AUC"
    rows = [{"number": "0", column: "0.78", "state": "COMPLETE", "user_attrs_mlflow_run_id": "t0"},
            {"number": "1", column: "0.80", "state": "COMPLETE", "user_attrs_mlflow_run_id": "t1"},
            {"number": "2", column: "0.70", "state": "COMPLETE", "user_attrs_mlflow_run_id": "t2"},
            {"number": "3", column: "0.95", "state": "PRUNED", "user_attrs_mlflow_run_id": "t3"},
            {"number": "4", column: "", "state": "FAIL"}]
    study = _fake_run("s", tags={contract.OBJECTIVE_TAG: objective})
    trial = _fake_run("t1", params={"data.n_val": "100", "data.n_train_used": "900", "val_fraction": "0.1",
                                    "data.train_0": "600", "data.train_1": "400"})
    p = study_protocol(_FakeClient(study, trial), study, rows)
    se = binomial_se(0.80, 100) if objective == "val_acc" else auc_se(0.80, 60, 40)
    assert (p["kind"], p["n_complete"], p["best_trial"], p["best_trial_run_id"]) == ("validation", 3, 1, "t1")
    assert (p["n_val"], p["n_fit"], p["image_weight"]) == (100, 900, pytest.approx(0.01))
    assert p["se"] == pytest.approx(se) and p["noise"] == pytest.approx(2 * se) and p["noise_multiple"] == 2
    expected = [int(r["number"]) for r in rows[:3] if float(r[column]) >= 0.80 - 2 * se]
    assert p["within_trials"] == expected and p["n_within"] == len(expected)
    assert 2 not in expected and {0, 1} <= set(expected)  # 0.70 is beyond the noise; the pruned 0.95 never counts


def test_q3_q4_q6_read_what_the_run_logged(tiny):
    """Learning curves per language from the logged histories, the Wilson interval, no study for q6."""
    from agestudy.analyses.stats import wilson_interval

    assert {"q3/learning_curves.json", "q3/learning_curves_fr.png", "q3/learning_curves_en.png",
            "q4/accuracy.json", "q6/effects.json"} <= tiny.artifacts
    run = tiny.client.get_run(tiny.run_id)
    curves = table(tiny, "q3/learning_curves.json")
    history = tiny.client.get_metric_history(tiny.run_id, contract.TRAIN_LOSS)
    assert curves["runs"] == [tiny.run_id] and curves["n_points"] == len(history) > 0
    assert curves["final_train_loss"] == max(history, key=lambda m: m.step).value
    accuracy = table(tiny, "q4/accuracy.json")
    n_test = len(tiny.data.test)
    assert accuracy["n_test"] == n_test
    assert (accuracy["ci_low"], accuracy["ci_high"]) == pytest.approx(
        wilson_interval(run.data.metrics[contract.TEST_ACCURACY], n_test))
    assert accuracy["first75"]["is_own"] and accuracy["first75"]["run_id"] == tiny.run_id  # it held out validation
    effects = table(tiny, "q6/effects.json")
    assert effects["study_run_id"] is None and numbers(tiny, "q6")["n_complete"] == 0  # a plain run, no study


def test_q4_a_plain_run_is_judged_by_its_own_validation_and_the_report_says_so(tiny):
    """No study chose a plain agestudy.train run: its estimate is its own validation accuracy (q4/selection.json),
    which sections 4 and 10 set against its test accuracy, in both languages."""
    from agestudy.analyses.stats import binomial_se
    from agestudy.report.render import make_filters

    run = tiny.client.get_run(tiny.run_id)
    p, n = run.data.metrics[contract.VAL_FINAL_ACC], int(run.data.params["data.n_val"])
    test, se = run.data.metrics[contract.TEST_ACCURACY], binomial_se(p, n)
    chosen = table(tiny, "q4/selection.json")
    assert (chosen["source"], chosen["kind"], chosen["study"]) == ("own", "validation", None)
    assert chosen["estimate_run_id"] == chosen["run_id"] == tiny.run_id and chosen["best_trial_run_id"] is None
    assert n == len(tiny.cfg.split(tiny.data.train)[1]) > 0 and chosen["n_val"] == n
    assert chosen["estimate"] == pytest.approx(p) and chosen["se"] == pytest.approx(np.sqrt(p * (1 - p) / n))
    assert chosen["gap"] == pytest.approx(test - p) and chosen["within"] == (abs(test - p) <= 2 * se)
    assert numbers(tiny, "q4")["selection_gap"] == pytest.approx(test - p)

    external = table(tiny, "q10/summary.json")["accuracy"]
    texts = rendered_text(tiny.client, "test", tiny.run_id, tiny.tmp / "report")
    en, fr = make_filters("en"), make_filters("fr")
    for text, expected in (
        (texts["en"], [
            "This run was not chosen by a study: it is a plain training run (python -m agestudy.train)",
            f"It held out {n} images of train/ for validation",
            f"its validation accuracy was {en['pct'](p)}, with a standard error of ±{en['pts'](se, 1, False)}",
            f"Test accuracy minus the estimate: {en['pts'](test - p)} ({en['pct'](test)} on test/ against "
            f"{en['pct'](p)}, the run's own validation accuracy).",
            "That lies within the estimate's noise" if abs(test - p) <= 2 * se else "That lies beyond the estimate's",
            f"Beside this model's other measures: {en['pct'](external)} on these photos, {en['pct'](test)} on test/",
            f"and {en['pct'](p)} ± {en['pts'](2 * se, 1, False)} (2 standard errors) estimated before test/ by the "
            "run's own validation accuracy."]),
        (texts["fr"], [
            "Ce run n'a pas été choisi par une étude : c'est un simple run d'entraînement",
            f"Il a mis de côté {n} images de train/ pour la validation",
            f"Exactitude sur test/ moins l'estimation : {fr['pts'](test - p)} ({fr['pct'](test)} sur test/ contre "
            f"{fr['pct'](p)}, l'exactitude de validation du run lui-même).",
            f"À côté des autres mesures de ce modèle : {fr['pct'](external)} sur ces photos, "
            f"{fr['pct'](test)} sur test/",
            f"et {fr['pct'](p)} ± {fr['pts'](2 * se, 1, False)} (2 erreurs types) estimés avant test/"])):
        for sentence in expected:
            assert sentence.replace("\u00a0", " ") in text, (sentence, text[text.find("4. "):][:3000])
    assert "best trial" not in texts["en"][texts["en"].find("How this configuration"):][:600]


def test_q7_reports_a_missing_ablation_then_summarises_one(tiny):
    assert {"q7/random_crop_grid.png", "q7/training_augmentation_grid.png", "q7/effect.json"} <= tiny.artifacts
    effect = table(tiny, "q7/effect.json")
    assert effect["status"] == "not_run" and "--study augmentation" in effect["command"]
    assert numbers(tiny, "q7")["n_trials"] == 0
    before = histories(tiny.client, tiny.aid)

    # two trials of the augmentation study, with and without RandomCrop, as agestudy.tune logs them
    for number, random_crop in enumerate((True, False)):
        tags = {"agestudy.role": "trial", "agestudy.study": "augmentation", "agestudy.trial": str(number)}
        train_and_log(TrainConfig(**{**TINY, "random_crop": random_crop}), tiny.data, tags=tags, test=False,
                      progress=False)
    out = run_analyses(tiny.run_id, only="q7", data=tiny.data, options=QUICK, progress=False)
    new = out["analysis_run_id"]
    assert new != tiny.aid and out["failed"] == {}  # a new analysis run, holding the other questions' results too
    assert out["carried"] == [q for q in QUESTIONS if q != "q7"]
    effect = table(tiny, "q7/effect.json", new)
    assert effect["status"] == "measured"
    assert effect["groups"]["with"]["test_acc"]["n"] == effect["groups"]["without"]["test_acc"]["n"] == 1
    for row in effect["trials"]:
        assert row["gap"] == pytest.approx(row["train_acc"] - row["test_acc"])
    m = numbers(tiny, "q7", new)
    assert m["n_trials"] == 2 and "test_acc_gain" in m
    assert tiny.client.get_run(new).data.metrics["q7/test_acc_gain"] == pytest.approx(m["test_acc_gain"])
    assert "q7/effect.png" in all_artifacts(tiny.client, new, "q7")
    assert tiny.client.get_run(new).data.tags["agestudy.analyses"] == ",".join(QUESTIONS)
    assert tiny.client.get_run(tiny.run_id).data.tags["agestudy.analysis_run"] == new
    assert histories(tiny.client, tiny.aid) == before  # the old analysis run is left as it was
    assert numbers(tiny, "q7")["n_trials"] == 0


def test_q8_curve_has_one_point_per_number_of_crops(tiny):
    assert {"q8/curve.json", "q8/mcnemar.json", "q8/accuracy_vs_crops.png"} <= tiny.artifacts
    curve = table(tiny, "q8/curve.json")
    assert [p["n_crops"] for p in curve["points"]] == list(range(1, 33))
    history = tiny.client.get_metric_history(tiny.aid, "q8/accuracy_by_n")
    assert sorted(m.step for m in history) == list(range(1, 33))
    m = {f"q8_{k}": v for k, v in numbers(tiny, "q8").items()}
    comparison = table(tiny, "q8/mcnemar.json")["comparisons"]["random32_vs_centre"]
    n = len(tiny.data.test)
    discordant = comparison["c_only_multicrop_right"] - comparison["b_only_reference_right"]
    assert m["q8_gain"] == pytest.approx(discordant / n)
    assert m["q8_gain"] == pytest.approx(m["q8_multicrop_accuracy"] - m["q8_centre_accuracy"])
    assert m["q8_gain_ci_low"] <= m["q8_gain"] <= m["q8_gain_ci_high"]
    assert 0 <= m["q8_mcnemar_p"] <= 1


def test_q8_mcnemar_is_exact():
    from agestudy.analyses.q8_multicrop import mcnemar

    a = np.array([True] * 10 + [False] * 10 + [True] * 80)
    b = np.array([False] * 10 + [True] * 10 + [True] * 80)
    same = mcnemar(a, b, n_boot=100)
    assert same["gain"] == 0 and same["p_value"] == pytest.approx(1.0)
    b2 = np.array([True] * 10 + [True] * 10 + [True] * 80)  # 10 discordant pairs, all for B
    better = mcnemar(a, b2, n_boot=100)
    assert better["c_only_multicrop_right"] == 10 and better["b_only_reference_right"] == 0
    assert better["p_value"] == pytest.approx(2 * 0.5 ** 10)


def test_q9_worst_image_has_the_lowest_true_class_probability(tiny):
    assert {"q9/extremes.json", "q9/ranking.csv", "q9/worst.png", "q9/best.png"} <= tiny.artifacts
    logged = table(tiny, "q9/extremes.json")
    assert "Sort all test images by p_true" in logged["procedure"]
    # analyses rank the centre-crop predictions
    p1 = predict_proba(tiny.model, tiny.data.test.images, "centre", tiny.cfg.augment()).numpy()
    labels = tiny.data.test.labels.numpy()
    p_true = np.where(labels == 1, p1, 1 - p1)
    worst, best = logged["worst"], logged["best"]
    assert len(worst) == len(best) == min(16, len(labels))
    assert worst[0]["p_true"] == pytest.approx(p_true.min(), abs=1e-5)
    assert tiny.data.test.files[int(np.argmin(p_true))] == worst[0]["file"]
    assert best[0]["p_true"] == pytest.approx(p_true.max(), abs=1e-5)
    assert [r["p_true"] for r in worst] == sorted(r["p_true"] for r in worst)


def test_q9_grad_cam_lights_up_where_the_evidence_is():
    """Only the top-left corner of the image holds anything: Grad-CAM must be zero elsewhere."""
    from torch import nn

    from agestudy.analyses.q9_extremes import cam_layer, grad_cam

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.ReLU(inplace=True))
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))

        def forward(self, x):
            return self.head(self.features(x))

    torch.manual_seed(0)
    model = Net().eval()
    layer, shape = cam_layer(model, 16, torch.device("cpu"))
    assert layer == "features" and shape == [4, 16, 16]
    x = torch.zeros(1, 3, 16, 16)
    x[..., :6, :6] = torch.rand(1, 3, 6, 6) + 0.5
    cams = grad_cam(model, x.repeat(2, 1, 1, 1), torch.tensor([0, 1]), layer)
    assert cams.shape == (2, 16, 16)
    lit = [cam for cam in cams if cam.max() > 0]
    assert lit  # the two targets' maps are ReLU(S) and ReLU(-S): one of them shows the evidence
    for cam in lit:
        assert cam.max() == pytest.approx(1.0) and cam[8:, :].max() == 0 and cam[:, 8:].max() == 0


def test_q10_finds_faces_and_reports_photos_without_one(tiny):
    assert {"q10/summary.json", "q10/predictions.csv", "q10/crops.png", "q10/no_face.png"} <= tiny.artifacts
    summary = table(tiny, "q10/summary.json")
    assert summary["n_photos"] == 6 and summary["ignored"] == ["notes.txt"]
    assert sorted(summary["no_face"]) == ["0/blank.jpg", "noise.png"]
    assert summary["unreadable"] == ["1/broken.jpg"]
    faces = {r["file"] for r in summary["photos"] if r["status"].startswith("face")}
    assert faces == {"0/face_young_sideways.jpg", "1/face_old.jpg", "1/face_old_gray.png"}  # EXIF rotation applied
    assert summary["n_judged"] == 3 and 0 <= summary["accuracy"] <= 1
    m = {f"q10_{k}": v for k, v in numbers(tiny, "q10").items()}
    assert m["q10_n_no_face"] == 2 and m["q10_n_unreadable"] == 1 and m["q10_n_faces_found"] == 3
    assert m["q10_accuracy_ci_low"] <= m["q10_accuracy"] <= m["q10_accuracy_ci_high"]
    assert {"q10/crops/0/face_young_sideways.png", "q10/crops/1/face_old.png"} <= tiny.artifacts
    local = tiny.client.download_artifacts(tiny.aid, "q10/predictions.csv", str(tiny.tmp / "dl"))
    rows = {r["file"]: r for r in csv.DictReader(io.StringIO(Path(local).read_text()))}
    assert rows["noise.png"]["status"] == "no face found" and rows["noise.png"]["p1"] == ""
    assert rows["0/face_young_sideways.jpg"]["p1"] != "" and rows["0/face_young_sideways.jpg"]["label"] == "0"
    # each face says how it was framed; the drawn faces' eyes are found
    assert {rows[f]["framing"] for f in faces} <= {"eyes", "box"} and rows["noise.png"]["framing"] == ""
    assert summary["n_framed_by_eyes"] == sum(rows[f]["framing"] == "eyes" for f in faces) >= 2


def test_q12_ascent_raises_the_target_probability(tiny):
    assert {"q12/trajectories.json", "q12/images.png", "q12/trajectories.png"} <= tiny.artifacts
    runs = table(tiny, "q12/trajectories.json")["runs"]
    assert {(r["target"], r["objective"], r["start"], r["param"]) for r in runs} >= {
        (c, o, s, "pixel") for c in (0, 1) for o in ("prob", "logit") for s in ("noise", "image")}
    assert any(r["param"] == "fourier" for r in runs)
    for r in runs:
        assert len(r["p_trajectory"]) == QUICK["q12_steps"] + 1
        if r["objective"] == "prob":
            assert r["p_final"] > r["p_start"], r["name"]
    # on this barely trained network a raw logit's gradient can be weaker than the smoothness
    # and L2 penalties, so most (not necessarily all) logit ascents raise it
    logit_runs = [r for r in runs if r["objective"] == "logit"]
    assert sum(r["logit_final"] > r["logit_start"] for r in logit_runs) >= len(logit_runs) - 1
    m = numbers(tiny, "q12")
    assert m["class1_prob_image_pixel_p_final"] > m["class1_prob_image_pixel_p_start"]


def test_q12_optimise_pushes_a_toy_model_to_its_target():
    from agestudy.analyses.q12_input_optimisation import optimise

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    model(torch.zeros(1, 3, 16, 16))
    model.eval().requires_grad_(False)
    start = torch.zeros(2, 3, 16, 16)
    shots, p, z = optimise(model, start, torch.tensor([0, 1]), ["prob", "prob"], False, 60,
                           torch.Generator().manual_seed(0), jitter=1)
    assert p.shape == (2, 61) and (p[:, -1] > 0.9).all()
    assert shots[60].abs().max() <= 2.0  # pixels stay within [0, 1] after un-normalisation


def test_question_names_are_checked():
    assert parse_questions(None) == list(QUESTIONS)
    assert parse_questions("q9, 8") == ["q8", "q9"]
    with pytest.raises(UserError, match="unknown question"):
        parse_questions("q13")


def test_cli_errors_are_one_line_with_exit_code_2(tiny, capsys):
    from agestudy.analyze import main

    for argv, message in ((["--run", "0" * 32], "no MLflow run"),
                          (["--run", tiny.run_id, "--only", "q13"], "unknown question"),
                          (["--run", tiny.run_id, "--external", str(tiny.tmp / "missing")], "not found"),
                          (["--run", tiny.run_id, "--data", str(tiny.tmp / "nowhere")], "not found")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err


def test_cli_runs_one_question(tiny, capsys):
    from agestudy.analyze import main

    assert main(["--run", tiny.run_id, "--only", "q1", "--quiet"]) == 0
    out = capsys.readouterr().out
    latest = tiny.client.get_run(tiny.run_id).data.tags["agestudy.analysis_run"]
    assert f"analysis run {latest}" in out and "q1: model_parameters" in out
    assert "carried over from the previous analysis run: q2," in out


def test_analyze_again_makes_a_new_run_and_leaves_the_old_one_alone(tiny, capsys):
    """`analyze --only q8` never appends to a metric history: it makes a new analysis run, which carries
    the other questions' results over from the previous one; that one stays exactly as it was."""
    from agestudy.analyze import main

    client = tiny.client
    old = client.get_run(tiny.run_id).data.tags["agestudy.analysis_run"]
    before = histories(client, old)
    old_folders = {item.path for item in client.list_artifacts(old) if item.is_dir}
    assert main(["--run", tiny.run_id, "--only", "q8", "--quiet"]) == 0
    capsys.readouterr()
    new = client.get_run(tiny.run_id).data.tags["agestudy.analysis_run"]
    assert new != old
    run = client.get_run(new)
    assert run.info.status == "FINISHED" and run.data.tags["agestudy.previous_analysis_run"] == old
    assert run.data.tags["mlflow.parentRunId"] == tiny.run_id
    assert run.data.tags["agestudy.analyses"] == ",".join(QUESTIONS)
    assert run.data.tags["agestudy.external"] == str(tiny.tmp / "external")  # q10's folder came over too
    after = histories(client, new)
    assert set(after) == set(before) and len(after) <= contract.MAX_ANALYSIS_METRICS
    for key, points in after.items():  # one value each, at step 0; q8's curve one point per number of crops
        steps = [step for step, _ in points]
        assert steps == (list(range(1, 33)) if key == "q8/accuracy_by_n" else [contract.SUMMARY_STEP]), key
        if not key.startswith("q8/"):
            assert points == before[key], key  # carried over as it was
    assert {item.path for item in client.list_artifacts(new) if item.is_dir} == old_folders
    for q in QUESTIONS:  # the report reads every question from the new run
        assert numbers(tiny, q, new) == numbers(tiny, q, old) or q == "q8", q
    assert histories(client, old) == before  # the old analysis run's histories are unchanged

    # --fresh: a new run with only the questions run now
    assert main(["--run", tiny.run_id, "--only", "q1", "--fresh", "--quiet"]) == 0
    fresh = client.get_run(tiny.run_id).data.tags["agestudy.analysis_run"]
    assert {item.path for item in client.list_artifacts(fresh) if item.is_dir} == {"q1"}
    assert client.get_run(fresh).data.tags["agestudy.analyses"] == "q1"
    assert "agestudy.previous_analysis_run" in client.get_run(fresh).data.tags


def test_results_of_an_older_analysis_run_come_over_in_todays_form(tiny):
    """An analysis run logged before qN/metrics.json (flat metrics q2_ci_low, ...): `--only q1` turns its
    q2 numbers into q2/metrics.json and headline metrics q2/..., so the report still finds them."""
    from mlflow.entities import Metric

    client = tiny.client
    run = client.get_run(tiny.run_id)
    legacy = client.create_run(run.info.experiment_id, tags={
        "agestudy.role": "analysis", "mlflow.parentRunId": tiny.run_id, "agestudy.analysed_run": tiny.run_id,
        "agestudy.data_fingerprint": tiny.data.fingerprint, "agestudy.analyses": "q1,q2,q8"}).info.run_id
    flat = {"q2_pooled_accuracy": 0.5, "q2_ci_low": 0.4, "q2_ci_high": 0.6, "q2_binom_pvalue": 0.9,
            "q1_model_buffers": 7}
    client.log_batch(legacy, metrics=[Metric(k, v, 0, 0) for k, v in flat.items()]
                     + [Metric("q8_accuracy_by_n", 0.5 + n / 100, 0, n) for n in (1, 2, 3)])
    chance = tiny.tmp / "legacy" / "chance.json"
    chance.parent.mkdir()
    chance.write_text("{}")
    client.log_artifact(legacy, str(chance), "q2")
    client.log_artifact(legacy, str(chance), "q8")
    client.set_terminated(legacy)
    client.set_tag(tiny.run_id, "agestudy.analysis_run", legacy)

    out = run_analyses(tiny.run_id, only="q1", data=tiny.data, progress=False)
    assert out["carried"] == ["q2", "q8"] and out["failed"] == {}
    new = client.get_run(out["analysis_run_id"])
    assert numbers(tiny, "q2", new.info.run_id) == {"pooled_accuracy": 0.5, "ci_low": 0.4, "ci_high": 0.6,
                                                    "binom_pvalue": 0.9}
    assert new.data.metrics["q2/pooled_accuracy"] == 0.5 and "q2/ci_low" not in new.data.metrics
    assert [(m.step, m.value) for m in sorted(client.get_metric_history(new.info.run_id, "q8/accuracy_by_n"),
                                              key=lambda m: m.step)] == [(1, 0.51), (2, 0.52), (3, 0.53)]
    assert not any("_" in key.split("/")[0] for key in new.data.metrics)  # no flat qN_ name came over
    assert new.data.tags["agestudy.analyses"] == "q1,q2,q8"


def test_cli_help_lists_the_questions(capsys):
    from agestudy.analyze import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--external" in text and all(q in text for q in QUESTIONS)


def test_a_failing_analysis_is_recorded_and_cleared_when_it_succeeds(tiny, monkeypatch, capsys):
    from agestudy.analyses import q1_structure
    from agestudy.analyze import main

    def broken(ctx):
        raise RuntimeError("boom")

    previous = tiny.client.get_run(tiny.client.get_run(tiny.run_id).data.tags["agestudy.analysis_run"])
    answered = set(previous.data.tags["agestudy.analyses"].split(",")) | {"q1"}
    monkeypatch.setattr(q1_structure, "run", broken)
    assert main(["--run", tiny.run_id, "--only", "q1", "--quiet"]) == 1  # the CLI says something failed
    assert "q1: FAILED: RuntimeError: boom" in capsys.readouterr().err
    failed = tiny.client.get_run(tiny.run_id).data.tags["agestudy.analysis_run"]
    child = tiny.client.get_run(failed)
    assert child.data.tags["agestudy.previous_analysis_run"] == previous.info.run_id
    assert child.info.status == "FAILED" and child.data.tags["agestudy.q1_error"] == "RuntimeError: boom"
    assert "q1" not in child.data.tags["agestudy.analyses"].split(",")
    assert not any(item.path == "q1" for item in tiny.client.list_artifacts(failed))  # no stale q1 results

    monkeypatch.undo()
    out = run_analyses(tiny.run_id, only="q1", progress=False)
    assert out["failed"] == {} and out["analysis_run_id"] not in (failed, previous.info.run_id)
    child = tiny.client.get_run(out["analysis_run_id"])
    assert child.info.status == "FINISHED" and "agestudy.q1_error" not in child.data.tags
    assert set(child.data.tags["agestudy.analyses"].split(",")) == answered  # q1 again, the others carried over
