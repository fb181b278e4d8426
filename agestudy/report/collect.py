"""Everything the report shows, read from MLflow into one plain ``ReportData`` (no training, no data set).

Which runs: the analysed run (``--run``, else the latest FINISHED run tagged
``agestudy.role=final``, optionally of ``--study``), its study run (the ``mlflow.parentRunId``
of a final run or trial), its best trial (tag ``agestudy.best_trial_run``), the
``hyperparams`` and ``augmentation`` study runs of the same experiment when they exist, and
its analysis run (tag ``agestudy.analysis_run``), and for question 11 the latest CycleGAN run
(tag ``agestudy.role=cyclegan``) judged by it, else one on the same data. Artifacts that are shown are downloaded
under ``ASSETS/<run id>/...`` next to the output, so the HTML and PDF refer to local files;
figures drawn at render time from logged metric histories go to ``ASSETS/<run id>/report/``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

from agestudy.errors import UserError
from agestudy.report import analysis_map
from agestudy.analyses.stats import ablation_groups, hyperparameter_effects, wilson_interval
from agestudy.runs import (
    CYCLEGAN_LOSS_PLOT,
    CYCLEGAN_SAMPLES_DIR,
    JUDGE_GRID,
    JUDGE_RUN_TAG,
    JUDGE_SCATTER,
    JUDGE_TABLE,
    ROLE_CYCLEGAN,
    ANALYSIS_RUN_TAG,
    AUGMENTATIONS_PLOT,
    BEST_TRIAL_RUN_TAG,
    CONFUSION_PLOT,
    DATA_FINGERPRINT_TAG,
    DEVICE_TAG,
    GIT_COMMIT_TAG,
    LEARNING_CURVE_PLOT,
    MISCLASSIFIED_PLOT,
    MODEL_CONFIG,
    OBJECTIVE_TAG,
    PARENT_RUN_TAG,
    PRECISION_TAG,
    RELIABILITY_PLOT,
    ROC_PLOT,
    ROLE_FINAL,
    ROLE_STUDY,
    ROLE_TAG,
    STUDY_HISTORY_PLOT,
    STUDY_IMPORTANCES,
    STUDY_IMPORTANCES_PLOT,
    STUDY_SLICE_PLOT,
    STUDY_TAG,
    STUDY_TRIALS,
    SYNTHETIC_TAG,
    TEST_PREDICTIONS,
    find_runs,
    question_error_tag,
    redact_uri,
)

Q6_STUDY = "hyperparams"
Q7_STUDY = "augmentation"
TARGET = 0.75
N_EXTREMES = 8  # images per list in the question 9 fallback (from the run's predictions)


@dataclass
class Figure:
    src: str  # path relative to the report's folder, for <img src>
    run_id: str  # the run the figure comes from (named in its caption)
    artifact: str  # artifact path in that run, or "drawn from ..." for render-time figures


@dataclass
class RunInfo:
    id: str
    name: str
    role: str
    status: str
    start: str
    params: dict
    tags: dict
    metrics: dict
    experiment_id: str

    @property
    def study(self) -> str:
        return self.tags.get(STUDY_TAG, "")


class AnalysisSection:
    """One question's analysis items (see ``analysis_map``): ``section.name`` is the item or None."""

    def __init__(self, key: str, run_id: str | None, items: dict, missing: list[str], reason: str = ""):
        self.key = key
        self.run_id = run_id
        self.items = items
        self.missing = missing  # required items not found: the section shows the "not available" box
        self.reason = reason  # why nothing at all was found (no analysis run, or the question not run)

    @property
    def available(self) -> bool:
        return self.run_id is not None and not self.missing

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return self.__dict__.get("items", {}).get(name)


