"""Evaluation entry point: ``python -m facelearn.evaluate ckpt_path=PATH [benchmark=NAME] [overrides]``.

Rebuilds the model of any regime from the config stored in the checkpoint, embeds every benchmark image once and
reports the verification metrics (table on stdout, JSON in the run directory). Without a checkpoint it evaluates an
ONNX file (``onnx_path=``, onnxruntime) or a pretrained backbone as configured (``backbone=sface``: its published
weights, no training).
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import dataclass
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from facelearn.cli.validate import check_bool, check_checkpoint_file, check_int, one_line_errors

log = logging.getLogger(__name__)
# torch, Lightning and the model code are imported inside the functions: `--help` and config errors come back in a
# second instead of after their import.


def _quiet() -> None:
    from facelearn.loggers import quiet_lightning_advert
    warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning)
    quiet_lightning_advert()


def load_checkpoint_module(ckpt_path: str, device: str = "cpu") -> tuple[Any, DictConfig]:
    """The LightningModule saved in a facelearn checkpoint, in eval mode, and the run's config."""
    # facelearn stores only tensors and plain Python values in its checkpoints, so the restricted unpickler
    # suffices; it refuses to run code that a crafted file carries (weights_only=False would execute it).
    from facelearn.build import build_module
    ckpt = check_checkpoint_file(ckpt_path)
    cfg = run_config(ckpt)
    module = build_module(cfg, int(ckpt.get("facelearn_num_classes", 0)))
    module.load_state_dict(ckpt["state_dict"])
    return module.to(device).eval(), cfg


def run_config(ckpt: dict[str, Any]) -> DictConfig:
    """The training run's config stored in a checkpoint, with moved classes renamed and without its starting
    weights (arcface_torch backbone.pth, init_from): the checkpoint holds the trained ones, and those files need not
    exist any more."""
    cfg = OmegaConf.create(upgrade_targets(ckpt["facelearn_config"]))
    with open_dict(cfg):
        if OmegaConf.select(cfg, "backbone.weights"):
            cfg.backbone.weights = None
        cfg.init_from = None
    return cfg


# Classes that moved (checkpoints store the run's config with the class paths of their time).
_MOVED = {"facelearn.data.pairs.": "facelearn.protocols.pairs.", "facelearn.data.cfp.": "facelearn.protocols.cfp.",
          "facelearn.data.oneshot.": "facelearn.protocols.oneshot.",
          "facelearn.eval.benchmark.BenchmarkCallback": "facelearn.callbacks.BenchmarkCallback"}


def upgrade_targets(node: Any) -> Any:
    """The config with every moved ``_target_`` renamed to its current module."""
    if isinstance(node, dict):
        out = {k: upgrade_targets(v) for k, v in node.items()}
        target = out.get("_target_")
        if isinstance(target, str):
            for old, new in _MOVED.items():
                if target.startswith(old):
                    out["_target_"] = new + target[len(old):]
        return out
    if isinstance(node, list):
        return [upgrade_targets(v) for v in node]
    return node


# Options that change only how a split is scored, not which images it holds out of training.
_SCORING_ONLY = ("precisions", "name", "finetune_iterations")


def check_split_was_trained_with(name: str, spec_cfg: DictConfig, run_cfg: DictConfig) -> None:
    """A benchmark carved out of the training data (the one-shot split) is only valid for a checkpoint trained with
    the same split: otherwise its novel identities and held-out images were trained on."""
    def canonical(v: Any) -> Any:  # the same file reached through another checkout/relative path is the same
        if isinstance(v, dict):
            return {k: canonical(x) for k, x in v.items()}
        if isinstance(v, list):
            return [canonical(x) for x in v]
        return os.path.realpath(v) if isinstance(v, str) and os.path.exists(v) else v

    def held_out(c: DictConfig) -> dict:  # both configs are OmegaConf nodes (the run's comes from the checkpoint)
        return {k: canonical(v) for k, v in OmegaConf.to_container(c, resolve=True).items() if k not in _SCORING_ONLY}

    trained = (run_cfg.get("benchmark") or {}).get(name)
    if trained is None or held_out(trained) != held_out(spec_cfg):
        raise ValueError(f"benchmark.{name} splits the training data ({spec_cfg._target_}), but the checkpoint was "
                         f"trained {'without it' if trained is None else 'with a different split'} "
                         f"(run config: {None if trained is None else held_out(trained)}): its held-out "
                         "identities/images were trained on. Evaluate with the run's own split settings.")


