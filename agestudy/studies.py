"""Optuna studies as data: a TOML file names the search space, sampler, pruner, objective and budget.

    [study]    name, objective, n_trials, timeout (s), description, and for a cross-validated
               objective folds = 5 (2-10) and repeats = 1 (1-5)
    [sampler]  type = "tpe" | "random" | "grid", seed, n_startup_trials
               ("grid": every combination of the categorical choices, once each)
    [pruner]   type = "median" | "hyperband" | "none", and its options
    [fixed]    training options every trial shares (any TrainConfig field)
    [space.X]  one entry per searched TrainConfig field X:
                 {type = "float", low, high, log = false}
                 {type = "int", low, high, step = 1, log = false}
                 {type = "categorical", choices = [...]}
    [variants.NAME]
               named configurations to compare, each a table of training options that
               override [fixed] (e.g. [variants.ema] ema = 0.998): the study searches one
               categorical "variant" over their names (with the grid sampler: each once)
    [refit]    training options for the final retraining on all of train/ (default: none changed)

Objectives: "val_acc" / "val_auc" judge a trial by one model trained on train/ less a
validation split (val_fraction, 10 % by default) and scored on it: cheap, but a few hundred
images decide. "cv_accuracy" / "cv_auc" judge it by repeated stratified k-fold cross-validation
of train/: the trial trains one model per fold (folds x repeats models, each fitting
(folds-1)/folds of train/ and scored on the rest; folds drawn by TrainConfig.fold, the same for
every trial of a seed) and its value is the mean of the folds' final validation accuracy (or
ROC AUC), their spread logged beside it. The pruner then counts folds: it sees the running mean
after each fold (n_warmup_steps, min_resource are in folds). test/ is never used to choose.

Everything is checked before any training starts: unknown keys, unknown fields, bad ranges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import tomllib

from agestudy.config import TrainConfig
from agestudy.errors import UserError
from agestudy.resources import resource_dir

STUDIES_DIR = resource_dir("studies")  # studies/ of the source tree, or the installed copy
OBJECTIVES = {"val_acc": "validation accuracy", "val_auc": "validation ROC AUC",
              "cv_accuracy": "cross-validated accuracy", "cv_auc": "cross-validated ROC AUC"}
CV_OBJECTIVES = {"cv_accuracy", "cv_auc"}
FOLDS_RANGE, REPEATS_RANGE = (2, 10), (1, 5)  # [study] folds and repeats of a cross-validated objective
SAMPLERS = {"tpe", "random", "grid"}
PRUNERS = {"median", "hyperband", "none"}
TRAIN_FIELDS = {f.name: f for f in fields(TrainConfig)}
VARIANT = "variant"  # the searched name of a [variants.NAME] table
# Options that belong to the run, not to the search.
NOT_SEARCHABLE = {"device", "precision", "compile", "val_fraction", "evals_per_epoch", "log_every"}


@dataclass
class Param:
    name: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: int | None = None
    choices: list | None = None

    def suggest(self, trial):
        if self.type == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log)
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=self.step or 1, log=self.log)
        return trial.suggest_categorical(self.name, self.choices)


@dataclass
class StudySpec:
    name: str
    path: Path
    description: str = ""
    objective: str = "val_acc"
    n_trials: int = 10
    timeout: float | None = None
    sampler: dict = field(default_factory=lambda: {"type": "tpe", "seed": 0})
    pruner: dict = field(default_factory=lambda: {"type": "median"})
    fixed: dict = field(default_factory=dict)
    space: list[Param] = field(default_factory=list)
    refit: dict = field(default_factory=dict)
    folds: int = 5  # cross-validated objectives only
    repeats: int = 1
    variants: dict[str, dict] = field(default_factory=dict)  # [variants.NAME]: options over [fixed]

    @property
    def cv(self) -> bool:
        """Whether trials are judged by repeated stratified k-fold cross-validation of train/."""
        return self.objective in CV_OBJECTIVES

    def grid_size(self) -> int:
        """Configurations a grid sampler goes through: the product of the choices."""
        return math.prod(len(p.choices or ()) for p in self.space)

    def options(self, values: dict) -> dict:
        """Training options of a trial's searched ``values``: [fixed], then its variant's table, then
        the other searched values."""
        values = dict(values)
        variant = self.variants[values.pop(VARIANT)] if VARIANT in values else {}
        return {**self.fixed, **variant, **values}

    def trial_config(self, values: dict) -> TrainConfig:
        # a cross-validated trial's models each hold out one fold: val_fraction says how much (1/folds)
        held_out = {"val_fraction": 1 / self.folds} if self.cv else {}
        return TrainConfig(**{**self.options(values), **held_out})

    def refit_config(self, values: dict) -> TrainConfig:
        return TrainConfig(**{**self.options(values), **self.refit, "val_fraction": 0.0})


def _check_keys(section: str, table: dict, allowed: set[str], where: Path) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise UserError(f"{where}: unknown key(s) {unknown} in [{section}]; allowed: {sorted(allowed)}")


def _check_train_values(section: str, values: dict, where: Path) -> None:
    for key, value in values.items():
        if key not in TRAIN_FIELDS:
            raise UserError(f"{where}: [{section}] {key!r} is not a training option; known: {sorted(TRAIN_FIELDS)}")
        expected = TRAIN_FIELDS[key].type
        expected = expected if isinstance(expected, str) else expected.__name__
        ok = {"int": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              "bool": lambda v: isinstance(v, bool),
              "str": lambda v: isinstance(v, str)}[expected](value)
        if not ok:
            raise UserError(f"{where}: [{section}] {key} = {value!r} should be of type {expected}")


def _parse_param(name: str, table: dict, where: Path) -> Param:
    if name not in TRAIN_FIELDS or name in NOT_SEARCHABLE:
        raise UserError(f"{where}: [space.{name}] is not a searchable training option")
    kind = table.get("type")
    if kind == "categorical":
        _check_keys(f"space.{name}", table, {"type", "choices"}, where)
        choices = table.get("choices")
        if not isinstance(choices, list) or not choices:
            raise UserError(f"{where}: [space.{name}] needs a non-empty list of choices")
        for choice in choices:
            _check_train_values(f"space.{name}", {name: choice}, where)
        return Param(name, kind, choices=choices)
    if kind in ("float", "int"):
        _check_keys(f"space.{name}", table, {"type", "low", "high", "log", "step"}, where)
        low, high = table.get("low"), table.get("high")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
            raise UserError(f"{where}: [space.{name}] needs numeric low and high")
        if not low < high:
            raise UserError(f"{where}: [space.{name}] low ({low}) must be below high ({high})")
        log = bool(table.get("log", False))
        if log and low <= 0:
            raise UserError(f"{where}: [space.{name}] a log range needs low > 0")
        if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
            raise UserError(f"{where}: [space.{name}] an int range needs whole low and high")
        param = Param(name, kind, low=low, high=high, log=log, step=table.get("step"))
        # both ends must make a valid training configuration
        for end in (low, high):
            TrainConfig(**{name: int(end) if kind == "int" else float(end)})  # raises UserError if not
        return param
    raise UserError(f"{where}: [space.{name}] type must be float, int or categorical, not {kind!r}")


def resolve_study_path(study: str | None) -> Path:
    if not study:
        return STUDIES_DIR / "default.toml"
    path = Path(study)
    if not path.exists() and not path.suffix:
        path = STUDIES_DIR / f"{study}.toml"  # a bare name: one of the shipped studies
    if not path.is_file():
        shipped = ", ".join(sorted(p.stem for p in STUDIES_DIR.glob("*.toml")))
        raise UserError(f"study file not found: {study} (shipped studies: {shipped})")
    return path


def load_study(study: str | Path | None) -> StudySpec:
    path = resolve_study_path(str(study) if study else None)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"{path}: not valid TOML: {err}") from None
    _check_keys("top level", doc, {"study", "sampler", "pruner", "fixed", "space", "refit", "variants"}, path)
    meta = doc.get("study", {})
    _check_keys("study", meta, {"name", "description", "objective", "n_trials", "timeout", "folds", "repeats"}, path)
    objective = meta.get("objective", "val_acc")
    if objective not in OBJECTIVES:
        raise UserError(f"{path}: objective must be one of {sorted(OBJECTIVES)}, not {objective!r}")
    folds, repeats = meta.get("folds", 5), meta.get("repeats", 1)
    for key, value, (low, high) in (("folds", folds, FOLDS_RANGE), ("repeats", repeats, REPEATS_RANGE)):
        if key in meta and objective not in CV_OBJECTIVES:
            raise UserError(f"{path}: [study] {key} is for a cross-validated objective "
                            f"({' or '.join(sorted(CV_OBJECTIVES))}), not {objective!r}")
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise UserError(f"{path}: [study] {key} must be a whole number from {low} to {high}, not {value!r}")
    n_trials = meta.get("n_trials", 10)
    if not isinstance(n_trials, int) or n_trials < 1:
        raise UserError(f"{path}: n_trials must be a whole number >= 1")
    timeout = meta.get("timeout")
    if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
        raise UserError(f"{path}: timeout must be a positive number of seconds")

    sampler = {"type": "tpe", "seed": 0, **doc.get("sampler", {})}
    _check_keys("sampler", sampler, {"type", "seed", "n_startup_trials", "multivariate"}, path)
    if sampler["type"] not in SAMPLERS:
        raise UserError(f"{path}: sampler type must be one of {sorted(SAMPLERS)}")
    pruner = {"type": "median", **doc.get("pruner", {})}
    _check_keys("pruner", pruner, {"type", "n_startup_trials", "n_warmup_steps", "min_resource", "reduction_factor"},
                path)
    if pruner["type"] not in PRUNERS:
        raise UserError(f"{path}: pruner type must be one of {sorted(PRUNERS)}")

    fixed = doc.get("fixed", {})
    _check_train_values("fixed", fixed, path)
    if objective in CV_OBJECTIVES and "val_fraction" in fixed:
        raise UserError(f"{path}: [fixed] val_fraction has no use with a cross-validated objective "
                        f"(each model holds out one of the {folds} folds)")
    refit = doc.get("refit", {})
    _check_train_values("refit", refit, path)
    space = [_parse_param(name, table, path) for name, table in doc.get("space", {}).items()]
    overlap = sorted(set(fixed) & {p.name for p in space})
    if overlap:
        raise UserError(f"{path}: {overlap} are both fixed and searched")
    variants = doc.get("variants", {})
    for name, options in variants.items():
        if not isinstance(options, dict):
            raise UserError(f"{path}: [variants.{name}] must be a table of training options")
        _check_train_values(f"variants.{name}", options, path)
        searched = sorted(set(options) & {p.name for p in space})
        if searched:
            raise UserError(f"{path}: [variants.{name}] sets {searched}, which [space] searches")
        TrainConfig(**{**fixed, **options})  # each variant makes a valid configuration
    if variants:
        space.append(Param(VARIANT, "categorical", choices=list(variants)))
    if sampler["type"] == "grid" and not space:
        raise UserError(f"{path}: a grid sampler needs a [space.X] to go through")
    if sampler["type"] == "grid" and any(p.type != "categorical" for p in space):
        raise UserError(f"{path}: a grid sampler takes categorical [space.X] only (the configurations to compare)")
    spec = StudySpec(name=meta.get("name", path.stem), path=path, description=meta.get("description", ""),
                     objective=objective, n_trials=n_trials, timeout=timeout, sampler=sampler, pruner=pruner,
                     fixed=fixed, space=space, refit=refit, folds=folds, repeats=repeats, variants=variants)
    spec.trial_config({})  # the fixed options make a valid configuration (checked on construction)
    return spec
