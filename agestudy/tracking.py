"""MLflow plumbing: where runs go, what every run records, and cheap metric logging.

Default store: SQLite at ``mlruns/mlflow.db`` with artifacts under ``mlruns/artifacts``
(MLflow 3 deprecates the plain file store). ``--tracking-uri`` or ``MLFLOW_TRACKING_URI``
points elsewhere: an ``http://`` tracking server, or ``postgresql://...``. The names runs
carry (tags, roles, artifact paths) and how they are found again live in agestudy/runs.py.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import time
import warnings
from pathlib import Path

from agestudy.runs import DEVICE_TAG, GIT_COMMIT_TAG, PRECISION_TAG, TORCH_THREADS_TAG, open_store, redact_uri

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


def shown_store(uri: str | None = None) -> str:
    """The store a CLI names in its last lines: ``--tracking-uri``'s value or default, password hidden."""
    return redact_uri(resolve_tracking_uri(uri))


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


# ----------------------------------------------------------------------------- datasets and models

def log_splits(data, fitted, validation=None, test: bool = True) -> None:
    """Record the run's data as MLflow dataset inputs (the runs table's Dataset column): the images it
    fitted, its validation split and, unless it never looked at it (a trial), test/. Each input names
    its folder, counts its images per class and says whether the data are synthetic."""
    import json
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    class SplitDataset(MetaDataset):  # a split by reference: its folder, digest and class counts
        def __init__(self, source, name: str, digest: str, profile: dict):
            self._profile = profile
            super().__init__(source=source, name=name, digest=digest)

        @property
        def profile(self):
            return self._profile

        def to_dict(self) -> dict[str, str]:
            return {**super().to_dict(), "profile": json.dumps(self._profile)}

    splits = [("train", fitted, "train"), ("validation", validation, "train")]
    if test:
        splits.append(("test", data.test, "test"))
    for context, images, folder in splits:
        if images is None:
            continue
        with warnings.catch_warnings():  # "can be interpreted in multiple ways": a local folder either way
            warnings.simplefilter("ignore")
            source = resolve_dataset_source(str(Path(data.root) / folder))
        counts = images.class_counts()
        dataset = SplitDataset(source=source, name=f"{Path(data.root).name}/{context}",
                               digest=_digest(data.fingerprint, context, len(images)),
                               profile={"images": len(images), "label_0": counts[0], "label_1": counts[1]})
        log_input(dataset, context=context, tags={"fingerprint": data.fingerprint,
                                                  "synthetic": str(data.synthetic).lower()})


def log_input(dataset, **kwargs) -> None:
    """mlflow.log_input, tried again once when another process inserted the same dataset between
    MLflow's check for it and its own insert (two study workers starting their first trials
    together: the store refuses the second copy, and the trial failed). The second try finds the
    dataset and links this run to it."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        mlflow.log_input(dataset, **kwargs)
    except MlflowException as err:
        # SQLite: "UNIQUE constraint failed"; PostgreSQL: "violates unique constraint"
        if "unique constraint" not in str(err).lower():
            raise
        mlflow.log_input(dataset, **kwargs)


def _digest(fingerprint: str, context: str, n: int) -> str:
    import hashlib

    return hashlib.sha256(f"{fingerprint}/{context}/{n}".encode()).hexdigest()[:12]


@contextlib.contextmanager
def environment(**variables: str):
    """Set environment variables for the duration of a ``with`` block, then restore them."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def log_classifier(model, aug, register: bool = False, description: str = "") -> str | None:
    """Log the trained network as an MLflow model (mlflow.pytorch, wrapped as agestudy.predict.AgeClassifier:
    uint8 images N x 3 x 100 x 100 in, P(aged 52-62) out, with signature and input example), and with
    ``register`` make it a new version of the registered model, aliased BEST_ALIAS, described by
    ``description`` (the run's). Returns the version, or None when not registered.

    Saved as "pt2" (torch.export: a traced graph, batch size free), so loading it runs no pickled code
    and needs neither agestudy nor its classes: torch and MLflow are enough.
    """
    import copy
    import warnings

    import mlflow
    import numpy as np
    import torch
    from mlflow.models import infer_signature

    from agestudy.predict import AgeClassifier
    from agestudy.runs import BEST_ALIAS, LOGGED_MODEL_NAME, REGISTERED_MODEL, REGISTERED_MODEL_DESCRIPTION

    served = AgeClassifier(copy.deepcopy(model).float().cpu(), aug).eval()
    example = np.random.default_rng(0).integers(0, 256, (2, 3, 100, 100), dtype=np.uint8)  # no real face
    with torch.no_grad():
        output = served(torch.from_numpy(example)).numpy()
    # MLflow checks the input example by loading the saved model on its default device, a GPU where there
    # is one, but a torch.export program stays on the device it was saved from (the CPU): ask for the CPU
    with warnings.catch_warnings(), environment(MLFLOW_DEFAULT_PREDICTION_DEVICE="cpu"):
        warnings.simplefilter("ignore", UserWarning)  # torch.export's notes on CPU weights: ours are on the CPU
        info = mlflow.pytorch.log_model(
            served, name=LOGGED_MODEL_NAME, signature=infer_signature(example, output), input_example=example,
            serialization_format="pt2",
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "numpy"],  # no slow inference of them
            registered_model_name=REGISTERED_MODEL if register else None)
    if not register:
        return None
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(REGISTERED_MODEL, BEST_ALIAS, version)
    client.update_registered_model(REGISTERED_MODEL, description=REGISTERED_MODEL_DESCRIPTION)
    if description:
        client.update_model_version(REGISTERED_MODEL, version, description=description)
    return version
