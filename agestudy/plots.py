"""Figures: matplotlib on its file-only backend (set here, once), save-and-close, and one gallery.

    from agestudy.plots import gallery, plt, save
    fig, ax = plt.subplots(); ...; save(fig, path)

Every module that draws imports ``plt`` from here, so the backend is chosen in one place:
Agg writes files and never opens a window, which keeps worker processes and headless
machines safe.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

plt.switch_backend("Agg")

__all__ = ["DPI", "gallery", "image_rows", "plt", "save"]

DPI = 110


def save(fig, path, dpi: int = DPI) -> Path:
    """Save ``fig`` as PNG to ``path`` (folders created) and always close it."""
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return out


def gallery(images, captions: Sequence[str], path, ncols: int = 8,
                 title: str | None = None) -> Path:
    """Grid of RGB images (uint8, N x 3 x H x W) with a small caption under each.

    N = 0 writes a small figure saying "no images". The last row may be
    partially filled; at most ``ncols`` columns are used.
    """
    imgs = np.asarray(images)
    n = 0 if imgs.size == 0 else imgs.shape[0]
    if len(captions) != n:
        raise ValueError(f"{n} images but {len(captions)} captions")
    if int(ncols) != ncols or ncols < 1:
        raise ValueError(f"ncols must be a positive integer, got {ncols!r}")
    ncols = int(ncols)

    if n == 0:
        fig, ax = plt.subplots(figsize=(4, 2))
        ax.text(0.5, 0.5, "no images", ha="center", va="center", fontsize=14)
        ax.set_axis_off()
        if title:
            ax.set_title(title)
        return save(fig, path)

    if imgs.ndim != 4 or imgs.shape[1] != 3:
        raise ValueError(f"images must be N x 3 x H x W, got shape {imgs.shape}")
    if imgs.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {imgs.dtype}")

    cols = min(ncols, n)
    rows = math.ceil(n / cols)
    cell = 1.15  # inches per image (~125 px at the saved dpi, near 100 px crops)
    cap_h = 0.3  # room for the caption
    top = 0.5 if title else 0.1
    fig_w = cols * cell
    fig_h = rows * (cell + cap_h) + top
    fig, axes = plt.subplots(rows, cols, figsize=(fig_w, fig_h), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k >= n:
            continue
        ax.imshow(np.transpose(imgs[k], (1, 2, 0)), interpolation="nearest")
        ax.text(0.5, -0.03, str(captions[k]), transform=ax.transAxes,
                ha="center", va="top", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=cap_h / fig_h,
                        top=1 - top / fig_h, wspace=0.05,
                        hspace=cap_h / cell + 0.05)
    return save(fig, path)


def image_rows(rows, path, title: str, cell: float = 0.85, dpi: int = 140) -> Path:
    """Rows of images of the same faces, one labelled row per stage (the CycleGAN's grids).

    ``rows``: (images, label, captions or None); images are N x 3 x H x W in [-1, 1], or
    N x H x W change maps (mean |difference| in [-1, 1] units, drawn as a heat map).
    """
    n = len(rows[0][0])
    fig, axes = plt.subplots(len(rows), n, figsize=(cell * n + 0.9, (cell + 0.1) * len(rows)), squeeze=False,
                             layout="constrained")
    for r, (images, label, captions) in enumerate(rows):
        images = images.detach().float().cpu()
        for c in range(n):
            ax = axes[r][c]
            if images.ndim == 3:
                ax.imshow((images[c] / 2).numpy(), cmap="magma", vmin=0, vmax=0.5)
            else:
                ax.imshow(((images[c].permute(1, 2, 0) + 1) / 2).clamp(0, 1).numpy())
            ax.set_xticks([]), ax.set_yticks([])
            if captions:
                ax.set_xlabel(captions[c], fontsize=7.5, labelpad=1)
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.suptitle(title, fontsize=8.5)
    return save(fig, path, dpi=dpi)
