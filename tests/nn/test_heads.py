"""Margin heads against hand-computed logits (feature at 60° from its target prototype, scale 2)."""

import math

import pytest
import torch

from facelearn.nn.heads import ArcFace, CombinedMargin, CosFace, DPSoftmax, NormFace, Softmax, SphereFace
from facelearn.nn.selection import DominantPrototypes


def make(head_cls, theta_deg=60.0, **kw):
    head = head_cls(embedding_size=2, num_classes=2, **kw)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    t = math.radians(theta_deg)
    feat = torch.tensor([[math.cos(t), math.sin(t)]]) * 3.0  # norm 3: heads must normalise
    return head, feat, torch.tensor([0])


def test_normface():
    head, f, y = make(NormFace, scale=2.0)
    # cos θ = 0.5 for the target, cos(30°) = 0.8660 for the other class.
    assert torch.allclose(head(f, y), torch.tensor([[1.0, 1.7320508]]), atol=1e-5)


def test_cosface():
    head, f, y = make(CosFace, scale=2.0, margin=0.35)
    assert torch.allclose(head(f, y), torch.tensor([[0.3, 1.7320508]]), atol=1e-5)  # 2 (0.5 - 0.35)


def test_arcface_and_fallback():
    head, f, y = make(ArcFace, scale=2.0, margin=0.5)
    # cos(60° + 0.5 rad) = cos(1.5471976) = 0.0235931
    assert torch.allclose(head(f, y)[0, 0], torch.tensor(0.0471862), atol=1e-5)
    head, f, y = make(ArcFace, theta_deg=170.0, scale=1.0, margin=0.5)
    # θ + m > π: insightface fallback cos θ - m sin m = -0.9848078 - 0.2397128
    assert torch.allclose(head(f, y)[0, 0], torch.tensor(-1.2245206), atol=1e-5)


def test_sphereface_psi_branches():
    head, f, y = make(SphereFace, scale=2.0, margin=2, lambda_base=0.0, lambda_min=0.0)
    # θ = 60°, k = 0: ψ = cos(120°) = -0.5
    assert torch.allclose(head(f, y)[0, 0], torch.tensor(-1.0), atol=1e-5)
    head, f, y = make(SphereFace, theta_deg=120.0, scale=1.0, margin=2, lambda_base=0.0, lambda_min=0.0)
    # θ = 120°, k = 1: ψ = -cos(240°) - 2 = -1.5
    assert torch.allclose(head(f, y)[0, 0], torch.tensor(-1.5), atol=1e-5)


def test_sphereface_lambda_blend_and_anneal():
    head, f, y = make(SphereFace, scale=1.0, margin=2, lambda_base=1.0, lambda_min=0.5, gamma=1.0)
    # step 0: λ = 1 -> (1 * 0.5 + (-0.5)) / 2 = 0
    assert torch.allclose(head(f, y)[0, 0], torch.tensor(0.0), atol=1e-5)
    # after one training forward: λ = max(0.5, 1 / (1 + 1)) = 0.5 -> (0.25 - 0.5) / 1.5
    assert torch.allclose(head(f, y)[0, 0], torch.tensor(-0.1666667), atol=1e-5)
    assert int(head.step) == 2 and "step" in head.state_dict()


def test_combined_margin():
    head, f, y = make(CombinedMargin, scale=1.0, m1=2.0, m2=0.1, m3=0.2)
    # cos(2 * 60° + 0.1 rad) - 0.2 = cos(2.1943951) - 0.2 = -0.5839604 - 0.2
    assert torch.allclose(head(f, y)[0, 0], torch.tensor(-0.7839604), atol=1e-5)
    # m1=1, m2=0, m3=0.35 is CosFace
    a, f, y = make(CombinedMargin, scale=2.0, m1=1.0, m2=0.0, m3=0.35)
    b, _, _ = make(CosFace, scale=2.0, margin=0.35)
    assert torch.allclose(a(f, y), b(f, y), atol=1e-6)


