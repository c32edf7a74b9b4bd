"""Semi-Siamese Training: queue logic by hand, masking, momentum and constraint math, scoring, resume."""

import copy

import pytest
import torch
import torch.nn.functional as F

from facelearn.methods.sst import SSTModule, sst_targets
from facelearn.nn.backbones import SmallFaceNet
from facelearn.nn.heads import CosFace, NormFace
from facelearn.nn.pair_losses import ContrastiveLoss
from facelearn.nn.queue import GalleryQueue


def test_queue_fifo_pointer_and_wraparound():
    q = GalleryQueue(size=6, dim=2)
    assert q.filled == 0 and q.valid()[0].shape == (0, 2)
    for step in range(4):  # batches of 2: steps 0,1,2 fill, step 3 overwrites the oldest (step 0's) slots
        feats = torch.full((2, 2), float(step))
        q.enqueue(feats, torch.tensor([10 * step, 10 * step + 1]))
        assert int(q.pointer) == (2 * (step + 1)) % 6
    assert q.labels.tolist() == [30, 31, 10, 11, 20, 21]
    assert q.features[:, 0].tolist() == [3, 3, 1, 1, 2, 2]
    f, lab = q.valid()
    assert len(f) == 6 and q.filled == 6
    with pytest.raises(ValueError, match="multiple of the global batch of 4"):
        q.enqueue(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))
    assert "pointer" in q.state_dict() and "labels" in q.state_dict()


def test_targets_and_same_identity_masking():
    # probes of identities 7, 8 (rank offset 2: this rank's gallery features are columns 2, 3);
    # prototypes: all ranks' gallery [5, 6, 7, 8] then queue [8, 9, 7]
    proto_ids = torch.tensor([5, 6, 7, 8, 8, 9, 7])
    targets, mask = sst_targets(torch.tensor([7, 8]), proto_ids, offset=2)
    assert targets.tolist() == [2, 3]
    assert mask.tolist() == [[False, False, False, False, False, False, True],
                             [False, False, False, False, True, False, False]]


def make_module(variant="momentum", head=None, losses=None, queue_size=8, **kw):
    torch.manual_seed(0)
    net = SmallFaceNet(embedding_size=4, image_size=16, widths=(4, 4, 4, 4))
    return SSTModule(net, optimizer=lambda p: torch.optim.SGD(p, lr=0.1), head=head, losses=losses,
                     variant=variant, queue_size=queue_size, embedding_size=4, **kw)


def test_momentum_update_equals_formula():
    m = make_module(momentum=0.9, head=CosFace(4, 0))
    with torch.no_grad():
        for p in m.backbone.parameters():
            p.add_(1.0)
    before = [g.clone() for g in m.gallery.parameters()]
    buf_before = [b.clone() for b in m.gallery.buffers()]
    m.momentum_update()
    for g, g0, p in zip(m.gallery.parameters(), before, m.backbone.parameters()):
        assert torch.allclose(g, 0.9 * g0 + 0.1 * p)
    for g, g0, p in zip(m.gallery.buffers(), buf_before, m.backbone.buffers()):
        if g.dtype.is_floating_point:
            assert torch.allclose(g, 0.9 * g0 + 0.1 * p)
        else:
            assert torch.equal(g, p)
    assert not any(p.requires_grad for p in m.gallery.parameters())


def test_constraint_term_and_gradient():
    m = make_module(variant="constraint", head=CosFace(4, 0), constraint_weight=0.5)
    with torch.no_grad():
        for p in m.backbone.parameters():
            p.add_(0.1)
    expected = 0.5 * sum(((p - g) ** 2).sum() for p, g in zip(m.backbone.parameters(), m.gallery.parameters()))
    penalty = m.constraint_penalty()
    assert torch.allclose(penalty, expected)
    penalty.backward()
    for p, g in zip(m.backbone.parameters(), m.gallery.parameters()):
        # d/dθp λ‖θp − θg‖² = 2λ(θp − θg) and the opposite for θg
        assert torch.allclose(p.grad, 2 * 0.5 * (p - g).detach(), atol=1e-6)
        assert torch.allclose(g.grad, -2 * 0.5 * (p - g).detach(), atol=1e-6)


def test_none_variant_shares_one_net():
    m = make_module(variant="none", head=CosFace(4, 0))
    assert m.gallery is None and m.gallery_net() is m.backbone


