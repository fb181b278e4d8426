"""The MLflow run contract in one place: tag names, role values, metric names, artifact paths, and how runs are found.

Training, tuning and the analyses write runs; the report and the analyses read them back,
often in another process, months later. Both sides take every name from here, so a writer
and its reader cannot drift apart. The values are the ones already in existing MLflow
stores: change a value and older runs stop being found.

    from agestudy.runs import ROLE_TAG, ROLE_FINAL, STUDY_TAG, find_runs
    runs = find_runs(client, [experiment_id], role=ROLE_FINAL, study="default", status="FINISHED")
"""

from __future__ import annotations

import math

from agestudy.errors import UserError

# ----------------------------------------------------------------------------- tags

# what a run is (see the ROLE_* values below) and which study and trial it belongs to
ROLE_TAG = "agestudy.role"
STUDY_TAG = "agestudy.study"
TRIAL_TAG = "agestudy.trial"  # a trial's Optuna number
FOLD_TAG = "agestudy.fold"  # on a fold run of a cross-validated trial: its fold, 0 .. folds-1 (TrainConfig.fold)
REPEAT_TAG = "agestudy.repeat"  # ... and its repeat of the k-fold split, 0 .. repeats-1
BEST_TRIAL_TAG = "agestudy.best_trial"  # on a final run: the Optuna number of the trial it refits
BEST_TRIAL_RUN_TAG = "agestudy.best_trial_run"  # on a final run: that trial's run id
# MLflow's own parent link, set as a plain tag: the parent may be finished or in another process
PARENT_RUN_TAG = "mlflow.parentRunId"
# MLflow's run description (the UI's "Description" box), one sentence or a few saying what the run is
DESCRIPTION_TAG = "mlflow.note.content"
PRUNED_NAME_SUFFIX = " (pruned)"  # a pruned trial's run name ends so: not to be mistaken for a crash

# the study run's settings
OBJECTIVE_TAG = "agestudy.objective"
STORAGE_TAG = "agestudy.storage"
SAMPLER_TAG = "agestudy.sampler"
PRUNER_TAG = "agestudy.pruner"

# the data a run saw
SYNTHETIC_TAG = "agestudy.synthetic"  # "true" or "false"
DATA_FINGERPRINT_TAG = "agestudy.data_fingerprint"
DATA_ROOT_TAG = "agestudy.data_root"
DATA_MISMATCH_TAG = "agestudy.data_mismatch"  # on an analysis run of other data than the model trained on
WARNING_TAG = "agestudy.warning"
SYNTHETIC_WARNING = "SYNTHETIC demo data: not real faces"  # the WARNING_TAG value on synthetic runs
SYNTHETIC_SENTENCE = ("Warning: trained on SYNTHETIC demo data (drawn faces, not real people): its numbers say "
                      "nothing about real faces.")  # ends the description of every run on synthetic data

# how a training run went and where it ran
AUTO_TAG = "agestudy.auto"  # options left to "auto" and resolved by the run, comma-separated
PRUNED_TAG = "agestudy.pruned"
REGISTERED_VERSION_TAG = "agestudy.registered_version"  # on a final run: its version of REGISTERED_MODEL
ERROR_TAG = "agestudy.error"
DEVICE_TAG = "agestudy.device"
PRECISION_TAG = "agestudy.precision"
TORCH_THREADS_TAG = "agestudy.torch_threads"
GIT_COMMIT_TAG = "mlflow.source.git.commit"

# the analyses: a child run of the analysed run, linked both ways; every `analyze` makes a new one
ANALYSIS_RUN_TAG = "agestudy.analysis_run"  # on the analysed run: the id of its latest analysis run
ANALYSED_RUN_TAG = "agestudy.analysed_run"  # on the analysis run: the id of the analysed run
ANALYSES_DONE_TAG = "agestudy.analyses"  # on the analysis run: questions it holds answers to, e.g. "q1,q2,q8"
PREVIOUS_ANALYSIS_TAG = "agestudy.previous_analysis_run"  # on an analysis run: the one it replaced
EXTERNAL_TAG = "agestudy.external"  # on the analysis run: question 10's photo folder


