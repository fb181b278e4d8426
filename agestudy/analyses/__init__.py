"""Analyses that answer the lab's questions, logged to MLflow beside the run they study.

    from agestudy.analyses import run_analyses
    out = run_analyses(run_id, only=["q8", "q9"], external="photos/")

One module per question, each with ``run(ctx) -> dict`` of headline numbers:

    q1  q1_structure            layer table, parameter formulas and counts
    q2  q2_chance               freshly initialised networks against chance
    q3  q3_learning_curves      the learning curves, drawn from the logged metric histories
    q4  q4_accuracy             test accuracy's Wilson interval; when validation first passed 75 %;
                                the estimate the configuration was chosen by, its noise, its gap from test/
    q5  q5_beyond_accuracy      margins, ROC/AUC interval, per-class scores, calibration
    q6  q6_hyperparameters      each hyperparameter's effect across a study's trials
    q7  q7_random_crop          what RandomCrop does, and what it buys (augmentation study)
    q8  q8_multicrop            test-time multi-crop averaging against the centre crop
    q9  q9_extremes             most wrong and most right test images, with Grad-CAM
    q10 q10_external            photos from outside the data set: detect, frame, predict
    q12 q12_input_optimisation  gradient ascent on the input image

Question 11 has no entry: ``python -m agestudy.cyclegan`` trains its generators and judges them
(``q11_cyclegan``) in one run of its own, which the report reads. q3, q4 and q6 only read
what other runs logged (metric histories, a study's trials.csv), so every number the report
prints is one an analysis or a run logged: the report computes nothing.

Everything goes to one child run of the analysed run (tags ``agestudy.role=analysis`` and
``mlflow.parentRunId``); the analysed run gets the tag ``agestudy.analysis_run`` pointing to
it, so the report reads every number and figure from MLflow alone. Artifacts live under
``q1/``, ``q2/``, ...; each question's numbers in one table ``qN/metrics.json``, of which only
a few headline numbers (and q8's accuracy curve) are also MLflow metrics ``qN/...``
(agestudy/runs.py names them). Every run of the analyses makes a new analysis run, so no
metric history ever gets a second value; with ``--only q8`` the new run carries over the
other questions' results (artifacts, metrics, error tags) from the previous analysis run.
"""

from __future__ import annotations

import importlib
import json
import math
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from agestudy.config import TrainConfig
from agestudy.data import ImageSet, LabData, load_data
from agestudy.errors import UserError
from agestudy.predict import predict_logits, probabilities
from agestudy.runs import (
    ANALYSED_RUN_TAG,
    ANALYSES_DONE_TAG,
    ANALYSIS_METRICS_FILE,
    ANALYSIS_RUN_TAG,
    ANALYSIS_SERIES,
    DATA_FINGERPRINT_TAG,
    DATA_MISMATCH_TAG,
    DATA_ROOT_TAG,
    DESCRIPTION_TAG,
    EXTERNAL_TAG,
    MODEL_DIR,
    PARENT_RUN_TAG,
    PREVIOUS_ANALYSIS_TAG,
    ROLE_ANALYSIS,
    ROLE_TAG,
    SUMMARY_STEP,
    SYNTHETIC_SENTENCE,
    SYNTHETIC_TAG,
    SYNTHETIC_WARNING,
    WARNING_TAG,
    WEIGHTS_FILE,
    active_run,
    analysis_metric,
    has_artifact,
    is_analysis_headline,
    legacy_analysis_metric,
    logged_number,
    question_error_tag,
    redact_uri,
)

# question -> (module, what it answers); the order is the order they run in
QUESTIONS = {
    "q1": ("q1_structure", "network structure and parameter count"),
    "q2": ("q2_chance", "an untrained network is at chance"),
    "q3": ("q3_learning_curves", "learning curves from the logged metric histories"),
    "q4": ("q4_accuracy", "test accuracy's interval, when validation first passed 75 %, the selection estimate"),
    "q5": ("q5_beyond_accuracy", "beyond accuracy: margins, ROC, per-class scores, calibration"),
    "q6": ("q6_hyperparameters", "the hyperparameters that matter: effects across a study's trials"),
    "q7": ("q7_random_crop", "RandomCrop: what it does and what it buys"),
    "q8": ("q8_multicrop", "multi-crop prediction against the centre crop"),
    "q9": ("q9_extremes", "most wrong and most right test images, with saliency"),
    "q10": ("q10_external", "photos from outside the data set"),
    "q12": ("q12_input_optimisation", "input optimisation: what maximises each class"),
}


