"""End-to-end runs of the CLI in subprocesses on tiny synthetic data."""

import csv
import json
import math
import os

import pytest

from conftest import TINY, run_cli


def only(paths):
    paths = list(paths)
    assert len(paths) == 1, paths
    return paths[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    proc = run_cli(["+experiment=conventional_shallow", *TINY], tmp)
    run_dir = only((tmp / "logs" / "conventional_shallow" / "runs").iterdir())
    return tmp, run_dir, proc


def test_train_writes_metrics_table_and_checkpoints(trained):
    tmp, run_dir, proc = trained
    metrics = json.loads((run_dir / "benchmark_metrics.json").read_text())["metrics"]["synthetic"]
    # 2 x 200 held-out pairs, half the negatives look-alikes: a trained embedding is well above chance.
    assert metrics["accuracy"] > 0.6, metrics
    assert 0 <= metrics["accuracy_std"] < 0.2 and metrics["auc"] > 0.6
    assert metrics["tar@far=0.0001"] is None  # 200 negatives cannot resolve 1e-4: n/a
    assert "Benchmarks after epoch 3" in proc.stdout and "| synthetic" in proc.stdout
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert len(list((run_dir / "checkpoints").glob("best-epoch*.ckpt"))) == 1  # best by bench/synthetic/accuracy
    csv = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0]
    for col in ["train/loss_epoch", "train/acc_epoch", "train/lr", "train/images_per_sec",
                "bench/synthetic/accuracy", "bench/synthetic/tar@far=0.01"]:
        assert col in csv, col
    assert "images/s" in proc.stdout + proc.stderr


