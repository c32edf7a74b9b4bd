"""evaluate_sets: benchmarks that share images embed each distinct image once, with the metrics of evaluate_set."""

import numpy as np
import torch

from facelearn.eval.embedding import distinct_images, evaluate_set, evaluate_sets
from facelearn.protocols.pairs import PairSet


class _CountingPixels(torch.nn.Module):
    """Embeds an image as its centred pixels and counts the images it was given."""

    def __init__(self):
        super().__init__()
        self.seen = 0

    @property
    def device(self):
        return torch.device("cpu")

    def embed(self, x):
        self.seen += len(x)
        return torch.nn.functional.normalize(x.float().flatten(1) - 127.5, dim=1)


def _set(name, images, pairs, issame):
    pairs = np.asarray(pairs, dtype=np.int64)
    return PairSet(name, images, pairs, np.asarray(issame), np.arange(len(pairs)) % 2)


def test_distinct_images_maps_equal_bytes_to_one_row():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (4, 3, 2, 2), dtype=np.uint8)
    b = np.stack([a[2], rng.integers(0, 256, (3, 2, 2), dtype=np.uint8), a[0]])
    unique, (ma, mb) = distinct_images([a, b])
    assert len(unique) == 5
    assert ma.tolist() == [0, 1, 2, 3] and mb.tolist() == [2, 4, 0]
    assert np.array_equal(unique[ma], a) and np.array_equal(unique[mb], b)


def test_evaluate_sets_equals_evaluate_set_and_embeds_shared_images_once():
    rng = np.random.default_rng(1)
    people = rng.integers(0, 256, (6, 3, 4, 4), dtype=np.uint8)
    noisy = np.clip(people.astype(int) + rng.integers(-20, 20, people.shape), 0, 255).astype(np.uint8)
    images = np.concatenate([people, noisy])          # image i and i + 6: one person
    first = _set("first", images[:9], [[0, 6], [1, 7], [0, 1], [2, 8], [6, 2], [1, 8]],
                 [True, True, False, True, False, False])
    second = _set("second", images[3:], [[0, 6], [1, 7], [2, 8], [0, 1], [6, 7], [3, 2]],
                  [True, True, True, False, False, False])
    module = _CountingPixels()
    together = evaluate_sets(module, {"first": first, "second": second}, fars=(0.5,))
    assert module.seen == len(images)                  # 12 distinct images, not 9 + 9
    assert list(together) == ["first", "second"]
    for name, s in (("first", first), ("second", second)):
        alone = evaluate_set(_CountingPixels(), s, fars=(0.5,))
        assert together[name].keys() == alone.keys()
        assert all(np.isclose(together[name][k], alone[k], equal_nan=True) for k in alone)
