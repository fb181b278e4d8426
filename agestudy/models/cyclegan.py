"""CycleGAN's two networks (Zhu et al., 2017), sized for 64-100 pixel faces.

    G = Generator(); D = PatchDiscriminator()
    G(x)            # B x 3 x H x W in [-1, 1] -> same shape, in [-1, 1]
    D(x)            # B x 3 x H x W -> B x 1 x h x w: one real/fake score per patch

The generator is the paper's ResNet generator (Johnson et al., 2016): a 7x7 convolution,
two stride-2 downsamplings, residual blocks at a quarter of the resolution (where most of
the work happens: the blocks see 16x16 maps at 64 pixels), two upsamplings back and a 7x7
convolution to RGB through tanh. Instance normalisation, as in the paper: each image is
normalised on its own, so the style of one face does not leak into another of the batch.
Upsampling is nearest-neighbour + 3x3 convolution rather than transposed convolution,
which avoids the checkerboard artefacts those leave on small images.

The discriminator is a PatchGAN: a few stride-2 4x4 convolutions whose every output cell
judges one patch of the input (34x34 pixels with ``layers=2``), so it asks "is every patch
a plausible face patch of this age group?", which is about texture (skin, wrinkles, hair).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _norm(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=True)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=False), _norm(channels), nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=False), _norm(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Generator(nn.Module):
    def __init__(self, width: int = 32, blocks: int = 6):
        super().__init__()
        self.knobs = {"width": width, "blocks": blocks}
        w = width
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(3, w, 7, bias=False), _norm(w), nn.ReLU(inplace=True)]
        for cin, cout in ((w, 2 * w), (2 * w, 4 * w)):  # downsample twice
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), _norm(cout), nn.ReLU(inplace=True)]
        layers += [ResidualBlock(4 * w) for _ in range(blocks)]
        for cin, cout in ((4 * w, 2 * w), (2 * w, w)):  # upsample twice
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                       _norm(cout), nn.ReLU(inplace=True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(w, 3, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"the generator needs sides divisible by 4, got {tuple(x.shape[-2:])}")
        return self.net(x)


class PatchDiscriminator(nn.Module):
    def __init__(self, width: int = 32, layers: int = 2):
        super().__init__()
        self.knobs = {"width": width, "layers": layers}
        w = width
        seq = [nn.Conv2d(3, w, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        cin = w
        for i in range(1, layers + 1):
            cout = w * min(2 ** i, 8)
            stride = 2 if i < layers else 1  # the last one keeps the resolution, as in the paper
            seq += [nn.Conv2d(cin, cout, 4, stride=stride, padding=1, bias=False), _norm(cout),
                    nn.LeakyReLU(0.2, inplace=True)]
            cin = cout
        seq += [nn.Conv2d(cin, 1, 4, stride=1, padding=1)]  # one score per patch (least-squares GAN: no sigmoid)
        self.net = nn.Sequential(*seq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """The paper's initialisation: N(0, 0.02) for convolutions, N(1, 0.02) for normalisation scales."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.InstanceNorm2d) and m.affine:
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)


# ----------------------------------------------------------------------------- images in and out

def to_gan_input(images: torch.Tensor, size: int, chunk: int = 1024) -> torch.Tensor:
    """uint8 N x 3 x 100 x 100 -> float N x 3 x size x size in [-1, 1] (the whole frame, resized).

    In chunks: CACD's 20,000 faces of a group would otherwise pass through 2.4 GB of float32.
    """
    out = []
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].float().div(127.5).sub(1)
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(x.clamp(-1, 1))
    return torch.cat(out) if out else images.float().new_empty(0, 3, size, size)


def to_uint8_frame(x: torch.Tensor, side: int = 100) -> torch.Tensor:
    """The inverse, for the judge: [-1, 1] at any size -> uint8 at the data's 100x100."""
    if x.shape[-1] != side:
        x = F.interpolate(x.float(), size=(side, side), mode="bilinear", align_corners=False)
    return x.float().add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8)


@torch.no_grad()
def translate(net: torch.nn.Module, x: torch.Tensor, device: torch.device, batch_size: int = 128) -> torch.Tensor:
    """net(x) in eval mode, batched, float32 on x's device."""
    net.eval()
    out = [net(x[i : i + batch_size].to(device).contiguous(memory_format=torch.channels_last)).float().to(x.device)
           for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else x.clone()
