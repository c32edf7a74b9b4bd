"""A synthetic identity dataset generated in code from a seed (the default data: nothing to download).

Each identity is a smooth random "face" texture inside a fixed face-like layout (skin ellipse, eye/mouth regions)
whose identity-specific part is a multi-scale random field. Identities come in *families*: members share a
``family_similarity`` fraction of their field (correlation ρ), so look-alike identities exist and hard negatives
are real. Every sample of an identity is the identity's template under intra-class variation:

* pose-like warps: rotation, scale, translation and a horizontal squeeze (a crude yaw), via ``grid_sample``;
* illumination: global gain, a directional brightness gradient and a colour cast;
* sensor noise: Gaussian;
* occlusion: with probability ``occlusion_prob`` a random-coloured rectangle.

Everything is a function of ``(seed, identity index, sample index)``, so a dataset is reproducible and two sources
with different seeds have different people (names carry the seed: ``syn<seed>_<index>``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from facelearn.data.records import FaceRecords


def _field(gen: torch.Generator, n: int, size: int) -> torch.Tensor:
    """A multi-scale smooth random field (n, 3, size, size) with unit-ish variance."""
    out = torch.zeros(n, 3, size, size)
    for res, weight in ((3, 1.0), (6, 0.8), (12, 0.5)):
        noise = torch.randn(n, 3, res, res, generator=gen)
        out += weight * F.interpolate(noise, size=(size, size), mode="bicubic", align_corners=False)
    return out / math.sqrt(1.0 + 0.64 + 0.25)


def _layout(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed face-like layout: skin ellipse mask and darker eye/mouth regions (shared by all identities)."""
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    face = (((xs / 0.72) ** 2 + (ys / 0.92) ** 2) < 1).float()
    feat = torch.zeros(size, size)
    for cx, cy, rx, ry in ((-0.33, -0.2, 0.17, 0.08), (0.33, -0.2, 0.17, 0.08), (0.0, 0.45, 0.3, 0.08),
                           (0.0, 0.12, 0.07, 0.18)):
        feat += torch.exp(-(((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2))
    return face, feat.clamp(max=1)


class SyntheticFaces:
    """Synthetic identities with controllable intra-class variation and look-alike families.

    Args:
        num_identities: number of people.
        images_per_identity: an int, or ``[low, high]`` (inclusive) for a per-identity count (deep-like data).
        family_size: identities per look-alike family (1 = no families).
        family_similarity: correlation ρ of the identity fields within a family (0 = unrelated, 1 = identical).
        identity_strength: contrast of the identity field against the shared layout.
        rotation_deg, scale_jitter, translate, yaw: pose-like warp ranges.
        illumination: strength of gain / gradient / colour-cast changes.
        noise: std of additive Gaussian noise (in [-1, 1] image units).
        occlusion_prob: probability of a random rectangle occluder.
        seed: everything is generated from it.
    """

    def __init__(self, num_identities: int = 1000, images_per_identity: int | list[int] = 2, family_size: int = 4,
                 family_similarity: float = 0.6, identity_strength: float = 0.6, rotation_deg: float = 10.0,
                 scale_jitter: float = 0.08, translate: float = 0.06, yaw: float = 0.12, illumination: float = 0.3,
                 noise: float = 0.04, occlusion_prob: float = 0.15, seed: int = 0, name: str = "synthetic") -> None:
        if num_identities < 1:
            raise ValueError(f"synthetic num_identities must be >= 1, got {num_identities}")
        if not 0.0 <= family_similarity <= 1.0:
            raise ValueError(f"synthetic family_similarity must be in [0, 1], got {family_similarity}")
        if family_size < 1:
            raise ValueError(f"synthetic family_size must be >= 1, got {family_size}")
        if isinstance(images_per_identity, int):
            lo = hi = images_per_identity
        else:
            lo, hi = (int(v) for v in images_per_identity)
        if not 1 <= lo <= hi:
            raise ValueError(f"synthetic images_per_identity must be >= 1 (or [low, high]), got {images_per_identity}")
        self.num_identities, self.range = num_identities, (lo, hi)
        self.family_size, self.rho, self.strength = family_size, family_similarity, identity_strength
        self.rotation, self.scale_jitter, self.translate, self.yaw = rotation_deg, scale_jitter, translate, yaw
        self.illumination, self.noise, self.occlusion_prob = illumination, noise, occlusion_prob
        self.seed, self.name = seed, name
        self.center_crop = None

    # -- identities -------------------------------------------------------------------------------------------
    def identity_names(self) -> list[str]:
        return [f"syn{self.seed}_{i:06d}" for i in range(self.num_identities)]

    def family_of(self, identity: int) -> int:
        return identity // self.family_size

    def templates(self, size: int) -> torch.Tensor:
        """Canonical (num_identities, 3, size, size) images in [-1, 1] (before any variation)."""
        gen = torch.Generator().manual_seed(self.seed * 7919 + 17)
        n_fam = math.ceil(self.num_identities / self.family_size)
        fam = _field(gen, n_fam, size)
        own = _field(gen, self.num_identities, size)
        fam_idx = torch.arange(self.num_identities) // self.family_size
        ident = math.sqrt(self.rho) * fam[fam_idx] + math.sqrt(1 - self.rho) * own
        skin = torch.tensor([0.35, 0.05, -0.15]).view(1, 3, 1, 1)
        skin = skin + 0.25 * torch.randn(n_fam, 3, 1, 1, generator=gen)[fam_idx]  # family skin tone
        face, feat = _layout(size)
        img = skin + self.strength * ident - 0.7 * feat
        # Background follows the family, not the person, so it cannot identify a look-alike on its own.
        background = 0.4 * torch.randn(n_fam, 3, 1, 1, generator=gen)[fam_idx]
        img = face * img + (1 - face) * (background + 0.15 * fam[fam_idx])
        return img.clamp(-1, 1)

    # -- samples ----------------------------------------------------------------------------------------------
    def _counts(self) -> np.ndarray:
        lo, hi = self.range
        rng = np.random.default_rng(self.seed + 1)
        return rng.integers(lo, hi + 1, size=self.num_identities)

    def render(self, templates: torch.Tensor, labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Apply random intra-class variation to ``templates[labels]``; returns uint8 (N, 3, S, S)."""
        n, size = len(labels), templates.shape[-1]
        u = lambda *shape: torch.rand(*shape, generator=gen) * 2 - 1  # noqa: E731  uniform in [-1, 1]
        angle = u(n) * math.radians(self.rotation)
        scale = 1 + u(n) * self.scale_jitter
        sx = scale * (1 - self.yaw * torch.rand(n, generator=gen))
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.stack([torch.stack([cos / sx, -sin / sx, u(n) * self.translate], 1),
                             torch.stack([sin / scale, cos / scale, u(n) * self.translate], 1)], 1)
        grid = F.affine_grid(theta, (n, 3, size, size), align_corners=False)
        img = F.grid_sample(templates[labels], grid, mode="bilinear", padding_mode="border", align_corners=False)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
        gain = 1 + self.illumination * u(n, 1, 1, 1)
        grad = self.illumination * (u(n, 1, 1, 1) * xs + u(n, 1, 1, 1) * ys)
        cast = 0.3 * self.illumination * u(n, 3, 1, 1)
        img = img * gain + grad + cast + self.noise * torch.randn(img.shape, generator=gen)
        occ = torch.rand(n, generator=gen) < self.occlusion_prob
        for i in torch.nonzero(occ).flatten().tolist():
            h = int(size * (0.2 + 0.3 * torch.rand(1, generator=gen)))
            w = int(size * (0.2 + 0.5 * torch.rand(1, generator=gen)))
            y0 = int(torch.randint(0, size - h + 1, (1,), generator=gen))
            x0 = int(torch.randint(0, size - w + 1, (1,), generator=gen))
            img[i, :, y0:y0 + h, x0:x0 + w] = u(3, 1, 1)
        return ((img.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)

    def load(self, image_size: int) -> FaceRecords:
        counts = self._counts()
        labels = torch.from_numpy(np.repeat(np.arange(self.num_identities), counts))
        templates = self.templates(image_size)
        gen = torch.Generator().manual_seed(self.seed * 104729 + 3)
        images = torch.cat([self.render(templates, chunk, gen) for chunk in labels.split(4096)])
        names = np.array(self.identity_names(), dtype=object)
        return FaceRecords(names[labels.numpy()], images=images.numpy(), source=f"{self.name}(seed={self.seed})",
                           meta={"families": (labels // self.family_size).numpy()})
