"""Decode once: a whole split becomes one uint8 array (N x 3 x 100 x 100) cached on disk.

The cache key is a fingerprint of the file list (relative names, sizes, mtimes),
so editing, adding or removing any image decodes again; nothing else does.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import warnings
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from agestudy.data.folders import SplitListing

IMAGE_SIZE = 100
# Bump when decoding changes, so old caches are not reused.
DECODER_VERSION = 1


def default_cache_dir() -> Path:
    env = os.environ.get("AGESTUDY_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "agestudy"


def fingerprint(listing: SplitListing) -> str:
    """Hash of (relative path, label, size, mtime) of every file of the split."""
    h = hashlib.sha256(f"agestudy-decoder-{DECODER_VERSION}-{IMAGE_SIZE}".encode())
    for path, label in zip(listing.files, listing.labels):
        st = path.stat()
        rel = path.relative_to(listing.root).as_posix()
        h.update(f"{rel}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def decode_image(path: Path) -> tuple[np.ndarray | None, bool]:
    """Return (3 x 100 x 100 uint8 RGB array or None if unreadable, whether it was converted).

    Converted means: not already an upright 100x100 RGB image (grayscale, RGBA, CMYK,
    palette, another size, or an EXIF rotation were normalised).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. PIL's palette-transparency warning
            with Image.open(path) as im:
                im.load()  # a truncated file fails here, not later
                converted = False
                if im.getexif().get(0x0112, 1) != 1:  # EXIF orientation: rotate upright
                    im = ImageOps.exif_transpose(im)
                    converted = True
                if im.mode != "RGB":
                    im = im.convert("RGBA").convert("RGB") if im.mode in ("P", "PA", "LA") else im.convert("RGB")
                    converted = True
                if im.size != (IMAGE_SIZE, IMAGE_SIZE):
                    im = im.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR, reducing_gap=2.0)
                    converted = True
                arr = np.asarray(im, dtype=np.uint8)
    except Exception:  # noqa: BLE001 - any decoder failure means "unreadable", counted by the caller
        return None, False
    return np.ascontiguousarray(arr.transpose(2, 0, 1)), converted


DECODE_CHUNK = 256  # images per task: large enough that sending the pixels back is cheap


def decode_chunk(paths: list[Path]) -> tuple[np.ndarray, np.ndarray, int]:
    """Decode a list of images: (K x 3 x 100 x 100 uint8, which were readable, how many converted)."""
    arrays = np.zeros((len(paths), 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    ok = np.zeros(len(paths), dtype=bool)
    n_converted = 0
    for i, path in enumerate(paths):
        arr, converted = decode_image(path)
        if arr is not None:
            arrays[i], ok[i] = arr, True
            n_converted += converted
    return arrays, ok, n_converted


def _decode_pool(n_images: int):
    """Worker processes on every core for large splits (decoding holds Python's lock much of the
    time, so threads stay near one core); a thread for small ones, where starting processes costs
    more than it saves."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if cores == 1 or n_images < 4 * DECODE_CHUNK or "fork" not in multiprocessing.get_all_start_methods():
        return ThreadPoolExecutor(1)
    # fork, like PyTorch's DataLoader workers: the children only run PIL and numpy, and unlike
    # spawn/forkserver it never re-imports the caller's script (a notebook, a script without a
    # __main__ guard)
    warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
    return ProcessPoolExecutor(cores, mp_context=multiprocessing.get_context("fork"))


@dataclass
class DecodedSplit:
    images: np.ndarray  # N x 3 x 100 x 100 uint8
    labels: np.ndarray  # N int64
    files: list[str]  # relative to the data root
    fingerprint: str
    n_listed: int
    skipped: list[str] = field(default_factory=list)  # unreadable files, relative
    n_converted: int = 0
    from_cache: bool = False


def decode_split(listing: SplitListing, cache_dir: Path | None = None, progress: bool = True) -> DecodedSplit:
    """Decode every image of a split, or load the cached array if the fingerprint matches."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    key = fingerprint(listing)
    stem = cache_dir / f"{listing.split}-{key}"
    meta_path, array_path = stem.with_suffix(".json"), stem.with_suffix(".npy")
    if meta_path.exists() and array_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
            images = np.load(array_path)
            return DecodedSplit(
                images=images,
                labels=np.asarray(meta["labels"], dtype=np.int64),
                files=meta["files"],
                fingerprint=key,
                n_listed=meta["n_listed"],
                skipped=meta["skipped"],
                n_converted=meta["n_converted"],
                from_cache=True,
            )
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache entry is simply rebuilt

    images = np.empty((len(listing.files), 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    keep = np.zeros(len(listing.files), dtype=bool)
    n_converted = 0
    bar = tqdm(total=len(listing.files), desc=f"decoding {listing.split}", unit="img", disable=not progress,
               leave=False)
    chunks = [listing.files[i : i + DECODE_CHUNK] for i in range(0, len(listing.files), DECODE_CHUNK)]
    with _decode_pool(len(listing.files)) as pool:
        for c, (arrays, ok, converted) in enumerate(pool.map(decode_chunk, chunks)):
            lo = c * DECODE_CHUNK
            images[lo : lo + len(ok)] = arrays
            keep[lo : lo + len(ok)] = ok
            n_converted += converted
            bar.update(len(ok))
    bar.close()
    rel = [p.relative_to(listing.root).as_posix() for p in listing.files]
    skipped = [r for r, k in zip(rel, keep) if not k]
    decoded = DecodedSplit(
        images=images[keep] if not keep.all() else images,
        labels=np.asarray(listing.labels, dtype=np.int64)[keep],
        files=[r for r, k in zip(rel, keep) if k],
        fingerprint=key,
        n_listed=len(listing.files),
        skipped=skipped,
        n_converted=n_converted,
    )
    _write_cache(decoded, meta_path, array_path)
    return decoded


def _write_cache(decoded: DecodedSplit, meta_path: Path, array_path: Path) -> None:
    """Write atomically (temp file + rename): a crash never leaves a half cache."""
    try:
        meta_path.parent.mkdir(parents=True, exist_ok=True)
        tmp_array = array_path.with_suffix(f".tmp{os.getpid()}.npy")
        np.save(tmp_array, decoded.images)
        os.replace(tmp_array, array_path)
        meta = {
            "labels": decoded.labels.tolist(),
            "files": decoded.files,
            "n_listed": decoded.n_listed,
            "skipped": decoded.skipped,
            "n_converted": decoded.n_converted,
        }
        tmp_meta = meta_path.with_suffix(f".tmp{os.getpid()}.json")
        tmp_meta.write_text(json.dumps(meta))
        os.replace(tmp_meta, meta_path)
    except OSError as err:  # a read-only cache dir costs speed, not correctness
        warnings.warn(f"could not write the decode cache in {meta_path.parent}: {err}", stacklevel=2)
