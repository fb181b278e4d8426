"""MLflow plumbing: where runs go, what every run records, and cheap metric logging.

Default store: SQLite at ``mlruns/mlflow.db`` with artifacts under ``mlruns/artifacts``
(MLflow 3 deprecates the plain file store). ``--tracking-uri`` or ``MLFLOW_TRACKING_URI``
points elsewhere: an ``http://`` tracking server, or ``postgresql://...``. The names runs
carry (tags, roles, artifact paths) and how they are found again live in agestudy/runs.py.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
import warnings
from pathlib import Path

from agestudy.runs import DEVICE_TAG, GIT_COMMIT_TAG, PRECISION_TAG, TORCH_THREADS_TAG, open_store

DEFAULT_EXPERIMENT = "agestudy"
STORE_DIR = Path("mlruns")


def default_tracking_uri() -> str:
    # timeout: several worker processes wait for SQLite's write lock instead of failing
    return f"sqlite:///{(STORE_DIR / 'mlflow.db').resolve()}?timeout=60"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI, else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):].split("?", 1)[0])


def resolve_tracking_uri(uri: str | None = None) -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def setup_tracking(tracking_uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT) -> str:
    """Point MLflow at the store (made if new) and make sure the experiment exists; returns its id."""
    import mlflow

    _, uri = open_store(tracking_uri, create=True)
    db = sqlite_path(uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        mlflow.set_experiment(experiment_id=found.experiment_id)
        return found.experiment_id
    artifact_location = None
    if db is not None:  # artifacts beside the database file, e.g. mlruns/artifacts
        artifact_location = (db.parent / "artifacts").resolve().as_uri()
    try:
        experiment_id = mlflow.create_experiment(experiment, artifact_location=artifact_location)
    except mlflow.exceptions.MlflowException:
        # another worker created it between our lookup and our create
        experiment_id = mlflow.get_experiment_by_name(experiment).experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def system_metrics_available() -> bool:
    """MLflow samples CPU, memory, disk and network (and NVIDIA GPUs with nvidia-ml-py) only with psutil."""
    import importlib.util
    import logging

    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # no start/stop lines per run
    return importlib.util.find_spec("psutil") is not None


def git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment_tags(device: str, precision: str) -> dict[str, str]:
    """Library versions, machine and code version: what it takes to reproduce a run."""
    import mlflow
    import numpy
    import sklearn
    import torch
    import torchvision

    tags = {
        DEVICE_TAG: device,
        PRECISION_TAG: precision,
        TORCH_THREADS_TAG: str(torch.get_num_threads()),
        "version.python": platform.python_version(),
        "version.torch": torch.__version__,
        "version.torchvision": torchvision.__version__,
        "version.mlflow": mlflow.__version__,
        "version.numpy": numpy.__version__,
        "version.sklearn": sklearn.__version__,
        "host.machine": platform.machine(),
        "host.cpu_count": str(os.cpu_count()),
    }
    commit = git_commit()
    if commit:
        tags[GIT_COMMIT_TAG] = commit
    return tags


class MetricBuffer:
    """Collects metrics in memory and writes them to MLflow in batches.

    One SQLite write per batch instead of per value keeps tracking off the training hot path.
    """

    def __init__(self, run_id: str, flush_every: int = 200):
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient()
        self.run_id = run_id
        self.flush_every = flush_every
        self.pending = []
        self.history: dict[str, list[tuple[int, float]]] = {}

    def log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for key, value in metrics.items():
            value = float(value)
            self.history.setdefault(key, []).append((step, value))
            self.pending.append(Metric(key, value, now, step))
        if len(self.pending) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        try:
            for i in range(0, len(self.pending), 1000):  # MLflow's per-batch limit
                self.client.log_batch(self.run_id, metrics=self.pending[i : i + 1000])
            self.pending = []
        except Exception as err:  # noqa: BLE001 - a tracking hiccup must not kill a training run
            warnings.warn(f"MLflow metric logging failed, will retry: {err}", stacklevel=2)
