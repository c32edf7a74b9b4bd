"""freeze=<module>: which modules are frozen, that they keep weights and BatchNorm statistics, and the errors."""

import copy

import pytest
import torch
from torch import nn

from facelearn.nn.backbones import SFaceNet, SmallFaceNet
from facelearn.nn.freeze import FROZEN, freeze_through, frozen_modules, keep_frozen_in_eval


def test_frozen_modules_are_the_leaves_up_to_the_named_one():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(nn.BatchNorm2d(4), nn.PReLU(4)), nn.Conv2d(4, 4, 1))
    assert frozen_modules(net, "0") == ["0"]
    assert frozen_modules(net, "1") == ["0", "1.0", "1.1"]      # a container: every leaf inside it
    assert frozen_modules(net, "1.0") == ["0", "1.0"]           # not its later sibling 1.1
    assert frozen_modules(net, "2") == ["0", "1.0", "1.1", "2"]


def test_sface_freeze_counts_and_trainable_rest():
    net = SFaceNet()
    frozen, total = freeze_through(net, "body.22")
    expected = sum(p.numel() for m in net.body[:23] for p in m.parameters())
    assert frozen == expected and total == sum(p.numel() for p in net.parameters())
    assert all(not p.requires_grad for p in net.body[:23].parameters())
    assert all(p.requires_grad for p in net.body[23:].parameters()) and net.fc.weight.requires_grad


def test_frozen_bottom_keeps_weights_and_batchnorm_statistics_while_the_top_trains():
    torch.manual_seed(0)
    net = SmallFaceNet(image_size=32, widths=(8, 16, 16, 16), embedding_size=8)
    freeze_through(net, "body.2")
    gallery = copy.deepcopy(net)  # SST's gallery copy is frozen alike (the marker survives the copy)
    assert all(getattr(m, FROZEN, False) == getattr(g, FROZEN, False) for m, g in zip(net.modules(), gallery.modules()))
    bottom = net.body[:3]
    before = {k: v.clone() for k, v in bottom.state_dict().items()}
    top_before = net.fc.weight.detach().clone()
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    for _ in range(3):
        net.train()
        keep_frozen_in_eval(net)
        assert all(not m.training for m in bottom.modules() if not list(m.children())) and net.fc.training
        opt.zero_grad()
        net(torch.randn(6, 3, 32, 32) * 3 + 1).pow(2).sum().backward()
        opt.step()
    for k, v in bottom.state_dict().items():  # weights and running mean / var / num_batches_tracked
        assert torch.equal(v, before[k]), k
    assert not torch.equal(net.fc.weight, top_before)


def test_face_module_train_mode_keeps_frozen_modules_in_eval():
    from facelearn.build import freeze_backbone
    from facelearn.methods.conventional import ConventionalModule
    from facelearn.nn.heads import CosFace

    net = freeze_backbone(SmallFaceNet(image_size=32, widths=(8, 16, 16, 16), embedding_size=8), "body.1")
    module = ConventionalModule(net, optimizer=lambda p: torch.optim.SGD(p, lr=0.1), head=CosFace(8, 5))
    module.train()
    leaves = [m for m in net.body.modules() if not list(m.children())]
    assert [m.training for m in leaves] == [False] * 6 + [True] * (len(leaves) - 6) and net.fc.training


def test_unknown_module_name_is_an_error_naming_the_option():
    with pytest.raises(ValueError, match=r"freeze=body\.99: SFaceNet has no module of that name .*body"):
        frozen_modules(SFaceNet(), "body.99")
