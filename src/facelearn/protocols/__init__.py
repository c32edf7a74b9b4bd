"""Benchmark protocols, one module per family; the contract is ``facelearn.protocols.base``.

* ``pairs``    verification pair sets: LFW-style pairs files, insightface ``.bin`` (one, or every standard one of a
               dataset folder: ``BinFolder``), synthetic pairs (``PairSet``);
* ``cfp``      CFP frontal-frontal / frontal-profile (official 10 folds);
* ``ijb``      IJB-B / IJB-C 1:1 template verification (``TemplateSet``);
* ``oneshot``  identification: the one-shot base/novel split and identity folders (``IdentificationSet``).
"""

from facelearn.protocols.base import BenchmarkSet, Protocol, expand_protocols, load_protocols

__all__ = ["BenchmarkSet", "Protocol", "expand_protocols", "load_protocols"]