def test_evaluate_cli_matches_training_metrics(trained, tmp_path):
    _, run_dir, _ = trained
    proc = run_cli([f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"], tmp_path, module="facelearn.evaluate")
    out = json.loads(only((tmp_path / "logs" / "evaluate" / "runs").glob("*/evaluation.json")).read_text())
    train = json.loads((run_dir / "benchmark_metrics.json").read_text())["metrics"]
    for k, v in train["synthetic"].items():
        if v is not None:
            assert out["metrics"]["synthetic"][k] == pytest.approx(v, abs=1e-6), k
    assert "| synthetic" in proc.stdout


def test_evaluate_rejects_non_checkpoint(tmp_path):
    import subprocess
    import sys
    bogus = tmp_path / "x.ckpt"
    bogus.write_text("nope")
    proc = subprocess.run([sys.executable, "-m", "facelearn.evaluate", f"ckpt_path={tmp_path / 'missing.ckpt'}",
                           f"paths.log_dir={tmp_path}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "missing.ckpt does not exist" in proc.stderr


def test_multirun_two_heads(tmp_path):
    run_cli(["-m", "+experiment=conventional_shallow", "head=arcface,cosface", *TINY, "trainer.max_epochs=1"],
            tmp_path)
    sweep = only((tmp_path / "logs" / "multiruns").iterdir())
    heads = set()
    for job in ("0", "1"):
        m = json.loads((sweep / job / "benchmark_metrics.json").read_text())["metrics"]["synthetic"]
        assert math.isfinite(m["accuracy"])
        heads.add((sweep / job / "config.yaml").read_text().split("head:")[1].split("_target_: ")[1].split()[0])
    assert heads == {"facelearn.nn.heads.ArcFace", "facelearn.nn.heads.CosFace"}


def test_help_and_cfg_job():
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "facelearn.train", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "facelearn" in out.stdout and "head: arcface" in out.stdout.replace(", ", "\n")\
        or "arcface" in out.stdout
    out = subprocess.run([sys.executable, "-m", "facelearn.train", "+experiment=conventional_lfw", "--cfg", "job"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "pairsDevTest.txt" in out.stdout
    out = subprocess.run([sys.executable, "-m", "facelearn.train", "+experiment=no_such_experiment"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "conventional_shallow" in out.stderr  # Hydra lists the valid names


def test_export_help_is_the_export_usage(tmp_path):
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "facelearn.export", "--help"], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.returncode == 0 and "python -m facelearn.export ckpt_path=PATH" in out.stdout
    assert "facelearn.train" not in out.stdout


@pytest.mark.parametrize("args,expected", [
    (["facelearn.train", "+debug=tiny_synthetic", "trainer.max_epochs=ten"], "trainer.max_epochs='ten': expected an integer"),
    (["facelearn.train", "+debug=tiny_synthetic", "ckpt_path=missing.ckpt"], "ckpt_path: checkpoint missing.ckpt does not exist"),
    (["facelearn.evaluate"], "give ckpt_path=<checkpoint>"),
    (["facelearn.export"], "Missing mandatory value: ckpt_path"),
    # refused by the signature check (facelearn.cli.schema) before any data is read
    (["facelearn.train", "+debug=tiny_synthetic", "head.margin=abc"], "head.margin='abc': expected a number"),
    (["facelearn.train", "+debug=tiny_synthetic", "+head.margn=0.3"], "head.margn: CosFace has no option 'margn' (did you "
                                                            "mean head.margin?)"),
    (["facelearn.train", "data=rec"], "data.train.path is required"),
    (["facelearn.train", "data=rec", "data.train.path=x.rec"], "benchmark.synthetic is a set of synthetic faces, but "
                                                               "the training data are real (RecordIOSource)"),
    (["facelearn.export", "ckpt_path=x.ckpt", "layout=onnx2"], "layout=onnx2: expected one of facelearn, insightface"),
    (["facelearn.train", "+debug=tiny_synthetic", "channels_last=yes"], "channels_last='yes': expected true or false"),
    (["facelearn.train", "+debug=tiny_synthetic", "backbone.norm=layer"],
     "backbone.norm='layer': expected one of 'batch', 'group' (SmallFaceNet's norm)"),
])
def test_cli_errors_are_one_line_unless_hydra_full_error(tmp_path, args, expected):
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    out = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env=env)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert lines[-1].startswith(f"{args[0]}: error: ") and expected in lines[-1], out.stderr
    assert not list(tmp_path.rglob(".hydra")), "a failed command leaves no run directory behind"
    full = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**env, "HYDRA_FULL_ERROR": "1"})
    assert full.returncode != 0 and "Traceback" in full.stderr


def test_a_gpu_trainer_without_a_gpu_is_refused_before_any_data(tmp_path):
    import subprocess
    import sys
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = subprocess.run([sys.executable, "-m", "facelearn.train", "+debug=tiny_synthetic", "trainer=gpu"], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 2 and "trainer.accelerator=gpu: no CUDA GPU is visible" in out.stderr, out.stderr
    assert "decoded" not in out.stderr and not list(tmp_path.rglob(".hydra"))


def test_wandb_offline_run(tmp_path):
    proc = run_cli(["+experiment=conventional_shallow", "logger=wandb", *TINY, "trainer.max_epochs=1"], tmp_path,
                   env={"WANDB_API_KEY": "", "WANDB_SILENT": "false"})
    run_dir = only((tmp_path / "logs" / "conventional_shallow" / "runs").iterdir())
    assert list((run_dir / "wandb").glob("offline-run-*"))
    assert "anonymous setting" not in proc.stdout + proc.stderr  # Lightning's anonymous=None, dropped


def test_ddp_two_processes_match_single_process_evaluation(tmp_path):
    """2 CPU ranks (gloo) train; the gathered benchmark metrics equal evaluating last.ckpt on 1 process."""
    run_cli(["+experiment=conventional_shallow", "trainer=ddp", "trainer.devices=2", *TINY,
             "trainer.max_epochs=2", "data.batch_size=16"], tmp_path, timeout=300)
    run_dir = only((tmp_path / "logs" / "conventional_shallow" / "runs").iterdir())
    ddp = json.loads((run_dir / "benchmark_metrics.json").read_text())
    csv = (run_dir / "csv" / "metrics.csv").read_text()
    assert ddp["global_step"] > 0 and "bench/synthetic/accuracy" in csv
    ev_dir = tmp_path / "eval"
    run_cli([f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"], ev_dir, module="facelearn.evaluate")
    single = json.loads(only((ev_dir / "logs" / "evaluate" / "runs").glob("*/evaluation.json")).read_text())
    for k, v in ddp["metrics"]["synthetic"].items():
        if v is not None:
            assert single["metrics"]["synthetic"][k] == pytest.approx(v, abs=1e-5), k


def test_multirun_trains_every_pair_loss_and_reports_side_by_side(tmp_path):
    """One multirun over the pair-loss experiments (+ the AM-softmax baseline); the report lists them all."""
    import subprocess
    import sys
    exps = ["conventional_shallow", "conventional_shallow_contrastive", "conventional_shallow_triplet",
            "conventional_shallow_npairs"]
    run_cli(["-m", f"+experiment={','.join(exps)}", *TINY, "trainer.max_epochs=2"], tmp_path, timeout=400)
    sweep = only((tmp_path / "logs" / "multiruns").iterdir())
    out = subprocess.run([sys.executable, "-m", "facelearn.report", str(sweep)], capture_output=True, text=True,
                         check=True).stdout
    lines = out.splitlines()
    for e in exps:
        assert any(line.startswith(f"| +experiment={e} ") for line in lines), out
    assert len([line for line in lines if line.startswith("| +experiment=")]) == len(exps)
    assert "common to all runs: " in out and "trainer.max_epochs=2" in out


@pytest.mark.parametrize("losses", ["lifted", "margin", "[lifted,margin]"])
def test_joint_supervision_trains(tmp_path, losses):
    """L2-softmax + lifted / margin / both (the doppelganger paper's joint supervision) on M-per-class batches."""
    run_cli(["+experiment=conventional_deep", "head=l2softmax", f"loss={losses}", "data/sampler=m_per_class",
             "data.sampler.images_per_class=2", *TINY, "trainer.max_epochs=1"], tmp_path)
    run_dir = only((tmp_path / "logs" / "conventional_deep" / "runs").iterdir())
    header = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0]
    for name in losses.strip("[]").split(","):
        assert f"train/loss_{name}_epoch" in header
    assert "train/loss_head_epoch" in header


def test_sst_shallow_end_to_end(tmp_path):
    run_cli(["+experiment=sst_shallow", *TINY, "method.queue_size=48", "data.batch_size=16"], tmp_path)
    run_dir = only((tmp_path / "logs" / "sst_shallow" / "runs").iterdir())
    m = json.loads((run_dir / "benchmark_metrics.json").read_text())["metrics"]["synthetic"]
    assert m["accuracy"] > 0.6, m
    header = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "train/loss_head_epoch" in header and "train/queue_filled" in header


@pytest.mark.parametrize("experiment,extra", [
    ("conventional_shallow", ["head=dp_softmax"]),
    ("conventional_shallow", ["head=arcface", "+head/selection=dominant"]),  # the selection with another margin
    ("sst_shallow", ["head=dp_softmax", "method.queue_size=48", "data.batch_size=16"])])
def test_dp_softmax_trains_in_both_regimes(tmp_path, experiment, extra):
    """DP-softmax with fewer dominant prototypes than classes (conventional) / queue columns (SST)."""
    run_cli([f"+experiment={experiment}", *TINY, *extra, "head.selection.num_dominant=16"], tmp_path)
    run_dir = only((tmp_path / "logs" / experiment / "runs").iterdir())
    m = json.loads((run_dir / "benchmark_metrics.json").read_text())["metrics"]["synthetic"]
    assert m["accuracy"] > 0.6, m
    assert "facelearn.nn.selection.DominantPrototypes" in (run_dir / ".hydra" / "config.yaml").read_text()


def test_doppelganger_mining_runs_under_sst(tmp_path):
    """Mining reads the step's scores (StepOutput), so it works for SST (scores against gallery + queue)."""
    run_cli(["+experiment=sst_shallow", *TINY, "method.queue_size=48", "data.batch_size=16",
             "+callbacks.doppelganger._target_=facelearn.callbacks.DoppelgangerCallback"], tmp_path)
    run_dir = only((tmp_path / "logs" / "sst_shallow" / "runs").iterdir())
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").read_text().splitlines()))
    assigned = [float(r["dm/assigned"]) for r in rows if r.get("dm/assigned")]
    assert assigned and assigned[-1] > 48  # classes with a doppelganger, out of 96


def test_sst_ablation_grid_is_36_runs():
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "facelearn.train", "+experiment=sst_ablation",
                          "--cfg", "hydra"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    params = out.stdout.split("params:")[1]
    for expected in ["+objective: softmax,am,arc,contrastive,triplet,npairs",
                     "method.variant: none,constraint,momentum", "method.use_queue: true,false"]:
        assert expected in params


def test_dm_joint_end_to_end(tmp_path):
    run_cli(["+experiment=dm_joint", *TINY, "data.batch_size=30", "data.train.images_per_identity=[3,5]",
             "data.sampler.num_random=4", "benchmark.oneshot.num_novel=20"], tmp_path)
    run_dir = only((tmp_path / "logs" / "dm_joint" / "runs").iterdir())
    m = json.loads((run_dir / "benchmark_metrics.json").read_text())["metrics"]
    assert 0 <= m["oneshot"]["novel/coverage@99"] <= 1 and m["oneshot"]["novel/top1"] > 0.1
    header = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "dm/assigned" in header and "train/loss_margin_epoch" in header
    import torch
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    lst = ckpt["callbacks"]["DoppelgangerCallback"]["doppelganger"]
    assert int((lst >= 0).sum()) > 0  # the list is in the checkpoint
    # re-evaluation with extra precision levels: the split is rebuilt from the run's data, same numbers
    ev = tmp_path / "ev"
    run_cli([f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", "benchmark=oneshot_synthetic",
             "benchmark.oneshot.num_novel=20", "+benchmark.oneshot.precisions=[0.99,0.5]",
             "+benchmark.oneshot.finetune_iterations=30"], ev, module="facelearn.evaluate")
    again = json.loads(only((ev / "logs" / "evaluate" / "runs").glob("*/evaluation.json")).read_text())["metrics"]
    assert again["oneshot"]["novel/coverage@99"] == pytest.approx(m["oneshot"]["novel/coverage@99"], abs=1e-9)
    assert again["oneshot"]["novel/coverage@50"] >= again["oneshot"]["novel/coverage@99"]
    assert 0 <= again["oneshot"]["novel/finetuned_top1"] <= 1  # Table 6: the fine-tuned classifier's scores
    # a different split would have trained on the held-out people: refused
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "facelearn.evaluate",
                           f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", "benchmark=oneshot_synthetic",
                           f"paths.log_dir={tmp_path / 'bad'}"],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode != 0 and "trained with a different split" in proc.stderr, proc.stderr[-2000:]


def test_evaluate_cli_reports_cosine_and_ida_columns(trained, tmp_path):
    _, run_dir, _ = trained
    proc = run_cli([f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", "ida=both", "ida.ida_l.epochs=3"],
                   tmp_path, module="facelearn.evaluate")
    header = next(line for line in proc.stdout.splitlines() if line.startswith("| benchmark"))
    assert "cosine" in header and "ida_r" in header and "ida_l" in header
    out = json.loads(only((tmp_path / "logs" / "evaluate" / "runs").glob("*/evaluation.json")).read_text())
    m = out["metrics"]["synthetic"]
    assert 0.5 <= m["ida_r/accuracy"] <= 1 and 0.5 <= m["ida_l/accuracy"] <= 1
    assert only((tmp_path / "logs" / "evaluate" / "runs").glob("*/ida_l_regressor.pt")).is_file()
    # the run's DataModule supplies the training data only: the benchmark is decoded once
    log = (proc.stdout + proc.stderr + "".join(
        p.read_text() for p in (tmp_path / "logs" / "evaluate" / "runs").glob("*/*.log")))
    assert "benchmark synthetic: 400 pairs" in log and "datamodule][INFO] - benchmark synthetic" not in log


def test_lifted_and_margin_alone_train(tmp_path):
    """The remaining pair losses without a classifier, one multirun (M-per-class batches)."""
    run_cli(["-m", "+experiment=conventional_deep", "head=none", "loss=lifted,margin", "data/sampler=m_per_class",
             "data.sampler.images_per_class=2", *TINY, "trainer.max_epochs=1"], tmp_path)
    sweep = only((tmp_path / "logs" / "multiruns").iterdir())
    for job in ("0", "1"):
        m = json.loads((sweep / job / "benchmark_metrics.json").read_text())["metrics"]["synthetic"]
        assert math.isfinite(m["accuracy"]) and m["accuracy"] >= 0.5


def test_evaluate_never_runs_code_from_a_checkpoint(tmp_path):
    """A crafted checkpoint whose unpickling would run code is refused before anything runs."""
    import pickle
    import subprocess
    import sys

    import torch

    from conftest import FilePayload
    marker = tmp_path / "payload_ran"
    evil = tmp_path / "evil.ckpt"
    torch.save({"facelearn_config": {}, "state_dict": {}, "x": FilePayload(marker)}, evil, pickle_module=pickle)
    bogus = tmp_path / "text.ckpt"
    bogus.write_text("not a checkpoint")
    for path in (evil, bogus):
        proc = subprocess.run([sys.executable, "-m", "facelearn.evaluate", f"ckpt_path={path}",
                               f"paths.log_dir={tmp_path}"], capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0
        assert f"ckpt_path: {path} is not a loadable facelearn checkpoint" in proc.stderr, proc.stderr[-2000:]
    assert not marker.exists()