@dataclass
class ReportData:
    lang: str
    generated: str
    experiment: str
    tracking_uri: str
    run: RunInfo
    study: RunInfo | None
    best_trial: RunInfo | None
    analysis_run_id: str | None
    analysis_command: str
    data: dict
    synthetic: bool
    provenance: dict
    q3: dict
    q4: dict
    q5: dict
    q6: dict
    q7: dict
    q9: dict
    q11: dict
    analyses: dict  # "q1" ... "q12" -> AnalysisSection


# ----------------------------------------------------------------------------- MLflow access

class Store:
    """Read-only access to the runs, with downloads cached under ``assets``."""

    def __init__(self, client, assets: Path, out_dir: Path):
        self.client = client
        self.assets = assets
        self.out_dir = out_dir
        self._listing: dict = {}
        self._json: dict = {}

    def run(self, run_id: str | None) -> RunInfo | None:
        if not run_id:
            return None
        try:
            r = self.client.get_run(run_id)
        except Exception:  # noqa: BLE001 - deleted, or from another store
            return None
        if r.info.lifecycle_stage != "active":
            return None
        return self._info(r)

    @staticmethod
    def _info(r) -> RunInfo:
        start = dt.datetime.fromtimestamp(r.info.start_time / 1000).strftime("%Y-%m-%d %H:%M") if r.info.start_time else ""
        return RunInfo(id=r.info.run_id, name=r.data.tags.get("mlflow.runName", r.info.run_name or ""),
                       role=r.data.tags.get(ROLE_TAG, ""), status=r.info.status, start=start,
                       params=dict(r.data.params), tags=dict(r.data.tags), metrics=dict(r.data.metrics),
                       experiment_id=r.info.experiment_id)

    def find(self, experiment_ids: str | list[str], max_results: int = 1, **filters) -> list[RunInfo]:
        """The newest runs of the experiment(s) with these role, study, status and tags (see runs.find_runs)."""
        return [self._info(r) for r in find_runs(self.client, experiment_ids, max_results=max_results, **filters)]

    def exists(self, run_id: str, path: str) -> bool:
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        key = (run_id, parent)
        if key not in self._listing:
            try:
                self._listing[key] = {a.path for a in self.client.list_artifacts(run_id, parent or None)}
            except Exception:  # noqa: BLE001
                self._listing[key] = set()
        return path in self._listing[key]

    def download(self, run_id: str, path: str) -> Path | None:
        """The artifact as a local file under assets/<run id>/, or None when the run has no such file."""
        target = self.assets / run_id / path
        if target.is_file():
            return target
        if not self.exists(run_id, path):
            return None
        scratch = self.assets / run_id / "_dl"
        scratch.mkdir(parents=True, exist_ok=True)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                local = self.client.download_artifacts(run_id, path, str(scratch))
        except Exception:  # noqa: BLE001 - MLflow raises several types for a missing artifact
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(local, target)
        shutil.rmtree(scratch, ignore_errors=True)
        return target

    def figure(self, run_id: str | None, path: str) -> Figure | None:
        if not run_id:
            return None
        local = self.download(run_id, path)
        if local is None:
            return None
        return Figure(src=local.relative_to(self.out_dir).as_posix(), run_id=run_id, artifact=path)

    def text(self, run_id: str | None, path: str) -> str | None:
        local = self.download(run_id, path) if run_id else None
        return local.read_text(encoding="utf-8") if local is not None else None

    def json(self, run_id: str | None, path: str):
        key = (run_id, path)
        if key not in self._json:
            text = self.text(run_id, path)
            try:
                self._json[key] = json.loads(text) if text is not None else None
            except json.JSONDecodeError:
                self._json[key] = None
        return self._json[key]

    def csv_rows(self, run_id: str | None, path: str) -> list[dict] | None:
        text = self.text(run_id, path)
        if text is None:
            return None
        return list(csv.DictReader(io.StringIO(text)))

    def history(self, run_id: str | None, key: str) -> list[tuple[int, float]]:
        if not run_id:
            return []
        try:
            points = self.client.get_metric_history(run_id, key)
        except Exception:  # noqa: BLE001
            return []
        return sorted((int(m.step), float(m.value)) for m in points)


