"""Every Lightning callback of facelearn, one module per job; config targets use these public names.

* ``BenchmarkCallback``         runs the datamodule's benchmarks during and after training (``benchmark.py``);
* ``ResumeStateCallback``       sampler position, RNG states, epoch sums and process layout in checkpoints
  (``resume.py``);
* ``DoppelgangerCallback``      doppelganger mining from the step's scores (``doppelganger.py``);
* ``RepresentationDiagnostics`` effective rank, negative cosine, SST gallery lag (``diagnostics.py``; the
  definitions: ``facelearn.eval.representation``);
* ``SigtermCheckpoint``         a checkpoint when the scheduler sends SIGTERM (``facelearn.runtime.checkpointing``).
"""

from facelearn.callbacks.benchmark import BenchmarkCallback
from facelearn.callbacks.diagnostics import RepresentationDiagnostics
from facelearn.callbacks.doppelganger import DoppelgangerCallback
from facelearn.callbacks.resume import ResumeStateCallback
from facelearn.runtime.checkpointing import SigtermCheckpoint

__all__ = ["BenchmarkCallback", "DoppelgangerCallback", "RepresentationDiagnostics", "ResumeStateCallback",
           "SigtermCheckpoint"]