# The view every analysis predicts through: the lab's evaluation, the centre crop alone (question 8
# compares the other views of agestudy.predict against it), whatever the run's eval_flip.
ANALYSIS_VIEW = "centre"


# ----------------------------------------------------------------------------- shared helpers

def jsonable(obj):
    """numpy scalars/arrays, Paths and NaN/inf (-> null) into plain JSON values."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


@dataclass
class AnalysisContext:
    """What an analysis needs: the model, its config, the data, and where to log."""

    run_id: str  # the analysed run
    analysis_run_id: str  # the child run that receives every number and figure
    model: torch.nn.Module  # eval mode, on ``device``
    cfg: TrainConfig
    data: LabData
    device: torch.device
    out_dir: Path  # scratch folder, removed when the analyses end
    client: object  # mlflow.tracking.MlflowClient
    experiment_id: str = ""
    external: Path | None = None
    options: dict = field(default_factory=dict)  # knobs for tests / quick runs, e.g. {"q12_steps": 30}
    question: str = "q0"  # set by run_analyses: prefix of metric names and artifact folder
    _cache: dict = field(default_factory=dict)
    _numbers: dict = field(default_factory=dict)  # question -> what log_metrics got so far

    # --- options and files
    def option(self, name: str, default):
        return self.options.get(name, default)

    def path(self, name: str) -> Path:
        """A scratch file in this question's folder (logged with log_figure / log_file)."""
        folder = self.out_dir / self.question
        folder.mkdir(parents=True, exist_ok=True)
        return folder / name

    # --- logging into the analysis run
    def log_metrics(self, metrics: dict) -> None:
        """This question's numbers: all of them into its table ``qN/metrics.json`` (merged with what the
        question logged before; NaN and None written as null), and its headline numbers
        (``runs.ANALYSIS_HEADLINES``) also as MLflow metrics ``qN/<name>``, once, at step 0."""
        from mlflow.entities import Metric

        numbers = self._numbers.setdefault(self.question, {})
        numbers.update(metrics)
        self.log_table(ANALYSIS_METRICS_FILE, numbers)
        now = int(time.time() * 1000)
        batch = [Metric(analysis_metric(self.question, k), value, now, SUMMARY_STEP) for k, v in metrics.items()
                 if is_analysis_headline(self.question, k) and (value := logged_number(v)) is not None]
        if batch:
            self.client.log_batch(self.analysis_run_id, metrics=batch)

    def log_series(self, name: str, points) -> None:
        """A real curve as one metric history ``qN/name``: ``points`` = [(step, value), ...]. Only the
        curves ``runs.ANALYSIS_SERIES`` names: the analysis run keeps few metrics."""
        from mlflow.entities import Metric

        if name not in ANALYSIS_SERIES.get(self.question, ()):
            raise ValueError(f"{self.question}/{name} is not a series of agestudy.runs.ANALYSIS_SERIES")
        now = int(time.time() * 1000)
        key = analysis_metric(self.question, name)
        batch = [Metric(key, float(v), now, int(s)) for s, v in points]
        for i in range(0, len(batch), 1000):  # MLflow's per-batch limit
            self.client.log_batch(self.analysis_run_id, metrics=batch[i : i + 1000])

    def log_table(self, name: str, obj) -> Path:
        """A JSON artifact ``qN/name.json`` (NaN written as null)."""
        path = self.path(name if name.endswith(".json") else f"{name}.json")
        path.write_text(json.dumps(jsonable(obj), indent=2))
        self.log_file(path)
        return path

    def log_figure(self, path) -> None:
        self.log_file(path)

    def log_file(self, path, sub: str | None = None) -> None:
        folder = self.question if not sub else f"{self.question}/{sub}"
        self.client.log_artifact(self.analysis_run_id, str(path), artifact_path=folder)

    # --- predictions shared by several analyses (computed once)
    def test_logits(self) -> torch.Tensor:
        """Centre-crop logits (N x 2) of every test image: the analyses' view, the lab's evaluation."""
        if "test_logits" not in self._cache:
            self._cache["test_logits"] = self.logits(self.data.test.images)
        return self._cache["test_logits"]

    def test_p1(self) -> np.ndarray:
        return probabilities(self.test_logits()).numpy()

    def logits(self, images: torch.Tensor, model=None) -> torch.Tensor:
        """Centre-crop logits (N x 2, float32, CPU) of uint8 images, by the analysed model or ``model``."""
        return predict_logits(model if model is not None else self.model, images, ANALYSIS_VIEW,
                              self.cfg.augment(), self.device)[0]

    def val_set(self) -> ImageSet | None:
        """The validation split the run held out (None when it trained on all of train/)."""
        return self.cfg.split(self.data.train)[1]

    def train_set(self) -> ImageSet:
        """The training images the run actually fitted (train/ minus its validation split)."""
        return self.cfg.split(self.data.train)[0]

    # --- what other runs logged (q3, q4, q6, q7 read them; nothing is retrained)
    def analysed_run(self):
        """The analysed run as MLflow holds it: params, metrics, tags."""
        if "analysed_run" not in self._cache:
            self._cache["analysed_run"] = self.client.get_run(self.run_id)
        return self._cache["analysed_run"]

    def read_artifact(self, run_id: str, path: str) -> str | None:
        """The text of a run's artifact (a study's trials.csv), or None when the run has no such file."""
        if not has_artifact(self.client, run_id, path):
            return None
        folder = self.out_dir / "_downloads" / run_id
        folder.mkdir(parents=True, exist_ok=True)
        return Path(self.client.download_artifacts(run_id, path, str(folder))).read_text(encoding="utf-8")


