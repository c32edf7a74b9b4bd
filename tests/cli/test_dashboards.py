"""What a researcher sees: progress output, W&B runs grouped by sweep with the config as hyperparameters,
TensorBoard event files, report tables and ROC plots."""

import csv
import json
import struct
from pathlib import Path

import pytest

from conftest import TINY, run_cli
from facelearn import report
from facelearn.callbacks.progress import PlainProgress, TrainingProgressBar, progress_bar
from wandb_offline import run_summary


def test_progress_bar_choice():
    assert isinstance(progress_bar("bar"), TrainingProgressBar)
    assert isinstance(progress_bar("plain", every_n_steps=7), PlainProgress)
    assert isinstance(progress_bar("auto"), PlainProgress)  # pytest captures stderr: not a terminal
    with pytest.raises(ValueError, match="callbacks.progress.mode"):
        progress_bar("fancy")


def test_plain_progress_lines_when_not_a_terminal(tmp_path):
    proc = run_cli(["+experiment=conventional_shallow", *TINY, "callbacks.progress.every_n_steps=2"], tmp_path)
    out = proc.stdout + proc.stderr
    steps = [line for line in out.splitlines() if "facelearn.callbacks.progress" in line and " step " in line]
    assert steps and "loss" in steps[0] and "images/s" in steps[0] and "ETA" in steps[0]
    for epoch in (1, 2, 3):  # one summary line per epoch, with the epoch's mean loss
        assert f"epoch {epoch}/3: loss" in out
    assert "Benchmarks after epoch 1" in out  # the table each time the benchmarks run
    assert "\r" not in out  # no tqdm redraws in a log file


def test_progress_can_be_switched_off(tmp_path):
    run_cli(["+experiment=conventional_shallow", *TINY, "trainer.enable_progress_bar=false",
             "trainer.max_epochs=1"], tmp_path)


def test_wandb_multirun_groups_runs_and_logs_config(tmp_path):
    """Three heads in one sweep: three offline runs in one group, named by the head, the config in each."""
    run_cli(["-m", "+experiment=conventional_shallow", *TINY, "trainer.max_epochs=1", "logger=wandb",
             "head=arcface,cosface,normface"], tmp_path)
    files = sorted((tmp_path / "logs" / "multiruns").glob("*/*/wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 3
    runs = [run_summary(f) for f in files]
    assert len({r["group"] for r in runs}) == 1 and runs[0]["group"].startswith("conventional_shallow/")
    assert sorted(r["name"] for r in runs) == ["head=arcface", "head=cosface", "head=normface"]
    by_name = {r["name"]: r["config"] for r in runs}
    assert by_name["head=arcface"]["head._target_"] == "facelearn.nn.heads.ArcFace"
    assert by_name["head=arcface"]["head.margin"] == 0.5 and by_name["head=cosface"]["head.margin"] == 0.35
    assert by_name["head=normface"]["method._target_"] == "facelearn.methods.conventional.ConventionalModule"
    assert by_name["head=cosface"]["data.batch_size"] == 32  # the resolved run config, +debug=tiny_synthetic included
    for r in runs:  # scalars, the results table and the ROC plot (tables/plots are logged as nested keys)
        assert "bench/synthetic/accuracy" in r["keys"], r["keys"]
        for prefix in ("bench/results/", "bench/synthetic/roc_table/"):  # a W&B plot: its table + a chart
            assert any(k.startswith(prefix) for k in r["keys"]), (prefix, r["keys"])


def _tensorboard_events(path: Path) -> list:
    """TFRecord framing: u64 length, u32 crc, data, u32 crc; each record an Event protobuf."""
    from tensorboardX.proto.event_pb2 import Event

    data, pos, events = path.read_bytes(), 0, []
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos:pos + 8])
        event = Event()
        event.ParseFromString(data[pos + 12:pos + 12 + length])
        events.append(event)
        pos += 12 + length + 4
    return events


def test_tensorboard_logger_writes_scalars_hparams_and_roc(tmp_path):
    run_cli(["+experiment=conventional_shallow", *TINY, "trainer.max_epochs=2", "logger=tensorboard"], tmp_path)
    run_dir = next((tmp_path / "logs" / "conventional_shallow" / "runs").iterdir())
    files = list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert files
    tags = {v.tag for f in files for e in _tensorboard_events(f) for v in e.summary.value}
    assert {"train/loss_step", "bench/synthetic/accuracy", "roc/synthetic"} <= tags, tags
    assert any(t.startswith("_hparams_/") for t in tags)  # the hparams view (config + final metrics)
    assert (run_dir / "roc.json").is_file()


