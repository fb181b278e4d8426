"""Small statistics of what runs logged, for the analyses of questions 4, 6 and 7 (no training, no data).

- ``wilson_interval``: the 95 % interval of an accuracy measured on ``n`` test images (q4);
- ``binomial_se``, ``auc_se``: the standard error of an accuracy or a ROC AUC measured on one
  validation split, the noise a study's trials were compared within (q4, q6; ``selection``);
- ``hyperparameter_effects``: for each searched hyperparameter of a study, how the objective
  moves with it across the study's completed trials (direction and size) (q6);
- ``ablation_groups``: the objective grouped by the values of one parameter (q7).

The report never imports this module: it prints what these analyses logged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


def wilson_interval(p: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of a proportion ``p`` observed on ``n`` trials (95 % by default)."""
    if n <= 0 or p is None or not math.isfinite(p):
        return float("nan"), float("nan")
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def binomial_se(p: float, n: int) -> float:
    """Standard error of an accuracy ``p`` measured on ``n`` images: sqrt(p (1 - p) / n)."""
    if not n or n <= 0 or p is None or not math.isfinite(p):
        return float("nan")
    return math.sqrt(p * (1 - p) / n)


def auc_se(auc: float, n0: int, n1: int) -> float:
    """Standard error of a ROC AUC measured on ``n0`` negatives and ``n1`` positives (Hanley & McNeil, 1982)."""
    if not n0 or not n1 or n0 <= 0 or n1 <= 0 or auc is None or not math.isfinite(auc):
        return float("nan")
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    variance = (auc * (1 - auc) + (n1 - 1) * (q1 - auc * auc) + (n0 - 1) * (q2 - auc * auc)) / (n0 * n1)
    return math.sqrt(max(variance, 0.0))


def _as_number(value):
    """A CSV cell as int/float/bool when it is one, else the string."""
    if isinstance(value, (int, float, bool)):
        return value
    text = str(value).strip()
    if text in ("True", "False"):
        return text == "True"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def trial_value(row: dict) -> float:
    """A trial's objective in a ``study/trials.csv`` row, NaN when it has none.

    Optuna names the column ``value`` or, once the study names its objective (agestudy.tune's
    set_metric_names), ``value_<objective name>``, e.g. ``value_validation accuracy``.
    """
    cell = row.get("value")
    if cell is None:
        cell = next((v for k, v in row.items() if k and k.startswith("value_")), None)
    try:
        return float(cell)
    except (TypeError, ValueError):
        return float("nan")


def _mean(values):
    return sum(values) / len(values) if values else float("nan")