# question 11: the CycleGAN run
JUDGE_RUN_TAG = "agestudy.judge_run"  # on a CycleGAN run: the classifier run that judged its generators
INTERRUPTED_TAG = "agestudy.interrupted_after_epoch"  # on an interrupted CycleGAN run: the epoch its weights are from


def question_error_tag(question: str) -> str:
    """The tag on an analysis run that holds why one question's analysis failed, e.g. agestudy.q8_error."""
    return f"agestudy.{question}_error"


# ----------------------------------------------------------------------------- roles (values of ROLE_TAG)

ROLE_TRAIN = "train"  # python -m agestudy.train
ROLE_STUDY = "study"  # an Optuna study's parent run
ROLE_TRIAL = "trial"  # one trial of a study (child of its study run)
ROLE_FOLD = "fold"  # one fold of a cross-validated trial (child of its trial run, which trains nothing itself)
ROLE_FINAL = "final"  # the best trial refitted on all of train/ and measured on test/: what the report shows
ROLE_ANALYSIS = "analysis"  # the analyses of one run (child of the analysed run)
ROLE_CYCLEGAN = "cyclegan"  # python -m agestudy.cyclegan: question 11's generators and their judgement

# ----------------------------------------------------------------------------- artifacts

# the saved model (agestudy/checkpoint.py writes and reads the folder)
MODEL_DIR = "model"
WEIGHTS_FILE = "state_dict.pt"
CONFIG_FILE = "config.json"
MODEL_WEIGHTS = f"{MODEL_DIR}/{WEIGHTS_FILE}"
MODEL_CONFIG = f"{MODEL_DIR}/{CONFIG_FILE}"

# the MLflow model a final run logs (mlflow.pytorch; agestudy.predict.AgeClassifier) and registers
LOGGED_MODEL_NAME = "classifier"
REGISTERED_MODEL = "agestudy-age-classifier"
BEST_ALIAS = "best"  # the latest study's final run: models:/agestudy-age-classifier@best
REGISTERED_MODEL_DESCRIPTION = (
    "agestudy's age classifier (the CACD lab): uint8 RGB face crops, N x 3 x 100 x 100, in; P(aged 52-62) "
    "out (label 1; label 0 is aged 20-26). Each version is a study's final run, described by it. Load the "
    "latest with mlflow.pyfunc.load_model('models:/agestudy-age-classifier@best').")

# figures of a training run
LEARNING_CURVE_PLOT = "plots/learning_curve.png"
AUGMENTATIONS_PLOT = "plots/augmentations.png"
ROC_PLOT = "plots/roc.png"
RELIABILITY_PLOT = "plots/reliability.png"
CONFUSION_PLOT = "plots/confusion.png"
MISCLASSIFIED_PLOT = "plots/misclassified.png"


def predictions_artifact(split: str = "test") -> str:
    """The per-image predictions of one split (CSV: file,label,p0,p1)."""
    return f"predictions/{split}_predictions.csv"


TEST_PREDICTIONS = predictions_artifact("test")

# on a study run
STUDY_TRIALS = "study/trials.csv"
STUDY_IMPORTANCES = "study/param_importances.json"
STUDY_IMPORTANCES_PLOT = "study/param_importances.png"
STUDY_SLICE_PLOT = "study/slice.png"
STUDY_HISTORY_PLOT = "study/optimization_history.png"

# on a CycleGAN run (agestudy/cyclegan.py writes, its judge agestudy/analyses/q11_cyclegan.py adds judge/)
CYCLEGAN_WEIGHTS = f"{MODEL_DIR}/generators.pt"  # {"G": state_dict, "F": state_dict, "config": {...}}
CYCLEGAN_LOSS_PLOT = "plots/losses.png"
CYCLEGAN_SAMPLES_DIR = "samples"  # samples/epoch_NNN.png: the same test faces through G, F and back
JUDGE_TABLE = "judge/judge.json"
JUDGE_GRID = "judge/grid.png"
JUDGE_SCATTER = "judge/probabilities.png"


# ----------------------------------------------------------------------------- metrics

