"""facelearn.report: a failed job of a sweep is reported, never silently left out."""

import json

import yaml

from facelearn import report


def job(root, name, overrides, acc=None):
    d = root / name
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if acc is not None:
        (d / "benchmark_metrics.json").write_text(json.dumps({"metrics": {"lfw": {"accuracy": acc}}}))
    return d


def test_failed_job_is_listed(tmp_path, capsys):
    job(tmp_path, "0", ["head=arcface", "seed=1"], 0.8)
    job(tmp_path, "1", ["head=arcface", "seed=2"], 0.9)
    failed = job(tmp_path, "2", ["head=cosface", "seed=1"])
    report.main([str(tmp_path), "--metrics", "accuracy"])
    out, err = capsys.readouterr()
    assert "85.00 ± 7.07" in out
    assert "1 job(s) without results" in err and f"{failed}: head=cosface" in err


def test_metric_names_accept_a_far_in_any_float_spelling():
    from facelearn.report import metric_name
    assert metric_name("tar@far=1e-3") == metric_name("tar@far=0.001") == "tar@far=0.001"
    assert metric_name("ida_r/tar@far=1E-2") == "ida_r/tar@far=0.01"
    assert metric_name("accuracy") == "accuracy" and metric_name("tar@far=x") == "tar@far=x"
    assert metric_name("G1/tpir@fpir=1e-2") == "G1/tpir@fpir=0.01"  # IJB 1:N


def test_one_table_per_benchmark_and_evaluations_say_so(tmp_path, capsys):
    a = job(tmp_path, "train_a", ["head=arcface"])
    (a / "benchmark_metrics.json").write_text(json.dumps({"metrics": {
        "lfw_devtest": {"accuracy": 0.8}, "cfp_fp": {"accuracy": 0.6},
        "oneshot": {"novel/top1": 0.1}}}))
    (a / "checkpoints").mkdir()
    ev = job(tmp_path, "eval_a", ["benchmark=cfp_fp"])
    (ev / "evaluation.json").write_text(json.dumps({"ckpt_path": str(a / "checkpoints" / "last.ckpt"),
                                                    "metrics": {"cfp_fp": {"accuracy": 0.62}}}))
    report.main([str(tmp_path), "--metrics", "accuracy", "--csv", str(tmp_path / "t.csv")])
    out, err = capsys.readouterr()
    tables = dict(t.split("\n", 1) for t in out.split("common to all runs")[0].split("benchmark: ")[1:])
    assert set(tables) == {"lfw_devtest", "cfp_fp"}
    assert "80.00" in tables["lfw_devtest"] and "62.00" not in tables["lfw_devtest"]
    cfp = tables["cfp_fp"]
    assert "60.00" in cfp and "62.00" in cfp and "| evaluation: benchmark=cfp_fp " in cfp  # head=arcface: common
    assert "benchmark oneshot: none of --metrics accuracy (it has novel/top1)" in err
    rows = (tmp_path / "t.csv").read_text().splitlines()
    assert rows[0].startswith("benchmark,run,n,accuracy_mean_pct")
    assert sorted(r.split(",")[0] for r in rows[1:]) == ["cfp_fp", "cfp_fp", "lfw_devtest"]
