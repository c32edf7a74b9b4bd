"""IDA: DAO by hand, log-space equivalence, FAISS vs torch search, anchor identity checks, IDA-L regression."""

import math

import numpy as np
import pytest
import torch

from facelearn.eval.ida import AnchorIndex, dao, fit_regressor, log_dao, log_density
from facelearn.eval.scorers import AnchorSet, IDARScorer, ScorerContext


def unit(deg):
    r = math.radians(deg)
    return torch.tensor([math.cos(r), math.sin(r)], dtype=torch.float64)


def test_dao_by_hand_two_pairs_and_symmetry():
    # pair 1: f1 at 0°, f2 at acos(0.6) = 53.13°: cos = 0.6; support sims s1 = (0.5, 0.2), s2 = (0.9, 0.1)
    a2 = math.degrees(math.acos(0.6))
    f1, f2 = unit(0), unit(a2)
    sup1 = torch.stack([unit(math.degrees(math.acos(0.5))), unit(math.degrees(math.acos(0.2)))])
    sup2 = torch.stack([unit(a2 + math.degrees(math.acos(0.9))), unit(a2 - math.degrees(math.acos(0.1)))])
    # F1 = 1 / (e^0.5 + e^0.2) = 0.348417, F2 = 1 / (e^0.9 + e^0.1) = 0.280523; DAO = e^0.6 (F1 + F2) = 1.146005
    # pair 2: the same with τ = 2: F1 = 1/(e + e^0.4) = 0.237524, F2 = 1/(e^1.8 + e^0.2) = 0.137532,
    # DAO = e^1.2 x 0.375056 = 1.245228
    got = dao(torch.stack([f1, f1]), torch.stack([f2, f2]), torch.stack([sup1, sup1]), torch.stack([sup2, sup2]))
    assert got[0].item() == pytest.approx(1.146005, abs=1e-5)
    tau2 = dao(f1[None], f2[None], sup1[None], sup2[None], tau=2.0)
    assert tau2.item() == pytest.approx(1.245228, abs=1e-5)
    assert dao(f2[None], f1[None], sup2[None], sup1[None]).item() == pytest.approx(got[0].item())  # commutative
    lf1, lf2 = log_density(torch.tensor([[0.5, 0.2]])), log_density(torch.tensor([[0.9, 0.1]]))
    assert log_dao(torch.tensor([0.6]), lf1, lf2).exp().item() == pytest.approx(1.146005, abs=1e-5)


def test_log_dao_is_stable_and_keeps_order():
    sims = torch.full((1, 10), 0.99)
    lf = log_density(sims, tau=1000.0)  # exp(990) overflows float64; the log form does not
    assert torch.isfinite(lf).all()
    cos = torch.linspace(-1, 1, 50)
    scores = log_dao(cos, lf.expand(50), (lf - 1).expand(50), tau=1000.0)
    assert torch.isfinite(scores).all() and (scores.diff() > 0).all()


def test_faiss_and_torch_search_agree():
    torch.manual_seed(0)
    anchors, queries = torch.randn(3000, 32), torch.randn(500, 32)
    fs, fi = AnchorIndex(anchors, backend="faiss").search(queries, 10)
    ts, ti = AnchorIndex(anchors, backend="torch", chunk=128).search(queries, 10)
    assert torch.allclose(fs, ts, atol=1e-5)
    assert (fi == ti).float().mean() > 0.999  # equal up to exact ties
    hs, _ = AnchorIndex(anchors, kind="hnsw").search(queries, 10)
    assert (hs[:, 0] - fs[:, 0]).abs().max() < 0.05  # approximate index: close to exact
    with pytest.raises(ValueError, match="needs faiss"):
        AnchorIndex(anchors, backend="torch", kind="ivf")
    with pytest.raises(ValueError, match="anchor set size"):
        AnchorIndex(anchors[:5]).search(queries, 10)


class _Module(torch.nn.Module):
    """Embeds images as their normalised flattened pixels (deterministic stand-in for a trained model)."""

    def __init__(self):
        super().__init__()
        self.head = None

    @property
    def device(self):
        return torch.device("cpu")

    def embed(self, images):
        return torch.nn.functional.normalize(images.float().flatten(1), dim=1)


def test_anchor_folder_rejects_benchmark_identities(tmp_path):
    from PIL import Image

    for person in ("alice", "bob"):
        (tmp_path / person).mkdir()
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / person / "1.png")

    with pytest.raises(ValueError, match="benchmark identities.*bob"):
        AnchorSet("folder", folder=str(tmp_path)).build(_Module(), ScorerContext(8, None, {"lfw": {"bob", "carol"}}))
    with pytest.raises(ValueError, match="benchmark identities.*alice"):  # CFP writes names with spaces
        AnchorSet("folder", folder=str(tmp_path)).build(_Module(), ScorerContext(8, None, {"cfp": {"Alice"}}))
    ok = ScorerContext(8, None, {"lfw": {"carol"}})
    assert AnchorSet("folder", folder=str(tmp_path)).build(_Module(), ok).shape == (2, 192)