# Every metric name starts with its section ("train/", "val/", "test/", "model/", "study/", "judge/",
# "q1/", ...): the MLflow UI groups a run's charts and columns by it. A curve is a metric history
# whose step is the training iteration; a summary is a number, logged once at SUMMARY_STEP.
SUMMARY_STEP = 0

# the curves of a training run (agestudy/engine.py logs them while it trains)
TRAIN_LOSS = "train/loss"  # mean training loss over each window of log_every iterations
TRAIN_ACC = "train/acc"  # mean training accuracy over the same window (augmented batches)
TRAIN_LEARNING_RATE = "train/learning_rate"  # the schedule's rate at that iteration; the param lr is its peak
VAL_LOSS = "val/loss"
VAL_ACC = "val/acc"
VAL_AUC = "val/auc"
# with --distill, the teacher ensemble's curves, trained first in the same run: TEACHER_PREFIX + TRAIN_LOSS, ...
TEACHER_PREFIX = "teacher/"

# the summaries of a training run (agestudy/train.py logs them at SUMMARY_STEP)
VAL_BEST_ACC = "val/best_acc"
VAL_FINAL_ACC = "val/final_acc"
VAL_FINAL_AUC = "val/final_auc"
TRAIN_SECONDS = "train/seconds"  # with --distill, the teacher's training included
TRAIN_IMAGES_PER_SECOND = "train/images_per_second"  # through each member
TRAIN_ITERATIONS = "train/iterations"
FIRST_VAL_ACC75_STEP = "train/first_val_acc75_step"  # the iteration whose validation first reached 75 %
FIRST_VAL_ACC75_SECONDS = "train/first_val_acc75_seconds"
MODEL_PARAMETERS = "model/n_parameters"

# what a run measured once on test/: agestudy.metrics.classification_metrics's keys under "test/"
TEST_MEASURES = ("accuracy", "balanced_accuracy", "roc_auc", "log_loss", "brier", "ece")


def measure_metric(measure: str) -> str:
    """The metric of one test measure ("accuracy", "roc_auc", ... of TEST_MEASURES), e.g. test/accuracy."""
    return f"test/{measure}"


TEST_ACCURACY = measure_metric("accuracy")
TEST_BALANCED_ACCURACY = measure_metric("balanced_accuracy")
TEST_ROC_AUC = measure_metric("roc_auc")
TEST_LOG_LOSS = measure_metric("log_loss")
TEST_BRIER = measure_metric("brier")
TEST_ECE = measure_metric("ece")

# a cross-validated trial's run (agestudy/tune.py; its child fold runs are the training runs): per fold,
# the fold run's VAL_FINAL_ACC / VAL_FINAL_AUC at step = the fold's index in the order trained (repeat x
# folds + fold, from 0, as the fold run's name says); then their mean and standard deviation at SUMMARY_STEP
CV_FOLD_ACC = "cv/fold_acc"
CV_FOLD_AUC = "cv/fold_auc"
CV_MEAN_ACC = "cv/mean_acc"
CV_SD_ACC = "cv/sd_acc"
CV_MEAN_AUC = "cv/mean_auc"
CV_SD_AUC = "cv/sd_auc"
CV_N_FOLDS = "cv/n_folds"  # folds x repeats: how many models the mean is over

# a study file's objective (the word in studies/*.toml) -> the metric it maximises: a curve of each
# trial's run (val_acc, val_auc: its last value) or a cross-validated trial's summary (cv_accuracy, cv_auc)
OBJECTIVE_METRICS = {"val_acc": VAL_ACC, "val_auc": VAL_AUC, "cv_accuracy": CV_MEAN_ACC, "cv_auc": CV_MEAN_AUC}

# the summaries of a study run (agestudy/tune.py, after its trials)
STUDY_TRIALS_COMPLETE = "study/n_trials_complete"
STUDY_TRIALS_PRUNED = "study/n_trials_pruned"
STUDY_TRIALS_FAILED = "study/n_trials_failed"
STUDY_EPOCHS_SAVED = "study/pruning_epochs_saved_fraction"  # share of the planned epochs pruning spared
STUDY_BEST_VALUE = "study/best_value"  # the best trial's objective

