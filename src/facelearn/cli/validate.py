"""Checks of a composed training config that run before any data is decoded or any step is taken, so a typo or an
impossible value stops the run with a message naming the option instead of a traceback deep in the run."""

from __future__ import annotations

import functools
import os
import sys
from typing import Any, Callable

from hydra.errors import InstantiationException
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from facelearn.cli.schema import check_config
from facelearn.runtime.layout import check_resume_layout

#: what a wrong option or input file raises; the CLIs print these as one line (HYDRA_FULL_ERROR=1: the traceback)
# OSError: the machine's part (a full disk, a read-only folder, a missing file): one line, the traceback on request
USER_ERRORS = (ValueError, OSError, OmegaConfBaseException, InstantiationException)


def _drop_empty_run_dir() -> None:
    """A command that failed before writing anything leaves no run directory behind (only Hydra's .hydra/ and the
    job log would be there), so reports and ``ls logs/`` list only runs that did something."""
    import shutil
    from pathlib import Path

    from hydra.core.hydra_config import HydraConfig
    try:
        out = Path(HydraConfig.get().runtime.output_dir)
    except ValueError:  # not inside a Hydra job
        return
    # only a directory Hydra made for this run (it holds .hydra/), never the working directory (export's run dir)
    if (out / ".hydra").is_dir() and out.resolve() != Path.cwd().resolve() and \
            all(p.name == ".hydra" or (p.is_file() and p.suffix == ".log") for p in out.iterdir()):
        shutil.rmtree(out, ignore_errors=True)


