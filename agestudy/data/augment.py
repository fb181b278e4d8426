"""Augmentations on whole batches of uint8 tensors, random per sample.

Working on a batch tensor instead of one PIL image at a time is what makes training
fast: one crop gather, one flip, one jitter per batch, no Python per image. Everything
runs on the device the images are on (a GPU when training runs there), with the random
numbers drawn there too from ``generator``, which must live on that device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

# Inputs are scaled to roughly zero mean, unit variance with fixed constants, so the
# same transform serves training, evaluation, external photos and input optimisation.
PIXEL_MEAN = 0.5
PIXEL_STD = 0.25


@dataclass(frozen=True)
class AugmentConfig:
    """How training views an image, and how a run evaluates it. The defaults are agestudy's
    training defaults (TrainConfig takes its augmentation fields from here)."""

    crop: int = 88  # side of the (random / centre) crop
    padding: int = 4  # zero padding added before the random crop, like RandomCrop(padding=)
    flip: bool = True  # random horizontal flip
    jitter: float = 0.1  # brightness/contrast/saturation jitter strength, 0 = off
    random_crop: bool = True  # False: training uses the centre crop too (the Q7 ablation)
    scale: float = 0.0  # random zoom in [1 - scale, 1 + scale] about the centre, 0 = off
    rotate: float = 0.0  # random rotation in [-rotate, +rotate] degrees, 0 = off
    eval_flip: bool = True  # evaluation averages the centre crop and its mirror image
    # photometric changes for photos of other provenance than the training crops, 0 = off
    grayscale: float = 0.0  # probability of turning an image grey (old or black-and-white photos)
    blur: float = 0.0  # probability of a Gaussian blur, sigma uniform in BLUR_SIGMA (soft or small photos)
    erase: float = 0.0  # probability of erasing a random rectangle (occlusion: hands, glasses, hair)
    trivial: float = 0.0  # probability of one TrivialAugment operation (shear, shift, rotate, colour, ...)

    def geometric(self) -> AugmentConfig:
        """Training's random geometry alone (crop position, flip, zoom, rotation): what test-time
        crops draw, without colour jitter, grey, blur, erased patches or TrivialAugment."""
        return replace(self, random_crop=True, jitter=0.0, grayscale=0.0, blur=0.0, erase=0.0, trivial=0.0)


BLUR_SIGMA = (0.3, 1.5)  # pixels of the 100x100 image: from barely soft to a 4x smaller photo upscaled
ERASE_AREA = (0.02, 0.2)  # erased share of the crop, as in random erasing (Zhong et al. 2017)
ERASE_ASPECT = (0.3, 3.3)  # height / width of the erased rectangle


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B x 3 x H x W, 0-255) -> normalised float."""
    return images.float().div_(255.0).sub_(PIXEL_MEAN).div_(PIXEL_STD)


def from_model_input(x: torch.Tensor) -> torch.Tensor:
    """Inverse of to_model_input, to float in [0, 1] (for display)."""
    return (x * PIXEL_STD + PIXEL_MEAN).clamp(0, 1)


def center_crop(images: torch.Tensor, crop: int) -> torch.Tensor:
    h, w = images.shape[-2:]
    if crop > min(h, w):
        raise ValueError(f"crop {crop} is larger than the images ({h}x{w})")
    top, left = (h - crop) // 2, (w - crop) // 2
    return images[..., top : top + crop, left : left + crop]