def test_only_real_db_anchors_and_ida_l_without_folder_anchors_need_training_data(tmp_path):
    from facelearn.eval.scorers import IDALScorer, IDARScorer

    assert IDARScorer(anchors="real-db").needs_training_data
    assert not IDARScorer(anchors="fc-weights").needs_training_data
    assert not IDARScorer(anchors="folder", folder=str(tmp_path)).needs_training_data
    assert IDALScorer(anchors="real-db").needs_training_data  # its regressor trains on training images
    assert not IDALScorer(anchors="folder", folder=str(tmp_path)).needs_training_data  # ... or on the anchors
    assert not IDALScorer(regressor_path=str(tmp_path / "r.pt")).needs_training_data


def test_real_db_one_image_per_training_identity_and_overlap_check():
    from facelearn.data.datamodule import FaceImageDataset

    images = np.random.default_rng(0).integers(0, 255, (12, 3, 4, 4), dtype=np.uint8)
    labels = np.repeat(np.arange(4), 3)

    train = FaceImageDataset(images, labels, ["a", "b", "c", "d"])
    aset = AnchorSet("real-db", seed=1)
    emb = aset.build(_Module(), ScorerContext(4, train, {"t": {"x"}}))
    assert emb.shape == (4, 48) and sorted(labels[aset.dataset_index].tolist()) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="trained on test people"):
        AnchorSet("real-db").build(_Module(), ScorerContext(4, train, {"t": {"c"}}))


def test_ida_l_regressor_fits_a_known_density():
    torch.manual_seed(0)
    # a density that varies strongly over the sphere: 300 anchors clustered around e_0, 100 uniform
    cluster = torch.eye(8)[0] + 0.3 * torch.randn(300, 8)
    anchors = torch.nn.functional.normalize(torch.cat([cluster, torch.randn(100, 8)]), dim=1)
    emb = torch.nn.functional.normalize(torch.randn(2000, 8) + torch.eye(8)[0] * torch.rand(2000, 1) * 2, dim=1)
    sims, _ = AnchorIndex(anchors).search(emb, 10)
    target = log_density(sims, tau=4.0).float()
    reg, mse = fit_regressor(emb, target, hidden=64, epochs=40)
    assert mse < 0.2 * float(target.var())  # R^2 > 0.8 on the training embeddings
    held = torch.nn.functional.normalize(torch.randn(500, 8) + torch.eye(8)[0] * torch.rand(500, 1) * 2, dim=1)
    held_target = log_density(AnchorIndex(anchors).search(held, 10)[0], tau=4.0).float()
    with torch.no_grad():
        assert float(((reg(held) - held_target) ** 2).mean()) < 0.3 * float(held_target.var())  # and generalises


def test_ida_r_scorer_pairs():
    torch.manual_seed(1)
    sc = IDARScorer(k=3, tau=2.0)
    sc.index = AnchorIndex(torch.randn(50, 4))
    emb = torch.nn.functional.normalize(torch.randn(6, 4), dim=1)
    pairs = torch.tensor([[0, 1], [2, 3], [1, 0]])
    s = sc(emb, pairs)
    assert s[0] == pytest.approx(s[2].item())  # commutative
    lf = sc.log_density(emb)
    assert s[1].item() == pytest.approx(2.0 * float(emb[2] @ emb[3]) + float(torch.logaddexp(lf[2], lf[3])))


def test_ida_l_support_sets_hold_no_anchor_of_the_query_identity(monkeypatch):
    """Toy world: every identity's images are near-identical, so its own real-db anchor is every query's nearest
    neighbour. IDA-L's training targets must come from the k nearest anchors of *other* identities (footnote 1)."""
    from facelearn.data.datamodule import FaceImageDataset
    from facelearn.eval import scorers as sc

    rng = np.random.default_rng(0)
    n_id, per = 12, 4
    protos = rng.integers(0, 255, (n_id, 3, 4, 4))
    images = np.clip(np.repeat(protos, per, 0) + rng.integers(-2, 3, (n_id * per, 3, 4, 4)), 0, 255).astype(np.uint8)
    labels = np.repeat(np.arange(n_id), per)

    context = sc.ScorerContext(4, FaceImageDataset(images, labels, [str(i) for i in range(n_id)]), {"t": {"x"}})
    seen = {}

    def capture(emb, targets, *a, **k):
        seen["emb"], seen["targets"] = emb, targets
        return torch.nn.Linear(1, 1), 0.0

    monkeypatch.setattr(sc, "fit_regressor", capture)
    scorer = sc.IDALScorer(k=3, tau=1.0, anchors="real-db", backend="torch")
    scorer.fit(_Module(), context)
    anchors = _Module().embed(torch.from_numpy(images[scorer.anchor_set.dataset_index]))
    anchor_labels = labels[scorer.anchor_set.dataset_index]
    # by hand: for each training image, the 3 most similar anchors of other identities
    sims = seen["emb"] @ anchors.T
    train_labels = labels[np.sort(np.random.default_rng(scorer.anchor_set.seed + 1).permutation(len(labels)))]
    mask = torch.from_numpy(anchor_labels)[None, :] == torch.from_numpy(train_labels)[:, None]
    top = sims.masked_fill(mask, -2.0).topk(3, dim=1).values
    assert torch.allclose(seen["targets"], sc.log_density(top.double(), 1.0).float(), atol=1e-5)
    assert scorer.own_identity_dropped > 0  # the own anchor was among the nearest, and was skipped