def one_line_errors(prog: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Wrap a Hydra task function: an error about the user's options or files is printed as ``prog: error: ...``
    on one line (exit status 2) instead of a traceback; ``HYDRA_FULL_ERROR=1`` re-raises it as Hydra would."""
    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except USER_ERRORS as e:
                _drop_empty_run_dir()
                if os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                message = "; ".join(line.strip() for line in str(e).splitlines() if line.strip()) or repr(e)
                print(f"{prog}: error: {message} (HYDRA_FULL_ERROR=1 for the traceback)", file=sys.stderr)
                sys.exit(2)
        return run
    return wrap


def check_int(cfg: DictConfig, key: str, minimum: int) -> None:
    """``key`` unset / null, or an integer >= ``minimum`` (one line naming the key and value otherwise)."""
    value = OmegaConf.select(cfg, key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{key}={value!r}: expected an integer >= {minimum}")


def check_bool(cfg: DictConfig, key: str) -> None:
    value = OmegaConf.select(cfg, key)
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"{key}={value!r}: expected true or false")


def _positive_number(cfg: DictConfig, key: str) -> None:
    value = OmegaConf.select(cfg, key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{key}={value!r}: expected a number > 0")


def check_synthetic_benchmark_needs_synthetic_data(cfg: DictConfig) -> None:
    """The default benchmark is a set of synthetic faces: it measures nothing about a model trained on real ones
    (``data=rec|folder|list|lfw`` without a ``benchmark=``), so that combination is refused with the options."""
    train = str(OmegaConf.select(cfg, "data.train._target_") or "")
    if not train or train.endswith("SyntheticFaces"):
        return
    synthetic = [k for k, v in (cfg.get("benchmark") or {}).items()
                 if isinstance(v, DictConfig) and str(v.get("_target_", "")).endswith("SyntheticPairs")]
    if synthetic:
        raise ValueError(f"benchmark.{synthetic[0]} is a set of synthetic faces, but the training data are real "
                         f"({train.rsplit('.', 1)[-1]}): choose a benchmark, e.g. benchmark=insightface_val "
                         "paths.dataset_dir=<folder with the .bin files>, benchmark=bin benchmark.bin.path=<lfw.bin>, "
                         "benchmark=lfw_view2, or benchmark=none monitor=null")


def reported_benchmarks(bench_cfg: Any) -> list[str]:
    """The names the configured benchmarks are reported under (``bench/<name>/...``), by the rule results use
    (``protocols.base.expand_protocols``: the config key or a ``name=`` given to one; a folder of ``.bin`` sets one
    name per file). Instantiating the entries reads no data (constructors only check their options and files)."""
    from hydra.utils import instantiate

    from facelearn.protocols.base import expand_protocols
    return list(expand_protocols({str(k): instantiate(v) for k, v in bench_cfg.items()}))


def validate_train_config(cfg: DictConfig) -> dict[str, Any] | None:
    """Types and ranges of the options users type most, the monitor metric, precision vs device, ckpt_path.
    Returns the checkpoint ``ckpt_path`` names (loaded once, with the restricted unpickler), or None."""
    check_config(cfg)  # every _target_ node against its signature: unknown keys, types, required values
    check_accelerator(cfg.get("trainer") or {})
    for key, minimum in (("data.batch_size", 1), ("data.image_size", 8), ("data.num_workers", 0),
                         ("trainer.max_epochs", 1), ("trainer.devices", 1), ("trainer.num_nodes", 1),
                         ("callbacks.benchmark.every_n_epochs", 1), ("seed", 0), ("threads", 1)):
        check_int(cfg, key, minimum)
    _positive_number(cfg, "optimizer.lr")
    check_bool(cfg, "channels_last")
    trainer = cfg.get("trainer") or {}
    precision = str(trainer.get("precision", ""))
    if trainer.get("accelerator") == "cpu" and precision in ("16-true", "bf16-true", "16", "bf16", "16-mixed"):
        raise ValueError(f"trainer.precision={precision} is not supported on trainer.accelerator=cpu: use 32-true "
                         "(or bf16-mixed)")
    monitor = cfg.get("monitor")
    benchmarks = reported_benchmarks(cfg.get("benchmark") or {})
    if monitor and str(monitor).startswith("bench/"):
        name = str(monitor).split("/")[1]
        if name not in benchmarks:
            hint = f"e.g. monitor=bench/{next(iter(benchmarks))}/accuracy" if benchmarks else "monitor=null"
            raise ValueError(f"monitor={monitor} names benchmark {name!r}, which is not configured (benchmarks: "
                             f"{sorted(benchmarks) or 'none'}); the best checkpoint would never be written: "
                             f"set {hint}")
    check_synthetic_benchmark_needs_synthetic_data(cfg)
    sampler = (cfg.get("data") or {}).get("sampler") or {}
    callbacks = cfg.get("callbacks") or {}
    mining = any(c is not None and "DoppelgangerCallback" in str(c.get("_target_", "")) for c in callbacks.values())
    if "DoppelgangerSampler" in str(sampler.get("_target_", "")) and not mining:
        raise ValueError("data/sampler=doppelganger needs callbacks.doppelganger (the mining callback that fills the "
                         "doppelganger list); without it every batch would silently be random classes. Use a dm_* "
                         "experiment or add +callbacks.doppelganger={_target_: facelearn.callbacks.DoppelgangerCallback}")
    classifier = cfg.get("classifier")
    if classifier:
        from facelearn.build import head_config
        if head_config(cfg) is None:
            raise ValueError("classifier=partial_fc needs a margin head (head=cosface, arcface, ...), got head=none")
        method = (cfg.get("method") or {}).get("_target_")
        if method and not getattr(get_class(method), "owns_prototypes", True):
            raise ValueError(f"classifier=partial_fc shards a classifier's own prototypes; {method} scores against "
                             "other references (SST: the gallery queue) and has none: drop classifier=")
    weights = OmegaConf.select(cfg, "backbone.weights")
    if weights and not os.path.isfile(str(weights)):  # before the data are decoded, not when the backbone is built
        raise FileNotFoundError(f"backbone.weights: {weights} does not exist (an arcface_torch backbone.pth or an "
                                "ONNX model file; published ONNX files: see the README's pretrained models)")
    detector = OmegaConf.select(cfg, "alignment.detector")
    if detector and not os.path.isfile(str(detector)):  # before any image is decoded
        raise FileNotFoundError(f"alignment.detector: face detector model {detector} does not exist (a YuNet ONNX "
                                "file, e.g. face_detection_yunet_2023mar*.onnx from OpenCV Zoo; set "
                                "alignment.detector=... or paths.models_dir=... / env FACELEARN_MODELS)")
    if cfg.get("freeze"):  # the module name, before any data are decoded (weights are not read for this)
        from hydra.utils import instantiate
        from facelearn.nn.freeze import frozen_modules
        shape_only = {"weights": None} if "weights" in cfg.backbone else {}
        frozen_modules(instantiate(cfg.backbone, **shape_only), str(cfg.freeze))
    if cfg.get("init_from"):  # (with ckpt_path too: a resumed fine-tuning run; the checkpoint's weights win)
        check_init_backbone(check_checkpoint_file(str(cfg.init_from), "init_from"), cfg)
    ckpt = cfg.get("ckpt_path")
    if not ckpt:
        return None
    state = check_checkpoint_file(str(ckpt))
    check_resume_layout(state, trainer, (cfg.get("data") or {}).get("batch_size"))
    return state


def check_accelerator(trainer: Any) -> None:
    """The devices ``trainer.accelerator`` / ``trainer.devices`` ask for exist on this machine (Lightning would
    find out only after the data are decoded)."""
    accelerator = str(trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda"):
        import torch
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not available:
            raise ValueError(f"trainer.accelerator={accelerator}: no CUDA GPU is visible to this process (torch "
                             f"{torch.__version__}, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); "
                             "use trainer=cpu (or trainer=ddp for CPU processes)")
        devices = trainer.get("devices")
        if isinstance(devices, int) and not isinstance(devices, bool) and devices > available:
            raise ValueError(f"trainer.devices={devices}: only {available} CUDA GPU(s) visible to this process")
    elif accelerator == "mps":
        import torch
        if not torch.backends.mps.is_available():
            raise ValueError("trainer.accelerator=mps: Apple's MPS backend is not available here; use trainer=cpu")


# Backbone options that do not change its parameters.
_BACKBONE_RUNTIME = ("weights", "gradient_checkpointing")


def check_init_backbone(ckpt: dict[str, Any], cfg: DictConfig) -> None:
    """``init_from``: the checkpoint's backbone must be the one configured (same class and shape options)."""
    theirs = {k: v for k, v in (ckpt["facelearn_config"].get("backbone") or {}).items() if k not in _BACKBONE_RUNTIME}
    ours = {k: v for k, v in OmegaConf.to_container(cfg.backbone, resolve=True).items() if k not in _BACKBONE_RUNTIME}
    diff = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
    if diff:
        raise ValueError(f"init_from={cfg.init_from}: its backbone differs from this run's in "
                         + ", ".join(f"{k} ({theirs.get(k)!r} there, {ours.get(k)!r} here)" for k in diff)
                         + ": configure the same backbone (and data.image_size)")


def check_checkpoint_file(path: str, option: str = "ckpt_path") -> dict[str, Any]:
    """Load a checkpoint with the restricted unpickler, or fail naming the file (and the ``option`` that named it)."""
    import torch
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{option}: checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - UnpicklingError, EOFError, RuntimeError (not a zip/pickle), ...
        first = str(e).splitlines()[0] if str(e) else ""
        raise ValueError(f"{option}: {path} is not a loadable facelearn checkpoint (loaded with "
                         f"torch.load(weights_only=True), which refuses anything but tensors and plain values): "
                         f"{type(e).__name__}: {first}") from None
    if not isinstance(ckpt, dict) or ckpt.get("facelearn_config") is None or "state_dict" not in ckpt:
        raise ValueError(f"{option}: {path} is not a facelearn checkpoint (no 'facelearn_config' / 'state_dict')")
    return ckpt
