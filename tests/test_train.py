"""Models, training and tracking, end to end on small synthetic data with a real MLflow SQLite store."""

from __future__ import annotations

import os

import pytest
import torch

from agestudy import runs
from agestudy.data import load_data
from agestudy.errors import UserError
from agestudy.models import MODELS, count_parameters, create_model
from agestudy.predict import evaluation_view, predict_proba
from agestudy.train import TrainConfig, load_model, train_and_log

TINY = dict(members=1, stem_stride=4, model="efficient", width=8, depth=1, epochs=2, batch_size=16, crop=64, padding=2,
            evals_per_epoch=2, log_every=2, precision="fp32", val_fraction=0.2)

EXPECTED_ARTIFACTS = {
    "plots/learning_curve.png", "plots/roc.png", "plots/reliability.png", "plots/confusion.png",
    "plots/misclassified.png", "plots/augmentations.png", "predictions/test_predictions.csv", "model/state_dict.pt",
    "model/config.json",
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_gives_two_logits(name):
    model = create_model(name, **({"crop": 64} if name == "baseline" else {}))
    out = model(torch.zeros(2, 3, 64, 64))
    assert out.shape == (2, 2)
    assert count_parameters(model) == sum(p.numel() for p in model.parameters()) > 1000


def test_create_model_rejects_unknown_names_and_knobs():
    with pytest.raises(UserError, match="unknown model"):
        create_model("vgg99")
    with pytest.raises(UserError, match="no option"):
        create_model("efficient", colour="red")


def test_resnet18_never_downloads_weights(tmp_path):
    with pytest.raises(UserError, match="pretrained weights not found"):
        create_model("resnet18", weights_path=str(tmp_path / "missing.pt"))


def _all_artifacts(client, run_id, path=None):
    out = []
    for item in client.list_artifacts(run_id, path):
        out += _all_artifacts(client, run_id, item.path) if item.is_dir else [item.path]
    return out


def test_tiny_training_run_is_fully_tracked(synthetic_root, tracking, tmp_path):
    from mlflow.tracking import MlflowClient

    data = load_data(synthetic_root, tmp_path / "cache", verbose=False)
    assert data.synthetic
    run_id, final, stopped = train_and_log(TrainConfig(**TINY), data, progress=False, tags={"agestudy.role": "train"})
    assert not stopped
    client = MlflowClient()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["agestudy.synthetic"] == "true"
    assert run.data.tags["agestudy.data_fingerprint"] == data.fingerprint
    assert run.data.params["data.fingerprint"] == data.fingerprint
    assert "version.torch" in run.data.tags and run.data.tags["agestudy.device"] == "cpu"
    assert run.data.params["precision"] == "fp32" and run.data.params["device"] == "cpu"
    assert run.data.params["batch_size"] == "16" and run.data.params["epochs"] == "2"

    for key in (runs.TRAIN_LOSS, runs.TRAIN_ACC, runs.TRAIN_LEARNING_RATE, runs.VAL_LOSS, runs.VAL_ACC, runs.VAL_AUC):
        history = client.get_metric_history(run_id, key)
        steps = sorted(m.step for m in history)
        assert len(steps) >= 3 and len(set(steps)) == len(steps), key
    for measure in runs.TEST_MEASURES:
        key = runs.measure_metric(measure)
        assert key in run.data.metrics
        assert run.data.metrics[key] == pytest.approx(final[key])
    assert 0 <= run.data.metrics[runs.TEST_ACCURACY] <= 1
    # the MLflow UI's sections: every metric name has one ("train/", "val/", "test/", "model/")
    assert all("/" in key for key in run.data.metrics), sorted(run.data.metrics)
    assert "lr" in run.data.params and "lr" not in run.data.metrics  # the schedule is train/learning_rate
    # a summary is a number, not a curve: one value, at step 0
    summaries = (runs.TRAIN_SECONDS, runs.TRAIN_IMAGES_PER_SECOND, runs.TRAIN_ITERATIONS, runs.MODEL_PARAMETERS,
                 runs.VAL_BEST_ACC, runs.VAL_FINAL_ACC, runs.VAL_FINAL_AUC,
                 *map(runs.measure_metric, runs.TEST_MEASURES))
    for key in summaries:
        assert [m.step for m in client.get_metric_history(run_id, key)] == [runs.SUMMARY_STEP], key
    assert EXPECTED_ARTIFACTS <= set(_all_artifacts(client, run_id))

    # the logged weights load back (tensors only) and reproduce the logged test predictions
    model_dir = client.download_artifacts(run_id, "model", str(tmp_path / "dl"))
    model, cfg = load_model(model_dir)
    p1 = predict_proba(model, data.test.images, evaluation_view(cfg.augment()), cfg.augment())
    csv = client.download_artifacts(run_id, "predictions/test_predictions.csv", str(tmp_path / "dl"))
    rows = open(csv).read().splitlines()
    assert rows[0] == "file,label,p0,p1" and len(rows) == len(data.test) + 1
    logged_p1 = torch.tensor([float(r.rsplit(",", 1)[1]) for r in rows[1:]])
    assert torch.allclose(p1.float(), logged_p1, atol=1e-5)
    acc = ((p1 >= 0.5).long() == data.test.labels).double().mean().item()
    assert acc == pytest.approx(run.data.metrics[runs.TEST_ACCURACY], abs=1e-9)


def test_auto_options_are_logged_and_saved_as_what_they_became(synthetic_root, tracking, tmp_path):
    """Precision, batch size, epochs and stem stride left to "auto" are resolved for this machine
    and data: the run's params and its saved config hold the concrete values."""
    from mlflow.tracking import MlflowClient

    from agestudy import device as devices

    data = load_data(synthetic_root, tmp_path / "cache", verbose=False)
    cfg = TrainConfig(**{**TINY, "precision": "auto", "batch_size": 0, "epochs": 0, "stem_stride": 0,
                         "train_images": 150})
    run_id, _, _ = train_and_log(cfg, data, progress=False)
    run = MlflowClient().get_run(run_id)
    precision = devices.choose_precision(torch.device("cpu"))
    n_train = run.data.params["data.n_train_used"]
    assert run.data.params["precision"] == precision and run.data.params["batch_size"] == "64"
    assert run.data.params["epochs"] == str(max(1, round(150 / int(n_train))))
    assert run.data.params["stem_stride"] == ("4" if precision == "fp32" else "2")
    assert run.data.tags["agestudy.auto"] == "device,precision,batch_size,epochs,stem_stride"
    _, saved = load_model(MlflowClient().download_artifacts(run_id, "model", str(tmp_path / "dl")))
    assert saved.stem_stride == int(run.data.params["stem_stride"]) and saved.batch_size == 64


def test_same_seed_same_metrics(synthetic_root, tracking, tmp_path):
    data = load_data(synthetic_root, tmp_path / "cache", verbose=False)
    cfg = TrainConfig(**{**TINY, "epochs": 1, "ema": 0.9})  # the weight average is deterministic too
    _, first, _ = train_and_log(cfg, data, progress=False)
    _, second, _ = train_and_log(cfg, data, progress=False)
    _, other_seed, _ = train_and_log(TrainConfig(**{**TINY, "epochs": 1, "ema": 0.9, "seed": 1}), data, progress=False)
    for key in (runs.TEST_ACCURACY, runs.TEST_LOG_LOSS, runs.TEST_BRIER, runs.VAL_FINAL_ACC):
        assert first[key] == second[key], key
    assert first[runs.TEST_LOG_LOSS] != other_seed[runs.TEST_LOG_LOSS]


def test_failed_run_ends_failed_with_the_error(synthetic_root, tracking, tmp_path):
    from mlflow.tracking import MlflowClient

    data = load_data(synthetic_root, tmp_path / "cache", verbose=False)
    cfg = TrainConfig(**{**TINY, "lr": 1e30, "optimizer": "sgd", "epochs": 1})  # diverges to NaN/inf
    with pytest.raises(FloatingPointError):
        train_and_log(cfg, data, progress=False)
    runs = MlflowClient().search_runs([MlflowClient().get_experiment_by_name("test").experiment_id])
    assert runs[0].info.status == "FAILED"
    assert "FloatingPointError" in runs[0].data.tags["agestudy.error"]


def test_eval_flip_averages_the_image_and_its_mirror():
    from agestudy.data import AugmentConfig

    torch.manual_seed(0)
    model = create_model("efficient", width=8, stem_stride=2).eval()
    images = torch.randint(0, 256, (6, 3, 100, 100), dtype=torch.uint8)
    assert evaluation_view(AugmentConfig(eval_flip=True)) == "centre+mirror"
    assert evaluation_view(AugmentConfig(eval_flip=False)) == "centre"
    aug = AugmentConfig(crop=88)
    plain = predict_proba(model, images, "centre", aug)
    mirrored = predict_proba(model, images.flip(-1), "centre", aug)
    both = predict_proba(model, images, "centre+mirror", aug)
    assert not torch.allclose(plain, mirrored)  # the untrained net is not mirror-symmetric
    assert torch.allclose(both, (plain + mirrored) / 2, atol=1e-6)


def test_ensemble_members_train_apart_and_average(synthetic_root, tracking, tmp_path):
    from mlflow.tracking import MlflowClient

    from agestudy.models import split_members

    data = load_data(synthetic_root, tmp_path / "cache", verbose=False)
    run_id, final, _ = train_and_log(TrainConfig(**{**TINY, "epochs": 1, "members": 2}), data, progress=False)
    model_dir = MlflowClient().download_artifacts(run_id, "model", str(tmp_path / "dl"))
    model, cfg = load_model(model_dir)
    assert model.members == 2
    first, second = (dict(m.named_parameters()) for m in split_members(model))
    assert all(not torch.equal(first[k], second[k]) for k in first if k.endswith("conv1.0.weight"))
    view, aug = evaluation_view(cfg.augment()), cfg.augment()
    p1 = predict_proba(model, data.test.images, view, aug)
    members = [predict_proba(m, data.test.images, view, aug) for m in split_members(model)]
    assert torch.allclose(p1, (members[0] + members[1]) / 2, atol=1e-5)
    assert not torch.allclose(members[0], members[1])
    acc = ((p1 >= 0.5).long() == data.test.labels).double().mean().item()
    assert acc == pytest.approx(final[runs.TEST_ACCURACY], abs=1e-9)


def test_one_set_of_defaults_checked_when_made(tmp_path, capsys):
    from agestudy.data import AugmentConfig
    from agestudy.errors import UserError
    from agestudy.train import main

    assert TrainConfig().augment() == AugmentConfig()  # the augmentation defaults have one home
    with pytest.raises(UserError, match="precision"):
        TrainConfig(precision="fp64")
    # the CLI rejects a bad option before it looks for (or loads) any data
    assert main(["--data", str(tmp_path / "no-such-folder"), "--precision", "fp64", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "precision" in err and "no-such-folder" not in err


def test_training_runs_sample_system_metrics_unless_told_not_to(synthetic_root, tracking, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    data = load_data(synthetic_root, tmp_path / "cache", verbose=False)
    cfg = TrainConfig(**{**TINY, "epochs": 1})
    sampled = train_and_log(cfg, data, progress=False).run_id
    quiet = train_and_log(cfg, data, progress=False, system_metrics=False).run_id
    keys = {r: set(MlflowClient().get_run(r).data.metrics) for r in (sampled, quiet)}
    assert "system/cpu_utilization_percentage" in keys[sampled]
    assert "system/system_memory_usage_megabytes" in keys[sampled]
    assert not any(k.startswith("system/") for k in keys[quiet])


def test_environment_sets_variables_for_the_block_and_restores_them(monkeypatch):
    from agestudy.tracking import environment

    monkeypatch.delenv("AGESTUDY_TEST_UNSET", raising=False)
    monkeypatch.setenv("AGESTUDY_TEST_SET", "before")
    with environment(AGESTUDY_TEST_UNSET="a", AGESTUDY_TEST_SET="b"):
        assert os.environ["AGESTUDY_TEST_UNSET"] == "a" and os.environ["AGESTUDY_TEST_SET"] == "b"
    assert "AGESTUDY_TEST_UNSET" not in os.environ and os.environ["AGESTUDY_TEST_SET"] == "before"


def test_a_dataset_another_process_just_inserted_is_linked_not_a_failed_run(tracking, tmp_path, monkeypatch):
    """Two study workers starting together both log the same dataset: MLflow checks that it is new,
    the other worker inserts it, and the store refuses the second insert (seen as a failed trial in
    test_two_workers_share_one_study). agestudy's log_input tries once more, which links the run to
    the dataset the other process inserted; any other store error still fails the run."""
    import warnings

    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.exceptions import MlflowException

    from agestudy.tracking import log_input

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = MetaDataset(source=resolve_dataset_source(str(tmp_path)), name="faces/train", digest="abc123")
    with mlflow.start_run():  # the other worker, first to insert the dataset
        mlflow.log_input(dataset, context="train")
    real, calls = mlflow.log_input, []

    def racing(ds, **kwargs):
        calls.append(kwargs)
        if len(calls) == 1:  # what the SQLite store raised when its check had missed the other insert
            raise MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, "
                                  "datasets.name, datasets.digest")
        real(ds, **kwargs)

    monkeypatch.setattr(mlflow, "log_input", racing)
    with mlflow.start_run() as run:
        log_input(dataset, context="train")
    inputs = mlflow.MlflowClient().get_run(run.info.run_id).inputs.dataset_inputs
    assert len(calls) == 2 and [(i.dataset.name, i.dataset.digest) for i in inputs] == [("faces/train", "abc123")]

    def broken(ds, **kwargs):
        raise MlflowException("the store is read-only")

    monkeypatch.setattr(mlflow, "log_input", broken)
    with pytest.raises(MlflowException, match="read-only"), mlflow.start_run():
        log_input(dataset, context="train")
