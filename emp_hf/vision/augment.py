"""Batched, seeded augmentation on the device: pad-and-crop, horizontal flip, normalise.

The whole batch is transformed with a few tensor ops (no per-image Python),
and the randomness comes from a generator the caller seeds per (seed, epoch),
so a resumed run augments exactly as the uninterrupted one.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def normalise(images: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """uint8 (B, C, H, W) -> float (B, C, H, W), per-channel standardised."""
    return (images.float().div_(255.0) - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def random_crop_flip(images: Tensor, generator: torch.Generator, pad: int = 4, flip: bool = True) -> Tensor:
    """Pad by `pad` (zeros) and crop back to size at a random offset per image; flip half of them."""
    b, c, h, w = images.shape
    device = images.device
    if pad > 0:
        padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=generator.device).to(device)
        dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=generator.device).to(device)
        rows = (dy[:, None] + torch.arange(h, device=device)[None, :])[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=device)[None, :])[:, None, None, :]
        batch = torch.arange(b, device=device)[:, None, None, None]
        chan = torch.arange(c, device=device)[None, :, None, None]
        images = padded[batch, chan, rows, cols]
    if flip:
        mask = torch.rand(b, generator=generator, device=generator.device).to(device) < 0.5
        images = torch.where(mask[:, None, None, None], images.flip(3), images)
    return images


#: Uniform draws per view: crop area, crop aspect ratio, crop x, crop y, flip, grayscale, jitter on/off,
#: brightness, contrast, saturation, hue.
VIEW_DRAWS = 11


def draw_view_params(num_examples: int, generator: torch.Generator) -> Tensor:
    """(N, 2, VIEW_DRAWS) uniforms: the random choices of both views of every example for one epoch.

    Drawn per example rather than per batch, so an example's views depend on (seed, epoch, example) only:
    the same whatever the batch size, the number of processes or a resume in between.
    """
    return torch.rand(num_examples, 2, VIEW_DRAWS, generator=generator)


def simclr_view(images: Tensor, draws: Tensor, *, gray_p: float = 0.8, jitter: float = 0.0,
                jitter_p: float = 0.8, crop_scale: tuple[float, float] = (0.08, 1.0)) -> Tensor:
    """One SimCLR view of a uint8 batch, as floats in [0, 1] (EMP B.5 / SimCLR's augmentations, batched).

    Random resized crop (area in `crop_scale`, aspect ratio in [3/4, 4/3], resized back to the image size,
    bilinear), horizontal flip with p = 0.5, then, for RGB images, colour jitter with strength `jitter`
    (SimCLR: 0.5, i.e. brightness/contrast/saturation 0.8 * s and hue 0.2 * s, applied with p = `jitter_p`,
    in that fixed order; hue as a rotation of the YIQ chroma plane) and grayscale with p = `gray_p`.
    `draws`: (B, VIEW_DRAWS) uniforms from `draw_view_params`.
    """
    b, c, h, w = images.shape
    u = draws.to(images.device, torch.float32)
    area = crop_scale[0] + (crop_scale[1] - crop_scale[0]) * u[:, 0]
    log_ratio = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * u[:, 1]
    ratio = torch.exp(log_ratio)
    cw = torch.sqrt(area * ratio).clamp(max=1.0)  # crop width and height as fractions of the image
    ch = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (1 - cw) * u[:, 2] + cw / 2  # crop centre, inside the image
    cy = (1 - ch) * u[:, 3] + ch / 2
    flip = torch.where(u[:, 4] < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=images.device)
    theta[:, 0, 0] = cw * flip
    theta[:, 0, 2] = 2 * cx - 1
    theta[:, 1, 1] = ch
    theta[:, 1, 2] = 2 * cy - 1
    grid = torch.nn.functional.affine_grid(theta, [b, c, h, w], align_corners=False)
    x = torch.nn.functional.grid_sample(images.float().div_(255.0), grid, mode="bilinear",
                                        padding_mode="reflection", align_corners=False)
    if c != 3:
        return x
    if jitter > 0:
        on = (u[:, 6] < jitter_p).float()[:, None, None, None]
        strength = 0.8 * jitter
        jittered = _colour_jitter(x, 1 + strength * (2 * u[:, 7] - 1), 1 + strength * (2 * u[:, 8] - 1),
                                  1 + strength * (2 * u[:, 9] - 1), 0.2 * jitter * (2 * u[:, 10] - 1))
        x = on * jittered + (1 - on) * x
    gray = (u[:, 5] < gray_p).float()[:, None, None, None]
    return gray * _luma(x).expand_as(x) + (1 - gray) * x


def _luma(x: Tensor) -> Tensor:
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _colour_jitter(x: Tensor, brightness: Tensor, contrast: Tensor, saturation: Tensor, hue: Tensor) -> Tensor:
    """Brightness, contrast, saturation factors and a hue shift (fraction of a turn), per image."""
    x = (x * brightness[:, None, None, None]).clamp(0, 1)
    mean = _luma(x).mean(dim=(2, 3), keepdim=True)
    x = ((x - mean) * contrast[:, None, None, None] + mean).clamp(0, 1)
    gray = _luma(x)
    x = ((x - gray) * saturation[:, None, None, None] + gray).clamp(0, 1)
    # hue: rotate the (I, Q) chroma plane of YIQ by 2 pi * hue
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                          device=x.device)
    yiq = torch.einsum("ij,bjhw->bihw", to_yiq, x)
    angle = 2 * math.pi * hue
    cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    i, q = yiq[:, 1], yiq[:, 2]
    yiq = torch.stack([yiq[:, 0], cos * i - sin * q, sin * i + cos * q], dim=1)
    return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(to_yiq), yiq).clamp(0, 1)
