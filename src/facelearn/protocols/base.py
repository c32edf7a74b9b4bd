"""The benchmark contract: a ``Protocol`` (what the config instantiates) loads a ``BenchmarkSet`` (decoded images +
what the metrics need), names the identities that must never be trained on, may carve its test data out of the
training data, and the loaded set computes its own metrics from the embeddings of its images.

Adding a benchmark = one module in this package: a ``Protocol`` subclass (``load``, ``identities``, and
``filter_training`` if it splits the training data) returning a ``PairSet`` (verification metrics) or an
``IdentificationSet`` (identification / one-shot coverage), or a new ``BenchmarkSet`` with its own ``metrics``;
then a YAML file in ``conf/benchmark/``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Mapping

import numpy as np
import torch


class BenchmarkSet(ABC):
    """A loaded benchmark: ``images`` (uint8 N, 3, S, S), each embedded once, and the metrics of their embeddings."""

    name: str
    images: np.ndarray
    identities: set[str] | None

    @abstractmethod
    def metrics(self, embeddings: torch.Tensor, scorers: Mapping[str, Any], fars: tuple[float, ...],
                curves: dict[str, Any] | None = None) -> dict[str, float]:
        """Metrics from the L2-normalised embeddings of ``images`` (row i = image i). ``curves``, when given, is
        filled with plottable curves (verification: ``{scorer: {"far": [...], "tar": [...]}}``)."""

    @abstractmethod
    def describe(self) -> str:
        """One line for the log, e.g. ``1000 pairs over 1522 images``."""


class Protocol(ABC):
    """A benchmark as configured (``conf/benchmark/*.yaml``)."""

    name: str
    #: ``name=`` as configured (``benchmark.<key>.name=...``): the name results, the monitor and reports use instead
    #: of the config key; None: the key.
    given_name: str | None = None
    #: True when the test data is carved out of the training data (the one-shot split): a checkpoint can only be
    #: evaluated with the split it was trained with.
    splits_training_data: bool = False

    @abstractmethod
    def load(self, image_size: int, cache_dir: str | None = None) -> BenchmarkSet:
        """Decode the benchmark's images at ``image_size``."""

    @abstractmethod
    def identities(self) -> set[str] | None:
        """Names of the people who must not be trained on (None: unknown, e.g. a ``.bin``). Independent of
        whether or in which order ``load`` / ``filter_training`` ran."""

    def filter_training(self, records: Any, image_size: int) -> Any:
        """Remove what the benchmark holds out from the training records (default: nothing)."""
        return records

    def expand(self, name: str) -> dict[str, "Protocol"]:
        """The benchmarks this entry stands for, by the name each is reported under (default: itself under its
        ``name=`` if given, else its config key). A folder of sets (``BinFolder``) gives one per file, named by
        the file."""
        return {self.given_name or name: self}


def expand_protocols(protocols: Mapping[str, Protocol]) -> dict[str, Protocol]:
    """Config entries -> the benchmarks they stand for (``Protocol.expand``); two with one name are refused."""
    out: dict[str, Protocol] = {}
    for key, protocol in protocols.items():
        if not isinstance(protocol, Protocol):
            raise TypeError(f"benchmark.{key}: {type(protocol).__name__} is not a facelearn.protocols.Protocol "
                            "(its _target_ must name a Protocol subclass)")
        for name, part in protocol.expand(key).items():
            if name in out:
                raise ValueError(f"benchmark.{key}: its set {name!r} is configured twice (drop one of them)")
            out[name] = part
    return out


def load_protocols(protocols: Mapping[str, Protocol], image_size: int, cache_dir: str | None = None,
                   log: Any = None) -> dict[str, BenchmarkSet]:
    """Load every configured benchmark (training and ``facelearn.evaluate`` share this)."""
    sets: dict[str, BenchmarkSet] = {}
    for name, protocol in expand_protocols(protocols).items():
        sets[name] = bset = protocol.load(image_size, cache_dir)
        bset.name = name
        if log is not None:
            log.info("benchmark %s: %s", name, bset.describe())
    return sets