def _std(values):
    if len(values) < 2:
        return float("nan")
    m = _mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def _ranks(values):
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x, y) -> float:
    """Spearman's rank correlation (ties get average ranks); NaN when either side is constant."""
    if len(x) < 3:
        return float("nan")
    rx, ry = _ranks(list(x)), _ranks(list(y))
    mx, my = _mean(rx), _mean(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return float("nan")
    return sxy / math.sqrt(sxx * syy)


@dataclass
class Effect:
    """How the objective moves with one hyperparameter across a study's completed trials."""

    name: str
    kind: str  # "numeric" | "categorical"
    n: int  # completed trials used
    importance: float | None = None  # fANOVA importance from the study run, when logged
    rho: float | None = None  # numeric: Spearman correlation of the value with the objective
    low_range: tuple | None = None  # numeric: (min, max) of the lower half of the values
    high_range: tuple | None = None
    low_mean: float | None = None  # numeric: mean objective of the trials in the lower / upper half
    high_mean: float | None = None
    diff: float | None = None  # numeric: high_mean - low_mean; categorical: best mean - worst mean
    direction: str = "none"  # numeric: "up" (higher is better) | "down" | "none"
    strength: str = "none"  # "none" | "weak" | "moderate" | "strong"
    groups: list = field(default_factory=list)  # categorical: [{"value", "n", "mean"}], best first
    best: object = None  # categorical: best value
    worst: object = None


def _strength_from_rho(rho: float) -> str:
    a = abs(rho)
    return "none" if a < 0.1 else "weak" if a < 0.3 else "moderate" if a < 0.5 else "strong"


def _strength_from_diff(diff: float) -> str:
    a = abs(diff) * 100  # percentage points of the objective
    return "none" if a < 0.5 else "weak" if a < 2 else "moderate" if a < 5 else "strong"


def hyperparameter_effects(rows: list[dict], importances: dict | None = None) -> list[Effect]:
    """Effects of each searched parameter, from Optuna's trials table (``study/trials.csv`` rows).

    Only COMPLETE trials with a finite value count (pruned trials stopped early, so their value
    is not comparable). A parameter with at least three distinct numeric values is numeric:
    Spearman's rho and the difference of mean objective between the upper and lower halves
    of its values. Otherwise it is categorical: mean objective per value, best minus worst.
    """
    importances = importances or {}
    done = []
    for row in rows:
        value = trial_value(row)
        if str(row.get("state", "")).upper() == "COMPLETE" and math.isfinite(value):
            done.append((row, value))
    names = sorted({k[len("params_"):] for row, _ in done for k in row if k.startswith("params_")})
    effects = []
    for name in names:
        pairs = [(_as_number(row[f"params_{name}"]), v) for row, v in done
                 if str(row.get(f"params_{name}", "")).strip() not in ("", "nan", "None")]
        if not pairs:
            continue
        xs = [x for x, _ in pairs]
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs) and len(set(xs)) >= 3
        effect = Effect(name=name, kind="numeric" if numeric else "categorical", n=len(pairs),
                        importance=importances.get(name))
        if numeric:
            pairs.sort(key=lambda p: p[0])
            half = len(pairs) // 2
            low, high = pairs[:half], pairs[len(pairs) - half:]
            effect.rho = spearman([x for x, _ in pairs], [v for _, v in pairs])
            if low and high:
                effect.low_range = (low[0][0], low[-1][0])
                effect.high_range = (high[0][0], high[-1][0])
                effect.low_mean = _mean([v for _, v in low])
                effect.high_mean = _mean([v for _, v in high])
                effect.diff = effect.high_mean - effect.low_mean
            if effect.rho is not None and math.isfinite(effect.rho):
                effect.strength = _strength_from_rho(effect.rho)
                if effect.strength != "none":
                    effect.direction = "up" if effect.rho > 0 else "down"
            else:
                effect.rho = None
        else:
            by_value: dict = {}
            for x, v in pairs:
                by_value.setdefault(x, []).append(v)
            groups = [{"value": x, "n": len(vs), "mean": _mean(vs)} for x, vs in by_value.items()]
            groups.sort(key=lambda g: -g["mean"])
            effect.groups = groups
            if len(groups) >= 2:
                effect.best, effect.worst = groups[0]["value"], groups[-1]["value"]
                effect.diff = groups[0]["mean"] - groups[-1]["mean"]
                effect.strength = _strength_from_diff(effect.diff)
        effects.append(effect)
    effects.sort(key=lambda e: (-(e.importance if e.importance is not None else -1),
                                -(abs(e.diff) if e.diff is not None else 0)))
    return effects


def ablation_groups(rows: list[dict], param: str) -> list[dict]:
    """Objective of the COMPLETE trials grouped by the value of ``param``: [{"value", "n", "mean", "std"}]."""
    by_value: dict = {}
    for row in rows:
        if str(row.get("state", "")).upper() != "COMPLETE" or f"params_{param}" not in row:
            continue
        value = trial_value(row)
        if math.isfinite(value):
            by_value.setdefault(_as_number(row[f"params_{param}"]), []).append(value)
    groups = [{"value": k, "n": len(v), "mean": _mean(v), "std": _std(v)} for k, v in by_value.items()]
    groups.sort(key=_value_order)  # True before False, larger numbers first, then text
    return groups


def _value_order(group: dict):
    value = group["value"]
    if isinstance(value, (bool, int, float)):
        return (0, -float(value), "")
    return (1, 0.0, str(value))