def test_softmax_is_plain_fc():
    head = Softmax(embedding_size=2, num_classes=2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 2.0], [0.0, -1.0]]))
        head.bias.copy_(torch.tensor([0.5, -0.5]))
    out = head(torch.tensor([[3.0, 1.0]]), torch.tensor([0]))
    assert torch.allclose(out, torch.tensor([[5.5, -1.5]]))


def test_external_prototypes_and_targets_are_columns():
    head = CosFace(embedding_size=2, num_classes=0, scale=1.0, margin=0.5)
    protos = torch.tensor([[0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
    out = head(torch.tensor([[2.0, 0.0]]), torch.tensor([1]), prototypes=protos)
    assert torch.allclose(out, torch.tensor([[0.0, 0.5, -1.0]]), atol=1e-6)
    with pytest.raises(ValueError, match="prototypes="):
        head(torch.tensor([[2.0, 0.0]]), torch.tensor([1]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("cls,kw", [(NormFace, {}), (CosFace, {}), (ArcFace, {}), (SphereFace, {"margin": 4}),
                                    (CombinedMargin, {"m1": 1.2, "m2": 0.3, "m3": 0.1}), (DPSoftmax, {})])
def test_no_nan_at_cos_plus_minus_one(cls, kw, dtype):
    head = cls(embedding_size=3, num_classes=3, **kw)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0, 0], [-1.0, 0, 0], [0, 1.0, 0]]))
    # target prototype identical (cos = 1) and opposite (cos = -1).
    feats = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [-1.0, 0, 0]], dtype=dtype, requires_grad=True)
    logits = head(feats, torch.tensor([0, 1, 1]))
    assert logits.dtype == torch.float32
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 1]))
    loss.backward()
    assert torch.isfinite(logits).all() and torch.isfinite(feats.grad).all()
    assert torch.isfinite(head.weight.grad).all()


def test_margin_decreases_target_logit_monotonically():
    thetas = torch.linspace(0, math.pi, 181)
    feats = torch.stack([torch.cos(thetas), torch.sin(thetas)], 1)
    for cls, kw in [(ArcFace, {"margin": 0.5}), (SphereFace, {"margin": 4, "lambda_base": 0.0, "lambda_min": 0.0}),
                    (CombinedMargin, {"m1": 1.5, "m2": 0.3, "m3": 0.1})]:
        head = cls(embedding_size=2, num_classes=1, scale=1.0, **kw)
        with torch.no_grad():
            head.weight.copy_(torch.tensor([[1.0, 0.0]]))
        head.eval()
        target = head(feats, torch.zeros(181, dtype=torch.long))[:, 0]
        assert (target[1:] <= target[:-1] + 1e-5).all(), cls.__name__


def _dp_setup(num_dominant):
    """Prototypes at 0°, 45°, 90°, 180°, 150°; sample A at 0° (target 0), sample B at 90° (target 2)."""
    head = DPSoftmax(embedding_size=2, num_classes=5, scale=2.0, margin=0.35, num_dominant=num_dominant)
    angles = torch.tensor([0.0, 45.0, 90.0, 180.0, 150.0]).deg2rad()
    with torch.no_grad():
        head.weight.copy_(torch.stack([angles.cos(), angles.sin()], 1))
    return head, torch.tensor([[2.0, 0.0], [0.0, 0.5]]), torch.tensor([0, 2])


