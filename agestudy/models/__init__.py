"""Model factory: ``create_model(name, **knobs)``.

    baseline  the lab's plain conv/pool/linear CNN (question 1 describes it)
    efficient a residual CNN with width/depth/dropout knobs, fast on a CPU
    resnet18  torchvision's ResNet-18 from scratch (weights only from a local file)

``baseline`` and ``efficient`` with ``members=N > 1`` are ensembles of N independently
initialised copies packed into one network (grouped layers, see ``members.py``);
``split_members`` takes such a network apart into N ordinary ones.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from torch import nn

from agestudy.errors import UserError
from agestudy.models.baseline import BaselineCNN
from agestudy.models.efficient import STEM_STRIDES, EfficientCNN
from agestudy.models.members import MemberNetwork, pack_members, split_members

__all__ = ["MODELS", "STEM_STRIDES", "count_parameters", "create_model", "model_knobs", "n_members", "pack_members",
           "split_members", "supports_members"]


def _resnet18(num_classes: int = 2, dropout: float = 0.0, weights_path: str | None = None) -> nn.Module:
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=1000 if weights_path else num_classes)
    if weights_path:  # e.g. ImageNet weights someone copied here: never downloaded
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise UserError(f"pretrained weights not found: {path}")
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(model.fc.in_features, num_classes))
    return model


MODELS = {
    "baseline": BaselineCNN,
    "efficient": EfficientCNN,
    "resnet18": _resnet18,
}


def model_knobs(name: str) -> list[str]:
    """The keyword arguments a model accepts (besides num_classes)."""
    params = inspect.signature(MODELS[name]).parameters
    return [p for p in params if p != "num_classes"] + (["members"] if "members" not in params else [])


def create_model(name: str, members: int = 1, **knobs) -> nn.Module:
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    allowed = set(model_knobs(name))
    unknown = set(knobs) - allowed
    if unknown:
        raise UserError(f"model {name!r} has no option(s) {sorted(unknown)}; it takes {sorted(allowed)}")
    if members < 1:
        raise UserError("members must be >= 1")
    if members == 1:
        return MODELS[name](**knobs)
    if not supports_members(name):
        raise UserError(f"model {name!r} cannot be an ensemble (--members > 1): use baseline or efficient")
    return MODELS[name](members=members, **knobs)


def supports_members(name: str) -> bool:
    return isinstance(MODELS[name], type) and issubclass(MODELS[name], MemberNetwork)


def n_members(model: nn.Module) -> int:
    return getattr(model, "members", 1)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
