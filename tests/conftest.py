"""Shared fixtures: every test makes its own small data; nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def write_image(path: Path, seed: int, size=(100, 100), mode="RGB", fmt=None) -> Path:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    im = Image.fromarray(arr, "RGB")
    if mode != "RGB":
        im = im.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, format=fmt)
    return path


def make_lab_tree(root: Path, per_class: int = 4, test_per_class: int = 2) -> Path:
    """ROOT/{train,test}/{0,1}/*.png with random pixels."""
    seed = 0
    for split, n in (("train", per_class), ("test", test_per_class)):
        for label in (0, 1):
            for i in range(n):
                seed += 1
                write_image(root / split / str(label) / f"img_{i:03d}.png", seed)
    return root


def rendered_text(client, experiment: str, run_id: str, out: Path) -> dict[str, str]:
    """The report's HTML (no PDF) for one run, as plain text with single spaces, in each language."""
    import html as htmllib
    import re

    from agestudy.report import read_report, render_html

    texts = {}
    for lang in ("en", "fr"):
        data = read_report(client, experiment, out, out / "assets", lang, run_id=run_id)
        text = htmllib.unescape(re.sub(r"<[^>]+>", "", render_html(data, lang)))
        texts[lang] = re.sub(r"\s+", " ", text.replace("\u00a0", " ").replace("\u202f", " "))
    return texts


@pytest.fixture
def lab_tree(tmp_path) -> Path:
    return make_lab_tree(tmp_path / "lab")


@pytest.fixture
def cache_dir(tmp_path) -> Path:
    return tmp_path / "cache"


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A small synthetic data set in the lab layout, drawn once per test session."""
    from agestudy.data.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic") / "demo"
    generate(root, per_class=60, seed=0)
    return root


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    """A fresh MLflow SQLite store for one test; returns its URI."""
    from agestudy.tracking import setup_tracking

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    setup_tracking(uri, "test")
    return uri


@pytest.fixture
def shared_faces() -> Path:
    root = SHARED_DATA / "faces-dev"
    if not (root / "train").is_dir():
        pytest.skip("../shared/data/faces-dev is absent (real faces are only on the developers' machines)")
    return root
