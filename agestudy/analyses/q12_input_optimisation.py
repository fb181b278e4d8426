"""Q12: optimise the input image to maximise a class.

Gradient ascent on the image (the network's weights frozen, eval mode) for each class c:
- objective ``prob``: maximise log P(c) (the probability, through its log, which keeps the
  gradient alive when P(c) nears 1); objective ``logit``: maximise the raw logit z_c;
- start ``noise``: small Gaussian noise around grey; start ``image``: the real test image of
  the *other* class that the model is surest of (can the image be pushed across?);
- parametrisation ``pixel``: the image itself; ``fourier``: its 2-D spectrum, scaled by
  1/frequency so low frequencies move first (Olah et al., 2017, "Feature Visualization"),
  which gives smoother, less adversarial-looking images;
- regularisers: L2 on the (normalised) image, total variation (neighbouring pixels alike),
  and a random jitter (the image rolled by up to JITTER pixels each step, so the result must
  work wherever it sits).
The image lives in the network's input space: x = 2 tanh(u) keeps every pixel within the
valid range [0, 1] after un-normalisation. Adam on u. Every step records P(c) and z_c of the
un-jittered image: the trajectories. All runs share one batch (eval-mode BatchNorm makes
them independent).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from agestudy.analyses import ANALYSIS_VIEW
from agestudy.data.augment import PIXEL_MEAN, PIXEL_STD, from_model_input
from agestudy.plots import plt
from agestudy.predict import model_inputs

STEPS = 200
LR = 0.05
L2 = 1e-3
TV = 0.05
JITTER = 4  # pixels
NOISE_STD = 0.1  # of the start from noise, in normalised units
SNAPSHOTS = (0, 10, 50)  # steps shown besides the last
# x = BOUND * tanh(u) covers exactly the pixel range [0, 1] after un-normalisation
BOUND = (1 - PIXEL_MEAN) / PIXEL_STD
assert abs(BOUND - PIXEL_MEAN / PIXEL_STD) < 1e-9, "the tanh bound assumes a symmetric normalisation"


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels, per image."""
    dh = (x[..., 1:, :] - x[..., :-1, :]).abs().mean(dim=(1, 2, 3))
    dw = (x[..., :, 1:] - x[..., :, :-1]).abs().mean(dim=(1, 2, 3))
    return dh + dw


def fourier_scale(size: int, device) -> torch.Tensor:
    """1 / frequency for an rfft2 spectrum of a size x size image (the DC term scaled like the lowest)."""
    fy = torch.fft.fftfreq(size, device=device)[:, None]
    fx = torch.fft.rfftfreq(size, device=device)[None, :]
    freq = torch.sqrt(fx ** 2 + fy ** 2).clamp_min(1.0 / size)
    return 1.0 / (freq * size)


class ImageParam(torch.nn.Module):
    """A batch of images as pixels or as a scaled spectrum; ``forward()`` gives model inputs in range."""

    def __init__(self, start: torch.Tensor, fourier: bool):
        super().__init__()
        self.fourier, self.size = fourier, start.shape[-1]
        u = torch.atanh((start / BOUND).clamp(-0.999, 0.999))
        if fourier:
            self.register_buffer("scale", fourier_scale(self.size, start.device))
            spectrum = torch.fft.rfft2(u, norm="ortho") / self.scale
            self.u = torch.nn.Parameter(torch.view_as_real(spectrum).contiguous())
        else:
            self.u = torch.nn.Parameter(u.clone())

    def forward(self) -> torch.Tensor:
        u = self.u
        if self.fourier:
            u = torch.fft.irfft2(torch.view_as_complex(u) * self.scale, s=(self.size, self.size), norm="ortho")
        return BOUND * torch.tanh(u)


def optimise(model, start: torch.Tensor, targets: torch.Tensor, objective: list[str], fourier: bool, steps: int,
             generator: torch.Generator, lr: float = LR, l2: float = L2, tv: float = TV, jitter: int = JITTER):
    """Gradient ascent from ``start`` (B x 3 x c x c, normalised); returns (images by step, p, z) histories."""
    param = ImageParam(start, fourier)
    optimizer = torch.optim.Adam(param.parameters(), lr=lr)
    use_logit = torch.tensor([o == "logit" for o in objective], device=start.device)
    rows = torch.arange(len(targets), device=start.device)
    p_hist, z_hist, shots = [], [], {}
    for step in range(steps + 1):
        x = param()
        with torch.no_grad():  # the trajectory: the image itself, not the jittered view
            logits = model(x.contiguous(memory_format=torch.channels_last)).float()
            p_hist.append(torch.softmax(logits, 1)[rows, targets].cpu())
            z_hist.append(logits[rows, targets].cpu())
        if step in SNAPSHOTS or step == steps:
            shots[step] = x.detach().cpu()
        if step == steps:
            break
        dy, dx = (torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist() if jitter else (0, 0))
        logits = model(torch.roll(x, shifts=(dy, dx), dims=(2, 3)).contiguous(memory_format=torch.channels_last))
        gain = torch.where(use_logit, logits[rows, targets], F.log_softmax(logits.float(), 1)[rows, targets])
        loss = (-gain + l2 * x.pow(2).mean(dim=(1, 2, 3)) + tv * total_variation(x)).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return shots, torch.stack(p_hist, 1).numpy(), torch.stack(z_hist, 1).numpy()


