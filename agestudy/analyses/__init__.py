"""Analyses that answer the lab's questions, logged to MLflow beside the run they study.

    from agestudy.analyses import run_analyses
    out = run_analyses(run_id, only=["q8", "q9"], external="photos/")

One module per question, each with ``run(ctx) -> dict`` of headline numbers:

    q1  q1_structure            layer table, parameter formulas and counts
    q2  q2_chance               freshly initialised networks against chance
    q3  q3_learning_curves      the learning curves, drawn from the logged metric histories
    q4  q4_accuracy             test accuracy's Wilson interval; when validation first passed 75 %
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
``q1/``, ``q2/``, ...; metric names start with ``q1_``, ``q2_``, .... Running again (say
``--only q8``) logs into the same analysis run and replaces that question's results.
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
    ANALYSIS_RUN_TAG,
    DATA_FINGERPRINT_TAG,
    DATA_MISMATCH_TAG,
    DATA_ROOT_TAG,
    MODEL_DIR,
    PARENT_RUN_TAG,
    ROLE_ANALYSIS,
    ROLE_TAG,
    SYNTHETIC_TAG,
    SYNTHETIC_WARNING,
    WARNING_TAG,
    WEIGHTS_FILE,
    has_artifact,
    question_error_tag,
    redact_uri,
)

# question -> (module, what it answers); the order is the order they run in
QUESTIONS = {
    "q1": ("q1_structure", "network structure and parameter count"),
    "q2": ("q2_chance", "an untrained network is at chance"),
    "q3": ("q3_learning_curves", "learning curves from the logged metric histories"),
    "q4": ("q4_accuracy", "test accuracy's interval and when validation first passed 75 %"),
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

    # --- options and files
    def option(self, name: str, default):
        return self.options.get(name, default)

    def path(self, name: str) -> Path:
        """A scratch file in this question's folder (logged with log_figure / log_file)."""
        folder = self.out_dir / self.question
        folder.mkdir(parents=True, exist_ok=True)
        return folder / name

    # --- logging into the analysis run
    def log_metrics(self, metrics: dict, step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        prefix = f"{self.question}_"
        batch = [Metric(k if k.startswith(prefix) else prefix + k, float(v), now, step)
                 for k, v in metrics.items() if v is not None]
        for i in range(0, len(batch), 1000):  # MLflow's per-batch limit
            self.client.log_batch(self.analysis_run_id, metrics=batch[i : i + 1000])

    def log_series(self, name: str, points) -> None:
        """A curve as one metric history: ``points`` = [(step, value), ...]."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        key = name if name.startswith(f"{self.question}_") else f"{self.question}_{name}"
        batch = [Metric(key, float(v), now, int(s)) for s, v in points]
        for i in range(0, len(batch), 1000):
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


def open_analysis_run(client, run, data: LabData, fresh: bool, device) -> str:
    """The analysed run's analysis child: the existing one (unless ``fresh``), else a new one."""
    from mlflow.entities import RunTag

    from agestudy.tracking import environment_tags

    run_id = run.info.run_id
    environment = environment_tags(str(device), "fp32")
    existing = run.data.tags.get(ANALYSIS_RUN_TAG)
    if existing and not fresh:
        try:
            child = client.get_run(existing)
        except Exception:  # noqa: BLE001 - from another store: start a new one
            child = None
        if child is not None and child.info.lifecycle_stage == "active":
            client.update_run(existing, status="RUNNING")
            client.log_batch(existing, tags=[RunTag(k, v) for k, v in environment.items()])  # today's versions
            return existing
    tags = {
        ROLE_TAG: ROLE_ANALYSIS,
        PARENT_RUN_TAG: run_id,  # a plain tag: the parent is usually long finished
        ANALYSED_RUN_TAG: run_id,
        SYNTHETIC_TAG: str(data.synthetic).lower(),
        DATA_FINGERPRINT_TAG: data.fingerprint,
        DATA_ROOT_TAG: str(data.root),
        **environment,
    }
    if data.synthetic:
        tags[WARNING_TAG] = SYNTHETIC_WARNING
    child = client.create_run(run.info.experiment_id, tags=tags,
                              run_name=f"analysis-{run.data.tags.get('mlflow.runName', run_id[:8])}")
    client.set_tag(run_id, ANALYSIS_RUN_TAG, child.info.run_id)
    return child.info.run_id


def _headline(values: dict) -> str:
    shown = []
    for key, value in list(values.items())[:4]:
        shown.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
    return ", ".join(shown)


def run_analyses(run_id: str, only=None, external=None, data_root=None, *, data: LabData | None = None,
                 cache_dir=None, device: str = "auto", options: dict | None = None, fresh: bool = False,
                 progress: bool = True) -> dict:
    """Run the chosen analyses on ``run_id``'s model and log them to its analysis run.

    Returns ``{"analysis_run_id": id, "results": {q: headline numbers}, "failed": {q: error}}``.
    A failing analysis is recorded (tag ``agestudy.<q>_error``) and the others still run; the
    analysis run then ends FAILED instead of FINISHED.
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
        analysis_id = open_analysis_run(client, run, data, fresh, torch_device)
        if logged and logged != data.fingerprint:
            client.set_tag(analysis_id, DATA_MISMATCH_TAG, f"analysed {data.fingerprint}, trained {logged}")
        say(f"[analyze] run {run_id} ({cfg.model}, {data.root}); logging to analysis run {analysis_id}")
        if data.synthetic:
            say("[analyze] *** SYNTHETIC demo data: these analyses say nothing about real faces ***")
        ctx = AnalysisContext(run_id=run_id, analysis_run_id=analysis_id, model=model, cfg=cfg, data=data,
                              device=torch_device, out_dir=tmp / "out", client=client,
                              experiment_id=run.info.experiment_id, external=external, options=dict(options or {}))
        results, failed = {}, {}
        old_tags = client.get_run(analysis_id).data.tags
        status = "FAILED"
        try:
            for q in questions:
                module_name, title = QUESTIONS[q]
                ctx.question = q
                say(f"[analyze] {q}: {title} ...")
                start = time.perf_counter()
                try:
                    module = importlib.import_module(f"agestudy.analyses.{module_name}")
                    results[q] = module.run(ctx) or {}
                    if question_error_tag(q) in old_tags:  # an earlier attempt failed; this one did not
                        client.delete_tag(analysis_id, question_error_tag(q))
                    say(f"[analyze] {q}: done in {time.perf_counter() - start:.1f} s: {_headline(results[q])}")
                except Exception as err:  # noqa: BLE001 - one failing analysis must not lose the others
                    failed[q] = f"{type(err).__name__}: {err}"
                    client.set_tag(analysis_id, question_error_tag(q), failed[q][:4000])
                    say(f"[analyze] {q}: FAILED: {failed[q]}")
                    if not isinstance(err, UserError):
                        traceback.print_exc(file=sys.stderr)
            done = set(filter(None, old_tags.get(ANALYSES_DONE_TAG, "").split(",")))
            done = (done | set(results)) - set(failed)
            client.set_tag(analysis_id, ANALYSES_DONE_TAG, ",".join(q for q in QUESTIONS if q in done))
            status = "FINISHED" if not failed else "FAILED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            client.set_terminated(analysis_id, status=status)
    return {"analysis_run_id": analysis_id, "results": results, "failed": failed}