# ----------------------------------------------------------------------------- running them

def parse_questions(only) -> list[str]:
    """``None`` -> every question; "q8,q9" or ["q8", "9"] -> those, in the canonical order."""
    if only is None:
        return list(QUESTIONS)
    items = only.split(",") if isinstance(only, str) else list(only)
    wanted = set()
    for item in items:
        key = str(item).strip().lower()
        if not key:
            continue
        key = key if key.startswith("q") else f"q{key}"
        if key not in QUESTIONS:
            raise UserError(f"unknown question {item!r}; analyses exist for: {', '.join(QUESTIONS)}")
        wanted.add(key)
    if not wanted:
        raise UserError(f"no question given to --only; choose among: {', '.join(QUESTIONS)}")
    return [q for q in QUESTIONS if q in wanted]


def get_run(client, run_id: str):
    import mlflow
    from mlflow.exceptions import MlflowException

    if not run_id or not str(run_id).strip():
        raise UserError("no run id given")
    try:
        run = client.get_run(str(run_id).strip())
    except MlflowException:
        store = redact_uri(mlflow.get_tracking_uri())
        raise UserError(f"no MLflow run {run_id!r} in {store} (check --tracking-uri)") from None
    if run.info.lifecycle_stage != "active":
        raise UserError(f"run {run_id} is deleted")
    return run


def load_run_model(client, run_id: str, into: Path):
    from agestudy.checkpoint import load_model

    try:
        model_dir = client.download_artifacts(run_id, MODEL_DIR, str(into))
    except Exception:  # noqa: BLE001 - MLflow raises several types for a missing artifact
        model_dir = None
    if not model_dir or not (Path(model_dir) / WEIGHTS_FILE).is_file():
        raise UserError(f"run {run_id} has no model/ artifact (a pruned or failed trial?); analyse a finished "
                        "training run, e.g. the tuning study's final run")
    return load_model(model_dir)


def load_run_data(run, data_root=None, cache_dir=None, progress: bool = True) -> LabData:
    if data_root:
        return load_data(data_root, cache_dir, progress=progress)  # says which folder is missing
    root = run.data.params.get("data.root")
    if not root:
        raise UserError(f"run {run.info.run_id} records no data.root param: pass --data")
    if not Path(root).is_dir():
        raise UserError(f"the data folder of run {run.info.run_id} is not here: {root} (pass --data)")
    return load_data(root, cache_dir, progress=progress)


def check_external(external) -> Path | None:
    if external is None:
        return None
    path = Path(external).expanduser()
    if not path.is_dir():
        raise UserError(f"external photo folder not found: {path}")
    return path.resolve()


