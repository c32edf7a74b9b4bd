"""The LightningDataModule: training images (source -> exclusion -> split -> decoded uint8) and benchmark sets."""

from __future__ import annotations

import logging
import warnings
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from facelearn.data.images import BadImagePolicy, FaceCrop, decode_image, face_matrices
from facelearn.data.splits import check_disjoint, exclude_identities
from facelearn.data.transforms import BatchAugment
from facelearn.protocols.base import BenchmarkSet, Protocol, expand_protocols, load_protocols

log = logging.getLogger(__name__)


class FaceImageDataset(Dataset):
    """Decoded uint8 images with contiguous integer labels; items are ``(image uint8 (3, S, S), label)``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, class_names: list[str]) -> None:
        with warnings.catch_warnings():
            # the decoded cache is loaded read-only (memory-mapped, shared by DataLoader workers); nothing writes to
            # the training images (augmentation makes new tensors), so torch's not-writable warning does not apply
            warnings.filterwarnings("ignore", "The given NumPy array is not writable", UserWarning)
            self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.class_names = class_names

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.labels[i]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """A whole batch in one indexing op (the DataLoader calls this instead of per-sample __getitem__ +
        collate); see benchmarks/dataloader.py for the measured speed-up."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.images.index_select(0, idx), self.labels.index_select(0, idx)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


class DecodedOnDemand:
    """Images decoded when indexed (``images[idx]`` -> uint8 tensor (len(idx), 3, S, S)), from files or RecordIO
    samples: what a streaming dataset holds instead of a decoded array. Memory: the paths only."""

    def __init__(self, paths: list[str], crop: FaceCrop, matrices: np.ndarray | None = None,
                 bad_images: BadImagePolicy | None = None) -> None:
        self.paths, self.crop, self.matrices, self.bad_images = list(paths), crop, matrices, bad_images

    def _one(self, i: int) -> np.ndarray:
        return decode_image(self.paths[i], self.crop, None, None if self.matrices is None else self.matrices[i])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, idx) -> torch.Tensor:
        idx = np.atleast_1d(np.asarray(idx, dtype=np.int64))
        if self.bad_images is None:
            return torch.from_numpy(np.stack([self._one(int(i)) for i in idx]))
        return torch.from_numpy(np.stack([self.bad_images.decode(int(i), self._one, self.paths[int(i)])
                                          for i in idx]))


class StreamingFaceDataset(FaceImageDataset):
    """``FaceImageDataset`` whose images are decoded in the DataLoader's workers as batches are drawn
    (``data.stream=true``): memory stays bounded by the paths and the batches in flight, whatever the dataset size;
    the decoded pixels are the same as the cached path's, so a run gives the same numbers."""

    def __init__(self, paths: list[str], crop: FaceCrop, labels: np.ndarray, class_names: list[str],
                 matrices: np.ndarray | None = None, bad_images: BadImagePolicy | None = None) -> None:
        self.images = DecodedOnDemand(paths, crop, matrices, bad_images)
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.class_names = class_names

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i][0], self.labels[i]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.images[idx.numpy()], self.labels.index_select(0, idx)