# a CycleGAN run (agestudy/cyclegan.py): TRAIN_SECONDS and TRAIN_ITERATIONS, its loss curves and
# its judgement (agestudy/analyses/q11_cyclegan.py)
CYCLEGAN_PAIRS_PER_SECOND = "train/pairs_per_second"


def cyclegan_metric(curve: str) -> str:
    """A CycleGAN loss curve ("adv_G", "D_X", "cycle", "identity", "lr_factor", ...), e.g. train/cycle."""
    return f"train/{curve}"


def judge_metric(name: str) -> str:
    """A number of a CycleGAN run's judgement (``JUDGE_TABLE`` holds them all), e.g. judge/old_cycle_l1."""
    return f"judge/{name}"


# The analysis run: each question's numbers go to one JSON table, qN/metrics.json; only its
# headline numbers (ANALYSIS_HEADLINES) and real curves (ANALYSIS_SERIES) are also MLflow metrics,
# named qN/<name>, so that an analysis run stays readable in the UI (at most MAX_ANALYSIS_METRICS).
ANALYSIS_METRICS_FILE = "metrics.json"
MAX_ANALYSIS_METRICS = 30
ANALYSIS_HEADLINES = {
    "q1": ("model_parameters",),
    "q2": ("pooled_accuracy", "binom_pvalue"),
    "q3": ("final_train_acc",),
    "q4": ("ci_low", "ci_high", "selection_gap"),
    "q5": ("auc", "ece_after"),
    "q6": ("n_complete", "best_value"),
    "q7": ("n_trials", "val_acc_gain", "test_acc_gain"),
    "q8": ("gain", "mcnemar_p"),
    "q9": ("n_wrong", "n_confidently_wrong"),
    "q10": ("accuracy", "n_photos"),
    "q12": ("n_raised",),
}
ANALYSIS_SERIES = {"q8": ("accuracy_by_n",)}  # step: the number of crops averaged


def analysis_metric(question: str, name: str) -> str:
    """One of an analysis question's numbers as an MLflow metric, e.g. q8/gain."""
    return f"{question}/{name}"


def analysis_metrics_table(question: str) -> str:
    """The JSON artifact that holds every number of one question ({name: value}), e.g. q8/metrics.json."""
    return f"{question}/{ANALYSIS_METRICS_FILE}"


def is_analysis_headline(question: str, name: str) -> bool:
    return name in ANALYSIS_HEADLINES.get(question, ())


# The names runs logged before the sections existed: readers fall back to them (run_metric,
# metric_history), so the report and the analyses still read runs from older stores.
LEGACY_METRICS = {
    TRAIN_LOSS: "train_loss", TRAIN_ACC: "train_acc", TRAIN_LEARNING_RATE: "lr",
    VAL_LOSS: "val_loss", VAL_ACC: "val_acc", VAL_AUC: "val_auc",
    VAL_BEST_ACC: "best_val_acc", VAL_FINAL_ACC: "final_val_acc", VAL_FINAL_AUC: "final_val_auc",
    TRAIN_SECONDS: "train_seconds", TRAIN_IMAGES_PER_SECOND: "train_images_per_second",
    TRAIN_ITERATIONS: "iterations", MODEL_PARAMETERS: "n_parameters",
    FIRST_VAL_ACC75_STEP: "first_val_acc75_step", FIRST_VAL_ACC75_SECONDS: "first_val_acc75_seconds",
    **{measure_metric(m): f"test_{m}" for m in TEST_MEASURES},
    STUDY_TRIALS_COMPLETE: "n_trials_complete", STUDY_TRIALS_PRUNED: "n_trials_pruned",
    STUDY_TRIALS_FAILED: "n_trials_failed", STUDY_EPOCHS_SAVED: "pruning_epochs_saved_fraction",
    STUDY_BEST_VALUE: "best_value",
}


def legacy_analysis_metric(question: str, name: str) -> str:
    """The flat metric an older analysis run logged for one number, e.g. q8_gain."""
    return f"{question}_{name}"


def run_metric(metrics: dict, name: str) -> float | None:
    """A run's latest value of the metric ``name`` (``run.data.metrics``), or of its older name; None when
    absent or not finite."""
    if name in metrics:
        return logged_number(metrics[name])
    return logged_number(metrics.get(LEGACY_METRICS.get(name, name)))