def open_analysis_run(client, run, data: LabData, device) -> str:
    """A new analysis child of ``run``, which the analysed run's tag ``agestudy.analysis_run`` then points to."""
    from agestudy.tracking import environment_tags

    run_id = run.info.run_id
    tags = {
        ROLE_TAG: ROLE_ANALYSIS,
        PARENT_RUN_TAG: run_id,  # a plain tag: the parent is usually long finished
        ANALYSED_RUN_TAG: run_id,
        SYNTHETIC_TAG: str(data.synthetic).lower(),
        DATA_FINGERPRINT_TAG: data.fingerprint,
        DATA_ROOT_TAG: str(data.root),
        **environment_tags(str(device), "fp32"),
    }
    if data.synthetic:
        tags[WARNING_TAG] = SYNTHETIC_WARNING
    name = run.info.run_name or run_id[:8]
    tags[DESCRIPTION_TAG] = (f"The lab's questions answered about run {name} ({run_id}): its model measured on "
                             f"{data.root} (python -m agestudy.analyze); each question's numbers in qN/metrics.json, "
                             "its figures and tables under qN/." + (" " + SYNTHETIC_SENTENCE if data.synthetic else ""))
    previous = run.data.tags.get(ANALYSIS_RUN_TAG)
    if previous:
        tags[PREVIOUS_ANALYSIS_TAG] = previous
    child = client.create_run(run.info.experiment_id, tags=tags,
                              run_name=f"analysis-{name}")
    client.set_tag(run_id, ANALYSIS_RUN_TAG, child.info.run_id)
    return child.info.run_id


def previous_analysis_run(client, run, data: LabData):
    """The analysis run the analysed run points to, when it analysed the same data; else None."""
    previous = active_run(client, run.data.tags.get(ANALYSIS_RUN_TAG))
    if previous is None or previous.data.tags.get(DATA_FINGERPRINT_TAG) != data.fingerprint:
        return None
    return previous


def carry_over(client, previous, analysis_id: str, skip, folder: Path) -> list[str]:
    """Copy into the analysis run ``analysis_id`` the results ``previous`` (an analysis run) holds for every
    question but those of ``skip``: its ``qN/`` artifacts, its ``qN/...`` metric histories, its error tag
    (and q10's photo folder). Results of an older analysis run (flat ``qN_name`` metrics) arrive in
    today's form: a ``qN/metrics.json`` table and the headline metrics. Returns the questions copied."""
    from mlflow.entities import Metric, RunTag

    previous_id, tags, metrics = previous.info.run_id, previous.data.tags, previous.data.metrics
    folders = {item.path for item in client.list_artifacts(previous_id) if item.is_dir}
    carried = []
    for q in QUESTIONS:
        if q in skip:
            continue
        error = tags.get(question_error_tag(q))
        if q not in folders and not error:
            continue
        batch, extra_tags = [], []
        if q in folders:
            (folder / q).mkdir(parents=True, exist_ok=True)
            local = Path(client.download_artifacts(previous_id, q, str(folder / q)))
            legacy = {k[len(q) + 1 :]: v for k, v in metrics.items() if k.startswith(legacy_analysis_metric(q, ""))}
            table = local / ANALYSIS_METRICS_FILE
            if legacy and not table.is_file():  # an analysis run from before qN/metrics.json
                table.write_text(json.dumps(jsonable(legacy), indent=2))
                now = int(time.time() * 1000)
                batch += [Metric(analysis_metric(q, k), value, now, SUMMARY_STEP) for k, v in legacy.items()
                          if is_analysis_headline(q, k) and (value := logged_number(v)) is not None]
                for name in ANALYSIS_SERIES.get(q, ()):
                    batch += [Metric(analysis_metric(q, name), m.value, m.timestamp, m.step)
                              for m in client.get_metric_history(previous_id, legacy_analysis_metric(q, name))]
            client.log_artifacts(analysis_id, str(local), artifact_path=q)
        for key in metrics:
            if key.startswith(analysis_metric(q, "")):
                history = client.get_metric_history(previous_id, key)
                batch += [Metric(key, m.value, m.timestamp, m.step) for m in history]
        if error:
            extra_tags.append(RunTag(question_error_tag(q), error))
        if q == "q10" and EXTERNAL_TAG in tags:
            extra_tags.append(RunTag(EXTERNAL_TAG, tags[EXTERNAL_TAG]))
        for i in range(0, max(len(batch), 1), 1000):  # MLflow's per-batch limit
            client.log_batch(analysis_id, metrics=batch[i : i + 1000], tags=extra_tags if i == 0 else [])
        carried.append(q)
    return carried