def test_ida_l_with_folder_anchors_trains_on_them_without_their_own_identity(tmp_path, monkeypatch):
    """A pretrained model has no training data: with anchors=folder the regressor's targets are log F of each
    anchor over the k nearest anchors of *other* folders (identities)."""
    from PIL import Image

    import facelearn.eval.scorers as sc

    rng = np.random.default_rng(3)
    for person in ("p0", "p1", "p2", "p3", "p4"):
        (tmp_path / person).mkdir()
        base = rng.integers(0, 255, (4, 4, 3))
        for i in range(2):
            img = np.clip(base + rng.integers(-3, 4, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(tmp_path / person / f"{i}.png")
    seen = {}

    def capture(emb, targets, *a, **k):
        seen["emb"], seen["targets"] = emb, targets
        return torch.nn.Linear(1, 1), 0.0

    monkeypatch.setattr(sc, "fit_regressor", capture)
    scorer = sc.IDALScorer(k=2, tau=1.0, anchors="folder", folder=str(tmp_path), backend="torch")
    assert not scorer.needs_training_data
    scorer.fit(_Module(), sc.ScorerContext(4, None, {"t": {"x"}}))
    anchors, labels = scorer.index.anchors, torch.from_numpy(scorer.anchor_set.labels)
    assert len(anchors) == 10 and torch.bincount(labels).tolist() == [2] * 5
    sims = anchors @ anchors.T
    top = sims.masked_fill(labels[:, None] == labels[None, :], -2.0).topk(2, dim=1).values
    assert torch.allclose(seen["emb"], anchors)
    assert torch.allclose(seen["targets"], sc.log_density(top.double(), 1.0).float(), atol=1e-5)
    assert scorer.own_identity_dropped >= 10  # each anchor itself was its nearest


def test_pair_cosines_by_matrix_blocks_equal_the_gathered_ones():
    """IJB's millions of template pairs: cosines read from blocks of the similarity matrix (dense pair lists) or
    gathered per pair (sparse ones) are the same numbers, in the pairs' order; every scorer re-scores them."""
    from facelearn.eval.scorers import CosineScorer, IDARScorer, gathered_cosines, pair_cosines
    from facelearn.eval.ida import AnchorIndex
    g = torch.Generator().manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(37, 8, generator=g), dim=1)
    dense = torch.randint(0, 37, (3000, 2), generator=g)
    sparse = dense[:5]
    for pairs in (dense, sparse):
        ref = (emb[pairs[:, 0]] * emb[pairs[:, 1]]).sum(1)
        torch.testing.assert_close(pair_cosines(emb, pairs, block=4), ref)
        torch.testing.assert_close(gathered_cosines(emb, pairs, chunk=7), ref)
    scorer = IDARScorer(k=3, backend="torch")
    scorer.index = AnchorIndex(torch.nn.functional.normalize(torch.randn(20, 8, generator=g), dim=1), backend="torch")
    cos = pair_cosines(emb, dense, block=4)
    torch.testing.assert_close(scorer.from_cosine(cos, emb, dense), scorer(emb, dense), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(CosineScorer().from_cosine(cos, emb, dense), CosineScorer()(emb, dense))


def test_scorers_on_one_anchor_folder_embed_it_once(tmp_path):
    """ida=both with folder anchors: IDA-R and IDA-L share one embedding pass of the folder (the evaluation's
    ScorerContext remembers it); another max_anchors is another set and is embedded again."""
    from PIL import Image

    for person in ("p1", "p2", "p3"):
        (tmp_path / person).mkdir()
        Image.fromarray(np.full((8, 8, 3), len(person) * 40, np.uint8)).save(tmp_path / person / "1.png")
    calls = []

    class Counting(_Module):
        def embed(self, images):
            calls.append(len(images))
            return super().embed(images)

    context, module = ScorerContext(8, None, {"t": {"x"}}), Counting()
    a = AnchorSet("folder", folder=str(tmp_path)).build(module, context)
    b = AnchorSet("folder", folder=str(tmp_path)).build(module, context)
    assert calls == [3] and a is b
    AnchorSet("folder", folder=str(tmp_path), max_anchors=2).build(module, context)
    assert calls == [3, 2]
