"""Batch augmentations: exact identities by hand, rotation against torch.rot90, grayscale luminance, config."""

import math

import pytest
import torch

from facelearn.data.transforms import BatchAugment, affine_resample, normalize


def batch(n=4, s=8):
    torch.manual_seed(0)
    return torch.randint(0, 256, (n, 3, s, s), dtype=torch.uint8)


def test_identity_affine_is_exact():
    x = normalize(batch())
    n = len(x)
    out = affine_resample(x, torch.zeros(n), torch.ones(n), torch.ones(n), torch.zeros(n, 2))
    assert torch.allclose(out, x, atol=1e-5)


def test_quarter_turn_equals_rot90():
    x = normalize(batch())
    n = len(x)
    out = affine_resample(x, torch.full((n,), math.pi / 2), torch.ones(n), torch.ones(n), torch.zeros(n, 2))
    # output(u) = input(R u), R (x, y) = (-y, x): output row 0, col 0 (x = y = -0.75) reads input x = 0.75,
    # y = -0.75 (row 0, col W-1), which is torch.rot90 with k = 1 over (H, W)
    assert torch.allclose(out, torch.rot90(x, 1, dims=(2, 3)), atol=1e-5)


def test_half_scale_crop_zooms_in():
    # A crop of half the side centred on the image, resized back: the central 4x4 of an 8x8 constant-by-quadrant
    # image still shows four quadrants, each now 4x4.
    x = torch.zeros(1, 3, 8, 8)
    x[..., :4, 4:] = 1.0
    out = affine_resample(x, torch.zeros(1), torch.full((1,), 0.5), torch.ones(1), torch.zeros(1, 2))
    assert out[0, 0, 0, 7] == pytest.approx(1.0) and out[0, 0, 7, 0] == pytest.approx(0.0)
    assert out[0, 0, 1, 5] == pytest.approx(1.0)


def test_grayscale_all_channels_equal_luminance():
    x = batch()
    out = BatchAugment(flip_prob=0.0, grayscale_prob=1.0)(x)
    y = normalize(x)
    lum = 0.299 * y[:, 0] + 0.587 * y[:, 1] + 0.114 * y[:, 2]
    for c in range(3):
        assert torch.allclose(out[:, c], lum, atol=1e-6)


def test_strong_augmentation_stays_in_range_and_changes_images():
    x = batch(16, 16)
    aug = BatchAugment(flip_prob=0.5, resized_crop_scale=(0.8, 1.0), rotation_degrees=10, grayscale_prob=0.2)
    out = aug(x)
    assert out.shape == (16, 3, 16, 16) and out.min() >= -1.0 - 1e-6 and out.max() <= 1.0 + 1e-6
    assert not torch.allclose(out, normalize(x))


@pytest.mark.parametrize("kw,match", [({"resized_crop_scale": (0.0, 1.0)}, "resized_crop_scale"),
                                      ({"resized_crop_scale": (0.9, 0.8)}, "resized_crop_scale"),
                                      ({"rotation_degrees": -1}, "rotation_degrees"),
                                      ({"grayscale_prob": 1.5}, "grayscale_prob"),
                                      ({"resized_crop_ratio": (2.0, 1.0)}, "resized_crop_ratio")])
def test_bad_options_are_named(kw, match):
    with pytest.raises(ValueError, match=match):
        BatchAugment(**kw)


def test_augmentation_of_a_slice_of_the_global_batch_is_the_slice_of_its_augmentation():
    """With a seeded generator and rows=(offset, total), every draw covers the whole global batch: rank 1's 4 rows
    of an 8-image global batch are augmented exactly as rows 4..8 of the 8 images in one process; other seeds or
    rows give other draws."""
    aug = BatchAugment(flip_prob=0.5, crop_padding=2, resized_crop_scale=(0.5, 1.0), rotation_degrees=10,
                       grayscale_prob=0.5)
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)

    def gen(seed):
        return torch.Generator().manual_seed(seed)

    whole = aug(images, gen(3), (0, 8))
    assert torch.equal(aug(images[4:], gen(3), (4, 8)), whole[4:])
    assert torch.equal(aug(images[:4], gen(3), (0, 8)), whole[:4])
    assert not torch.equal(aug(images[4:], gen(4), (4, 8)), whole[4:])
    assert not torch.equal(aug(images[4:], gen(3), (0, 8)), whole[4:])  # rank 0's draws on rank 1's images
    with pytest.raises(ValueError, match="not within a global batch of 8"):
        aug(images[4:], gen(3), (6, 8))