def _headline(values: dict) -> str:
    shown = []
    for key, value in list(values.items())[:4]:
        shown.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
    return ", ".join(shown)


def run_analyses(run_id: str, only=None, external=None, data_root=None, *, data: LabData | None = None,
                 cache_dir=None, device: str = "auto", options: dict | None = None, fresh: bool = False,
                 progress: bool = True) -> dict:
    """Run the chosen analyses on ``run_id``'s model and log them to a new analysis run.

    The other questions' results come over from the previous analysis run (the one the tag
    ``agestudy.analysis_run`` named, when it analysed the same data), unless ``fresh``; that run is
    left as it was. Returns ``{"analysis_run_id": id, "results": {q: headline numbers}, "failed":
    {q: error}, "carried": [q, ...]}``. A failing analysis is recorded (tag ``agestudy.<q>_error``)
    and the others still run; the analysis run then ends FAILED instead of FINISHED.
    """
    from mlflow.tracking import MlflowClient

    from agestudy import device as devices

    client = MlflowClient()
    questions = parse_questions(only)
    run = get_run(client, run_id)
    run_id = run.info.run_id
    external = check_external(external)
    torch_device = devices.select_device(device)
    say = (lambda text: print(text, file=sys.stderr)) if progress else (lambda text: None)

    with tempfile.TemporaryDirectory(prefix="agestudy-analysis-") as tmp:
        tmp = Path(tmp)
        model, cfg = load_run_model(client, run_id, tmp / "download")
        model = devices.prepare_model(model, torch_device).eval()
        if data is None:
            data = load_run_data(run, data_root, cache_dir, progress)
        logged = run.data.params.get("data.fingerprint")
        if logged and logged != data.fingerprint:
            say(f"[analyze] warning: the data differ from what run {run_id[:8]} trained on "
                f"(fingerprint {data.fingerprint} vs {logged})")
        previous = None if fresh else previous_analysis_run(client, run, data)
        analysis_id = open_analysis_run(client, run, data, torch_device)
        status = "FAILED"
        results, failed, carried = {}, {}, []
        try:
            if logged and logged != data.fingerprint:
                client.set_tag(analysis_id, DATA_MISMATCH_TAG, f"analysed {data.fingerprint}, trained {logged}")
            say(f"[analyze] run {run_id} ({cfg.model}, {data.root}); logging to a new analysis run {analysis_id}")
            if previous is not None:
                carried = carry_over(client, previous, analysis_id, questions, tmp / "previous")
                if carried:
                    say(f"[analyze] carried over from analysis run {previous.info.run_id}: {', '.join(carried)}")
            if data.synthetic:
                say("[analyze] *** SYNTHETIC demo data: these analyses say nothing about real faces ***")
            ctx = AnalysisContext(run_id=run_id, analysis_run_id=analysis_id, model=model, cfg=cfg, data=data,
                                  device=torch_device, out_dir=tmp / "out", client=client,
                                  experiment_id=run.info.experiment_id, external=external,
                                  options=dict(options or {}))
            for q in questions:
                module_name, title = QUESTIONS[q]
                ctx.question = q
                say(f"[analyze] {q}: {title} ...")
                start = time.perf_counter()
                try:
                    module = importlib.import_module(f"agestudy.analyses.{module_name}")
                    results[q] = module.run(ctx) or {}
                    say(f"[analyze] {q}: done in {time.perf_counter() - start:.1f} s: {_headline(results[q])}")
                except Exception as err:  # noqa: BLE001 - one failing analysis must not lose the others
                    failed[q] = f"{type(err).__name__}: {err}"
                    client.set_tag(analysis_id, question_error_tag(q), failed[q][:4000])
                    say(f"[analyze] {q}: FAILED: {failed[q]}")
                    if not isinstance(err, UserError):
                        traceback.print_exc(file=sys.stderr)
            done = set(filter(None, previous.data.tags.get(ANALYSES_DONE_TAG, "").split(","))) & set(carried) \
                if previous is not None else set()
            done = (done | set(results)) - set(failed)
            client.set_tag(analysis_id, ANALYSES_DONE_TAG, ",".join(q for q in QUESTIONS if q in done))
            status = "FINISHED" if not failed else "FAILED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            client.set_terminated(analysis_id, status=status)
    return {"analysis_run_id": analysis_id, "results": results, "failed": failed, "carried": carried}