def batch_passthrough(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """collate_fn for datasets whose ``__getitems__`` already returns a batch."""
    return batch


def _seed_worker(worker_id: int) -> None:
    # Distinct, reproducible numpy/random streams per worker, derived from torch's per-worker seed.
    import random
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class FaceDataModule(pl.LightningDataModule):
    """Training data and benchmark pair sets.

    Args:
        train: a source with ``load(image_size) -> FaceRecords`` (IdentityFolder, ImageList, SyntheticFaces).
        split: callable records -> records (``Shallow``, ``Deep``).
        benchmarks: name -> ``facelearn.protocols.Protocol``.
        image_size: side of the square crops fed to the backbone.
        exclude_benchmark_identities: drop training identities that appear in a benchmark; either way a hard check
            then proves train and benchmark identities are disjoint.
        sampler: optional ``partial`` building a batch sampler from ``(labels, batch_size, seed)``; default shuffles.
        stream: decode training images in the DataLoader workers as batches are drawn (``data.num_workers``),
            instead of once into an in-memory array (the decoded cache): for sets larger than memory.
        on_bad_image / max_bad_images: ``error`` stops at a training image that cannot be decoded; ``skip``
            replaces it by another image of its identity, logged, up to ``max_bad_images`` (``BadImagePolicy``).
    """

    def __init__(self, train: Any, split: Any, benchmarks: dict[str, Any] | None = None, image_size: int = 112,
                 batch_size: int = 128, num_workers: int = 0, cache_dir: str | None = None,
                 exclude_benchmark_identities: bool = True, augment: BatchAugment | None = None,
                 sampler: Any = None, seed: int = 0, stream: bool = False,
                 on_bad_image: Literal["error", "skip"] = "error", max_bad_images: int = 100) -> None:
        super().__init__()
        BadImagePolicy(on_bad_image, np.zeros(0), max_bad_images)  # its options checked before any data
        self.on_bad_image, self.max_bad_images = on_bad_image, max_bad_images
        self.train_source, self.split = train, split
        # config entries -> the sets they stand for (a BinFolder: one per .bin file), by their reported names
        self.benchmark_specs: dict[str, Protocol] = expand_protocols(benchmarks or {})
        self.stream = stream
        self.image_size, self.batch_size, self.num_workers = image_size, batch_size, num_workers
        self.cache_dir = cache_dir
        self.exclude = exclude_benchmark_identities
        self.augment = augment or BatchAugment()
        self.sampler_factory = sampler
        self.seed = seed
        self.train_dataset: FaceImageDataset | None = None
        self.benchmark_sets: dict[str, BenchmarkSet] = {}

    # Loading happens on every rank (decoded arrays are cached on disk, so only the first run decodes).
    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self.setup_train()
        self.load_benchmarks()

    def setup_train(self) -> None:
        """Training records with every benchmark's exclusions applied (idempotent)."""
        if self.train_dataset is None:
            self._setup_train()

    def load_benchmarks(self) -> None:
        """Decode the benchmark sets once (idempotent)."""
        if not self.benchmark_sets:
            self.benchmark_sets = load_protocols(self.benchmark_specs, self.image_size, self.cache_dir, log)

    def scorer_context(self) -> "ScorerContext":
        """What pair scorers (IDA) may read: the training images and the benchmarks' identities."""
        from facelearn.eval.scorers import ScorerContext
        return ScorerContext.of(self.image_size, self.benchmark_sets, self.train_dataset, self.cache_dir)

    @property
    def shards_batches(self) -> bool:
        """True when the batch sampler splits batches across ranks itself (Lightning must not add a
        DistributedSampler)."""
        return self.sampler_factory is not None

    def _setup_train(self) -> None:
        records = self.train_source.load(self.image_size)
        for spec in self.benchmark_specs.values():
            # e.g. the one-shot split: its novel identities and base test images must not be trained on
            records = spec.filter_training(records, self.image_size)
        bench_ids: dict[str, set[str]] = {}
        for name, spec in self.benchmark_specs.items():
            ids = spec.identities()
            if ids is not None:
                bench_ids[name] = ids
            else:
                log.warning("benchmark %s has no identity names (e.g. a .bin): identity overlap cannot be checked",
                            name)
        if self.exclude and bench_ids:
            records = exclude_identities(records, set().union(*bench_ids.values()))
        records = self.split(records)
        for name, ids in bench_ids.items():
            check_disjoint(records.identity_set, ids, name)
        crop = FaceCrop(self.image_size, records.meta.get("center_crop"))
        class_names, labels = np.unique(records.identities.astype(str), return_inverse=True)
        bad_images = BadImagePolicy(self.on_bad_image, labels, self.max_bad_images)
        if self.stream and records.paths is not None:
            alignment, matrices = records.meta.get("alignment"), None
            if alignment is not None:  # landmarks once, up front (cached); the warps run in the workers
                matrices = face_matrices(records.paths, crop, self.cache_dir, alignment,
                                         what=f"training images of {records.source}")
                crop = FaceCrop(self.image_size)
            self.train_dataset = StreamingFaceDataset(records.paths, crop, labels, class_names.tolist(), matrices,
                                                      bad_images)
        else:
            if self.stream:
                log.warning("data.stream: %s renders its images in memory; nothing to stream", records.source)
            images = records.decode(crop, self.cache_dir, bad_images)
            self.train_dataset = FaceImageDataset(images, labels, class_names.tolist())
        self.split_stats = dict(getattr(self.split, "stats", {}))
        log.info("training data: %d images of %d identities at %dpx", len(labels), len(class_names), self.image_size)

    @property
    def num_classes(self) -> int:
        if self.train_dataset is None:
            raise RuntimeError("call datamodule.setup('fit') before asking for num_classes")
        return self.train_dataset.num_classes

    def train_dataloader(self) -> DataLoader:
        ds = self.train_dataset
        if len(ds) < self.batch_size:
            raise ValueError(f"data.batch_size={self.batch_size} exceeds the {len(ds)} training images")
        # An own generator: creating the loader's iterator then draws its worker base seed from it, not from the
        # global RNG, so a resumed run's global RNG continues exactly where the checkpoint left it.
        common = dict(num_workers=self.num_workers, worker_init_fn=_seed_worker, collate_fn=batch_passthrough,
                      persistent_workers=self.num_workers > 0, pin_memory=torch.cuda.is_available(),
                      generator=torch.Generator().manual_seed(self.seed))
        if self.sampler_factory is not None:
            world, rank = self._world()
            batch_sampler = self.sampler_factory(labels=ds.labels.numpy(), batch_size=self.batch_size,
                                                 seed=self.seed, num_replicas=world, rank=rank)
            trainer = getattr(self, "trainer", None)
            if trainer is not None and getattr(trainer, "overfit_batches", 0):
                batch_sampler.same_every_epoch = True
            return DataLoader(ds, batch_sampler=batch_sampler, **common)
        return DataLoader(ds, batch_size=self.batch_size, shuffle=True, drop_last=True, **common)

    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return trainer.world_size, trainer.global_rank
        return 1, 0

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.training:
            images, *rest = batch
            generator, rows = self.augment_stream(trainer, len(images), images.device)
            return (self.augment(images, generator, rows), *rest)
        return batch

    def augment_stream(self, trainer: Any, batch_size: int, device: torch.device
                       ) -> tuple[torch.Generator, tuple[int, int]]:
        """The random stream of this training batch's augmentation and the batch's rows in the global batch.

        Seeded by the run's seed, the epoch and the batch's position in the epoch (Lightning's count, restored on
        resume), never by the process's RNG: every rank draws for the whole global batch and keeps its rows, so
        ranks no longer repeat each other's draws (they all start from the same seed), and a run resumed on
        another number of ranks with the same global batch augments every image as the uninterrupted run did."""
        position = trainer.fit_loop.epoch_loop.batch_progress.current.ready
        seed = np.random.SeedSequence([self.seed, trainer.current_epoch, position, 0xA5]).generate_state(1, np.uint64)
        generator = torch.Generator(device=device).manual_seed(int(seed[0]))
        world, rank = self._world()
        return generator, (rank * batch_size, world * batch_size)