def load_model(cfg: DictConfig) -> tuple[Any, DictConfig | None]:
    """The model to embed with (a checkpoint's module, an ONNX model through onnxruntime, or a configured
    pretrained backbone) and the training run's config when known (from the checkpoint; the others carry none)."""
    import torch
    from hydra.utils import instantiate

    from facelearn.eval.embedding import BackboneEmbedder
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    onnx_path = cfg.get("onnx_path")
    if cfg.get("backbone") is not None and not onnx_path and not cfg.get("ckpt_path"):
        size = int(cfg.image_size or 112)
        with open_dict(cfg):
            cfg.data = {"image_size": size}  # what the backbone configs interpolate
        backbone = instantiate(cfg.backbone)
        if not OmegaConf.select(cfg, "backbone.weights"):
            log.warning("backbone %s without backbone.weights: evaluating random weights", cfg.backbone._target_)
        return BackboneEmbedder(backbone, bool(cfg.flip_tta)).to(device).eval(), None
    if not onnx_path and not cfg.get("ckpt_path"):
        raise ValueError("give ckpt_path=<checkpoint>, onnx_path=<model.onnx> (or both: the ONNX model is "
                         "evaluated, the checkpoint supplies the run's config for benchmarks and IDA anchors), or a "
                         "pretrained backbone=NAME (e.g. backbone=sface)")
    if cfg.get("backbone") is not None:
        raise ValueError("backbone= evaluates a pretrained backbone on its own; with ckpt_path/onnx_path the model "
                         "comes from that file: drop backbone=")
    if not onnx_path:
        return load_checkpoint_module(cfg.ckpt_path, device)
    from facelearn.onnx_model import OnnxEmbedder
    # beside an ONNX model the checkpoint gives only its run's config: no network is built or loaded from it
    return OnnxEmbedder(onnx_path), run_config(check_checkpoint_file(cfg.ckpt_path)) if cfg.get("ckpt_path") else None


@dataclass
class Evaluation:
    """What ``facelearn.evaluate`` scores: the model, the decoded benchmark sets, the prepared scorers (cosine first)
    and the evaluation batch size. Scripts that score one set of embeddings many ways (the IDA sweeps) start here."""

    module: Any
    bench_sets: dict[str, Any]
    scorers: dict[str, Any]
    batch_size: int


