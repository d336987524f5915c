"""Batched, seeded augmentation on the device: pad-and-crop, horizontal flip, normalise.

The whole batch is transformed with a few tensor ops (no per-image Python),
and the randomness comes from a generator the caller seeds per (seed, epoch),
so a resumed run augments exactly as the uninterrupted one.
"""

from __future__ import annotations

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
