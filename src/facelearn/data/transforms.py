"""Batch transforms on uint8 image tensors (run after the batch reached its device, so on the GPU when there is one).

No torchvision: flips and crops are tensor ops. ``normalize`` maps uint8 [0, 255] to [-1, 1] (insightface's
``(x / 255 - 0.5) / 0.5``).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float32 in [-1, 1]; float input is assumed normalised already and returned as is."""
    if images.dtype == torch.uint8:
        return images.float().div_(127.5).sub_(1.0)
    return images


def affine_resample(x: torch.Tensor, angles: torch.Tensor, scales: torch.Tensor, ratios: torch.Tensor,
                    shifts: torch.Tensor) -> torch.Tensor:
    """Per-image rotation + crop-and-resize in one bilinear resampling (borders replicated).

    Output pixel u (normalised coordinates in [-1, 1]) reads the input at ``R(angle) · diag(sx, sy) · u + shift``,
    ``sx = scale · sqrt(ratio)``, ``sy = scale / sqrt(ratio)``: a crop covering ``scale²`` of the image (aspect ratio
    ``ratio``) centred at ``shift``, rotated by ``angle`` (radians), resized to the input size."""
    n = x.shape[0]
    cos, sin = torch.cos(angles), torch.sin(angles)
    sx, sy = scales * ratios.sqrt(), scales / ratios.sqrt()
    theta = torch.stack([torch.stack([cos * sx, -sin * sy, shifts[:, 0]], 1),
                         torch.stack([sin * sx, cos * sy, shifts[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False).view(n, *x.shape[1:])


class BatchAugment:
    """Training augmentation on a uint8 batch, then normalisation.

    Args:
        flip_prob: probability of a horizontal flip per image.
        crop_padding: pad by this many pixels (replicate) and take a random crop of the original size (0 = off).
        resized_crop_scale: ``[min, max]`` fraction of the image area a random crop covers before it is resized
            back (torchvision's RandomResizedCrop; null = off). The SST authors' stronger augmentation uses it.
        resized_crop_ratio: ``[min, max]`` aspect ratio of that crop (log-uniform).
        rotation_degrees: random rotation in ``[-d, d]`` degrees (0 = off; the SST authors use about 10).
        grayscale_prob: probability of replacing an image by its luminance (ITU-R 601) in all channels (0 = off).
    Rotation and resized crop are one resampling (``affine_resample``); all of it runs on the batch's device.

    Called with a ``generator`` and ``rows=(offset, total)``, the batch is rows ``offset .. offset + n`` of a global
    batch of ``total`` images: every random draw is made for all ``total`` rows from the generator and sliced, so
    an image's augmentation depends on its position in the global batch and the generator's seed, not on how the
    global batch is split over ranks (``FaceDataModule`` seeds it from the run's seed, the epoch and the batch's
    position in it). Without them, draws come from torch's global RNG.
    """

    def __init__(self, flip_prob: float = 0.5, crop_padding: int = 0,
                 resized_crop_scale: tuple[float, float] | None = None,
                 resized_crop_ratio: tuple[float, float] = (3 / 4, 4 / 3), rotation_degrees: float = 0.0,
                 grayscale_prob: float = 0.0) -> None:
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"augment.flip_prob must be in [0, 1], got {flip_prob}")
        if not 0.0 <= grayscale_prob <= 1.0:
            raise ValueError(f"augment.grayscale_prob must be in [0, 1], got {grayscale_prob}")
        if resized_crop_scale is not None:
            lo, hi = (float(v) for v in resized_crop_scale)
            if not 0.0 < lo <= hi <= 1.0:
                raise ValueError(f"augment.resized_crop_scale must be [min, max] with 0 < min <= max <= 1, "
                                 f"got {list(resized_crop_scale)}")
            resized_crop_scale = (lo, hi)
        r_lo, r_hi = (float(v) for v in resized_crop_ratio)
        if not 0.0 < r_lo <= r_hi:
            raise ValueError(f"augment.resized_crop_ratio must be [min, max] with 0 < min <= max, "
                             f"got {list(resized_crop_ratio)}")
        if rotation_degrees < 0:
            raise ValueError(f"augment.rotation_degrees must be >= 0, got {rotation_degrees}")
        self.flip_prob, self.crop_padding = flip_prob, int(crop_padding)
        self.resized_crop_scale, self.resized_crop_ratio = resized_crop_scale, (r_lo, r_hi)
        self.rotation_degrees, self.grayscale_prob = float(rotation_degrees), grayscale_prob

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None,
                 rows: tuple[int, int] | None = None) -> torch.Tensor:
        x = normalize(images)
        n, _, h, w = x.shape
        offset, total = rows if rows is not None else (0, n)
        if not 0 <= offset <= total - n:
            raise ValueError(f"augment: rows {offset}..{offset + n} are not within a global batch of {total}")

        def draw(fn, *shape):  # all rows of the global batch, then this batch's
            return fn(total, *shape, generator=generator, device=x.device)[offset:offset + n]

        if self.flip_prob > 0:
            flip = draw(torch.rand) < self.flip_prob
            x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
        if self.crop_padding > 0:
            p = self.crop_padding
            padded = F.pad(x, (p, p, p, p), mode="replicate")
            dy = draw(lambda k, **kw: torch.randint(0, 2 * p + 1, (k,), **kw))
            dx = draw(lambda k, **kw: torch.randint(0, 2 * p + 1, (k,), **kw))
            ys = (dy.view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1).expand(n, 3, h, w + 2 * p)
            x = padded.gather(2, ys)
            cols = (dx.view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w).expand(n, 3, h, w)
            x = x.gather(3, cols)
        if self.resized_crop_scale is not None or self.rotation_degrees > 0:
            x = self._affine(x, draw)
        if self.grayscale_prob > 0:
            gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1).expand_as(x)
            pick = draw(torch.rand) < self.grayscale_prob
            x = torch.where(pick.view(n, 1, 1, 1), gray, x)
        return x

    def _affine(self, x: torch.Tensor, draw: Callable[..., torch.Tensor]) -> torch.Tensor:
        n, dev = x.shape[0], x.device
        angles = (draw(torch.rand) * 2 - 1) * math.radians(self.rotation_degrees)
        scales, ratios = torch.ones(n, device=dev), torch.ones(n, device=dev)
        shifts = torch.zeros(n, 2, device=dev)
        if self.resized_crop_scale is not None:
            lo, hi = self.resized_crop_scale
            area = lo + draw(torch.rand) * (hi - lo)
            r_lo, r_hi = (math.log(r) for r in self.resized_crop_ratio)
            ratios = torch.exp(r_lo + draw(torch.rand) * (r_hi - r_lo))
            scales = area.sqrt()
            # Keep the crop inside the image along each axis (side fraction s -> centre within ±(1 - s)).
            side = torch.stack([(scales * ratios.sqrt()).clamp(max=1), (scales / ratios.sqrt()).clamp(max=1)], 1)
            shifts = (draw(torch.rand, 2) * 2 - 1) * (1 - side)
        return affine_resample(x, angles, scales, ratios, shifts)

    def __repr__(self) -> str:
        return (f"BatchAugment(flip_prob={self.flip_prob}, crop_padding={self.crop_padding}, "
                f"resized_crop_scale={self.resized_crop_scale}, rotation_degrees={self.rotation_degrees}, "
                f"grayscale_prob={self.grayscale_prob})")