def run(ctx) -> dict:
    cfg, test, device = ctx.cfg, ctx.data.test, ctx.device
    steps = int(ctx.option("q12_steps", STEPS))
    crop = cfg.crop
    model = ctx.model.eval()
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:  # the weights stay as they are; only the image moves
        p.requires_grad_(False)
    labels = test.labels.numpy()
    p1 = ctx.test_p1()
    p_true = np.where(labels == 1, p1, 1 - p1)
    # per class, the test image the model is surest of: starting point for the *other* class
    surest = {c: int(np.flatnonzero(labels == c)[np.argmax(p_true[labels == c])]) for c in (0, 1)}
    real = {c: model_inputs(test.images[surest[c] : surest[c] + 1], ANALYSIS_VIEW, ctx.cfg.augment())[0][0]
            for c in (0, 1)}
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 3, crop, crop, generator=g)[0] * NOISE_STD

    specs = []  # one optimisation per (class, objective, start, parametrisation)
    for target in (0, 1):
        for objective in ("prob", "logit"):
            specs.append({"target": target, "objective": objective, "start": "noise", "param": "pixel"})
            specs.append({"target": target, "objective": objective, "start": "image", "param": "pixel"})
        specs.append({"target": target, "objective": "prob", "start": "noise", "param": "fourier"})
        specs.append({"target": target, "objective": "prob", "start": "image", "param": "fourier"})
    for s in specs:
        s["name"] = f"class{s['target']}_{s['objective']}_{s['start']}_{s['param']}"
        if s["start"] == "image":
            s["start_file"] = test.files[surest[1 - s["target"]]]

    results = {}
    try:
        for param in ("pixel", "fourier"):
            chosen = [s for s in specs if s["param"] == param]
            start = torch.stack([noise if s["start"] == "noise" else real[1 - s["target"]] for s in chosen]).to(device)
            targets = torch.tensor([s["target"] for s in chosen], device=device)
            shots, p_hist, z_hist = optimise(model, start, targets, [s["objective"] for s in chosen],
                                             param == "fourier", steps, torch.Generator().manual_seed(1))
            for i, s in enumerate(chosen):
                results[s["name"]] = {**s, "p": p_hist[i], "z": z_hist[i],
                                      "shots": {k: v[i] for k, v in shots.items()}}
    finally:
        for p in trainable:
            p.requires_grad_(True)

    table = {
        "procedure": f"{steps} Adam steps (lr {LR}) on the input of the frozen network (eval mode). Loss = -gain + "
                     f"{L2} * mean(x^2) + {TV} * TV(x), gain = log P(target) ('prob') or the target logit ('logit'); "
                     f"each step the image is rolled by a random shift of up to {JITTER} pixels (jitter). "
                     f"x = {BOUND:g} * tanh(u) keeps pixels in [0, 1]; u is the image ('pixel') or its rfft2 "
                     "spectrum scaled by 1/frequency ('fourier'). Start 'noise': N(0, "
                     f"{NOISE_STD}^2) in normalised units (grey); start 'image': the test image of the other class "
                     "with the highest probability of its true class. p and logit are of the un-jittered image.",
        "runs": [{k: v for k, v in r.items() if k not in ("p", "z", "shots")} | {
            "p_start": float(r["p"][0]), "p_final": float(r["p"][-1]), "logit_start": float(r["z"][0]),
            "logit_final": float(r["z"][-1]), "p_trajectory": r["p"].tolist(), "logit_trajectory": r["z"].tolist()}
            for r in results.values()],
    }
    ctx.log_table("trajectories", table)
    _plot_images(results, steps, ctx.path("images.png"))
    _plot_trajectories(results, ctx.path("trajectories.png"))
    ctx.log_figure(ctx.path("images.png"))
    ctx.log_figure(ctx.path("trajectories.png"))

    headline = {"n_runs": len(results), "n_raised": int(sum(r["p"][-1] > r["p"][0] for r in results.values()))}
    for name, r in results.items():
        headline[f"{name}_p_start"] = float(r["p"][0])
        headline[f"{name}_p_final"] = float(r["p"][-1])
    ctx.log_metrics(headline)
    return headline


def _plot_images(results, steps, path) -> None:
    names = list(results)
    columns = sorted(set(SNAPSHOTS) | {steps})
    columns = [c for c in columns if c <= steps]
    fig, axes = plt.subplots(len(names), len(columns), figsize=(1.45 * len(columns) + 2.2, 1.45 * len(names)),
                             squeeze=False)
    for i, name in enumerate(names):
        r = results[name]
        for j, step in enumerate(columns):
            ax = axes[i, j]
            ax.imshow(from_model_input(r["shots"][step]).permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"step {step}: P={r['p'][step]:.3f}", fontsize=6.5)
        axes[i, 0].set_ylabel(f"class {r['target']}\n{r['objective']}, {r['start']}\n{r['param']}", fontsize=6.5,
                              rotation=0, ha="right", va="center")
    fig.suptitle("Input optimisation: images maximising each class (P = probability of the target class)",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_trajectories(results, path) -> None:
    fig, (ax_p, ax_z) = plt.subplots(1, 2, figsize=(12, 4.5))
    for k, (name, r) in enumerate(results.items()):
        style = dict(color=f"C{k % 10}", lw=1.2, ls="-" if r["param"] == "pixel" else "--")
        ax_p.plot(r["p"], label=name, **style)
        ax_z.plot(r["z"], **style)
    ax_p.set_ylabel("P(target class)")
    ax_p.set_ylim(-0.02, 1.02)
    ax_z.set_ylabel("logit of the target class")
    for ax in (ax_p, ax_z):
        ax.set_xscale("symlog", linthresh=10)  # most of the change happens in the first steps
        ax.set_xlim(0, max(len(r["p"]) for r in results.values()) - 1)
        ax.set_xlabel("step (linear up to 10, then logarithmic)")
        ax.grid(alpha=0.3)
    ax_p.legend(fontsize=6, loc="lower right")
    fig.suptitle("Probability and logit of the target class along the ascent (dashed: Fourier parametrisation)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
