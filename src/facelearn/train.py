"""Training entry point: ``python -m facelearn.train [+experiment=NAME] [overrides]``.

One script for every regime: the ``method`` config group picks the LightningModule.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import warnings

import hydra
from omegaconf import DictConfig, OmegaConf

from facelearn.cli.validate import one_line_errors, validate_train_config
from facelearn.runtime.plugins import check_plugins

log = logging.getLogger(__name__)


def _quiet() -> None:
    """Known deprecation noise of torch 2.13 + Lightning 2.6 (see STACK-NOTES); nothing the user can act on."""
    from facelearn.loggers import quiet_lightning_advert
    warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning)
    warnings.filterwarnings("ignore", r"torch.distributed.nn.functional.all_gather is deprecated", FutureWarning)
    # Lightning cannot see that the batch sampler's position is restored (ResumeStateCallback does it): its warning
    # that a mid-epoch resume "can cause unreliable results" is wrong here
    warnings.filterwarnings("ignore", r".*resuming from a checkpoint that ended before the epoch ended")
    quiet_lightning_advert()


def train(cfg: DictConfig) -> dict[str, float]:
    # torch / Lightning / the model code are imported here, not at module import: `--help` and Hydra's own
    # errors come back in a second instead of after Lightning's ~3-9 s import.
    import lightning.pytorch as pl
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import ProgressBar
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from facelearn.build import build_list, build_module
    from facelearn.callbacks import BenchmarkCallback
    from facelearn.runtime.checkpointing import SIGTERM_EXIT_CODE, AtomicCheckpointIO
    from facelearn.loggers import finish_loggers, flat_config
    from facelearn.nn.compile import channels_last
    from facelearn.runtime.distributed import shutdown_process_group
    from facelearn.runtime.threads import apply_plan, local_ranks_of, plan_threads

    _quiet()
    resumed = validate_train_config(cfg)
    # DataLoader workers decode only with data.stream (over in-memory images they just index): named in the plan
    decoding_workers = int(cfg.data.get("num_workers") or 0) if cfg.data.get("stream") else 0
    log.info(apply_plan(plan_threads(local_ranks_of(cfg.trainer), decoding_workers, cfg.get("threads"))).describe())
    compiler = instantiate(cfg.compile) if cfg.get("compile") else None  # its options checked before any data
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data, _recursive_=True)
    datamodule.setup("fit")
    module = build_module(cfg, datamodule.num_classes)
    if cfg.get("channels_last"):
        channels_last(module)
    if compiler is not None:
        compiler.apply(module)
    callbacks = build_list(cfg.get("callbacks"))
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a progress callback then
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    loggers = build_list(cfg.get("logger"))
    if resumed is not None:
        step = int(resumed.get("global_step", 0))
        for lg in loggers:
            if hasattr(lg, "resume_from"):
                lg.resume_from(step)
    # After resume_from: the first access of a CSV logger's writer decides whether metrics.csv is continued.
    # The resolved config as every logger's hyperparameters (W&B config, TensorBoard hparams, csv/hparams.yaml), so
    # dashboards filter and group runs by head, margin, method, ...
    hparams = flat_config(OmegaConf.to_container(cfg, resolve=True))
    for lg in loggers:
        lg.log_hyperparams(hparams)
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                      plugins=[AtomicCheckpointIO()],
                                      use_distributed_sampler=not datamodule.shards_batches)
    if trainer.is_global_zero:
        os.makedirs(cfg.paths.output_dir, exist_ok=True)
        OmegaConf.save(cfg, os.path.join(cfg.paths.output_dir, "config.yaml"), resolve=True)
        # the identities trained on, one per line: e.g. benchmark.lfw_view2.exclude_people= of a later evaluation
        with open(os.path.join(cfg.paths.output_dir, "train_identities.txt"), "w", encoding="utf-8") as fh:
            fh.writelines(f"{name}\n" for name in datamodule.train_dataset.class_names)
        stats = getattr(datamodule, "split_stats", {})
        log.info("training %s on %d classes (%s)", type(module).__name__, datamodule.num_classes, stats)
    try:
        # weights_only: the restricted unpickler (facelearn checkpoints hold only tensors and plain values).
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    except SIGTERMException:
        # SigtermCheckpoint has saved last.ckpt; a non-zero code tells the scheduler the job did not finish.
        sys.exit(SIGTERM_EXIT_CODE)
    finish_loggers(loggers)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    bench = next((c for c in callbacks if isinstance(c, BenchmarkCallback)), None)
    if bench is not None:
        metrics.update(bench.flatten(bench.last_results))
    shutdown_process_group()  # DDP ranks leave together (a rank exiting alone can abort its peer's gloo threads)
    return metrics


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@one_line_errors("facelearn.train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    value = metrics.get(cfg.get("monitor") or "")
    # Multirun sweepers (e.g. Optuna) read the returned value.
    return None if value is None or math.isnan(value) else value


def cli() -> None:
    """``python -m facelearn.train`` / ``facelearn-train``: a missing optional plugin is named before Hydra starts."""
    check_plugins()
    main()


if __name__ == "__main__":
    cli()