def with_current_names(metrics: dict) -> dict:
    """A run's metrics (``run.data.metrics``) with today's names added for those it logged under older ones."""
    return {**{new: metrics[old] for new, old in LEGACY_METRICS.items() if old in metrics}, **metrics}


def has_metric(metrics: dict, name: str) -> bool:
    return name in metrics or LEGACY_METRICS.get(name, name) in metrics


def metric_history(client, run_id: str, name: str) -> list[tuple[int, float]]:
    """A run's whole history of the metric ``name`` (or of its older name) as [(step, value)], by step."""
    points = client.get_metric_history(run_id, name)
    if not points and name in LEGACY_METRICS:
        points = client.get_metric_history(run_id, LEGACY_METRICS[name])
    return sorted((int(m.step), float(m.value)) for m in points)


# ----------------------------------------------------------------------------- finding runs

def quote(value) -> str:
    """A value as an MLflow filter string literal.

    MLflow's filter parser has no escape character (``'it''s'`` and ``'it\\'s'`` match
    nothing): a value holding a single quote can only be written between double quotes.
    """
    text = str(value)
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    raise UserError(f"cannot search MLflow for {text!r}: it holds both kinds of quote")


def find_runs(client, experiment_ids, role: str | None = None, study: str | None = None,
              status: str | None = None, extra: dict | None = None, max_results: int = 1000) -> list:
    """Runs of the experiments, newest first, with the given role, study, status and other tags.

    ``extra`` maps more tag names to the values they must have. An argument left at None
    does not filter. Returns MLflow ``Run`` objects.
    """
    if isinstance(experiment_ids, str):
        experiment_ids = [experiment_ids]
    tags = {ROLE_TAG: role, STUDY_TAG: study, **(extra or {})}
    clauses = [f"tags.`{name}` = {quote(value)}" for name, value in tags.items() if value is not None]
    if status is not None:
        clauses.append(f"attributes.status = {quote(status)}")
    return client.search_runs(list(experiment_ids), filter_string=" and ".join(clauses), max_results=max_results,
                              order_by=["attributes.start_time DESC"])