# ----------------------------------------------------------------------------- choosing the runs

def find_target_run(store: Store, experiment_id: str, experiment: str, study: str | None,
                    run_id: str | None) -> RunInfo:
    if run_id:
        info = store.run(run_id)
        if info is None:
            raise UserError(f"no run {run_id!r} in this MLflow store (check --tracking-uri / MLFLOW_TRACKING_URI)")
        if info.status != "FINISHED":
            raise UserError(f"run {run_id} is {info.status}, not FINISHED: report on a finished training run")
        if not store.exists(info.id, MODEL_CONFIG):
            raise UserError(f"run {run_id} has no model/ artifact (a study run, a pruned trial or an analysis run?): "
                            "report on a finished training run, e.g. a study's final run")
        return info
    found = store.find(experiment_id, role=ROLE_FINAL, study=study or None, status="FINISHED")
    if not found:
        which = f"of study '{study}' " if study else ""
        command = f"python -m agestudy.tune --study {study}" if study else "python -m agestudy.tune"
        raise UserError(f"no final run {which}found in experiment '{experiment}': run `{command}` first")
    return found[0]


def find_study_run(store: Store, run: RunInfo) -> RunInfo | None:
    if run.role == ROLE_STUDY:
        return run
    parent = store.run(run.tags.get(PARENT_RUN_TAG))
    if parent is not None and parent.role == ROLE_STUDY:
        return parent
    return None


def latest_study_run(store: Store, experiment_id: str, name: str) -> RunInfo | None:
    found = store.find(experiment_id, role=ROLE_STUDY, study=name, max_results=20)
    for info in found:  # the latest one that got as far as its trial table
        if store.exists(info.id, STUDY_TRIALS):
            return info
    return None


# ----------------------------------------------------------------------------- sections

def _finite(x) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _int_param(params: dict, key: str) -> int | None:
    try:
        return int(float(params[key]))
    except (KeyError, TypeError, ValueError):
        return None


def data_section(run: RunInfo) -> dict:
    p = run.params
    counts = {k: _int_param(p, f"data.{k}") for k in ("train_0", "train_1", "test_0", "test_1")}
    return {
        "root": p.get("data.root", ""),
        "fingerprint": p.get("data.fingerprint") or run.tags.get(DATA_FINGERPRINT_TAG, ""),
        "counts": counts,
        "n_train": (counts["train_0"] or 0) + (counts["train_1"] or 0),
        "n_test": (counts["test_0"] or 0) + (counts["test_1"] or 0),
        "n_train_used": _int_param(p, "data.n_train_used"),
        "n_val": _int_param(p, "data.n_val"),
        "skipped": _int_param(p, "data.skipped"),
        "converted": _int_param(p, "data.converted"),
    }


