"""Q8: predict each test image from several crops, averaging the softmax probabilities.

Random crops are drawn the way training drew them (agestudy.predict's ``crops(N)`` view:
RandomCrop(crop, padding), the run's flip, zoom and rotation, no colour jitter): the views the
network learned from.
Each test image gets MAX_CROPS of them; the accuracy for N crops averages the first N. The
curve over N = 1..MAX_CROPS is the mean over ORDERINGS random orderings of the same crops
(so it is smooth without extra forward passes); the headline multi-crop prediction is all
MAX_CROPS crops. Deterministic alternatives: five-crop (four corners and centre, no padding)
and ten-crop (the same plus their mirror images), as torchvision's FiveCrop/TenCrop.

Each is compared with the single centre crop on the same images by an exact McNemar test
(a two-sided binomial test on the discordant pairs: b = right only with the centre crop,
c = right only with multi-crop); the accuracy gain (c - b) / n gets a 95 % paired bootstrap
interval (test images resampled).
"""

from __future__ import annotations

import matplotlib.ticker
import numpy as np
from scipy import stats

from agestudy.plots import plt
from agestudy.predict import predict_logits, probabilities

MAX_CROPS = 32
ORDERINGS = 50
N_BOOTSTRAP = 2000


def mcnemar(right_a: np.ndarray, right_b: np.ndarray, n_boot: int, seed: int = 0) -> dict:
    """Exact McNemar test of B against A, and B's accuracy gain with a paired bootstrap interval."""
    b = int((right_a & ~right_b).sum())  # A right, B wrong
    c = int((~right_a & right_b).sum())  # A wrong, B right
    n = len(right_a)
    p = float(stats.binomtest(c, b + c, 0.5).pvalue) if b + c else 1.0
    rng = np.random.default_rng(seed)
    diff = right_b.astype(float) - right_a.astype(float)
    boots = np.array([diff[rng.integers(0, n, n)].mean() for _ in range(n_boot)])
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"n": n, "b_only_reference_right": b, "c_only_multicrop_right": c, "p_value": p,
            "accuracy_reference": float(right_a.mean()), "accuracy_multicrop": float(right_b.mean()),
            "gain": (c - b) / n, "gain_ci_low": float(lo), "gain_ci_high": float(hi)}


