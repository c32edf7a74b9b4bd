"""Batch transforms on uint8 image tensors (run after the batch reached its device, so on the GPU when there is one).

No torchvision: flips and crops are tensor ops. ``normalize`` maps uint8 [0, 255] to [-1, 1] (insightface's
``(x / 255 - 0.5) / 0.5``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float32 in [-1, 1]; float input is assumed normalised already and returned as is."""
    if images.dtype == torch.uint8:
        return images.float().div_(127.5).sub_(1.0)
    return images


class BatchAugment:
    """Training augmentation on a uint8 batch, then normalisation.

    Args:
        flip_prob: probability of a horizontal flip per image.
        crop_padding: pad by this many pixels (replicate) and take a random crop of the original size (0 = off).
    """

    def __init__(self, flip_prob: float = 0.5, crop_padding: int = 0) -> None:
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"augment.flip_prob must be in [0, 1], got {flip_prob}")
        self.flip_prob, self.crop_padding = flip_prob, int(crop_padding)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = normalize(images)
        n, _, h, w = x.shape
        if self.flip_prob > 0:
            flip = torch.rand(n, device=x.device) < self.flip_prob
            x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
        if self.crop_padding > 0:
            p = self.crop_padding
            padded = F.pad(x, (p, p, p, p), mode="replicate")
            dy = torch.randint(0, 2 * p + 1, (n,), device=x.device)
            dx = torch.randint(0, 2 * p + 1, (n,), device=x.device)
            rows = (dy.view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1).expand(n, 3, h, w + 2 * p)
            x = padded.gather(2, rows)
            cols = (dx.view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w).expand(n, 3, h, w)
            x = x.gather(3, cols)
        return x

    def __repr__(self) -> str:
        return f"BatchAugment(flip_prob={self.flip_prob}, crop_padding={self.crop_padding})"