def learning_curves(store: Store, run: RunInfo, trial: RunInfo | None, lang: str) -> dict:
    """Question 3: loss and accuracy against iterations, drawn from the logged histories."""
    keys = ("train_loss", "train_acc", "val_loss", "val_acc")
    own = {k: store.history(run.id, k) for k in keys}
    other = {k: store.history(trial.id, k) for k in keys} if trial is not None and trial.id != run.id else {}
    out = {"has_val": bool(own["val_acc"]), "trial_has_val": bool(other.get("val_acc")),
           "n_points": len(own["train_loss"]), "figure": None, "logged_figure": store.figure(run.id, LEARNING_CURVE_PLOT)}
    if not own["train_loss"] and not other.get("train_loss"):
        return out
    from agestudy.plots import plt

    fr = lang == "fr"
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.9))
    series = [(own, f"{run.id[:8]}", "-")]
    if other.get("train_loss") or other.get("val_loss"):
        series.append((other, f"{trial.id[:8]}", "--"))
    for ax, what in zip(axes, ("loss", "acc")):
        for hist, label, style in series:
            for split, colour in (("train", "C0"), ("val", "C1")):
                pts = hist.get(f"{split}_{what}") or []
                if pts:
                    name = {"train": "entraînement" if fr else "train", "val": "validation"}[split]
                    ax.plot([s for s, _ in pts], [v for _, v in pts], style, color=colour, lw=1.3,
                            marker="o" if split == "val" else None, ms=3, label=f"{name} (run {label})")
        if what == "acc":
            ax.axhline(TARGET, color="grey", ls=":", lw=1, label="75 %")
        ax.set_xlabel("itération" if fr else "iteration")
        ax.set_ylabel({"loss": "perte (entropie croisée)" if fr else "loss (cross-entropy)",
                       "acc": "exactitude" if fr else "accuracy"}[what])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = store.assets / run.id / "report" / f"learning_curves_{lang}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    runs = [run.id] + ([trial.id] if len(series) > 1 else [])
    out["figure"] = Figure(src=path.relative_to(store.out_dir).as_posix(), run_id=", ".join(runs),
                           artifact="metric histories train_loss, train_acc, val_loss, val_acc")
    out["runs"] = runs
    if trial is not None:
        vf = _finite(trial.params.get("val_fraction"))
        out["trial_val_fraction"], out["trial_train_fraction"] = vf, (1 - vf if vf is not None else None)
    out["final_train_acc"] = own["train_acc"][-1][1] if own["train_acc"] else None
    out["final_train_loss"] = own["train_loss"][-1][1] if own["train_loss"] else None
    if other.get("val_acc"):
        out["trial_best_val_acc"] = max(v for _, v in other["val_acc"])
        out["trial_last_val_acc"] = other["val_acc"][-1][1]
    return out


def accuracy_section(store: Store, run: RunInfo, trial: RunInfo | None, n_test: int) -> dict:
    """Question 4: the test accuracy with its 95 % interval and when validation accuracy first passed 75 %."""
    acc = _finite(run.metrics.get("test_accuracy"))
    out = {"accuracy": acc, "n_test": n_test, "run_id": run.id, "ci_low": None, "ci_high": None, "correct": None}
    if acc is not None and n_test:
        out["ci_low"], out["ci_high"] = wilson_interval(acc, n_test)
        out["correct"] = round(acc * n_test)
    out["balanced_accuracy"] = _finite(run.metrics.get("test_balanced_accuracy"))
    out["eval_flip"] = str(run.params.get("eval_flip", "False")).lower() == "true"
    out["iterations"] = _finite(run.metrics.get("iterations"))
    out["train_seconds"] = _finite(run.metrics.get("train_seconds"))
    out["own_has_val"] = _int_param(run.params, "data.n_val") not in (None, 0)
    # when validation accuracy first reached 75 %: the run itself if it had a validation split,
    # else the best trial of its study (same configuration, trained on 90 % of train/)
    first = None
    for source in (run, trial):
        if source is None or (source is trial and trial.id == run.id):
            continue
        has_val = _int_param(source.params, "data.n_val") not in (None, 0) or "best_val_acc" in source.metrics
        if not has_val:
            continue
        step = _finite(source.metrics.get("first_val_acc75_step"))
        first = {"run_id": source.id, "is_own": source is run, "reached": step is not None,
                 "step": step, "seconds": _finite(source.metrics.get("first_val_acc75_seconds")),
                 "best_val_acc": _finite(source.metrics.get("best_val_acc")),
                 "iterations": _finite(source.metrics.get("iterations")),
                 "train_seconds": _finite(source.metrics.get("train_seconds")),
                 "val_fraction": _finite(source.params.get("val_fraction")),
                 "evals_per_epoch": source.params.get("evals_per_epoch", "?")}
        break
    if first is not None:
        vf = first["val_fraction"]
        first["train_fraction"] = 1 - vf if vf is not None else None
    out["first75"] = first
    # the training accuracy of the run itself (a running mean over log_every iterations)
    train = store.history(run.id, "train_acc")
    out["train75_step"] = next((s for s, v in train if v >= TARGET), None)
    out["train_acc_points"] = len(train)
    return out


