"""ONNX export of a trained checkpoint and its evaluation with onnxruntime, as typed."""

import json

import pytest

from conftest import TINY, run_cli

BENCH = ["benchmark=synthetic", "benchmark.synthetic.num_identities=60", "benchmark.synthetic.num_pairs=200"]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    work = tmp_path_factory.mktemp("export")
    run_cli(["+experiment=conventional_shallow", *TINY, "trainer.max_epochs=2"], work / "train")
    return next((work / "train" / "logs").rglob("last.ckpt"))


def test_onnx_export_evaluates_like_the_checkpoint(tmp_path, tiny_ckpt):
    ckpt = tiny_ckpt
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


def arcface_onnx_embed(path, bgr_images):
    """insightface model_zoo.ArcFaceONNX.get_feat, re-implemented (no insightface / cv2 needed): the input scaling
    from the first 8 node names, cv2.dnn.blobFromImages(imgs, 1/std, size, (mean,)*3, swapRB=True), the first
    output as the raw embedding (insightface's normed_embedding divides by its norm)."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    nodes = onnx.load(path).graph.node[:8]
    sub = any(n.name.startswith(("Sub", "_minus")) for n in nodes)
    mul = any(n.name.startswith(("Mul", "_mul")) for n in nodes)
    mean, std = (0.0, 1.0) if sub and mul else (127.5, 127.5)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    assert tuple(inp.shape[2:4]) == bgr_images.shape[1:3]  # its input size = the images' (no resize needed)
    blob = ((bgr_images[..., ::-1].astype(np.float32) - mean) / std).transpose(0, 3, 1, 2)  # swapRB, NCHW
    out = session.run([session.get_outputs()[0].name], {inp.name: np.ascontiguousarray(blob)})[0]
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_insightface_layout_loads_as_insightface_loads_it(tmp_path, tiny_ckpt):
    import numpy as np
    import onnx
    import torch
    import torch.nn.functional as F
    from facelearn.evaluate import load_checkpoint_module
    ckpt = tiny_ckpt
    path = tmp_path / "if.onnx"
    proc = run_cli([f"ckpt_path={ckpt}", f"output={path}", "layout=insightface"], tmp_path / "export",
                   module="facelearn.export")
    assert "insightface layout" in proc.stdout
    model = onnx.load(str(path))
    assert model.opset_import[0].version == 11 and model.graph.input[0].name == "data"
    rgb = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    theirs = arcface_onnx_embed(str(path), rgb[..., ::-1])  # insightface is handed BGR (cv2) images
    module, _ = load_checkpoint_module(str(ckpt))
    x = torch.from_numpy(rgb.transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        ours = F.normalize(module.embedding_network()(x.float() / 127.5 - 1), dim=1).numpy()  # one pass, no flip
    np.testing.assert_allclose(theirs, ours, atol=1e-4)
    # facelearn reads its metadata and feeds it the same way (facelearn.evaluate / facelearn.embed onnx_path=)
    from facelearn.onnx_model import OnnxEmbedder
    np.testing.assert_allclose(OnnxEmbedder(str(path)).embed(x).numpy(), ours, atol=1e-4)
