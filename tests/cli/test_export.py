"""ONNX export of a trained checkpoint and its evaluation with onnxruntime, as typed."""

import json

import pytest

from conftest import TINY, run_cli

BENCH = ["benchmark=synthetic", "benchmark.synthetic.num_identities=60", "benchmark.synthetic.num_pairs=200"]


def test_onnx_export_evaluates_like_the_checkpoint(tmp_path):
    run_cli(["+experiment=conventional_shallow", *TINY, "trainer.max_epochs=2"], tmp_path / "train")
    ckpt = next((tmp_path / "train" / "logs").rglob("last.ckpt"))
    onnx = tmp_path / "model.onnx"
    proc = run_cli([f"ckpt_path={ckpt}", f"output={onnx}"], tmp_path / "export", module="facelearn.export")
    assert onnx.is_file() and "ONNX embedding model (32x32 input" in proc.stdout

    def evaluate(name, args):
        run_cli([*args, *BENCH], tmp_path / name, module="facelearn.evaluate")
        out = next((tmp_path / name / "logs").rglob("evaluation.json"))
        return json.loads(out.read_text())["metrics"]["synthetic"]

    torch_metrics = evaluate("ckpt", [f"ckpt_path={ckpt}"])
    onnx_alone = evaluate("onnx", [f"onnx_path={onnx}"])             # image size read from the ONNX input
    onnx_ida = evaluate("onnx_ida", [f"onnx_path={onnx}", f"ckpt_path={ckpt}", "ida=ida_r"])  # anchors: the run's data
    for key in ("accuracy", "auc", "tar@far=0.1"):
        assert onnx_alone[key] == pytest.approx(torch_metrics[key], abs=1e-3), key
        assert onnx_ida[key] == pytest.approx(torch_metrics[key], abs=1e-3), key
    assert "ida_r/accuracy" in onnx_ida