def random_crop(images: torch.Tensor, crop: int, padding: int = 0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """One random crop position per sample (like torchvision's RandomCrop(crop, padding))."""
    if padding:
        images = F.pad(images, (padding, padding, padding, padding))
    b, c, h, w = images.shape
    if crop > min(h, w):
        raise ValueError(f"crop {crop} is larger than the padded images ({h}x{w})")
    dev = images.device
    top = torch.randint(0, h - crop + 1, (b,), generator=generator, device=dev)
    left = torch.randint(0, w - crop + 1, (b,), generator=generator, device=dev)
    if dev.type == "cpu":
        # on a CPU, B slice copies beat one big gather (about 10x faster for 100x100 images)
        out = images.new_empty((b, c, crop, crop))
        for i, (t, left_i) in enumerate(zip(top.tolist(), left.tolist())):
            out[i] = images[i, :, t : t + crop, left_i : left_i + crop]
        return out
    # on a GPU, one gather for the whole batch: advanced indexing around the channel slice
    offsets = torch.arange(crop, device=dev)
    rows = (top[:, None] + offsets)[:, :, None]  # B x crop x 1
    cols = (left[:, None] + offsets)[:, None, :]  # B x 1 x crop
    batch = torch.arange(b, device=dev)[:, None, None]
    return images.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def random_flip(images: torch.Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> torch.Tensor:
    mask = torch.rand(images.shape[0], generator=generator, device=images.device) < p
    return torch.where(mask[:, None, None, None], images.flip(-1), images)


def color_jitter(x: torch.Tensor, strength: float, generator: torch.Generator | None = None,
                 scale: float = 1.0) -> torch.Tensor:
    """Light per-sample brightness, contrast and saturation jitter of ``x * scale`` (float images in
    [0, 1] once scaled; pass uint8 values as floats with scale=1/255), clamped to [0, 1].

    Brightness (x * f1) and contrast ((x - mean) * f2 + mean) are one per-sample affine map, applied
    in one pass; saturation ((x - grey) * f3 + grey) needs each pixel's grey value, one more pass.
    """
    b = x.shape[0]

    def factors():
        return 1.0 + strength * (2 * torch.rand(b, 1, 1, 1, generator=generator, device=x.device) - 1)

    f1 = factors()
    mean = x.mean(dim=(1, 2, 3), keepdim=True) * (scale * f1)  # the mean after the brightness change
    f2 = factors()
    x = torch.addcmul(mean * (1 - f2), x, f1 * f2 * scale)  # brightness and contrast
    f3 = factors()
    grey = x.mean(dim=1, keepdim=True)
    return torch.addcmul(grey * (1 - f3), x, f3).clamp_(0, 1)  # saturation


def random_affine(x: torch.Tensor, scale: float, rotate: float,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample zoom and rotation of a float batch, all samples warped in one grid_sample."""
    b = x.shape[0]
    zoom = 1.0 + scale * (2 * torch.rand(b, generator=generator, device=x.device) - 1)
    angle = torch.deg2rad(rotate * (2 * torch.rand(b, generator=generator, device=x.device) - 1))
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom  # output -> input sampling map
    theta = torch.zeros(b, 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    # reflection keeps the borders face-like instead of black corners after a rotation
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def random_grayscale(x: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each sample of a float batch turned grey (ITU-R 601 luma in all three channels) with probability p."""
    chosen = (torch.rand(x.shape[0], generator=generator, device=x.device) < p).nonzero().flatten()
    weights = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype)[None, :, None, None]
    grey = (x[chosen] * weights).sum(1, keepdim=True).expand(-1, x.shape[1], -1, -1)
    return x.index_copy(0, chosen, grey)


def random_blur(x: torch.Tensor, p: float, generator: torch.Generator | None = None,
                sigma: tuple[float, float] = BLUR_SIGMA) -> torch.Tensor:
    """Each sample of a float batch blurred with probability p by a Gaussian of its own sigma. The
    chosen samples' kernels are one depthwise separable convolution: one pass, whatever their number."""
    b, c, h, w = x.shape
    s = sigma[0] + (sigma[1] - sigma[0]) * torch.rand(b, generator=generator, device=x.device)
    chosen = (torch.rand(b, generator=generator, device=x.device) < p).nonzero().flatten()
    n = len(chosen)
    if n == 0:
        return x
    radius = int(3 * sigma[1] + 0.5)
    taps = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (taps[None, :] / s[chosen, None]) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (n*C) x taps
    flat = F.pad(x[chosen].reshape(1, n * c, h, w), (radius, radius, radius, radius), mode="reflect")
    flat = F.conv2d(flat, kernel[:, None, None, :], groups=n * c)  # along rows
    flat = F.conv2d(flat, kernel[:, None, :, None], groups=n * c)  # along columns
    return x.index_copy(0, chosen, flat.reshape(n, c, h, w))


def random_erase(x: torch.Tensor, p: float, generator: torch.Generator | None = None, value: float = 0.0,
                 area: tuple[float, float] = ERASE_AREA, aspect: tuple[float, float] = ERASE_ASPECT) -> torch.Tensor:
    """Each sample of a batch gets, with probability p, one rectangle of its own size, shape and
    place set to ``value`` (0 on normalised inputs: the mean grey), built as one mask for the batch."""
    b, _, h, w = x.shape
    dev = x.device

    def uniform(lo, hi):
        return lo + (hi - lo) * torch.rand(b, generator=generator, device=dev)

    share = uniform(*area) * h * w
    ratio = torch.exp(uniform(math.log(aspect[0]), math.log(aspect[1])))
    eh = (share * ratio).sqrt().clamp(1, h)
    ew = (share / ratio).sqrt().clamp(1, w)
    top = uniform(0, 1) * (h - eh)
    left = uniform(0, 1) * (w - ew)
    rows = torch.arange(h, device=dev)[None, :]
    cols = torch.arange(w, device=dev)[None, :]
    inside_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])  # B x H
    inside_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])  # B x W
    chosen = (torch.rand(b, generator=generator, device=dev) < p)[:, None, None, None]
    mask = (inside_rows[:, :, None] & inside_cols[:, None, :])[:, None] & chosen
    return x.masked_fill(mask, value)