def run(ctx) -> dict:
    cfg, test = ctx.cfg, ctx.data.test
    labels = test.labels.numpy()
    n_max = int(ctx.option("q8_max_crops", MAX_CROPS))
    n_orders = int(ctx.option("q8_orderings", ORDERINGS))
    n_boot = int(ctx.option("q8_bootstrap", N_BOOTSTRAP))

    def p1_of(view: str) -> np.ndarray:  # V x N: P(label 1) through each input of the view
        return probabilities(predict_logits(ctx.model, test.images, view, cfg.augment(), ctx.device)).numpy()

    centre_p1 = ctx.test_p1()
    crops = p1_of(f"crops({n_max})")  # drawn as in training, from a generator seeded with 0
    five_p1, ten_p1 = p1_of("five").mean(0), p1_of("ten").mean(0)

    # the curve: accuracy of the mean of the first N crops, averaged over random orderings of the crops
    rng = np.random.default_rng(0)
    orders = [np.arange(n_max)] + [rng.permutation(n_max) for _ in range(max(0, n_orders - 1))]
    acc = np.empty((len(orders), n_max))
    for i, order in enumerate(orders):
        running = np.cumsum(crops[order], axis=0) / np.arange(1, n_max + 1)[:, None]
        acc[i] = ((running >= 0.5).astype(int) == labels).mean(axis=1)
    curve = [{"n_crops": n + 1, "accuracy": float(acc[:, n].mean()), "accuracy_std": float(acc[:, n].std()),
              "accuracy_first_ordering": float(acc[0, n])} for n in range(n_max)]

    def right(p1):
        return (p1 >= 0.5).astype(int) == labels

    centre_right = right(centre_p1)
    multi_p1 = crops.mean(0)
    comparisons = {
        f"random{n_max}_vs_centre": mcnemar(centre_right, right(multi_p1), n_boot),
        "fivecrop_vs_centre": mcnemar(centre_right, right(five_p1), n_boot),
        "tencrop_vs_centre": mcnemar(centre_right, right(ten_p1), n_boot),
    }
    ctx.log_table("curve", {
        "procedure": f"Each test image: {n_max} random crops as in training (RandomCrop({cfg.crop}, "
                     f"padding={cfg.padding}), flip={cfg.flip}, no jitter; generator seed 0), softmax "
                     f"probabilities averaged over the first N. accuracy = mean over {len(orders)} orderings "
                     "of the crops (the first is the drawing order), accuracy_std its spread.",
        "centre_accuracy": float(centre_right.mean()),
        "fivecrop_accuracy": float(right(five_p1).mean()), "tencrop_accuracy": float(right(ten_p1).mean()),
        "points": curve,
    })
    ctx.log_table("mcnemar", {
        "procedure": "Paired comparison with the single centre crop on the same test images. Exact McNemar: "
                     "two-sided binomial test of c against Binomial(b + c, 0.5), b = images right only with the "
                     "centre crop, c = right only with multi-crop. gain = (c - b) / n = accuracy difference, "
                     f"95 % interval from {n_boot} paired bootstrap resamples of the test images.",
        "comparisons": comparisons,
    })
    ctx.log_series("accuracy_by_n", [(p["n_crops"], p["accuracy"]) for p in curve])
    _plot(curve, comparisons, float(centre_right.mean()), n_max, ctx.path("accuracy_vs_crops.png"))
    ctx.log_figure(ctx.path("accuracy_vs_crops.png"))

    main, ten = comparisons[f"random{n_max}_vs_centre"], comparisons["tencrop_vs_centre"]
    headline = {
        "centre_accuracy": float(centre_right.mean()), "multicrop_accuracy": main["accuracy_multicrop"],
        "gain": main["gain"], "gain_ci_low": main["gain_ci_low"], "gain_ci_high": main["gain_ci_high"],
        "mcnemar_p": main["p_value"], "multicrop_n": n_max, "fivecrop_accuracy": float(right(five_p1).mean()),
        "tencrop_accuracy": float(right(ten_p1).mean()), "mcnemar_b": main["b_only_reference_right"],
        "mcnemar_c": main["c_only_multicrop_right"],
        "tencrop_gain": ten["gain"], "tencrop_gain_ci_low": ten["gain_ci_low"],
        "tencrop_gain_ci_high": ten["gain_ci_high"], "tencrop_mcnemar_p": ten["p_value"],
    }
    ctx.log_metrics(headline)
    return headline


def _plot(curve, comparisons, centre_acc, n_max, path) -> None:
    n = np.array([p["n_crops"] for p in curve])
    acc = np.array([p["accuracy"] for p in curve])
    std = np.array([p["accuracy_std"] for p in curve])
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.fill_between(n, acc - std, acc + std, color="C0", alpha=0.2, label="spread over crop orderings (1 sd)")
    ax.plot(n, acc, "o-", color="C0", ms=3, label="N random crops, probabilities averaged")
    ax.axhline(centre_acc, color="grey", ls="--", lw=1.2, label=f"single centre crop: {centre_acc:.4f}")
    for key, marker, colour, x in (("fivecrop_vs_centre", "s", "C2", 5), ("tencrop_vs_centre", "D", "C3", 10)):
        c = comparisons[key]
        ax.plot([x], [c["accuracy_multicrop"]], marker, color=colour, ms=7,
                label=f"{key.split('_')[0]}: {c['accuracy_multicrop']:.4f} (McNemar p = {c['p_value']:.2g})")
    main = comparisons[f"random{n_max}_vs_centre"]
    ax.set_title(f"Multi-crop on test/: {n_max} crops {main['accuracy_multicrop']:.4f} vs centre {centre_acc:.4f}, "
                 f"gain {100 * main['gain']:+.2f} pts [{100 * main['gain_ci_low']:+.2f}, "
                 f"{100 * main['gain_ci_high']:+.2f}], McNemar p = {main['p_value']:.2g}", fontsize=8)
    ax.set_xlabel("number of crops N")
    ax.set_ylabel("test accuracy")
    ax.set_xscale("log", base=2)
    ax.set_xticks([1, 2, 4, 8, 16, 32][: int(np.log2(n_max)) + 1])
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