def metrics_section(store: Store, run: RunInfo) -> dict:
    """Question 5: what the run logged beyond accuracy (the analysis adds more, see analysis_map.Q5)."""
    m = run.metrics
    keys = ("test_accuracy", "test_balanced_accuracy", "test_roc_auc", "test_log_loss", "test_brier", "test_ece")
    return {"metrics": {k.removeprefix("test_"): _finite(m.get(k)) for k in keys}, "run_id": run.id,
            "roc": store.figure(run.id, ROC_PLOT),
            "reliability": store.figure(run.id, RELIABILITY_PLOT),
            "confusion": store.figure(run.id, CONFUSION_PLOT)}


def _importances(store: Store, study: RunInfo) -> dict:
    doc = store.json(study.id, STUDY_IMPORTANCES)
    return {str(k): float(v) for k, v in doc.items()} if isinstance(doc, dict) else {}


def hyperparameter_section(store: Store, run: RunInfo, own_study: RunInfo | None) -> dict:
    """Question 6: importances, slice plots and measured effects from the hyperparams study (else the run's own)."""
    chosen = latest_study_run(store, run.experiment_id, Q6_STUDY)
    source = "hyperparams" if chosen is not None else None
    if chosen is None and own_study is not None and store.exists(own_study.id, STUDY_TRIALS):
        chosen, source = own_study, "own"
    out = {"source": source, "study": chosen, "effects": [], "importances": [], "n_complete": 0,
           "n_pruned": 0, "n_failed": 0, "same_data": None, "objective": ""}
    if chosen is None:
        return out
    rows = store.csv_rows(chosen.id, STUDY_TRIALS) or []
    imp = _importances(store, chosen)
    out["effects"] = hyperparameter_effects(rows, imp)
    out["importances"] = sorted(imp.items(), key=lambda kv: -kv[1])
    out["n_complete"] = sum(str(r.get("state")).upper() == "COMPLETE" for r in rows)
    out["n_pruned"] = sum(str(r.get("state")).upper() == "PRUNED" for r in rows)
    out["n_failed"] = sum(str(r.get("state")).upper() == "FAIL" for r in rows)
    out["objective"] = chosen.tags.get(OBJECTIVE_TAG, "val_acc")
    out["same_data"] = chosen.tags.get(DATA_FINGERPRINT_TAG) == (
        run.params.get("data.fingerprint") or run.tags.get(DATA_FINGERPRINT_TAG))
    out["synthetic"] = chosen.tags.get(SYNTHETIC_TAG) == "true"
    out["importance_figure"] = store.figure(chosen.id, STUDY_IMPORTANCES_PLOT)
    out["slice_figure"] = store.figure(chosen.id, STUDY_SLICE_PLOT)
    out["history_figure"] = store.figure(chosen.id, STUDY_HISTORY_PLOT)
    out["best_value"] = _finite(chosen.metrics.get("best_value"))
    return out


def augmentation_section(store: Store, run: RunInfo) -> dict:
    """Question 7 (the report's part): the run's augmentation and the augmentation study's trials by value."""
    p = run.params
    out = {"grid": store.figure(run.id, AUGMENTATIONS_PLOT),
           "config": {k: p.get(k) for k in ("random_crop", "crop", "padding", "flip", "jitter")},
           "study": None, "groups": {}}
    study = latest_study_run(store, run.experiment_id, Q7_STUDY)
    if study is None:
        return out
    rows = store.csv_rows(study.id, STUDY_TRIALS) or []
    out["study"] = study
    out["groups"] = {name: ablation_groups(rows, name) for name in ("random_crop", "padding", "flip")}
    out["groups"] = {k: v for k, v in out["groups"].items() if v}
    out["objective"] = study.tags.get(OBJECTIVE_TAG, "val_acc")
    out["same_data"] = study.tags.get(DATA_FINGERPRINT_TAG) == p.get("data.fingerprint")
    return out


