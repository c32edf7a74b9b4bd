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


def test_evaluating_a_checkpoint_does_not_reload_its_starting_weights(tmp_path):
    """A run started from backbone.weights=backbone.pth: its checkpoint holds the trained weights, so evaluation
    neither needs nor reads that file (it may have been moved or deleted since)."""
    import torch
    from omegaconf import OmegaConf, open_dict

    from facelearn.build import build_module
    from facelearn.evaluate import load_checkpoint_module
    from test_configs import compose_train, resolve

    cfg = compose_train(["backbone=iresnet18", "data.image_size=32", "+debug=tiny_synthetic"])
    resolved = OmegaConf.create(resolve(cfg))
    module = build_module(resolved, 96)
    with open_dict(resolved):
        resolved.backbone.weights = str(tmp_path / "moved-away" / "backbone.pth")
    ckpt = tmp_path / "run.ckpt"
    torch.save({"facelearn_config": OmegaConf.to_container(resolved), "facelearn_num_classes": 96,
                "state_dict": module.state_dict()}, ckpt)
    loaded, _ = load_checkpoint_module(str(ckpt))
    for key, value in module.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
