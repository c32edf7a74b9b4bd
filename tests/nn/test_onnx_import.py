"""Pretrained weights from ONNX files: dequantization, SFace's published file against onnxruntime, the
insightface-iresnet route (a model we export with BatchNorm folded into the convolutions, as insightface's files
are), and the strictness of the mapping."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from facelearn.nn.backbones import MobileFaceNet, SFaceNet, iresnet18, iresnet34  # noqa: E402
from facelearn.nn.onnx_import import _dequantize, load_onnx_weights, read_layers  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SFACE = ROOT.parent / "shared" / "models" / "face_recognition_sface_2021dec_int8bq.onnx"
ort.set_default_logger_severity(3)


def l2(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_blocked_dequantization_matches_the_definition():
    rng = np.random.default_rng(0)
    q = rng.integers(-128, 128, (3, 10)).astype(np.int8)
    scale = rng.uniform(0.01, 0.1, (3, 3)).astype(np.float32)  # blocks of 4 along axis 1: 4 + 4 + 2 columns
    zero = rng.integers(-3, 3, (3, 3)).astype(np.int8)
    out = _dequantize(q, scale, zero, axis=1, block=4)
    for r in range(3):
        for c in range(10):
            assert out[r, c] == pytest.approx((float(q[r, c]) - zero[r, c // 4]) * scale[r, c // 4], rel=1e-6)
    np.testing.assert_allclose(_dequantize(q, scale[:, :1].ravel(), None, axis=0, block=0),
                               q * scale[:, :1], rtol=1e-6)


def run_onnx_runtime(path: Path, x: np.ndarray) -> np.ndarray:
    """onnxruntime on the file; SFace's int8 file lists stale graph inputs (the fp32 weight names its quantized
    initializers replaced) that onnxruntime then demands as feeds: those declarations, read by no node, are
    dropped; every node and initializer stays as shipped (onnxruntime does the dequantization itself)."""
    model = onnx.load(str(path))
    read = {i for n in model.graph.node for i in n.input}
    keep = [i for i in model.graph.input if i.name in read]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


@pytest.mark.skipif(not SFACE.is_file(), reason="../shared/models absent")
def test_sface_loaded_from_its_onnx_file_equals_onnxruntime():
    net = SFaceNet(weights=str(SFACE)).eval()
    assert net.input_scale.item() == pytest.approx(127.5 * 0.0078125)
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(9.64e6, rel=0.01)
    pixels = np.random.default_rng(0).uniform(0, 255, (4, 3, 112, 112)).astype(np.float32)
    with torch.no_grad():
        ours = net(torch.from_numpy(pixels) / 127.5 - 1).numpy()
    ref = run_onnx_runtime(SFACE, pixels)
    diff = np.abs(l2(ours) - l2(ref)).max()
    print(f"SFace torch vs onnxruntime: max |diff| {np.abs(ours - ref).max():.2e} raw, {diff:.2e} after L2")
    assert diff <= 1e-4


def randomise_batchnorm(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                if m.weight.requires_grad:
                    m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.3 + 0.1)


def export_insightface_style(model: nn.Module, path: Path) -> None:
    """As insightface exported its model zoo: TorchScript exporter, eval mode, constant folding (BatchNorms after
    convolutions folded into them), opset 11."""
    torch.onnx.export(model.eval(), (torch.zeros(1, 3, 112, 112),), str(path), dynamo=False, opset_version=11,
                      input_names=["input.1"], output_names=["embedding"], do_constant_folding=True,
                      dynamic_axes={"input.1": {0: "n"}})


@pytest.fixture(scope="module")
def iresnet_file(tmp_path_factory):
    model = iresnet18(image_size=112)
    randomise_batchnorm(model)
    path = tmp_path_factory.mktemp("onnx") / "r18.onnx"
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice: the point is its output
        warnings.simplefilter("ignore")
        export_insightface_style(model, path)
    return model.eval(), path


def test_insightface_style_iresnet_round_trips(iresnet_file):
    model, path = iresnet_file
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("Conv") == 21 and ops.count("BatchNormalization") == 10  # 21 convs' BNs folded away
    loaded = iresnet18(image_size=112, weights=str(path)).eval()
    x = torch.rand(3, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        ref, ours = model(x).numpy(), loaded(x).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    runtime = sess.run(None, {"input.1": x.numpy()})[0]
    assert np.abs(l2(ours) - l2(runtime)).max() <= 1e-4
    assert np.abs(l2(ours) - l2(ref)).max() <= 1e-4
    # the folded BN is an identity carrying the conv's bias: the function, not the statistics, is recovered
    bn = loaded.body[0].bn2
    assert torch.allclose(bn.weight, torch.ones_like(bn.weight)) and torch.allclose(bn.running_mean,
                                                                                      torch.zeros_like(bn.bias))


def test_a_file_of_another_architecture_is_refused_with_the_differences(iresnet_file):
    _, path = iresnet_file
    with pytest.raises(ValueError, match=r"does not fit IResNet .*41 ONNX layers.*file \(") as err:
        iresnet34(image_size=112, weights=str(path))
    assert "torch layer" in str(err.value) or "meets" in str(err.value)
    with pytest.raises(ValueError, match="does not fit MobileFaceNet"):
        load_onnx_weights(MobileFaceNet(embedding_size=512), str(path), 112)


def tiny_graph(path: Path, extra_init=None, external=None, bias_without_bn=False) -> None:
    """Conv(3->4, 3x3, quantized weight) -> BN -> PRelu: what a small MobileFaceNet block exports to."""
    rng = np.random.default_rng(1)
    q = rng.integers(-127, 127, (4, 27)).astype(np.int8)
    inits = [numpy_helper.from_array(q, "w_q"), numpy_helper.from_array(np.full((4, 1), 0.02, np.float32), "w_s"),
             numpy_helper.from_array(np.zeros((4, 1), np.int8), "w_z"),
             numpy_helper.from_array(np.array([4, 3, 3, 3], np.int64), "w_shape")]
    bn = [numpy_helper.from_array(v.astype(np.float32), n) for v, n in
          ((rng.uniform(0.5, 1, 4), "g"), (rng.normal(0, 0.1, 4), "b"), (rng.normal(0, 0.1, 4), "m"),
           (rng.uniform(0.5, 2, 4), "v"))]
    slope = numpy_helper.from_array(rng.uniform(0, 0.3, (4, 1, 1)).astype(np.float32), "a")
    nodes = [helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w_dq"], axis=1, block_size=32),
             helper.make_node("Reshape", ["w_dq", "w_shape"], ["w"]),
             helper.make_node("Conv", ["x", "w"] + (["cb"] if bias_without_bn else []), ["c"], pads=[1, 1, 1, 1])]
    if bias_without_bn:
        inits.append(numpy_helper.from_array(np.zeros(4, np.float32), "cb"))
        nodes.append(helper.make_node("PRelu", ["c", "a"], ["y"]))
    else:
        nodes += [helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["n"], epsilon=1e-5),
                  helper.make_node("PRelu", ["n", "a"], ["y"])]
    inits += ([] if bias_without_bn else bn) + [slope] + (extra_init or [])
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    if external:
        t = model.graph.initializer[-1]
        t.data_location = TensorProto.EXTERNAL
        entry = t.external_data.add()
        entry.key, entry.value = "location", external
    path.write_bytes(model.SerializeToString())  # as a hostile writer would: no checks on the way out


class Tiny(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Conv2d(3, 4, 3, 1, 1, bias=False), nn.BatchNorm2d(4), nn.PReLU(4))


def test_a_quantized_block_equals_onnxruntime(tmp_path):
    path = tmp_path / "tiny.onnx"
    tiny_graph(path)
    net = Tiny()
    load_onnx_weights(net, str(path), 8)
    x = np.random.default_rng(2).normal(0, 1, (1, 3, 8, 8)).astype(np.float32)
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    with torch.no_grad():
        np.testing.assert_allclose(net.eval()(torch.from_numpy(x)).numpy(), ref, atol=1e-5)


def test_strictness_unused_weights_stray_biases_and_escaping_external_data(tmp_path):
    stray = numpy_helper.from_array(np.ones(3, np.float32), "forgotten_weight")
    tiny_graph(tmp_path / "a.onnx", extra_init=[stray])
    with pytest.raises(ValueError, match="used by no node.*forgotten_weight"):
        read_layers(str(tmp_path / "a.onnx"))
    tiny_graph(tmp_path / "b.onnx", bias_without_bn=True)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1, bias=False), nn.PReLU(4))
    with pytest.raises(ValueError, match="has a bias this layer lacks"):
        load_onnx_weights(net, str(tmp_path / "b.onnx"), 8)
    tiny_graph(tmp_path / "c.onnx", external="../../etc/passwd")
    with pytest.raises(ValueError, match="outside the model's folder"):
        read_layers(str(tmp_path / "c.onnx"))
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf at all \x00\x01")
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        read_layers(str(tmp_path / "junk.onnx"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_layers(str(tmp_path / "missing.onnx"))