def extremes_section(store: Store, run: RunInfo) -> dict:
    """Question 9 (the report's part): most wrong / most right test images from the run's own predictions."""
    rows = store.csv_rows(run.id, TEST_PREDICTIONS)
    out = {"worst": [], "best": [], "run_id": run.id, "misclassified": store.figure(run.id, MISCLASSIFIED_PLOT)}
    if not rows:
        return out
    scored = []
    for r in rows:
        try:
            label, p1 = int(r["label"]), float(r["p1"])
        except (KeyError, TypeError, ValueError):
            continue
        p_true = p1 if label == 1 else 1 - p1
        scored.append({"file": r.get("file", ""), "label": label, "p1": p1, "p_true": p_true,
                       "predicted": int(p1 >= 0.5)})
    scored.sort(key=lambda r: r["p_true"])
    k = min(N_EXTREMES, len(scored) // 2)
    out["worst"] = [{"rank": i + 1, **r} for i, r in enumerate(scored[:k])]
    out["best"] = [{"rank": i + 1, **r} for i, r in enumerate(scored[::-1][:k])]
    out["n"] = len(scored)
    return out


def cyclegan_section(store: Store, run: RunInfo) -> dict:
    """Question 11: the latest finished CycleGAN run judged by this report's classifier (in any
    experiment), else the latest of the report's experiment on the same data, else its latest;
    with the judge's table, grids and curves."""
    out = {"run": None, "command": f"python -m agestudy.cyclegan --data {run.params.get('data.root', 'ROOT')} "
                                   f"--judge {run.id}"}
    fingerprint = run.params.get("data.fingerprint") or run.tags.get(DATA_FINGERPRINT_TAG, "")
    everywhere = [e.experiment_id for e in store.client.search_experiments()]
    candidates = ((everywhere, {JUDGE_RUN_TAG: run.id}), (run.experiment_id, {DATA_FINGERPRINT_TAG: fingerprint}),
                  (run.experiment_id, None))
    chosen = next((found[0] for where, extra in candidates
                   if (found := store.find(where, role=ROLE_CYCLEGAN, status="FINISHED", extra=extra))), None)
    if chosen is None:
        return out
    try:
        samples = sorted(a.path for a in store.client.list_artifacts(chosen.id, CYCLEGAN_SAMPLES_DIR)
                         if a.path.endswith(".png"))
    except Exception:  # noqa: BLE001 - an unreachable artifact store: the section shows no sample grid
        samples = []
    out.update(
        run=chosen, judge=store.json(chosen.id, JUDGE_TABLE), judge_table=JUDGE_TABLE,
        judge_run_id=chosen.tags.get(JUDGE_RUN_TAG), judged_by_this_run=chosen.tags.get(JUDGE_RUN_TAG) == run.id,
        same_data=chosen.tags.get(DATA_FINGERPRINT_TAG) == fingerprint,
        synthetic=chosen.tags.get(SYNTHETIC_TAG) == "true",
        params={k: chosen.params.get(k) for k in ("size", "epochs", "batch_size", "lambda_cycle", "lambda_identity",
                                                   "precision", "device", "data.train_0", "data.train_1")},
        seconds=_finite(chosen.metrics.get("train/seconds")),
        pairs_per_second=_finite(chosen.metrics.get("train/pairs_per_second")),
        grid=store.figure(chosen.id, JUDGE_GRID),
        scatter=store.figure(chosen.id, JUDGE_SCATTER),
        losses=store.figure(chosen.id, CYCLEGAN_LOSS_PLOT),
        first_samples=store.figure(chosen.id, samples[0]) if len(samples) > 1 else None,
        last_samples=store.figure(chosen.id, samples[-1]) if samples else None,
    )
    return out


def analysis_sections(store: Store, run: RunInfo) -> tuple[str | None, dict]:
    """Resolve every item of ``analysis_map`` against the run's analysis run."""
    analysis = store.run(run.tags.get(ANALYSIS_RUN_TAG))
    sections = {}
    for key, mapping in analysis_map.SECTIONS.items():
        if analysis is None:
            sections[key] = AnalysisSection(key, None, {name: None for name in mapping}, list(mapping), "no_run")
            continue
        items, missing = {}, []
        for name, source in mapping.items():
            value = resolve(store, analysis, source)
            items[name] = value
            if value is None and not source.optional:
                missing.append(name)
        error = analysis.tags.get(question_error_tag(key)) or ""
        reason = "error" if error else ("not_run" if len(missing) == sum(not s.optional for s in mapping.values())
                                        else "partial" if missing else "")
        section = AnalysisSection(key, analysis.id, items, missing, reason)
        section.error = error
        sections[key] = section
    return (analysis.id if analysis else None), sections


def resolve(store: Store, analysis: RunInfo, source: analysis_map.Source):
    if source.kind == "metric":
        return _finite(analysis.metrics.get(source.path))
    if source.kind == "figure":
        return store.figure(analysis.id, source.path)
    doc = store.json(analysis.id, source.path)
    if doc is None or not source.key:
        return doc
    for part in source.key.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return None
        doc = doc[part]
    return doc


# ----------------------------------------------------------------------------- the whole report

def collect(client, experiment: str, out_dir: Path, assets: Path, lang: str, study: str | None = None,
            run_id: str | None = None, tracking_uri: str = "") -> ReportData:
    exp = client.get_experiment_by_name(experiment)
    if exp is None and not run_id:
        raise UserError(f"no final run found in experiment '{experiment}': run `python -m agestudy.tune` first "
                        "(the experiment does not exist in this MLflow store)")
    store = Store(client, assets, out_dir)
    run = find_target_run(store, exp.experiment_id if exp else "", experiment, study, run_id)
    if exp is None or exp.experiment_id != run.experiment_id:
        found = client.get_experiment(run.experiment_id)
        experiment = found.name if found else experiment
    own_study = find_study_run(store, run)
    trial = store.run(run.tags.get(BEST_TRIAL_RUN_TAG)) if run.role == ROLE_FINAL else None
    data = data_section(run)
    synthetic = run.tags.get(SYNTHETIC_TAG) == "true"
    analysis_id, analyses = analysis_sections(store, run)
    tags = run.tags
    provenance = {
        "git_commit": tags.get(GIT_COMMIT_TAG, ""),
        "device": tags.get(DEVICE_TAG, ""),
        "precision": tags.get(PRECISION_TAG, ""),
        "versions": {k.removeprefix("version."): v for k, v in sorted(tags.items()) if k.startswith("version.")},
        "model": run.params.get("model", ""),
    }
    return ReportData(
        lang=lang,
        generated=dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        experiment=experiment,
        tracking_uri=redact_uri(tracking_uri),
        run=run,
        study=own_study,
        best_trial=trial,
        analysis_run_id=analysis_id,
        analysis_command=f"python -m agestudy.analyze --run {run.id}",
        data=data,
        synthetic=synthetic,
        provenance=provenance,
        q3=learning_curves(store, run, trial, lang),
        q4=accuracy_section(store, run, trial, data["n_test"]),
        q5=metrics_section(store, run),
        q6=hyperparameter_section(store, run, own_study),
        q7=augmentation_section(store, run),
        q9=extremes_section(store, run),
        q11=cyclegan_section(store, run),
        analyses=analyses,
    )


__all__ = ["ReportData", "collect", "Figure", "RunInfo", "AnalysisSection"]
