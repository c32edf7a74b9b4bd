"""IResNet options: gradient checkpointing (identical results) and arcface_torch weights (key mapping, strict)."""

import re

import pytest
import torch

from facelearn.nn.backbones import arcface_torch_keys, iresnet18


def _pair(**kw):
    torch.manual_seed(0)
    a = iresnet18(embedding_size=32, image_size=32, widths=(8, 16, 32, 64), **kw)
    b = iresnet18(embedding_size=32, image_size=32, widths=(8, 16, 32, 64), gradient_checkpointing=True)
    b.load_state_dict(a.state_dict())
    for m in (a, b):  # non-trivial residual branches (bn3 starts at zero)
        for block in m.body:
            torch.nn.init.constant_(block.bn3.weight, 0.5)
    return a, b


def test_gradient_checkpointing_gives_the_same_outputs_gradients_and_bn_statistics():
    a, b = _pair()
    x = torch.randn(4, 3, 32, 32)
    out_a, out_b = a(x), b(x)
    out_a.square().sum().backward()
    out_b.square().sum().backward()
    assert torch.allclose(out_a, out_b, atol=1e-6)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        if pa.grad is not None:
            assert torch.allclose(pa.grad, pb.grad, atol=1e-5), name
    for (name, ba), bb in zip(a.named_buffers(), b.buffers()):  # running stats updated once, not twice
        assert torch.equal(ba, bb), name


def _insightface_state(model) -> dict:
    """Our state dict renamed to insightface's keys (conv1/bn1/prelu, layer<s>.<b>), as arcface_torch saves it."""
    inverse = {ours: theirs for theirs, ours in arcface_torch_keys(model.layers).items()}
    out = {}
    for key, value in model.state_dict().items():
        prefix = next((p for p in sorted(inverse, key=len, reverse=True) if key.startswith(p)), "")
        out["module." + (inverse[prefix] + key[len(prefix):] if prefix else key)] = value.clone()
    return out


def test_arcface_torch_checkpoint_loads_strictly(tmp_path):
    torch.manual_seed(1)
    src = iresnet18(embedding_size=32, image_size=32, widths=(8, 16, 32, 64)).eval()
    state = _insightface_state(src)
    assert "module.layer2.0.downsample.0.weight" in state and "module.conv1.weight" in state
    path = tmp_path / "backbone.pth"
    torch.save(state, path)
    dst = iresnet18(embedding_size=32, image_size=32, widths=(8, 16, 32, 64), weights=str(path)).eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(src(x), dst(x))
    # a wrong input size (fc) and a foreign key are refused with what differs
    with pytest.raises(ValueError, match=re.escape("fc.weight: file (32, 256) vs model (32, 1024)")):
        iresnet18(embedding_size=32, image_size=64, widths=(8, 16, 32, 64), weights=str(path))
    state["module.head.weight"] = torch.zeros(3)
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"1 unknown keys \['module.head.weight'\]"):
        iresnet18(embedding_size=32, image_size=32, widths=(8, 16, 32, 64), weights=str(path))
    with pytest.raises(FileNotFoundError, match="backbone.weights"):
        iresnet18(weights=str(tmp_path / "missing.pth"))


def test_small_net_with_group_norm_does_not_depend_on_the_batch():
    """norm=group: in training mode, an image's embedding is the same alone, in a batch of 8 or split 4 + 4 (what
    makes a resume on another number of CPU processes exact); with BatchNorm it is not. Unknown norms are refused."""
    from facelearn.nn.backbones import SmallFaceNet

    torch.manual_seed(0)
    x = torch.randn(8, 3, 32, 32)
    for norm, independent in (("group", True), ("batch", False)):
        net = SmallFaceNet(embedding_size=16, image_size=32, widths=(8, 16, 16, 16), norm=norm).train()
        whole = net(x)
        halves = torch.cat([net(x[:4]), net(x[4:])])
        assert torch.allclose(whole, halves, atol=1e-5) is independent, norm
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                   for m in SmallFaceNet(image_size=32, norm="group").modules())
    with pytest.raises(ValueError, match="backbone.norm='layer': expected one of batch, group"):
        SmallFaceNet(image_size=32, norm="layer")
