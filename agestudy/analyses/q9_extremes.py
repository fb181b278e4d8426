"""Q9: the test images the model gets most wrong and most right, and where it looked.

Procedure (also written into the logged table): predict every test image from its centre
crop; p_true = the probability given to the image's true class; sort by p_true. The 16
lowest are the most confidently wrong (p_true near 0), the 16 highest the most confidently
right. Beside each image, a Grad-CAM map (Selvaraju et al., 2017) of the predicted class:
the gradient of the logit margin (predicted minus other class) with respect to a deep
feature map, averaged per channel, weights that map's channels; the positive part of the
weighted sum, upsampled to the crop, shows which regions pushed the decision.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from agestudy.analyses import ANALYSIS_VIEW
from agestudy.data import center_crop
from agestudy.models import split_members
from agestudy.plots import plt
from agestudy.predict import model_inputs

N_SHOWN = 16


def cam_layer(model, crop: int, device) -> tuple[str, list[int]]:
    """The deepest feature map still at least crop/16 pixels wide (name, shape).

    The last stage of a CNN on 88-pixel crops is 3x3: too coarse to show where the network
    looked. One stage earlier (6x6) is still deep and localises better.
    """
    fired = []
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: fired.append((name, tuple(out.shape)))
                                     if isinstance(out, torch.Tensor) else None)
             for name, m in model.named_modules() if name]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, crop, crop, device=device))
    finally:
        for h in hooks:
            h.remove()
    min_side = max(2, crop // 16)
    maps = [(name, shape) for name, shape in fired if len(shape) == 4 and min(shape[2:]) >= min_side]
    if not maps:
        raise RuntimeError("no 4-D feature map to compute Grad-CAM on")
    name, shape = maps[-1]  # hooks fire when a module finishes: a container after its children
    return name, list(shape[1:])


def grad_cam(model, x: torch.Tensor, target: torch.Tensor, layer: str) -> torch.Tensor:
    """Grad-CAM maps (B x H x W, each scaled to [0, 1]) for class ``target`` of each input."""
    module = dict(model.named_modules())[layer]
    saved = {}

    def keep(mod, inp, out):
        saved["a"] = out
        return out.clone()  # later in-place ops (ReLU(inplace=True)) act on the copy, not on what we keep

    handle = module.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logits = model(x.detach().requires_grad_(True))  # a graph even if the weights are frozen
            other = 1 - target
            score = (logits.gather(1, target[:, None]) - logits.gather(1, other[:, None])).sum()
            (grad,) = torch.autograd.grad(score, saved["a"])
    finally:
        handle.remove()
    act = saved["a"].detach()
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * act).sum(1, keepdim=True))
    cam = F.interpolate(cam.float(), size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).max(1).values.clamp_min(1e-12)
    return (cam / peak[:, None, None]).cpu()


def run(ctx) -> dict:
    cfg, test = ctx.cfg, ctx.data.test
    labels = test.labels.numpy()
    p1 = ctx.test_p1()
    p_true = np.where(labels == 1, p1, 1 - p1)
    pred = (p1 >= 0.5).astype(int)
    order = np.argsort(p_true, kind="stable")  # ascending: most wrong first
    k = min(N_SHOWN, len(order))
    worst, best = order[:k], order[::-1][:k].copy()  # copy: torch refuses negative strides
    # an ensemble: each member's Grad-CAM on its own copy of the layer, averaged (members share a design)
    networks = split_members(ctx.model)
    layer, layer_shape = cam_layer(networks[0], cfg.crop, ctx.device)
    members_note = f", averaged over the ensemble's {len(networks)} members" if len(networks) > 1 else ""

    def rows_of(index):
        return [{"rank": i + 1, "index": int(j), "file": test.files[j], "label": int(labels[j]),
                 "predicted": int(pred[j]), "p0": float(1 - p1[j]), "p1": float(p1[j]), "p_true": float(p_true[j])}
                for i, j in enumerate(index)]

    procedure = (f"1. Predict every test image ({len(labels)}) from its {cfg.crop}-pixel centre crop: p1 = softmax "
                 "probability of label 1, p0 = 1 - p1. 2. p_true = p1 if the true label is 1, else p0. "
                 "3. Sort all test images by p_true, ascending (ties: file order). 4. Most wrong = the first "
                 f"{k} (confidently wrong when p_true < 0.5); most right = the last {k}, highest first. "
                 f"5. Saliency: Grad-CAM of the predicted class on feature map '{layer}' "
                 f"({'x'.join(map(str, layer_shape))}): channel weights = spatial mean of the gradient of "
                 "(logit of predicted class - logit of the other class); map = ReLU(weighted channel sum), "
                 f"bilinearly upsampled to the crop and scaled to [0, 1] per image{members_note}.")
    ctx.log_table("extremes", {"procedure": procedure, "cam_layer": layer, "cam_shape": layer_shape,
                               "worst": rows_of(worst), "best": rows_of(best)})
    path = ctx.path("ranking.csv")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("rank,file,label,predicted,p0,p1,p_true\n")
        for i, j in enumerate(order):
            name = '"' + test.files[j].replace('"', '""') + '"'
            fh.write(f"{i + 1},{name},{labels[j]},{pred[j]},{1 - p1[j]:.6f},{p1[j]:.6f},{p_true[j]:.6f}\n")
    ctx.log_file(path)

    for name, index, title in (("worst", worst, "Most confidently wrong"), ("best", best, "Most confidently right")):
        chosen = test.images[torch.as_tensor(index, dtype=torch.long)]
        crops = center_crop(chosen, cfg.crop)  # what the model saw, for display
        x = model_inputs(chosen, ANALYSIS_VIEW, cfg.augment())[0].to(ctx.device)
        x = x.contiguous(memory_format=torch.channels_last)
        target = torch.as_tensor(pred[index], device=ctx.device)
        cams = torch.stack([grad_cam(net, x, target, layer) for net in networks]).mean(0).numpy()
        _plot_gallery(crops.numpy(), cams, [r for r in rows_of(index)], ctx.path(f"{name}.png"),
                      f"{title} test images (lowest p_true first)" if name == "worst" else
                      f"{title} test images (highest p_true first)", layer)
        ctx.log_figure(ctx.path(f"{name}.png"))

    headline = {"n_test": len(labels), "n_wrong": int((pred != labels).sum()),
                "n_confidently_wrong": int((p_true < 0.1).sum()),
                "worst_p_true": float(p_true[worst[0]]), "worst16_p_true_max": float(p_true[worst].max()),
                "best_p_true": float(p_true[best[0]]), "best16_p_true_min": float(p_true[best].min())}
    ctx.log_metrics(headline)
    return headline


def _plot_gallery(crops: np.ndarray, cams: np.ndarray, rows: list[dict], path, title: str, layer: str) -> None:
    """Pairs (image, Grad-CAM overlay), four pairs per row, captions under each pair."""
    n = len(rows)
    per_row = 4
    n_rows = max(1, -(-n // per_row))
    height = n_rows * 1.75 + 0.5
    fig, axes = plt.subplots(n_rows, 2 * per_row, figsize=(2 * per_row * 1.35, height), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for i, r in enumerate(rows):
        ax_img, ax_cam = axes[i // per_row, 2 * (i % per_row)], axes[i // per_row, 2 * (i % per_row) + 1]
        image = np.transpose(crops[i], (1, 2, 0))
        ax_img.imshow(image)
        ax_cam.imshow(image)
        ax_cam.imshow(cams[i], cmap="jet", alpha=0.45, vmin=0, vmax=1)
        colour = "C3" if r["predicted"] != r["label"] else "black"
        ax_img.set_title(f"#{r['rank']} true {r['label']}, pred {r['predicted']}", fontsize=7, color=colour)
        ax_cam.set_title(f"p_true {r['p_true']:.3f}", fontsize=7)
        ax_img.text(1.0, -0.04, f"p0 {r['p0']:.3f}  p1 {r['p1']:.3f}", transform=ax_img.transAxes,
                    ha="center", va="top", fontsize=6.5)
    fig.suptitle(f"{title}; right of each: Grad-CAM of the predicted class ({layer})", fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.2 / height, top=1 - 0.55 / height, wspace=0.06, hspace=0.42)
    fig.savefig(path, dpi=110)
    plt.close(fig)
