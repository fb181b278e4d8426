"""Q3: the learning curves (loss and accuracy, training and validation, against iterations).

Nothing is retrained: the curves are the metric histories the analysed run logged
(train/loss, train/acc, val/loss, val/acc), and, for a final run trained on all of train/,
those of its study's best trial (same configuration, with a validation split: dashes). One
figure per report language (``q3/learning_curves_fr.png``, ``..._en.png``: the axis labels
differ), and ``q3/learning_curves.json`` with the numbers the report prints beside them.
"""

from __future__ import annotations

from agestudy.plots import plt, save
from agestudy.runs import TRAIN_ACC, TRAIN_LOSS, VAL_ACC, VAL_LOSS, best_trial_run, logged_number, metric_history

CURVES = {"train_loss": TRAIN_LOSS, "train_acc": TRAIN_ACC, "val_loss": VAL_LOSS, "val_acc": VAL_ACC}
KEYS = tuple(CURVES)
TARGET = 0.75  # the lab's accuracy target, drawn as a dotted line
# the figure's words, once per report language (agestudy.report.render.LANGS)
WORDS = {
    "fr": {"train": "entraînement", "val": "validation", "iteration": "itération",
           "loss": "perte (entropie croisée)", "acc": "exactitude"},
    "en": {"train": "train", "val": "validation", "iteration": "iteration",
           "loss": "loss (cross-entropy)", "acc": "accuracy"},
}


def histories(client, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """The run's logged curves, each sorted by step: {"train_loss": [(step, value), ...], ...} (train/loss, ...)."""
    return {key: metric_history(client, run_id, name) for key, name in CURVES.items()}


def run(ctx) -> dict:
    analysed = ctx.analysed_run()
    trial = best_trial_run(ctx.client, analysed)
    if trial is not None and trial.info.run_id == ctx.run_id:
        trial = None
    own = histories(ctx.client, ctx.run_id)
    other = histories(ctx.client, trial.info.run_id) if trial is not None else {key: [] for key in KEYS}
    series = [(own, ctx.run_id, "-")]
    if other["train_loss"] or other["val_loss"]:
        series.append((other, trial.info.run_id, "--"))
    drawn = bool(own["train_loss"] or other["train_loss"])

    val_fraction = logged_number(trial.data.params.get("val_fraction")) if trial is not None else None
    summary = {
        "runs": [run_id for _, run_id, _ in series] if drawn else [],  # whose histories the figure shows
        "has_val": bool(own["val_acc"]),
        "trial_has_val": bool(other["val_acc"]),
        "n_points": len(own["train_loss"]),
        "trial_val_fraction": val_fraction,
        "trial_train_fraction": 1 - val_fraction if val_fraction is not None else None,
        "final_train_acc": own["train_acc"][-1][1] if own["train_acc"] else None,
        "final_train_loss": own["train_loss"][-1][1] if own["train_loss"] else None,
        "trial_best_val_acc": max(v for _, v in other["val_acc"]) if other["val_acc"] else None,
        "trial_last_val_acc": other["val_acc"][-1][1] if other["val_acc"] else None,
    }
    ctx.log_table("learning_curves", summary)
    if drawn:
        for lang in WORDS:
            path = ctx.path(f"learning_curves_{lang}.png")
            draw(series, WORDS[lang], path)
            ctx.log_figure(path)
    headline = {key: summary[key] for key in ("n_points", "final_train_acc", "final_train_loss",
                                              "trial_best_val_acc", "trial_last_val_acc")}
    ctx.log_metrics(headline)  # None values are left out
    return {k: v for k, v in headline.items() if v is not None}


def draw(series, words: dict, path) -> None:
    """Loss (left) and accuracy (right) against iterations; one line style per run, one colour per split."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.9))
    for ax, what in zip(axes, ("loss", "acc")):
        for curves, run_id, style in series:
            for split, colour in (("train", "C0"), ("val", "C1")):
                points = curves[f"{split}_{what}"]
                if points:
                    ax.plot([s for s, _ in points], [v for _, v in points], style, color=colour, lw=1.3,
                            marker="o" if split == "val" else None, ms=3, label=f"{words[split]} (run {run_id[:8]})")
        if what == "acc":
            ax.axhline(TARGET, color="grey", ls=":", lw=1, label="75 %")
        ax.set_xlabel(words["iteration"])
        ax.set_ylabel(words[what])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save(fig, path)
