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