def _job(root, name, overrides, metrics, roc=None):
    d = root / name
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text(json.dumps(overrides))
    (d / "benchmark_metrics.json").write_text(json.dumps({"metrics": {"lfw": metrics}}))
    if roc is not None:
        (d / "roc.json").write_text(json.dumps({"roc": {"lfw": {"cosine": roc}}}))
    return d


def test_report_numeric_csv_markdown_and_roc_png(tmp_path, capsys):
    roc = {"far": [0.0, 0.01, 0.1, 1.0], "tar": [0.0, 0.5, 0.8, 1.0]}
    _job(tmp_path, "0", ["head=arcface", "seed=1"], {"accuracy": 0.80, "threshold": 0.31}, roc)
    _job(tmp_path, "1", ["head=arcface", "seed=2"], {"accuracy": 0.90, "threshold": 0.35}, roc)
    _job(tmp_path, "2", ["head=cosface", "seed=1"], {"accuracy": 0.70, "threshold": 0.20}, roc)
    report.main([str(tmp_path), "--metrics", "accuracy", "threshold", "--csv", str(tmp_path / "t.csv"),
                 "--markdown", str(tmp_path / "t.md"), "--roc", str(tmp_path / "roc.png")])
    out = capsys.readouterr().out
    assert "85.00 ± 7.07" in out and "0.3300 ± 0.0283" in out  # a threshold is not a percentage
    rows = list(csv.DictReader((tmp_path / "t.csv").read_text().splitlines()))
    arc = next(r for r in rows if r["run"] == "head=arcface")
    assert float(arc["accuracy_mean_pct"]) == pytest.approx(85.0) and float(arc["accuracy_std_pct"]) == \
        pytest.approx(7.0710678, abs=1e-4)
    assert float(arc["threshold_mean"]) == pytest.approx(0.33) and arc["n"] == "2"
    assert (tmp_path / "t.md").read_text().startswith("benchmark: lfw\n\n| run")  # one table per benchmark
    assert (tmp_path / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_errors_are_one_line(tmp_path, capsys):
    _job(tmp_path, "0", ["head=arcface"], {"accuracy": 0.8})
    with pytest.raises(SystemExit, match="--metrics \\['acuracy'\\] not in the runs' results; available: accuracy"):
        report.main([str(tmp_path), "--metrics", "acuracy"])
    with pytest.raises(SystemExit, match="does not exist"):
        report.main([str(tmp_path / "missing")])
    with pytest.raises(SystemExit, match="no benchmark 'cfp_fp'"):
        report.main([str(tmp_path), "--benchmark", "cfp_fp"])


def test_report_paired_difference_by_seed(tmp_path, capsys):
    """Δ = row − reference per shared seed (by hand: +5 and +9 points -> 7.00 ± 2.83); a seed the reference lacks
    is not paired."""
    _job(tmp_path, "0", ["sampler=random", "seed=1"], {"accuracy": 0.80})
    _job(tmp_path, "1", ["sampler=random", "seed=2"], {"accuracy": 0.90})
    _job(tmp_path, "2", ["sampler=dm", "seed=1"], {"accuracy": 0.85})
    _job(tmp_path, "3", ["sampler=dm", "seed=2"], {"accuracy": 0.99})
    _job(tmp_path, "4", ["sampler=dm", "seed=3"], {"accuracy": 0.10})
    report.main([str(tmp_path), "--metrics", "accuracy", "--reference", "sampler=random",
                 "--csv", str(tmp_path / "p.csv")])
    out = capsys.readouterr().out
    assert "7.00 ± 2.83 (2)" in out and "reference" in out
    rows = {r["run"]: r for r in csv.DictReader((tmp_path / "p.csv").read_text().splitlines())}
    assert float(rows["sampler=dm"]["accuracy_paired_diff_mean_pct"]) == pytest.approx(7.0)
    assert rows["sampler=dm"]["accuracy_paired_n"] == "2"
    with pytest.raises(SystemExit, match="--reference 'sampler=none' is not a row"):
        report.main([str(tmp_path), "--metrics", "accuracy", "--reference", "sampler=none"])
