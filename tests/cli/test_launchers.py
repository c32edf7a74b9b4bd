"""SLURM launcher and Optuna search configs (optional extras `slurm`, `search`): they compose, the search returns the
monitored metric, submitit runs facelearn jobs, and a missing plugin is named with its extra."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import yaml
from hydra.utils import get_class
from omegaconf import OmegaConf

from facelearn.runtime import plugins
from test_configs import compose_train


def test_slurm_launcher_takes_nodes_and_tasks_from_the_trainer():
    cfg = compose_train(["hydra/launcher=slurm", "trainer=ddp", "trainer.accelerator=gpu", "trainer.devices=4",
                         "trainer.num_nodes=3", "hydra.launcher.partition=gpu"])
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert (launcher["nodes"], launcher["tasks_per_node"], launcher["gpus_per_node"]) == (3, 4, 4)
    assert launcher["partition"] == "gpu" and launcher["max_num_timeout"] == 0
    assert get_class(launcher["_target_"]).__name__ == "SlurmLauncher"


def test_optuna_search_composes_with_its_space():
    cfg = compose_train(["+hparams_search=optuna", "+experiment=conventional_lfw"])
    sweeper = OmegaConf.to_container(cfg.hydra.sweeper, resolve=True)
    assert get_class(sweeper["_target_"]).__name__ == "OptunaSweeper"
    assert sweeper["direction"] == "maximize" and sweeper["study_name"] == "conventional_lfw"
    assert set(sweeper["params"]) == {"optimizer.lr", "optimizer.weight_decay", "head.scale", "head.margin"}
    assert cfg.monitor == "bench/lfw_devtest/accuracy"


def test_optuna_search_returns_the_monitored_metric(tmp_path):
    """As typed, from a directory outside the repository: 3 trials; the study's best value is the best trial's
    monitored benchmark accuracy, its parameters that trial's overrides, each inside the search space; a value on
    the command line fixes a searched option."""
    proc = subprocess.run([sys.executable, "-m", "facelearn.train", "-m", "+hparams_search=optuna", "+debug=tiny_synthetic",
                           "hydra.sweeper.n_trials=3", "optimizer.weight_decay=5e-4"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=400,
                          env=dict(os.environ, FACELEARN_CACHE=str(tmp_path / "cache")))
    assert proc.returncode == 0, proc.stderr[-4000:]
    sweep = next(tmp_path.rglob("optimization_results.yaml")).parent
    study = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    trials = []
    for job in sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()):
        value = json.loads((job / "benchmark_metrics.json").read_text())["metrics"]["synthetic"]["accuracy"]
        overrides = dict(o.split("=", 1) for o in yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
                         if not o.startswith("+"))
        trials.append((value, overrides))
    assert len(trials) == 3
    best_value, best_overrides = max(trials, key=lambda t: t[0])
    assert study["best_value"] == pytest.approx(best_value)
    assert set(study["best_params"]) == {"optimizer.lr", "head.scale", "head.margin"}
    assert {k: float(v) for k, v in study["best_params"].items()} == \
        pytest.approx({k: float(best_overrides[k]) for k in study["best_params"]})
    for _, overrides in trials:
        assert 0.01 <= float(overrides["optimizer.lr"]) <= 0.5 and 0.2 <= float(overrides["head.margin"]) <= 0.5
        assert float(overrides["head.scale"]) in (16, 30, 64) and float(overrides["optimizer.weight_decay"]) == 5e-4


@pytest.mark.slow
def test_submitit_runs_a_multirun_of_facelearn_jobs(tmp_path):
    """The submitit launcher's local executor (the SLURM executor's code path without a cluster) runs two jobs."""
    proc = subprocess.run([sys.executable, "-m", "facelearn.train", "-m", "hydra/launcher=submitit_local",
                           "+debug=tiny_synthetic", "seed=1,2"], cwd=tmp_path, capture_output=True, text=True, timeout=400,
                          env=dict(os.environ, FACELEARN_CACHE=str(tmp_path / "cache")))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert len(list(tmp_path.rglob("benchmark_metrics.json"))) == 2


@pytest.mark.parametrize("arg, extra", [("hydra/launcher=slurm", "slurm"), ("hydra/launcher=submitit_local", "slurm"),
                                        ("+hparams_search=optuna", "search"), ("hydra/sweeper=optuna", "search")])
def test_a_missing_plugin_is_named_with_its_extra(monkeypatch, arg, extra):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("hydra_plugins.") else real(name, *a))
    with pytest.raises(SystemExit, match=rf'pip install "facelearn\[{extra}\]"'):
        plugins.check_plugins(["+debug=tiny_synthetic", arg])
    plugins.check_plugins(["+debug=tiny_synthetic", "head=arcface"])  # nothing optional asked for


# Ranks started by a launcher outside Lightning: each rank is its own `python -m facelearn.train`, composing its own
# config; they must land in one run directory (one config.yaml, one metrics.csv, one set of checkpoints).
DDP_TINY = ["+experiment=conventional_shallow", "+debug=tiny_synthetic", "trainer=ddp", "trainer.max_epochs=1"]


def one_run_dir(tmp_path):
    runs = list((tmp_path / "logs" / "conventional_shallow" / "runs").iterdir())
    assert len(runs) == 1, runs
    run = runs[0]
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "config.yaml").is_file()
    assert len(list(run.rglob("metrics.csv"))) == 1 and (run / "benchmark_metrics.json").is_file()
    assert (run / "train.log").is_file() and (run / "train_rank1.log").is_file()  # each rank its own job log
    assert (run / ".hydra").is_dir() and (run / ".hydra_rank1").is_dir()
    return run


def test_torchrun_two_ranks_share_one_run_directory(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m",
                           "facelearn.train", *DDP_TINY], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MEMBER: 2/2" in proc.stdout + proc.stderr  # one world of two ranks, not two single runs
    assert one_run_dir(tmp_path).name.startswith("torchrun-")


def test_srun_pattern_two_tasks_share_one_run_directory(tmp_path):
    """The README's plain `srun python -m facelearn.train trainer=ddp ...`: two processes with SLURM's variables
    (what srun sets for 2 tasks on one node), started without Lightning's launcher."""
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2",
               "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank), "SLURM_NODEID": "0", "SLURM_JOB_ID": "4242",
               "SLURM_STEP_ID": "0", "SLURM_NODELIST": "localhost", "SLURM_JOB_NAME": "facelearn",
               "SLURM_JOB_NUM_NODES": "1"}
        procs.append(subprocess.Popen([sys.executable, "-m", "facelearn.train", *DDP_TINY], cwd=tmp_path, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    assert "MEMBER: 2/2" in outs[0] + outs[1]
    assert one_run_dir(tmp_path).name == "slurm-4242.0"
