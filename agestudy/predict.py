"""A model's predictions on uint8 images, through a named view: the one prediction path.

Training's validation and test measures, the analyses and the report's numbers all come from
here, so "centre crop" means the same crop everywhere. A view is a set of model inputs made
from each image; its prediction is the mean of their softmax probabilities:

    centre          the centre crop of the training crop size (the lab's evaluation)
    centre+mirror   the centre crop and its mirror image (what a run with eval_flip measures)
    five            the four corner crops and the centre crop
    ten             the five crops and their mirror images
    crops(N)        N random crops drawn as in training (crop, padding, flip, zoom, rotation;
                    no colour jitter), from a generator seeded with ``seed``

    p1 = predict_proba(model, test.images, evaluation_view(cfg.augment()), cfg.augment(), device)
"""

from __future__ import annotations

import re

import torch

from agestudy import device as devices
from agestudy.data.augment import AugmentConfig, augment_batch, to_model_input

FIXED_VIEWS = ("centre", "centre+mirror", "five", "ten")
_RANDOM_VIEW = re.compile(r"crops\((\d+)\)")


def evaluation_view(aug: AugmentConfig) -> str:
    """The view a run's own validation and test measures use."""
    return "centre+mirror" if aug.eval_flip else "centre"


def view_size(view: str) -> int:
    """How many inputs the view makes of each image (raises ValueError for an unknown view)."""
    sizes = {"centre": 1, "centre+mirror": 2, "five": 5, "ten": 10}
    if view in sizes:
        return sizes[view]
    match = _RANDOM_VIEW.fullmatch(view)
    if match and int(match.group(1)) >= 1:
        return int(match.group(1))
    raise ValueError(f"unknown view {view!r}: use one of {', '.join(FIXED_VIEWS)} or crops(N)")


def crop_positions(view: str, size: int, crop: int) -> list[tuple[int, int, bool]]:
    """(top, left, mirrored) of each input of a fixed view, for ``size`` x ``size`` images."""
    far, mid = size - crop, (size - crop) // 2
    if far < 0:
        raise ValueError(f"crop {crop} is larger than the images ({size}x{size})")
    five = [(0, 0), (0, far), (far, 0), (far, far), (mid, mid)]
    positions = {"centre": [(mid, mid, False)], "centre+mirror": [(mid, mid, False), (mid, mid, True)],
                 "five": [(t, left, False) for t, left in five],
                 "ten": [(t, left, False) for t, left in five] + [(t, left, True) for t, left in five]}
    return positions[view]


def model_inputs(images: torch.Tensor, view: str, aug: AugmentConfig,
                 generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """The normalised inputs (one B x 3 x crop x crop tensor per input of the view) of a uint8 batch,
    made on the batch's device; ``crops(N)`` draws from ``generator``, which lives there too."""
    n = view_size(view)
    if view not in FIXED_VIEWS:
        return [augment_batch(images, aug.geometric(), generator) for _ in range(n)]
    return [fixed_input(images, position, aug.crop) for position in crop_positions(view, images.shape[-1], aug.crop)]


def fixed_input(images: torch.Tensor, position: tuple[int, int, bool], crop: int) -> torch.Tensor:
    """The normalised input of one (top, left, mirrored) crop of a uint8 batch."""
    top, left, mirrored = position
    x = images[..., top : top + crop, left : left + crop]
    return to_model_input(x.flip(-1) if mirrored else x)


@torch.no_grad()
def predict_logits(model, images: torch.Tensor, view: str, aug: AugmentConfig, device="cpu",
                   precision: str = "fp32", batch_size: int = 256, seed: int = 0) -> torch.Tensor:
    """Logits (V x N x 2, float32, on the CPU) of N uint8 images, one row per input of the view.

    Images are cropped where they are (on the training device when the data lives there) and
    moved batch by batch; ``crops(N)`` draws input by input, batch by batch, from one generator
    seeded with ``seed``, so the same call gives the same crops.
    """
    device = torch.device(device)
    n_inputs = view_size(view)
    positions = crop_positions(view, images.shape[-1], aug.crop) if view in FIXED_VIEWS else None
    generator = None if positions else torch.Generator(device=images.device).manual_seed(seed)
    was_training = model.training
    model.eval()
    rows = []
    # input by input, then batch by batch: crops(N)'s k-th draw does not depend on the batch size
    for k in range(n_inputs):
        row = []
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            if positions:  # only the k-th input: making all of them for each k would repeat the work V times
                x = fixed_input(batch, positions[k], aug.crop)
            else:
                x = model_inputs(batch, "crops(1)", aug, generator)[0]
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            with devices.autocast(device, precision):
                row.append(model(x).float().cpu())
        rows.append(torch.cat(row) if row else torch.empty(0, 2))
    model.train(was_training)
    return torch.stack(rows)


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """P(label 1) of each input (V x N, float64) from predict_logits' output."""
    return torch.softmax(logits.double(), dim=-1)[..., 1]


def predict_proba(model, images: torch.Tensor, view: str, aug: AugmentConfig, device="cpu",
                  precision: str = "fp32", batch_size: int = 256, seed: int = 0) -> torch.Tensor:
    """P(label 1) of each image (N, float64, CPU): the mean of the view's softmax probabilities."""
    logits = predict_logits(model, images, view, aug, device, precision, batch_size, seed)
    return probabilities(logits).mean(0)


class AgeClassifier(torch.nn.Module):
    """A trained network as one self-contained predictor, what the registered MLflow model serves:
    uint8 RGB images N x 3 x 100 x 100 -> P(aged 52-62) for each (N, float32), through the run's own
    evaluation view. Called directly (not through the exported MLflow model) it also takes
    N x 100 x 100 x 3, as image libraries give them."""

    def __init__(self, model: torch.nn.Module, aug: AugmentConfig):
        super().__init__()
        self.model = model.eval()
        self.aug = aug
        self.view = evaluation_view(aug)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or 3 not in (images.shape[1], images.shape[-1]):
            raise ValueError(f"expected N x 3 x H x W or N x H x W x 3 images, got shape {tuple(images.shape)}")
        if images.shape[1] != 3:
            images = images.permute(0, 3, 1, 2)
        if images.dtype != torch.uint8:  # 0-255 values in another type: the training images' scale
            images = images.round().clamp(0, 255).to(torch.uint8)
        inputs = model_inputs(images.contiguous(), self.view, self.aug)
        probs = [torch.softmax(self.model(x.contiguous(memory_format=torch.channels_last)).float(), dim=1)[:, 1]
                 for x in inputs]
        return torch.stack(probs).mean(0)