def test_dp_softmax_keeps_targets_and_hardest_prototypes_by_hand():
    # Non-target hardness = max cosine over the batch: col 1 (45°) 0.7071, col 4 (150°) cos 60° = 0.5 (from B),
    # col 3 (180°) 0 (from B). num_dominant=1 keeps col 1 only; targets carry the AM margin 2 (1 - 0.35) = 1.3.
    head, f, y = _dp_setup(1)
    inf = float("inf")
    expected = torch.tensor([[1.3, 1.4142136, 0.0, -inf, -inf], [0.0, 1.4142136, 1.3, -inf, -inf]])
    logits = head(f, y)
    assert torch.equal(torch.isinf(logits), torch.isinf(expected))
    assert torch.allclose(logits[:, :3], expected[:, :3], atol=1e-5)
    # the loss is the softmax over the dominant columns only
    ce_a = -1.3 + math.log(math.exp(1.3) + math.exp(1.4142136) + 1.0)
    ce_b = -1.3 + math.log(1.0 + math.exp(1.4142136) + math.exp(1.3))
    assert torch.nn.functional.cross_entropy(logits, y).item() == pytest.approx((ce_a + ce_b) / 2, abs=1e-5)
    head2, f, y = _dp_setup(2)
    assert torch.isinf(head2(f, y)).sum(1).tolist() == [1, 1] and torch.isinf(head2(f, y)[:, 3]).all()


def test_dp_softmax_gradient_reaches_only_dominant_prototypes():
    head, f, y = _dp_setup(1)
    torch.nn.functional.cross_entropy(head(f, y), y).backward()
    row_grad = head.weight.grad.norm(dim=1)
    assert (row_grad[:3] > 0).all() and (row_grad[3:] == 0).all()


def test_dp_softmax_with_every_prototype_dominant_is_am_softmax():
    head, f, y = _dp_setup(3)  # 3 non-target prototypes: all dominant
    am = CosFace(embedding_size=2, num_classes=5, scale=2.0, margin=0.35)
    with torch.no_grad():
        am.weight.copy_(head.weight)
    assert torch.allclose(head(f, y), am(f, y))
    protos = torch.randn(7, 2)  # SST passes its queue: columns are chosen among the given prototypes
    assert torch.isfinite(head(f, torch.tensor([5, 6]), prototypes=protos)).sum(1).tolist() == [5, 5]
    with pytest.raises(ValueError, match="head.selection.num_dominant must be a positive integer"):
        DPSoftmax(embedding_size=2, num_classes=5, num_dominant=0)


def test_dominant_selection_works_with_any_margin():
    """The selection is independent of the margin: ArcFace + dominant prototypes keeps the same columns as DP-softmax
    (hardness is the raw cosine) and applies ArcFace's margin at the target: s cos(θ + m), by hand."""
    _, f, y = _dp_setup(1)
    arc = ArcFace(embedding_size=2, num_classes=5, scale=2.0, margin=0.5, selection=DominantPrototypes(1))
    angles = torch.tensor([0.0, 45.0, 90.0, 180.0, 150.0]).deg2rad()
    with torch.no_grad():
        arc.weight.copy_(torch.stack([angles.cos(), angles.sin()], 1))
    logits = arc(f, y)
    assert torch.isinf(logits).tolist() == [[False, False, False, True, True]] * 2
    # θ = 0 for both samples' targets (acos is clamped at 1 - 1e-6, so θ = 0.0014: tolerance 3e-3)
    assert logits[0, 0].item() == pytest.approx(2.0 * math.cos(0.5), abs=3e-3)
    assert logits[1, 2].item() == pytest.approx(2.0 * math.cos(0.5), abs=3e-3)
    assert logits[0, 1].item() == pytest.approx(2.0 * math.cos(math.pi / 4), abs=1e-5)  # non-target: s cos θ


def test_l2softmax_is_ranjans_by_hand():
    """logits = W (alpha x / |x|) + b with unnormalised W and a bias (not NormFace's s cos)."""
    import torch

    from facelearn.nn.heads import L2Softmax
    head = L2Softmax(2, 2, scale=16.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 0.5]]))
        head.bias.copy_(torch.tensor([0.1, -0.2]))
    x = torch.tensor([[3.0, 4.0]])  # x / |x| = (0.6, 0.8)
    logits = head(x, torch.tensor([0]))
    assert logits.tolist()[0] == pytest.approx([16 * 0.6 * 2 + 0.1, 16 * 0.8 * 0.5 - 0.2])
    assert isinstance(head.scale, torch.nn.Parameter)  # alpha is trained
    logits.sum().backward()
    assert head.scale.grad is not None and head.bias.grad is not None
