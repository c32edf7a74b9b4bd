"""Loggers. A resumed run continues its CSV file and its W&B run. W&B is offline unless the user explicitly asks for
online mode, so a run never blocks on the network: ``mode`` argument > ``WANDB_MODE`` environment variable >
``offline``. Jobs of one multirun share a W&B group (the sweep) and are named by the overrides the sweep varies, so
the W&B UI compares e.g. ``head=arcface,cosface`` side by side. Every logger gets the run's resolved config as its
hyperparameters (``train.py``) and, at the end, the benchmark results: W&B a table and ROC plots, TensorBoard a ROC
figure and the hparams view with the final metrics."""

from __future__ import annotations

import csv
import logging
import os
import secrets
from typing import Any

from lightning.pytorch.loggers.csv_logs import ExperimentWriter as _ExperimentWriter
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger

log = logging.getLogger(__name__)

_MODES = ("online", "offline", "disabled")


class _DropAdvert(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


_ADVERT_FILTER = _DropAdvert()


def quiet_lightning_advert() -> None:
    """Lightning 2.6 prints a product tip (install litlogger) at every Trainer start: not actionable here."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_ADVERT_FILTER)  # once per instance


def sweep_identity() -> tuple[str, str] | None:
    """``(group, name)`` of this job when it runs inside a Hydra multirun, else None: the group is the sweep
    (``<task>/<sweep dir>``), the name the job's values of the keys the sweep varies (e.g. ``head=arcface``)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra.types import RunMode
        hc = HydraConfig.get()
    except (ImportError, ValueError):
        return None
    if hc.mode != RunMode.MULTIRUN:
        return None
    import yaml
    swept: set[str] = set(dict(hc.sweeper.get("params") or {}))
    multirun_file = os.path.join(hc.sweep.dir, "multirun.yaml")  # the launch command's overrides, with the lists
    parser = OverridesParser.create()  # Hydra's own reading of overrides: sweeps, quoting, +/~ prefixes
    if os.path.isfile(multirun_file):
        with open(multirun_file, encoding="utf-8") as fh:
            launched = (yaml.safe_load(fh) or {}).get("hydra", {}).get("overrides", {}).get("task", [])
        swept |= {o.key_or_group for o in parser.parse_overrides(launched) if o.is_sweep_override()}
    task = list(hc.overrides.task)
    job = [text for text, o in zip(task, parser.parse_overrides(task)) if o.key_or_group in swept]
    experiment = hc.runtime.choices.get("experiment") or hc.job.name
    group = f"{experiment}/{os.path.basename(os.path.normpath(hc.sweep.dir))}"
    return group, " ".join(job) or f"job {hc.job.num}"


def wandb_logger(project: str = "facelearn", save_dir: str = ".", name: str | None = None, group: str | None = None,
                 tags: list[str] | None = None, mode: str | None = None) -> WandbLogger:
    try:
        import wandb  # noqa: F401
    except ImportError as e:
        raise ImportError("logger=wandb needs the wandb package: pip install 'facelearn[wandb]' (or logger=csv, "
                          "logger=tensorboard)") from e
    mode = mode or os.environ.get("WANDB_MODE") or "offline"
    if mode == "dryrun":  # W&B's old name for offline; wandb itself sets it in the environment of this process
        mode = "offline"
    if mode not in _MODES:
        raise ValueError(f"logger.wandb.mode must be one of {_MODES}, got {mode!r}")
    os.makedirs(save_dir, exist_ok=True)
    # Debug logs go beside the run instead of ~/.cache/wandb unless the user chose a cache dir.
    os.environ.setdefault("WANDB_CACHE_DIR", os.path.join(save_dir, "wandb-cache"))
    # One W&B run per run directory: a resumed run (same directory, see paths.resume_run_dir) continues it.
    id_file = os.path.join(save_dir, "wandb_run_id")
    if os.path.isfile(id_file):
        with open(id_file, encoding="utf-8") as fh:
            run_id = fh.read().strip()
    else:
        run_id = secrets.token_hex(4)  # W&B ids: short lowercase alphanumerics
        with open(id_file, "w", encoding="utf-8") as fh:
            fh.write(run_id + "\n")
    sweep = sweep_identity()
    if sweep is not None:
        group = group or sweep[0]
        name = name or sweep[1]
    logger = WandbLogger(project=project, save_dir=save_dir, name=name, group=group, tags=list(tags or []),
                         offline=mode == "offline", mode=mode, id=run_id, resume="allow",
                         settings={"init_timeout": 60, "silent": True})
    # Lightning always passes anonymous=None, which wandb >= 0.19 answers with a deprecation warning every run.
    if logger._wandb_init.get("anonymous") is None:
        logger._wandb_init.pop("anonymous", None)
    return logger


def _row_before(row: dict, step: int) -> bool:
    """A well-formed row (a kill mid-write can leave a truncated or run-on last line) logged before ``step``."""
    if None in row or None in row.values():
        return False
    try:
        return int(float(row.get("step", ""))) < step
    except ValueError:
        return False


class _ContinuingWriter(_ExperimentWriter):
    """Lightning's CSV writer deletes an existing metrics.csv; this one keeps the rows of the steps before
    ``resume_step`` (a resumed run redoes the later ones) and appends after them."""

    def __init__(self, log_dir: str, resume_step: int | None) -> None:
        self.resume_step = resume_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        if self.resume_step is None or not self._fs.isfile(self.metrics_file_path):
            return super()._check_log_dir_exists()
        with self._fs.open(self.metrics_file_path, "r", newline="") as fh:
            reader = csv.DictReader(fh)
            keys = list(reader.fieldnames or [])
            rows = [r for r in reader if _row_before(r, self.resume_step)]
        with self._fs.open(self.metrics_file_path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        self.metrics_keys = sorted(keys)


class ContinuingCSVLogger(CSVLogger):
    """CSVLogger that continues a resumed run's ``metrics.csv`` (see ``resume_from``) instead of deleting it."""

    resume_step: int | None = None

    def resume_from(self, step: int) -> None:
        """Called before training starts when resuming from a checkpoint taken at global step ``step``."""
        self.resume_step = int(step)

    @property
    def experiment(self) -> _ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir, resume_step=self.resume_step)
        return self._experiment


def finish_loggers(loggers: list[Any]) -> None:
    """End each W&B run: the next job of a multirun (same process) must start its own run, not continue this one."""
    for lg in loggers:
        if isinstance(lg, WandbLogger) and lg._experiment is not None:
            lg.experiment.finish()


def tensorboard_logger(save_dir: str = ".", name: str = "tensorboard") -> TensorBoardLogger:
    """TensorBoard event files in ``<save_dir>/<name>/`` (scalars, hyperparameters, the ROC figure)."""
    return TensorBoardLogger(save_dir=save_dir, name=name, version="", default_hp_metric=False)


def flat_config(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> ``{"head.margin": 0.35, ...}`` (lists as strings): what hyperparameter views filter on."""
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_config(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out[key] = str(list(v))
        else:
            out[key] = v
    return out


def log_benchmark_results(loggers: list[Any], results: dict[str, dict[str, float]],
                          curves: dict[str, dict[str, Any]], step: int) -> None:
    """Final benchmark results beyond scalars: W&B a table (a row per benchmark and scorer) and one ROC plot per
    benchmark; TensorBoard a ROC figure per benchmark and the final metrics in its hparams view."""
    for lg in loggers:
        try:
            if isinstance(lg, WandbLogger):
                _wandb_results(lg, results, curves, step)
            elif isinstance(lg, TensorBoardLogger):
                _tensorboard_results(lg, results, curves, step)
        except Exception as e:  # a dashboard extra must never fail a finished training run
            log.warning("could not log benchmark tables/curves to %s: %s", type(lg).__name__, e)


def _rows(results: dict[str, dict[str, float]]) -> tuple[list[str], list[list[Any]]]:
    metrics = sorted({k for m in results.values() for k in m})
    return ["benchmark"] + metrics, [[b] + [m.get(k) for k in metrics] for b, m in results.items()]


def _wandb_results(lg: WandbLogger, results, curves, step: int) -> None:
    import wandb
    columns, data = _rows(results)
    lg.log_table(key="bench/results", columns=columns, data=data, step=step)
    for bench, by_scorer in curves.items():
        if by_scorer:
            plot = wandb.plot.line_series(xs=[c["far"] for c in by_scorer.values()],
                                          ys=[c["tar"] for c in by_scorer.values()], keys=list(by_scorer),
                                          title=f"ROC {bench}", xname="FAR")
            # through Lightning's log_metrics (step as trainer/global_step, like the table): wandb's own step= would
            # silently drop the plot once wandb's internal step counter has passed the global step
            # (log_every_n_steps=1 logs more often than once per step)
            lg.log_metrics({f"bench/{bench}/roc": plot}, step=step)


def _tensorboard_results(lg: TensorBoardLogger, results, curves, step: int) -> None:
    from facelearn.plots import roc_figure
    for bench, by_scorer in curves.items():
        if by_scorer:
            lg.experiment.add_figure(f"roc/{bench}", roc_figure(by_scorer, f"ROC {bench}"), global_step=step)
    finals = {f"final/{b}/{k}": v for b, m in results.items() for k, v in m.items()
              if isinstance(v, float) and v == v}
    lg.log_hyperparams(lg.hparams if hasattr(lg, "hparams") else {}, metrics=finals)
