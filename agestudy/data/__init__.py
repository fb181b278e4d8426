"""Data layer: the lab's folders -> validated, decoded-once uint8 tensors.

    data = load_data("path/to/cacd")        # train/{0,1} and test/{0,1}
    data.train.images                       # N x 3 x 100 x 100 uint8 tensor
    train, val = data.train.split(0.1, seed=0)
    fit, held_out = data.train.fold(folds=5, fold=2, repeat=0, seed=0)   # cross-validation
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from agestudy.data.augment import AugmentConfig, augment_batch, center_crop, to_model_input
from agestudy.data.cache import DecodedSplit, decode_split, default_cache_dir
from agestudy.data.folders import LABEL_NAMES, list_split, unknown_root_entries
from agestudy.errors import UserError

__all__ = [
    "AugmentConfig", "ImageSet", "LabData", "LABEL_NAMES", "augment_batch", "center_crop",
    "load_data", "load_split", "resolve_data_root", "stratified_folds", "stratified_split", "to_model_input",
]


@dataclass
class ImageSet:
    """A set of decoded images with labels; slicing keeps file names aligned."""

    images: torch.Tensor  # N x 3 x 100 x 100 uint8
    labels: torch.Tensor  # N int64
    files: list[str]  # relative to the data root

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index) -> ImageSet:
        index = torch.as_tensor(index, dtype=torch.long)
        return ImageSet(self.images[index], self.labels[index], [self.files[i] for i in index.tolist()])

    def class_counts(self) -> dict[int, int]:
        return {label: int((self.labels == label).sum()) for label in (0, 1)}

    def split(self, val_fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
        train_idx, val_idx = stratified_split(self.labels.numpy(), val_fraction, seed)
        return self.subset(train_idx), self.subset(val_idx)

    def fold(self, folds: int, fold: int, repeat: int, seed: int) -> tuple[ImageSet, ImageSet]:
        """(fit, held-out) of fold ``fold`` of repeat ``repeat`` of a repeated stratified k-fold split."""
        fit_idx, held_idx = stratified_folds(self.labels.numpy(), folds, seed + repeat)[fold]
        return self.subset(fit_idx), self.subset(held_idx)


@dataclass
class SplitReport:
    """What loading a split found: counts shown to the user and logged with the run."""

    split: str
    fingerprint: str
    n_images: int
    n_skipped: int
    n_converted: int
    from_cache: bool
    skipped_examples: list[str] = field(default_factory=list)

    def line(self) -> str:
        text = f"{self.split}: {self.n_images} images"
        if self.n_skipped:
            text += f", {self.n_skipped} unreadable file(s) skipped (e.g. {', '.join(self.skipped_examples[:3])})"
        if self.n_converted:
            text += f", {self.n_converted} converted to RGB 100x100"
        return text + (" [cache]" if self.from_cache else "")


@dataclass
class LabData:
    root: Path
    train: ImageSet
    test: ImageSet
    reports: dict[str, SplitReport]
    ignored: list[str]
    synthetic: bool

    @property
    def fingerprint(self) -> str:
        return "-".join(self.reports[s].fingerprint for s in ("train", "test"))


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified split: the same fraction of each class goes to validation."""
    if not 0 <= val_fraction < 1:
        raise UserError(f"validation fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    train_idx, val_idx = [], []
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        rng.shuffle(idx)
        n_val = int(round(len(idx) * val_fraction))
        val_idx.append(idx[:n_val])
        train_idx.append(idx[n_val:])
    return np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(val_idx))


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k-fold cross-validation, deterministic for a seed: ``folds`` (fit, held-out) index
    pairs whose held-out parts are disjoint, cover every image exactly once and keep the class
    proportions. A repeated k-fold uses one seed per repeat (seed + repeat)."""
    from sklearn.model_selection import StratifiedKFold

    if folds < 2:
        raise UserError(f"cross-validation needs at least 2 folds, got {folds}")
    smallest = min(np.bincount(labels, minlength=2)) if len(labels) else 0
    if folds > smallest:
        raise UserError(f"{folds}-fold cross-validation needs at least {folds} images of each class in train/; "
                        f"the smallest class has {smallest}")
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [(np.sort(fit), np.sort(held)) for fit, held in splitter.split(np.zeros(len(labels)), labels)]


def load_split(root, split: str, cache_dir=None, progress: bool = True) -> tuple[ImageSet, SplitReport, list[str]]:
    listing = list_split(root, split)
    decoded: DecodedSplit = decode_split(listing, cache_dir, progress=progress)
    if len(decoded.labels) == 0 or len(np.unique(decoded.labels)) < 2:
        raise UserError(f"{listing.root / split}: after skipping unreadable files a class has no images")
    images = ImageSet(torch.from_numpy(decoded.images), torch.from_numpy(decoded.labels), decoded.files)
    report = SplitReport(split, decoded.fingerprint, len(decoded.labels), len(decoded.skipped), decoded.n_converted,
                         decoded.from_cache, decoded.skipped[:5])
    return images, report, listing.ignored


def load_data(root, cache_dir=None, progress: bool = True, verbose: bool = True) -> LabData:
    """Load ROOT/train and ROOT/test, printing what was skipped, converted or ignored."""
    from agestudy.data.folders import check_root
    from agestudy.data.synthetic import is_synthetic

    root = check_root(root)
    ignored = [f"{name}/" for name in unknown_root_entries(root)]
    train, train_report, ignored_train = load_split(root, "train", cache_dir, progress)
    test, test_report, ignored_test = load_split(root, "test", cache_dir, progress)
    ignored += ignored_train + ignored_test
    data = LabData(root, train, test, {"train": train_report, "test": test_report}, ignored, is_synthetic(root))
    if verbose:
        out = sys.stderr
        for report in data.reports.values():
            print(f"[data] {report.line()}", file=out)
        if ignored:
            shown = ", ".join(ignored[:8]) + (f" ... (+{len(ignored) - 8})" if len(ignored) > 8 else "")
            print(f"[data] ignored {len(ignored)} unknown entr{'y' if len(ignored) == 1 else 'ies'}: {shown}", file=out)
        if data.synthetic:
            print("[data] *** SYNTHETIC demo data: drawn faces, not real people; numbers say nothing about CACD ***",
                  file=out)
    return data


def resolve_data_root(data: str | None, cache_dir=None) -> Path:
    """--data, else $AGESTUDY_DATA, else ./data, else the built-in synthetic demo data (made on first use)."""
    if data:
        return Path(data)
    env = os.environ.get("AGESTUDY_DATA")
    if env:
        return Path(env)
    local = Path("data")
    if (local / "train").is_dir() and (local / "test").is_dir():
        return local
    from agestudy.data.synthetic import DEMO_PER_CLASS, DEMO_SEED, generate

    demo = Path(cache_dir or default_cache_dir()) / f"synthetic-demo-{DEMO_PER_CLASS}-{DEMO_SEED}"
    if not (demo / "SYNTHETIC.txt").exists():
        print(f"[data] no data given (--data, AGESTUDY_DATA or ./data): drawing the SYNTHETIC demo data in {demo}",
              file=sys.stderr)
        generate(demo, per_class=DEMO_PER_CLASS, seed=DEMO_SEED)
    else:
        print(f"[data] no data given: using the SYNTHETIC demo data in {demo}", file=sys.stderr)
    return demo
