"""Read the lab's folder layout: ROOT/{train,test}/{0,1}/images.

Label 0 = aged 20-26, label 1 = aged 52-62. Layout mistakes raise UserError
(one line, exit 2); stray folders and files are listed and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from agestudy.errors import UserError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
LABELS = (0, 1)
SPLITS = ("train", "test")
LABEL_NAMES = {0: "aged 20-26", 1: "aged 52-62"}


@dataclass
class SplitListing:
    """The image files of one split, sorted, with what was ignored on the way."""

    root: Path
    split: str
    files: list[Path]  # absolute paths
    labels: list[int]
    ignored: list[str] = field(default_factory=list)  # stray folders / non-image files


def check_root(root: str | Path) -> Path:
    root = Path(root).expanduser()
    if not root.exists():
        raise UserError(f"data folder not found: {root}")
    if not root.is_dir():
        raise UserError(f"data path is not a folder: {root}")
    return root.resolve()


def list_split(root: str | Path, split: str) -> SplitListing:
    """List ROOT/split/{0,1}; raise UserError for a missing folder or an empty class."""
    root = check_root(root)
    split_dir = root / split
    if not split_dir.is_dir():
        raise UserError(
            f"missing split folder {split_dir} (expected {root}/train/{{0,1}} and {root}/test/{{0,1}})"
        )
    ignored = sorted(
        f"{split}/{p.name}" for p in split_dir.iterdir() if p.name not in {"0", "1"} and not p.name.startswith(".")
    )
    files, labels = [], []
    for label in LABELS:
        label_dir = split_dir / str(label)
        if not label_dir.is_dir():
            raise UserError(f"missing label folder {label_dir} ({LABEL_NAMES[label]})")
        found = 0
        for path in sorted(label_dir.iterdir()):
            if path.name.startswith("."):
                continue
            if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
                files.append(path)
                labels.append(label)
                found += 1
            else:
                ignored.append(f"{split}/{label}/{path.name}")
        if found == 0:
            raise UserError(f"no images in {label_dir} (class {label}, {LABEL_NAMES[label]})")
    return SplitListing(root=root, split=split, files=files, labels=labels, ignored=ignored)


def unknown_root_entries(root: Path) -> list[str]:
    """Folders beside train/ and test/ that the layout does not know."""
    return sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in SPLITS and not p.name.startswith("."))
