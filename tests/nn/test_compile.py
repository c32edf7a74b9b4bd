"""compile=backbone (facelearn.nn.compile): the compiled step equals eager, checkpoints keep eager names and load
without compiling, SST's gallery copy is compiled too. The fast tests use the aot_eager backend (the same graph
capture and autograd, no C++ code generation); the Inductor one is slow (about a minute to compile on 2 cores)."""

import copy

import pytest
import torch

from conftest import TINY, run_cli
from facelearn.nn.backbones import SmallFaceNet
from facelearn.nn.compile import Compile, channels_last


def step(net, x, labels, head):
    loss = torch.nn.functional.cross_entropy(head(net(x)), labels)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in net.parameters()]


def method_like(**modules):
    """A module with the attributes Compile / channels_last look for on a method module (.backbone, .head)."""
    holder = torch.nn.Module()
    for name, module in modules.items():
        setattr(holder, name, module)
    return holder


def assert_same_step(net, twin, head):
    """One cross-entropy step of ``twin`` (compiled) gives ``net``'s (eager) loss and gradients."""
    x, labels = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 4, 0])
    loss, grads = step(net, x, labels, head)
    c_loss, c_grads = step(twin, x, labels, head)
    torch.testing.assert_close(c_loss, loss, rtol=1e-5, atol=1e-6)
    for g, c in zip(grads, c_grads):
        torch.testing.assert_close(c, g, rtol=1e-4, atol=1e-5)


# Inductor's import trips torch's own deprecation of torch.jit.script_method (torch/utils/mkldnn.py), an error under
# the suite's filterwarnings=error
JIT_DEPRECATION = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=[pytest.mark.slow, JIT_DEPRECATION])])
def test_compiled_loss_and_gradients_equal_eager(backend):
    torch.manual_seed(0)
    net, head = SmallFaceNet(embedding_size=16, image_size=32), torch.nn.Linear(16, 5)
    twin = copy.deepcopy(net)
    Compile(backend=backend).apply(method_like(backbone=twin))
    assert_same_step(net, twin, head)
    assert list(twin.state_dict()) == list(net.state_dict())  # no _orig_mod. prefix


def test_unknown_module_is_refused():
    with pytest.raises(ValueError, match=r"compile.modules=\['neck'\]: expected some of \['backbone', 'head'\]"):
        Compile(modules=["neck"])


def test_sst_trains_compiled_and_the_checkpoint_evaluates_eagerly(tmp_path):
    """The CLI as typed with compile=backbone (aot_eager: seconds) and channels_last=true: SST's probe and gallery
    nets are NHWC and compiled, the checkpoint has eager parameter names and `facelearn.evaluate` scores it without
    compiling, in the default memory format."""
    # one epoch, batches of one size (192 images / 16): one graph each for the probe and the gallery net
    proc = run_cli(["+experiment=sst_shallow", *TINY, "method.queue_size=48", "data.batch_size=16", "compile=backbone",
                    "compile.backend=aot_eager", "trainer.max_epochs=1", "channels_last=true"], tmp_path)
    assert "torch.compile (aot_eager, mode default): backbone, gallery" in proc.stdout + proc.stderr
    assert "channels_last memory format: backbone, gallery" in proc.stdout + proc.stderr
    ckpt = next((tmp_path / "logs").rglob("last.ckpt"))
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert state and not any("_orig_mod" in k for k in state)
    run_cli([f"ckpt_path={ckpt}"], tmp_path, module="facelearn.evaluate")


@pytest.mark.slow
def test_partial_fc_with_a_compiled_head_on_two_gloo_ranks(tmp_path):
    """compile.modules=[backbone,head] with Partial FC's distributed classifier (Inductor, 2 DDP ranks on gloo):
    the run finishes and its checkpoint keeps eager names (about a minute: two ranks compile)."""
    run_cli(["+experiment=conventional_shallow", *TINY, "classifier=partial_fc", "classifier.sample_rate=0.5",
             "compile=backbone", "compile.modules=[backbone,head]", "trainer=ddp", "trainer.max_epochs=2"],
            tmp_path, timeout=600, env={"OMP_NUM_THREADS": "1"})
    state = torch.load(next((tmp_path / "logs").rglob("last.ckpt")), map_location="cpu", weights_only=True)
    assert not any("_orig_mod" in k for k in state["state_dict"])


@pytest.mark.parametrize("sample_rate", [1.0, 0.5])
def test_a_compiled_partial_fc_head_equals_eager(sample_rate):
    """compile.modules=[backbone,head] with classifier=partial_fc (one process): the compiled classifier's loss,
    accuracy and the gradients of its prototypes and of the features equal eager (sampled columns drawn from the
    same RNG state)."""
    from facelearn.nn.heads import CosFace
    from facelearn.nn.partial_fc import PartialFC

    def make():
        pfc = PartialFC(CosFace(16, 0, scale=30.0, margin=0.35), num_classes=12, sample_rate=sample_rate, seed=3)
        pfc.shard()
        return pfc

    eager, compiled = make(), make()
    Compile(modules=["head"], backend="aot_eager").apply(method_like(head=compiled))
    features = torch.randn(8, 16)
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 0, 11])
    outs = []
    for pfc in (eager, compiled):
        f = features.clone().requires_grad_(True)
        torch.manual_seed(7)  # the negatives' sampling
        out = pfc.cross_entropy(f, labels)
        out.loss.backward()
        outs.append((out.loss.detach(), out.acc, pfc.weight.grad.clone(), f.grad.clone()))
    for e, c in zip(*outs):
        torch.testing.assert_close(c, e, rtol=1e-5, atol=1e-6)
    assert list(compiled.state_dict()) == list(eager.state_dict())


def test_channels_last_compiles_to_the_same_step_and_saves_loadable_weights():
    """channels_last=true (then compiled): NHWC weights and inputs; the step's loss and gradients equal eager NCHW,
    and the weights load into a plain eager network (checkpoint -> evaluate without compiling)."""
    torch.manual_seed(0)
    net, head = SmallFaceNet(embedding_size=16, image_size=32), torch.nn.Linear(16, 5)
    twin = copy.deepcopy(net)
    holder = method_like(backbone=twin)
    assert channels_last(holder) == ["backbone"]
    Compile(backend="aot_eager").apply(holder)
    conv = next(m for m in twin.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert_same_step(net, twin, head)
    fresh = SmallFaceNet(embedding_size=16, image_size=32)
    fresh.load_state_dict(twin.state_dict())
    for a, b in zip(fresh.state_dict().values(), twin.state_dict().values()):
        assert torch.equal(a, b)