def logged_number(value) -> float | None:
    """A logged metric or param (params come back as strings) as a float; None when absent or not finite."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def active_run(client, run_id: str | None):
    """The run with this id, or None when there is none (no id, deleted, or from another store)."""
    if not run_id:
        return None
    try:
        run = client.get_run(run_id)
    except Exception:  # noqa: BLE001 - MLflow raises several types for an unknown id
        return None
    return run if run.info.lifecycle_stage == "active" else None


def has_artifact(client, run_id: str, path: str) -> bool:
    """Whether the run holds the artifact file ``path`` (one listing of its folder)."""
    folder = path.rsplit("/", 1)[0] if "/" in path else None
    try:
        return any(item.path == path for item in client.list_artifacts(run_id, folder))
    except Exception:  # noqa: BLE001 - an unreachable artifact store holds nothing we can read
        return False


def study_run(client, run):
    """The study run a final run or trial belongs to (its parent with the study role); a study run is its own."""
    if run.data.tags.get(ROLE_TAG) == ROLE_STUDY:
        return run
    parent = active_run(client, run.data.tags.get(PARENT_RUN_TAG))
    return parent if parent is not None and parent.data.tags.get(ROLE_TAG) == ROLE_STUDY else None


def best_trial_run(client, run):
    """On a final run: the trial run it refits (same configuration, with a validation split); else None."""
    if run.data.tags.get(ROLE_TAG) != ROLE_FINAL:
        return None
    return active_run(client, run.data.tags.get(BEST_TRIAL_RUN_TAG))


def latest_study_run(client, experiment_id: str, study: str):
    """The newest study run of this name in the experiment that got as far as its trial table; else None."""
    for run in find_runs(client, [experiment_id], role=ROLE_STUDY, study=study, max_results=20):
        if has_artifact(client, run.info.run_id, STUDY_TRIALS):
            return run
    return None


# ----------------------------------------------------------------------------- the store

STORE_HINT = "run from the project folder or pass --tracking-uri"


def open_store(uri: str | None = None, create: bool = False, missing_hint: str = STORE_HINT):
    """Point MLflow at the store and return ``(MlflowClient, uri)``.

    ``uri`` defaults to ``--tracking-uri``'s default (``MLFLOW_TRACKING_URI``, else
    mlruns/mlflow.db). Readers (analyses, report) leave ``create`` False: a missing SQLite file
    is then a UserError ending with ``missing_hint``, not a new empty store. ``create=True``
    makes the SQLite file's folder instead (MLflow creates the file).
    """
    import logging
    import os

    from agestudy.tracking import resolve_tracking_uri, sqlite_path

    # MLflow's import and alembic migrations are chatty; the user wants our lines, not theirs.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    uri = resolve_tracking_uri(uri)
    db = sqlite_path(uri)
    if db is not None:
        if create:
            db.parent.mkdir(parents=True, exist_ok=True)
        elif not db.is_file():
            raise UserError(f"no MLflow store at {db}: {missing_hint}")
    else:
        check_reachable(uri, "the MLflow tracking store", TRACKING_SCHEMES)
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri)
    try:  # one cheap call: a wrong password or database fails here, in one line, not mid-run
        client.search_experiments(max_results=1)
    except Exception as err:  # noqa: BLE001 - MLflow, SQLAlchemy and HTTP errors alike
        raise UserError(f"cannot open the MLflow tracking store {redact_uri(uri)}: "
                        f"{scrub(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__, uri)}"
                        ) from None
    return client, uri


# schemes agestudy can use for MLflow runs and for Optuna studies (plain paths are files)
TRACKING_SCHEMES = ("sqlite", "postgresql", "mysql", "http", "https", "file")
STORAGE_SCHEMES = ("sqlite", "postgresql", "mysql")
_DEFAULT_PORTS = {"http": 80, "https": 443, "postgresql": 5432, "mysql": 3306}


def check_reachable(uri: str, what: str, schemes: tuple[str, ...], timeout: float = 5.0) -> None:
    """A UserError (with the password hidden) unless ``uri`` has a known scheme and, for a server,
    its host accepts a connection within ``timeout`` seconds: MLflow and SQLAlchemy would
    otherwise retry for minutes, then print a traceback that may hold the URI."""
    import socket
    from urllib.parse import urlsplit

    if "://" not in uri:
        return
    scheme = uri.split("://", 1)[0].lower()
    base = scheme.split("+", 1)[0]  # postgresql+psycopg -> postgresql
    if base not in schemes:
        raise UserError(f"{what} {redact_uri(uri)}: unknown scheme {scheme!r}; use one of "
                        f"{', '.join(s + '://' for s in schemes)}")
    if base not in _DEFAULT_PORTS:
        return
    try:
        parts = urlsplit(uri)
        host, port = parts.hostname, parts.port or _DEFAULT_PORTS[base]
    except ValueError as err:  # e.g. a port that is not a number
        raise UserError(f"{what} {redact_uri(uri)}: {err}") from None
    if not host:
        raise UserError(f"{what} {redact_uri(uri)}: no host name")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise UserError(f"cannot reach {what} {redact_uri(uri)} ({host}:{port}): {reason}") from None


def scrub(text: str, uri: str) -> str:
    """``text`` (an error message) without the password of ``uri``."""
    from urllib.parse import unquote, urlsplit

    try:
        parts = urlsplit(uri)
        password = parts.password
    except ValueError:
        password = None
    if password:
        text = text.replace(password, "***").replace(unquote(password), "***")
    return text


def redact_uri(uri: str) -> str:
    """A store URI fit to print or log: no user name or password, and no query string for SQLite.

    postgresql://user:secret@host/db -> postgresql://***@host/db;
    sqlite:////abs/mlflow.db?timeout=60 -> sqlite:////abs/mlflow.db. Plain paths are unchanged.
    """
    scheme, sep, rest = (uri or "").partition("://")
    if not sep:
        return uri
    if scheme.startswith("sqlite"):
        return uri.split("?", 1)[0]
    host, slash, path = rest.partition("/")
    if "@" in host:
        host = "***@" + host.rsplit("@", 1)[1]
    return f"{scheme}://{host}{slash}{path}"