def prepare_evaluation(cfg: DictConfig) -> Evaluation:
    """Model, benchmarks and fitted scorers of an evaluate config (nothing embedded for the benchmarks yet)."""
    from hydra.utils import instantiate

    from facelearn.eval.embedding import default_batch_size
    from facelearn.eval.scorers import CosineScorer, ScorerContext
    from facelearn.cli.schema import check_config
    from facelearn.protocols import load_protocols
    _quiet()
    check_config(cfg)  # every _target_ node (benchmarks, IDA, backbone) against its signature, before any work
    from facelearn.runtime.threads import apply_plan, plan_threads
    check_int(cfg, "threads", 1)
    log.info(apply_plan(plan_threads(threads=cfg.get("threads"))).describe())
    compiler = instantiate(cfg.compile) if cfg.get("compile") else None  # its options checked before the model
    check_bool(cfg, "channels_last")
    module, run_cfg = load_model(cfg)
    if cfg.get("channels_last"):
        from facelearn.nn.compile import channels_last
        channels_last(module)
    if compiler is not None:
        compiler.apply(module)
    if run_cfg is None:  # an ONNX model or a backbone alone: the benchmarks and the image size come from here
        if cfg.get("benchmark") is None:
            raise ValueError("without ckpt_path, choose the benchmark, e.g. benchmark=lfw_devtest")
        size = cfg.image_size or getattr(module, "image_size", None) or OmegaConf.select(cfg, "data.image_size")
        if not size:
            raise ValueError(f"{cfg.onnx_path}: its input size is dynamic; give image_size=")
        run_cfg = OmegaConf.create({"data": {"image_size": int(size)}, "benchmark": None})
    if OmegaConf.select(cfg, "alignment") == "from_run":  # default: align as the run's training/benchmarks did
        with open_dict(cfg):
            cfg.alignment = run_cfg.get("alignment")
    if cfg.get("benchmark") is not None and "data" not in cfg and "train" in run_cfg.data:
        # a benchmark chosen here may refer to the run's data (the one-shot split is made of ``${data.train}``)
        with open_dict(cfg):
            cfg.data = run_cfg.data
    bench_cfg = cfg.benchmark if cfg.get("benchmark") is not None else run_cfg.get("benchmark")
    if not bench_cfg:
        raise ValueError("no benchmarks: the checkpoint's config has none; choose one, e.g. benchmark=lfw_devtest")
    image_size = cfg.image_size or run_cfg.data.image_size
    cache_dir = cfg.paths.cache_dir
    scorers = {"cosine": CosineScorer(), **{k: instantiate(v) for k, v in (cfg.get("ida") or {}).items()}}
    # Every evaluated benchmark is decoded once; IDA scorers that need the run's training data get it built
    # exactly as in training (same exclusions and one-shot filtering, from the run's own benchmark specs), and the
    # identities of the evaluated benchmarks (anchors are checked against them).
    specs = {name: instantiate(spec_cfg) for name, spec_cfg in bench_cfg.items()}
    for name, spec in specs.items():
        if getattr(spec, "splits_training_data", False):
            check_split_was_trained_with(name, bench_cfg[name], run_cfg)
    bench_sets = load_protocols(specs, image_size, cache_dir, log)
    train_dataset = None
    if any(getattr(s, "needs_training_data", False) for s in scorers.values()):
        if "train" not in run_cfg.data:
            raise ValueError("this IDA scorer needs the run's training data (real-db anchors, IDA-L's regressor): "
                             "give ckpt_path= beside onnx_path=")
        datamodule = instantiate(run_cfg.data, cache_dir=cache_dir)
        datamodule.setup_train()
        train_dataset = datamodule.train_dataset
    batch_size = cfg.batch_size or default_batch_size(getattr(module, "device", "cpu"))
    context = ScorerContext.of(image_size, bench_sets, train_dataset, cache_dir, batch_size)
    for scorer in scorers.values():
        t0 = time.perf_counter()
        scorer.fit(module, context)
        log.info("scorer %s prepared in %.1f s", type(scorer).__name__, time.perf_counter() - t0)
    return Evaluation(module, bench_sets, scorers, batch_size)


def evaluate(cfg: DictConfig) -> dict[str, dict[str, float]]:
    from facelearn.eval.embedding import evaluate_sets
    from facelearn.tables import ROC_FILE, format_identification_table, format_table, json_safe, write_json
    ev = prepare_evaluation(cfg)
    curves: dict[str, dict] = {name: {} for name in ev.bench_sets}
    results = evaluate_sets(ev.module, ev.bench_sets, ev.scorers, fars=tuple(cfg.fars), batch_size=ev.batch_size,
                            curves=curves)
    what = cfg.get("onnx_path") or cfg.ckpt_path or f"{cfg.backbone._target_} ({cfg.backbone.get('weights')})"
    print(f"\nEvaluation of {what}:\n{format_table(results, tuple(cfg.fars))}\n"
          f"{format_identification_table(results)}\n", flush=True)
    out = os.path.join(cfg.paths.output_dir, cfg.output_file)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    write_json(out, {"ckpt_path": cfg.ckpt_path, "onnx_path": cfg.get("onnx_path"), "metrics": json_safe(results)})
    if any(curves.values()):  # ROC points for facelearn.report's plots
        write_json(os.path.join(os.path.dirname(out), ROC_FILE), {"ckpt_path": cfg.ckpt_path, "roc": curves})
    log.info("metrics written to %s", out)
    return results


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
@one_line_errors("facelearn.evaluate")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