def test_direction_loss_slots_positives_and_masks_queue():
    head = NormFace(2, 0, scale=1.0)
    m = make_module(head=head)
    m.queue = GalleryQueue(4, 2)
    # queue: identity 1 (the probe's own identity, must be masked) and identity 9
    m.queue.enqueue(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.tensor([1, 9]))
    probe = torch.tensor([[1.0, 0.0]])
    gallery = torch.tensor([[0.6, 0.8], [-1.0, 0.0]])  # this rank's probe is column 0 (identity 1); 2 = other
    out, columns = m.direction_loss(probe, torch.tensor([1]), gallery, torch.tensor([1, 2]), offset=0)
    parts, scores = out.parts, out.scores
    # the scores and their columns' identities go to callbacks (mining): the masked column is -inf
    assert columns.tolist() == [1, 2, 1, 9] and scores[0, 2] == float("-inf")
    # logits: [0.6 (positive), -1.0 (identity 2), masked (queue identity 1), 1.0 (queue identity 9)]
    expected = -torch.log_softmax(torch.tensor([0.6, -1.0, 1.0]), 0)[0]
    assert torch.allclose(parts["head"], expected, atol=1e-6)
    m.use_queue = False
    parts = m.direction_loss(probe, torch.tensor([1]), gallery, torch.tensor([1, 2]), offset=0)[0].parts
    assert torch.allclose(parts["head"], -torch.log_softmax(torch.tensor([0.6, -1.0]), 0)[0], atol=1e-6)


def test_pair_losses_use_gallery_and_queue_as_references():
    m = make_module(losses={"contrastive": (1.0, ContrastiveLoss())})
    m.queue = GalleryQueue(2, 2)
    m.queue.enqueue(torch.tensor([[0.0, 1.0]]).repeat(2, 1), torch.tensor([5, 6]))
    probe = torch.tensor([[1.0, 0.0]])
    gallery = torch.tensor([[1.0, 0.0], [0.0, -1.0]])
    parts = m.direction_loss(probe, torch.tensor([0]), gallery, torch.tensor([0, 3]), offset=0)[0].parts
    ref = torch.cat([gallery, m.queue.features])
    direct = ContrastiveLoss()(probe, torch.tensor([0]), ref, torch.tensor([0, 3, 5, 6]))
    assert torch.allclose(parts["contrastive"], direct)


def test_training_step_enqueues_one_direction_and_rejects_non_pairs():
    m = make_module(head=CosFace(4, 0), queue_size=8)
    images = torch.randn(8, 3, 16, 16)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    m.log = lambda *a, **k: None  # no trainer attached
    m.log_lr = lambda: None
    loss = m.training_step((images, labels), 0)["loss"]
    assert torch.isfinite(loss) and m.queue.filled == 4 and int(m.queue.pointer) == 4
    assert m.queue.labels[:4].tolist() == [0, 1, 2, 3]
    with torch.no_grad():
        g2 = F.normalize(m.gallery(images[1::2]), dim=1)
    assert torch.allclose(m.queue.features[:4], g2, atol=1e-5)  # gallery(x2) was enqueued
    with pytest.raises(ValueError, match="identity_pairs"):
        m.training_step((images, torch.arange(8)), 0)


def test_queue_must_be_smaller_than_identities_and_head_must_not_own_prototypes():
    with pytest.raises(ValueError, match="smaller than the 8 training identities"):
        make_module(head=CosFace(4, 0), queue_size=8, num_classes=8)
    with pytest.raises(ValueError, match="num_classes=0"):
        make_module(head=CosFace(4, 10))


def test_ddp_two_ranks_hold_identical_queues(tmp_path):
    """2 CPU ranks (gloo): gathered gallery features are enqueued on every rank, queues equal after every step."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[1] / "scripts" / "ddp_sst_queue.py"
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True,
                          timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert r0["steps"] == r1["steps"] == 5
    assert torch.equal(r0["features"], r1["features"]) and torch.equal(r0["labels"], r1["labels"])
    # 5 steps x 4 identities per rank x 2 ranks = 40 enqueued into 24 slots: full, pointer at 40 % 24 = 16
    assert int(r0["pointer"]) == 16 and (r0["labels"] >= 0).all()
    # the ranks trained on disjoint identities, and the queue holds identities of both ranks
    for b0, b1 in zip(r0["batch_ids"], r1["batch_ids"]):
        assert not set(b0) & set(b1)
    last_two_steps = set(sum(r0["batch_ids"][-2:] + r1["batch_ids"][-2:], []))
    assert last_two_steps <= set(r0["labels"].tolist())