def trivial_augment(images: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """TrivialAugment (Mueller and Hutter 2021; torchvision's ``TrivialAugmentWide``): each sample of a
    uint8 batch gets, with probability p, one operation of random kind and random strength (shear,
    shift, rotation, brightness, colour, contrast, sharpness, posterise, solarise, autocontrast,
    equalise, or none). torchvision applies it one image at a time and draws from torch's global
    random numbers: those are seeded here from ``generator``, so the same generator gives the same
    views whatever else used the global ones (dropout does)."""
    from torchvision.transforms import v2

    chosen = (torch.rand(images.shape[0], generator=generator, device=images.device) < p).nonzero().flatten()
    if len(chosen) == 0:
        return images
    seed = int(torch.randint(2**62, (1,), generator=generator, device=images.device))
    operation = v2.TrivialAugmentWide()
    out = images.clone()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i in chosen.tolist():
            out[i] = operation(images[i])
    return out


def augment_batch(images: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Training view of a uint8 batch -> normalised float batch (B x 3 x crop x crop)."""
    if cfg.random_crop:
        images = random_crop(images, cfg.crop, cfg.padding, generator)
    else:
        images = center_crop(images, cfg.crop)
    if cfg.flip:
        images = random_flip(images, generator)
    if cfg.trivial > 0:
        images = trivial_augment(images, cfg.trivial, generator)
    photometric = cfg.grayscale > 0 or cfg.blur > 0
    if not (cfg.jitter > 0 or cfg.scale > 0 or cfg.rotate > 0 or photometric):
        return _erased(to_model_input(images), cfg, generator)
    x = images.float()
    if cfg.scale > 0 or cfg.rotate > 0:
        x = random_affine(x.div_(255.0), cfg.scale, cfg.rotate, generator)
        scale = 1.0
    else:
        scale = 1 / 255  # folded into the jitter's own pass
    if cfg.jitter > 0:
        x = color_jitter(x, cfg.jitter, generator, scale=scale)
    elif scale != 1.0:
        x = x.mul_(scale)
    if cfg.grayscale > 0:
        x = random_grayscale(x, cfg.grayscale, generator)
    if cfg.blur > 0:
        x = random_blur(x, cfg.blur, generator)
    return _erased(x.sub_(PIXEL_MEAN).div_(PIXEL_STD), cfg, generator)


def _erased(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None) -> torch.Tensor:
    return random_erase(x, cfg.erase, generator) if cfg.erase > 0 else x


def save_augmentation_grid(images: torch.Tensor, cfg: AugmentConfig, path, n_versions: int = 5, seed: int = 0,
                           title: str | None = None):
    """The lab's ``plotdata(original=False)``: each original beside augmented versions of it."""
    from agestudy.plots import plt

    g = torch.Generator().manual_seed(seed)
    n = images.shape[0]
    fig, axes = plt.subplots(n, n_versions + 1, figsize=(1.6 * (n_versions + 1), 1.7 * n), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(images[i].permute(1, 2, 0).numpy())
        axes[i, 0].set_title("original", fontsize=8)
        views = augment_batch(images[i : i + 1].expand(n_versions, -1, -1, -1).contiguous(), cfg, g)
        for j in range(n_versions):
            axes[i, j + 1].imshow(from_model_input(views[j]).permute(1, 2, 0).numpy())
            axes[i, j + 1].set_title(f"augmented {j + 1}", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title or f"RandomCrop({cfg.crop}, padding={cfg.padding}), flip={cfg.flip}, jitter={cfg.jitter}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
