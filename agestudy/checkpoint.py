"""The saved-model format: ``model/state_dict.pt`` (tensors only) + ``model/config.json``.

    save_model(model, cfg, out_dir)        # writes out_dir/model/...
    model, cfg = load_model(model_dir)     # rebuilds it, loading with weights_only=True
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, fields
from pathlib import Path

import torch

from agestudy.config import TrainConfig
from agestudy.models import create_model
from agestudy.models.members import pack_states
from agestudy.runs import CONFIG_FILE, MODEL_DIR, WEIGHTS_FILE  # the run contract names the files

# Options added after the first runs were logged, with the value those runs implicitly had.
EARLIER_DEFAULTS = {"members": 1, "eval_flip": False, "stem_stride": 4, "scale": 0.0, "rotate": 0.0}


def save_model(model: torch.nn.Module, cfg: TrainConfig, out_dir: Path) -> Path:
    model_dir = Path(out_dir) / MODEL_DIR
    model_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, model_dir / WEIGHTS_FILE)
    (model_dir / CONFIG_FILE).write_text(json.dumps(asdict(cfg), indent=2))
    return model_dir


def load_config(model_dir: str | Path) -> TrainConfig:
    saved = json.loads((Path(model_dir) / CONFIG_FILE).read_text())
    known = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{**EARLIER_DEFAULTS, **{k: v for k, v in saved.items() if k in known}})


def load_model(model_dir: str | Path) -> tuple[torch.nn.Module, TrainConfig]:
    """Rebuild a logged model from its config and state dict (tensors only: weights_only=True)."""
    model_dir = Path(model_dir)
    cfg = load_config(model_dir)
    model = create_model(cfg.model, **cfg.model_kwargs())
    state = torch.load(model_dir / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(_from_member_list(state))
    return model.eval(), cfg


def _from_member_list(state: dict) -> dict:
    """Ensembles saved before members were packed into one network ("members.K.<name>")."""
    if not state or not all(k.startswith("members.") for k in state):
        return state
    per_member: dict[int, dict] = {}
    for key, value in state.items():
        k, name = re.match(r"members\.(\d+)\.(.+)", key).groups()
        per_member.setdefault(int(k), {})[name] = value
    return pack_states([per_member[k] for k in sorted(per_member)])
