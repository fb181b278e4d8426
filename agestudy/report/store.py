"""The report's read-only view of MLflow: which runs it reports on, and their files downloaded once.

Which runs: the analysed run (``--run``, else the latest FINISHED run tagged
``agestudy.role=final``, optionally of ``--study``), its study run (the ``mlflow.parentRunId``
of a final run or trial), its best trial (tag ``agestudy.best_trial_run``) and its analysis
run (tag ``agestudy.analysis_run``). The sections find the other runs they show (the study an
analysis chose, question 11's CycleGAN run) through the same ``Store``. Artifacts that are
shown are downloaded under ``ASSETS/<run id>/<artifact path>`` next to the output, so the
HTML and PDF refer to local files and every figure's path names its run.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from agestudy.errors import UserError
from agestudy.runs import (
    ANALYSIS_RUN_TAG,
    MODEL_CONFIG,
    ROLE_FINAL,
    ROLE_TAG,
    STUDY_TAG,
    active_run,
    best_trial_run,
    find_runs,
    study_run,
)


@dataclass
class Figure:
    src: str  # path relative to the report's folder, for <img src>: assets/<run id>/<artifact>
    run_id: str  # the run the figure comes from (named in its caption)
    artifact: str  # artifact path in that run


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
    raw: object = field(default=None, repr=False, compare=False)  # the MLflow Run, for agestudy.runs' helpers

    @property
    def study(self) -> str:
        return self.tags.get(STUDY_TAG, "")


def run_info(r) -> RunInfo | None:
    """An MLflow Run as the templates read it (None stays None)."""
    if r is None:
        return None
    start = dt.datetime.fromtimestamp(r.info.start_time / 1000).strftime("%Y-%m-%d %H:%M") if r.info.start_time else ""
    return RunInfo(id=r.info.run_id, name=r.data.tags.get("mlflow.runName", r.info.run_name or ""),
                   role=r.data.tags.get(ROLE_TAG, ""), status=r.info.status, start=start,
                   params=dict(r.data.params), tags=dict(r.data.tags), metrics=dict(r.data.metrics),
                   experiment_id=r.info.experiment_id, raw=r)


class Store:
    """Read-only access to the runs, with downloads cached under ``assets``."""

    def __init__(self, client, assets: Path, out_dir: Path):
        self.client = client
        self.assets = assets
        self.out_dir = out_dir
        self._listing: dict = {}
        self._json: dict = {}

    def run(self, run_id: str | None) -> RunInfo | None:
        return run_info(active_run(self.client, run_id))

    def find(self, experiment_ids: str | list[str], max_results: int = 1, **filters) -> list[RunInfo]:
        """The newest runs of the experiment(s) with these role, study, status and tags (see runs.find_runs)."""
        return [run_info(r) for r in find_runs(self.client, experiment_ids, max_results=max_results, **filters)]

    def exists(self, run_id: str, path: str) -> bool:
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        key = (run_id, parent)
        if key not in self._listing:
            try:
                self._listing[key] = {a.path for a in self.client.list_artifacts(run_id, parent or None)}
            except Exception:  # noqa: BLE001
                self._listing[key] = set()
        return path in self._listing[key]

    def listing(self, run_id: str, folder: str) -> list[str]:
        """The artifact paths directly in a run's folder, sorted (empty when unreachable)."""
        try:
            return sorted(a.path for a in self.client.list_artifacts(run_id, folder))
        except Exception:  # noqa: BLE001 - an unreachable artifact store: nothing to show
            return []

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


# ----------------------------------------------------------------------------- choosing the runs

def find_target_run(store: Store, experiment_id: str, experiment: str, study: str | None,
                    run_id: str | None) -> RunInfo:
    """The run the report is about: ``--run``, else the latest finished final run (of ``--study``)."""
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
    """The study the run belongs to (see runs.study_run)."""
    return run_info(study_run(store.client, run.raw))


def find_best_trial(store: Store, run: RunInfo) -> RunInfo | None:
    """On a final run, the trial it refits (see runs.best_trial_run)."""
    return run_info(best_trial_run(store.client, run.raw))


def find_analysis_run(store: Store, run: RunInfo) -> RunInfo | None:
    """The run's analysis run (``python -m agestudy.analyze``), when it has one."""
    return store.run(run.tags.get(ANALYSIS_RUN_TAG))
