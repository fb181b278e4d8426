"""Q2: a freshly initialised network is at chance.

K networks of the analysed architecture, each initialised with its own seed and never
trained, predict the test set (centre crop, as for the trained model). For each: accuracy,
its exact (Clopper-Pearson) 95 % binomial interval and an exact binomial test against 0.5.
Pooled over the K networks: the same, with the caveat that the K networks see the same
images (the pooled interval is the narrowest honest summary, not K*N independent draws).
Beside it: the majority-class baseline (always predict train/'s larger class) and the
uniform-random baseline (a fair coin per image: 0.5, with its 95 % range for N images).
The histograms of predicted P(label 1) per true class overlap for untrained networks;
the trained model's are shown beside them for contrast.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats

from agestudy import device as devices
from agestudy.models import create_model
from agestudy.plots import plt
from agestudy.predict import probabilities

N_NETWORKS = 10  # the question asks for at least 10 seeds


def binomial_summary(correct: int, n: int) -> dict:
    test = stats.binomtest(int(correct), int(n), 0.5)
    ci = test.proportion_ci(confidence_level=0.95, method="exact")
    return {"accuracy": correct / n, "correct": int(correct), "n": int(n), "ci_low": float(ci.low),
            "ci_high": float(ci.high), "p_value": float(test.pvalue)}


def run(ctx) -> dict:
    k = max(1, int(ctx.option("q2_networks", N_NETWORKS)))
    cfg, test = ctx.cfg, ctx.data.test
    labels = test.labels.numpy()
    n = len(labels)
    rows, p1_by_net = [], []
    for seed in range(k):
        torch.manual_seed(seed)
        net = devices.prepare_model(create_model(cfg.model, **cfg.model_kwargs()), ctx.device).eval()
        p1 = probabilities(ctx.logits(test.images, net)).numpy()
        pred = (p1 >= 0.5).astype(int)
        correct = pred == labels
        recalls = [correct[labels == c].mean() for c in (0, 1)]
        rows.append({"seed": seed, **binomial_summary(int(correct.sum()), n),
                     "balanced_accuracy": float(np.mean(recalls)),
                     "fraction_predicted_1": float(pred.mean()), "mean_p1": float(p1.mean()),
                     "std_p1": float(p1.std())})
        p1_by_net.append(p1)
    p1_all = np.stack(p1_by_net)  # K x N
    pooled = binomial_summary(sum(r["correct"] for r in rows), k * n)
    accs = np.array([r["accuracy"] for r in rows])

    train_counts = ctx.data.train.class_counts()
    majority = 1 if train_counts[1] >= train_counts[0] else 0
    majority_acc = float((labels == majority).mean())
    uniform_lo, uniform_hi = (stats.binom.ppf(q, n, 0.5) / n for q in (0.025, 0.975))
    trained_p1 = ctx.test_p1()
    trained_acc = float(((trained_p1 >= 0.5).astype(int) == labels).mean())

    summary = {
        "question": "Is a freshly initialised (untrained) network at chance on test/?",
        "procedure": f"{k} networks of architecture '{cfg.model}' ({cfg.model_kwargs()}), seeds 0..{k - 1}, "
                     f"never trained, BatchNorm in eval mode, predict the {n} test images from the "
                     f"{cfg.crop}-pixel centre crop. Per network: exact Clopper-Pearson 95 % interval of the "
                     "accuracy and an exact two-sided binomial test of H0: accuracy = 0.5. Pooled: the same "
                     "on all K*N predictions (the K networks share the images, so it is a summary, not K*N "
                     "independent draws).",
        "networks": rows,
        "pooled": pooled,
        "accuracy_mean": float(accs.mean()), "accuracy_std": float(accs.std(ddof=1)) if k > 1 else 0.0,
        "accuracy_min": float(accs.min()), "accuracy_max": float(accs.max()),
        "n_significant_at_0.05": int(sum(r["p_value"] < 0.05 for r in rows)),
        "baselines": {
            "majority_class": {"predicts": majority, "accuracy": majority_acc,
                               "why": f"train/ has {train_counts[0]} images of class 0, {train_counts[1]} of class 1"},
            "uniform_random": {"accuracy": 0.5, "range95_low": float(uniform_lo), "range95_high": float(uniform_hi),
                               "why": f"a fair coin per image: Binomial({n}, 0.5)/{n}"},
            "trained_model": {"accuracy": trained_acc},
        },
        "p1_by_true_class": {f"class_{c}": {"mean": float(p1_all[:, labels == c].mean()),
                                            "std": float(p1_all[:, labels == c].std())} for c in (0, 1)},
    }
    ctx.log_table("chance", summary)
    _plot_accuracy(rows, summary, ctx.path("accuracy.png"))
    ctx.log_figure(ctx.path("accuracy.png"))
    _plot_histograms(p1_all, labels, trained_p1, ctx.path("p1_histograms.png"), k)
    ctx.log_figure(ctx.path("p1_histograms.png"))

    headline = {
        "pooled_accuracy": pooled["accuracy"], "ci_low": pooled["ci_low"], "ci_high": pooled["ci_high"],
        "binom_pvalue": pooled["p_value"], "n_networks": k, "n_significant": summary["n_significant_at_0.05"],
        "accuracy_mean": summary["accuracy_mean"], "accuracy_std": summary["accuracy_std"],
        "accuracy_min": summary["accuracy_min"], "accuracy_max": summary["accuracy_max"],
        "balanced_accuracy_mean": float(np.mean([r["balanced_accuracy"] for r in rows])),
        "majority_accuracy": majority_acc, "uniform_accuracy": 0.5,
        "uniform_range_low": float(uniform_lo), "uniform_range_high": float(uniform_hi),
        "trained_accuracy": trained_acc,
        "mean_p1_class0": summary["p1_by_true_class"]["class_0"]["mean"],
        "mean_p1_class1": summary["p1_by_true_class"]["class_1"]["mean"],
    }
    ctx.log_metrics(headline)
    return headline


def _plot_accuracy(rows, summary, path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    seeds = [r["seed"] for r in rows]
    acc = np.array([r["accuracy"] for r in rows])
    err = np.array([[r["accuracy"] - r["ci_low"] for r in rows], [r["ci_high"] - r["accuracy"] for r in rows]])
    base = summary["baselines"]
    ax.axhspan(base["uniform_random"]["range95_low"], base["uniform_random"]["range95_high"], color="grey",
               alpha=0.2, label="uniform random: 95 % range")
    ax.axhline(0.5, color="grey", ls="--", lw=1, label="chance 0.5")
    ax.axhline(base["majority_class"]["accuracy"], color="C3", ls=":", lw=1.5,
               label=f"majority class ({base['majority_class']['predicts']}): {base['majority_class']['accuracy']:.3f}")
    ax.errorbar(seeds, acc, yerr=err, fmt="o", color="C0", capsize=3, label="untrained network, exact 95 % CI")
    pooled = summary["pooled"]
    ax.set_title(f"Untrained networks on test/: pooled accuracy {pooled['accuracy']:.3f} "
                 f"[{pooled['ci_low']:.3f}, {pooled['ci_high']:.3f}], p = {pooled['p_value']:.2g}\n"
                 f"(trained model: {base['trained_model']['accuracy']:.3f})", fontsize=9)
    ax.set_xlabel("initialisation seed")
    ax.set_ylabel("test accuracy")
    ax.set_xticks(seeds)
    lo = min(0.4, float((acc - err[0]).min()) - 0.02)
    hi = max(0.6, float((acc + err[1]).max()) + 0.02)
    ax.set_ylim(lo, hi)
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_histograms(p1_all, labels, trained_p1, path, k: int) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    panels = ((axes[0], p1_all[:, labels == 0].ravel(), p1_all[:, labels == 1].ravel(),
               f"{k} untrained networks (pooled)"),
              (axes[1], trained_p1[labels == 0], trained_p1[labels == 1], "trained model (for contrast)"))
    for ax, p0, p1, title in panels:
        both = np.concatenate([p0, p1])
        lo, hi = float(both.min()), float(both.max())
        if hi - lo < 1e-6:  # a constant prediction: give the bins some width
            lo, hi = lo - 0.005, hi + 0.005
        bins = np.linspace(lo, hi, 41)
        ax.hist(p0, bins=bins, alpha=0.55, color="C0", density=True, label="true class 0 (20-26)")
        ax.hist(p1, bins=bins, alpha=0.55, color="C1", density=True, label="true class 1 (52-62)")
        ax.axvline(0.5, color="grey", ls="--", lw=1)
        ax.set_xlabel("predicted P(label 1)")
        ax.set_ylabel("density")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle("Predicted P(label 1) by true class", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
