"""Q11: the CycleGAN judged by a trained age classifier (called by ``python -m agestudy.cyclegan``).

Procedure (also written into the logged table): every test face (never seen by the
generators nor by the judge) is resized to the generators' size; G ages the young ones
(label 0), F rejuvenates the old ones (label 1). The real faces go through the same
resize and back to 100x100 as the translated ones, so the judge compares like with like.
For a young face x: p(aged 52-62) of x against that of G(x); for an old face y: p(aged
20-26) of y against that of F(y). Reported per direction, each with a 95 % interval: the
fraction of faces whose probability rises (Wilson), the mean change (t interval), the
fraction whose predicted group flips among the faces the judge got right, a control (the
fraction whose translated face scores above its cycled-back face F(G(x)), which carries the
same generator artefacts, blur included, but is back in its own group), the cycle
reconstruction error |F(G(x)) - x| (mean L1, pixels in [0, 1]) and a Frechet distance
between feature distributions, computed on the judge's own penultimate-layer features
(not Inception's: no downloaded weights; "FD-judge"), with a bootstrap interval. Plus what
changed, measured: mean change by horizontal band of the face, high-frequency energy
(wrinkles, texture), colour saturation (grey hair) and how well the edges of the face
(its shape) are kept, each beside the same measure between real young and old faces.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from agestudy.analyses import ANALYSIS_VIEW, jsonable, load_run_model
from agestudy.data import AugmentConfig
from agestudy.models import split_members
from agestudy.models.cyclegan import to_gan_input, to_uint8_frame, translate
from agestudy.plots import image_rows, plt, save
from agestudy.predict import model_inputs
from agestudy.runs import JUDGE_GRID, JUDGE_SCATTER, JUDGE_TABLE, SUMMARY_STEP, judge_metric

N_SHOWN = 8  # faces of each group in the judge's grid
N_BOOT = 100  # bootstrap resamples of the Frechet distances
DIRECTIONS = {"young": ("G", "aged 52-62", 1), "old": ("F", "aged 20-26", 0)}  # group -> generator, target, class


# ----------------------------------------------------------------------------- the judge's view

@torch.no_grad()
def judge_outputs(members: list, crop: int, images: torch.Tensor, device,
                  batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """p(label 1) (the ensemble's mean probability) and penultimate features (members side by side)
    of uint8 N x 3 x 100 x 100 images seen through the judge's centre crop; ``members`` is
    ``split_members(judge)``."""
    aug = AugmentConfig(crop=crop)
    p1, feats = [], []
    for start in range(0, len(images), batch_size):
        x = model_inputs(images[start : start + batch_size], ANALYSIS_VIEW, aug)[0]
        x = x.to(device).contiguous(memory_format=torch.channels_last)
        probs, parts = [], []
        for net in members:
            last = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]
            seen = {}
            hook = last.register_forward_pre_hook(lambda mod, inp, seen=seen: seen.__setitem__("f", inp[0]))
            try:
                logits = net(x).float()
            finally:
                hook.remove()
            probs.append(torch.softmax(logits, dim=1)[:, 1])
            parts.append(seen["f"].float().reshape(len(x), -1))
        p1.append(torch.stack(probs).mean(0).cpu())
        feats.append(torch.cat(parts, dim=1).cpu())
    return torch.cat(p1).double().numpy(), torch.cat(feats).double().numpy()


# ----------------------------------------------------------------------------- statistics

def wilson(k: int, n: int) -> tuple[float, float]:
    from scipy.stats import binomtest

    if n == 0:
        return float("nan"), float("nan")
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def mean_interval(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and its 95 % t interval."""
    from scipy.stats import ttest_1samp

    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2 or np.allclose(values, values[0]):
        m = float(values.mean()) if len(values) else float("nan")
        return m, m, m
    ci = ttest_1samp(values, 0.0).confidence_interval(0.95)
    return float(values.mean()), float(ci.low), float(ci.high)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between two feature sets (rows = samples).

    Tr((S_a S_b)^(1/2)) is the sum of the square roots of the eigenvalues of S_a S_b (real and
    non-negative for covariance matrices): the same value as scipy's sqrtm, several times faster.
    """
    mu = a.mean(0) - b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_trace = np.sqrt(np.clip(np.linalg.eigvals(sa @ sb).real, 0, None)).sum()
    return float(mu @ mu + np.trace(sa) + np.trace(sb) - 2 * root_trace)


def frechet_with_interval(a: np.ndarray, b: np.ndarray, seed: int = 0, n_boot: int = N_BOOT) -> dict:
    rng = np.random.default_rng(seed)
    boots = [frechet_distance(a[rng.integers(0, len(a), len(a))], b[rng.integers(0, len(b), len(b))])
             for _ in range(n_boot)]
    low, high = np.percentile(boots, [2.5, 97.5])
    return {"value": frechet_distance(a, b), "ci_low": float(low), "ci_high": float(high), "n_boot": n_boot}


# ----------------------------------------------------------------------------- what changed

def _gray(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] RGB N x 3 x H x W -> N x 1 x H x W luminance."""
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


def _filter(x: torch.Tensor, kernel) -> torch.Tensor:
    k = torch.tensor(kernel, dtype=x.dtype).view(1, 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k)


def high_frequency_energy(x: torch.Tensor) -> torch.Tensor:
    """Per image: mean squared Laplacian of the luminance (fine texture such as wrinkles)."""
    return _filter(_gray(x), [[0, 1, 0], [1, -4, 1], [0, 1, 0]]).pow(2).mean((1, 2, 3))


def saturation(x: torch.Tensor) -> torch.Tensor:
    """Per image: mean HSV saturation (grey and white hair lower it)."""
    top, bottom = x.max(1).values, x.min(1).values
    return ((top - bottom) / top.clamp_min(1e-3)).mean((1, 2))


def edges(x: torch.Tensor) -> torch.Tensor:
    g = _gray(x)
    gx = _filter(g, [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    gy = _filter(g, [[-1, -2, -1], [0, 0, 0], [1, 2, 1]])
    return (gx.pow(2) + gy.pow(2)).sqrt().flatten(1)


def edge_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per image pair: Pearson correlation of the Sobel edge maps (1 = the same contours)."""
    ea, eb = edges(a), edges(b)
    ea, eb = ea - ea.mean(1, keepdim=True), eb - eb.mean(1, keepdim=True)
    return (ea * eb).sum(1) / (ea.norm(dim=1) * eb.norm(dim=1)).clamp_min(1e-8)


def changes(real: torch.Tensor, translated: torch.Tensor, other_group: torch.Tensor) -> dict:
    """What a generator changed, on [0, 1] images, with the real difference between the groups beside it."""
    h = real.shape[-2]
    bands = {"top": slice(0, h // 3), "middle": slice(h // 3, 2 * h // 3), "bottom": slice(2 * h // 3, h)}
    diff = (translated - real).abs()
    shuffled = real.roll(1, dims=0)  # each face against another face of its group: what "a different person" gives
    return {
        "mean_abs_change": float(diff.mean()),
        "band_change": {name: float(diff[:, :, rows].mean()) for name, rows in bands.items()},
        "hf_energy_ratio": float(high_frequency_energy(translated).mean() / high_frequency_energy(real).mean()),
        "hf_energy_ratio_real_groups": float(high_frequency_energy(other_group).mean()
                                             / high_frequency_energy(real).mean()),
        "saturation_change": float((saturation(translated) - saturation(real)).mean()),
        "saturation_change_real_groups": float(saturation(other_group).mean() - saturation(real).mean()),
        "edge_correlation": float(edge_correlation(real, translated).mean()),
        "edge_correlation_other_face": float(edge_correlation(real, shuffled).mean()),
    }


# ----------------------------------------------------------------------------- the judgement

def judge(model, crop: int, G, Fy, test, size: int, device, seed: int = 0) -> tuple[dict, dict]:
    """The summary (JSON-able) and the images the figures need."""
    summary = {"procedure": __doc__.split("Procedure (also written into the logged table): ", 1)[1].split("\n\n")[0]
               .replace("\n", " "), "size": size, "n_test": len(test)}
    groups = {"young": test.images[test.labels == 0], "old": test.images[test.labels == 1]}
    real = {k: to_gan_input(v, size) for k, v in groups.items()}
    generators = {"young": G, "old": Fy}
    back = {"young": Fy, "old": G}
    members = split_members(model)
    p_real, feats_real = {}, {}
    for group, x in real.items():
        p_real[group], feats_real[group] = judge_outputs(members, crop, to_uint8_frame(x), device)
    # how far apart the real groups are, to the judge: the scale for both directions' distances
    fd_real = frechet_with_interval(feats_real["young"], feats_real["old"], seed)
    # how well the judge does on the real faces after the round trip through `size` pixels (and without it)
    labels = test.labels.numpy()
    p_full, _ = judge_outputs(members, crop, test.images, device)
    summary["judge_accuracy_100px"] = float(((p_full >= 0.5) == labels).mean())
    p_round = np.concatenate([p_real["young"], p_real["old"]])
    summary["judge_accuracy_roundtrip"] = float(((p_round >= 0.5) == np.r_[np.zeros(len(p_real["young"])),
                                                                            np.ones(len(p_real["old"]))]).mean())
    images = {}
    for i, (group, x) in enumerate(real.items()):
        _, target_name, target = DIRECTIONS[group]
        other = "old" if group == "young" else "young"
        moved = translate(generators[group], x, device)
        cycled = translate(back[group], moved, device)
        p_moved, feats_moved = judge_outputs(members, crop, to_uint8_frame(moved), device)
        p_cycled, _ = judge_outputs(members, crop, to_uint8_frame(cycled), device)
        # probability of the target group: p1 for ageing, p0 for rejuvenating
        before = p_real[group] if target == 1 else 1 - p_real[group]
        after = p_moved if target == 1 else 1 - p_moved
        # control: the cycled face went through both generators (the same artefacts, blur included)
        # but is back in its own group; a rise that artefacts alone caused would show there too
        control = p_cycled if target == 1 else 1 - p_cycled
        delta = after - before
        rises = int((delta > 0).sum())
        right_before = before < 0.5  # the judge put the real face in its own (non-target) group
        flips = int((right_before & (after >= 0.5)).sum())
        cycle = ((cycled - x).abs().mean((1, 2, 3)) / 2).numpy()  # [-1, 1] -> [0, 1] pixel units
        d_mean, d_low, d_high = mean_interval(delta)
        c_mean, c_low, c_high = mean_interval(cycle)
        summary[group] = {
            "n": len(x), "generator": DIRECTIONS[group][0], "target": target_name,
            "p_target_real_mean": float(before.mean()), "p_target_translated_mean": float(after.mean()),
            "delta_mean": d_mean, "delta_ci_low": d_low, "delta_ci_high": d_high,
            "rise_count": rises, "rise_fraction": rises / len(x), **_ci("rise", *wilson(rises, len(x))),
            "judged_own_group": int(right_before.sum()), "flip_count": flips,
            "flip_fraction": flips / max(1, int(right_before.sum())),
            **_ci("flip", *wilson(flips, int(right_before.sum()))),
            "p_target_cycled_mean": float(control.mean()),
            "above_cycled_count": int((after > control).sum()),
            "above_cycled_fraction": float((after > control).mean()),
            **_ci("above_cycled", *wilson(int((after > control).sum()), len(x))),
            "target_fraction_real": float((before >= 0.5).mean()),
            "target_fraction_translated": float((after >= 0.5).mean()),
            "cycle_l1": c_mean, "cycle_l1_ci_low": c_low, "cycle_l1_ci_high": c_high,
            "fd_to_target": frechet_with_interval(feats_moved, feats_real[other], seed + i),
            "fd_real_to_target": fd_real,
            "changes": changes(_unit(x), _unit(moved), _unit(real[other])),
        }
        shown = np.linspace(0, len(x) - 1, min(N_SHOWN, len(x))).round().astype(int)
        images[group] = {"real": x[shown], "moved": moved[shown], "cycled": cycled[shown],
                         "before": before[shown], "after": after[shown], "all_before": before, "all_after": after}
    return summary, images


def _unit(x: torch.Tensor) -> torch.Tensor:
    return (x + 1) / 2  # [-1, 1] -> [0, 1]


def _ci(name: str, low: float, high: float) -> dict:
    return {f"{name}_ci_low": low, f"{name}_ci_high": high}


# ----------------------------------------------------------------------------- figures and logging

def plot_grid(images: dict, path: Path, title: str) -> Path:
    """For each group: real faces, translated, cycled back, and where the generator changed them."""
    rows = []
    for group, gen_name, target in (("young", "G", "old"), ("old", "F", "young")):
        im = images[group]
        back = "F(G(x))" if group == "young" else "G(F(y))"
        src = "x" if group == "young" else "y"
        rows += [(im["real"], f"{src} ({group})", [f"p({target}) {p:.2f}" for p in im["before"]]),
                 (im["moved"], f"{gen_name}({src})", [f"p({target}) {p:.2f}" for p in im["after"]]),
                 (im["cycled"], back, None),
                 ((im["moved"] - im["real"]).abs().mean(1), f"|{gen_name}({src}) - {src}|", None)]
    return image_rows(rows, path, title)


def plot_probabilities(images: dict, path: Path, title: str) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    for ax, (group, label) in zip(axes, (("young", "young test faces x: p(aged 52-62), x vs G(x)"),
                                         ("old", "old test faces y: p(aged 20-26), y vs F(y)"))):
        im = images[group]
        ax.scatter(im["all_before"], im["all_after"], s=6, alpha=0.5)
        ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
        ax.axhline(0.5, color="grey", lw=0.6, ls=":")
        ax.axvline(0.5, color="grey", lw=0.6, ls=":")
        ax.set_xlim(0, 1), ax.set_ylim(0, 1)
        ax.set_xlabel("real face"), ax.set_ylabel("translated face")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.2)
    fig.suptitle(title + "  (above the diagonal: the probability of the target group rose)", fontsize=9)
    fig.tight_layout()
    return save(fig, path)


def judge_and_log(client, run_id: str, judge_run, G, Fy, test, size: int, device, out_dir: Path) -> dict:
    """Judge the generators with ``judge_run``'s classifier; log the table, metrics and figures to ``run_id``."""
    from mlflow.entities import Metric

    from agestudy import device as devices

    out_dir.mkdir(parents=True, exist_ok=True)
    judge_id = judge_run.info.run_id
    model, cfg = load_run_model(client, judge_id, out_dir / "download")
    model = devices.prepare_model(model, device).eval()
    summary, images = judge(model, cfg.crop, G.to(device), Fy.to(device), test, size, device)
    summary["judge_run"] = judge_id
    summary["judge_model"] = cfg.model
    (out_dir / Path(JUDGE_TABLE).name).write_text(json.dumps(jsonable(summary), indent=2))
    plot_grid(images, out_dir / Path(JUDGE_GRID).name,
              f"CycleGAN run {run_id[:8]} on test faces, judged by classifier run {judge_id[:8]}")
    plot_probabilities(images, out_dir / Path(JUDGE_SCATTER).name,
                       f"Judge {judge_id[:8]} on CycleGAN run {run_id[:8]}")
    for name in (JUDGE_TABLE, JUDGE_GRID, JUDGE_SCATTER):
        client.log_artifact(run_id, str(out_dir / Path(name).name), str(Path(name).parent))
    values = {"accuracy_roundtrip": summary["judge_accuracy_roundtrip"]}
    for group in ("young", "old"):
        s = summary[group]
        values.update({f"{group}_rise_fraction": s["rise_fraction"], f"{group}_flip_fraction": s["flip_fraction"],
                       f"{group}_delta_mean": s["delta_mean"], f"{group}_cycle_l1": s["cycle_l1"],
                       f"{group}_fd_to_target": s["fd_to_target"]["value"],
                       f"{group}_fd_real_to_target": s["fd_real_to_target"]["value"]})
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(judge_metric(k), float(v), now, SUMMARY_STEP) for k, v in values.items()])
    return summary
