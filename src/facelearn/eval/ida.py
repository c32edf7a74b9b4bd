"""Inter-class Discrepancy Alignment (IDA; ../shared/papers/inter_class_discrepancy_alignment.md §3).

DAO (eq. 4): for L2-normalised f1, f2 with support sets Ψ1, Ψ2 (their k most similar anchors),
``DAO = exp(τ⟨f1, f2⟩) · (F1 + F2)`` with ``F = 1 / Σ_{i≤k} exp(τ s_i)``, the local density term.

We compute it in log space, ``log DAO = τ⟨f1, f2⟩ + logaddexp(log F1, log F2)`` with
``log F = −logsumexp(τ s)``: exp/sums of exponentials overflow for large τ, the log does not, and the log is
monotonic so every verification metric is unchanged. DAO is commutative, and within a fixed pair of support sets it
is an increasing function of the cosine, so it keeps their order.

Support sets come from an anchor embedding set searched for the top-k inner products (IDA-R, Algorithm 1:
``AnchorIndex``, FAISS or torch) or from a learned regressor of log F (IDA-L, eq. 6: ``SupportSetRegressor``).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

try:  # FAISS is a dependency, but the torch fallback keeps IDA usable where its wheel is unavailable
    import faiss
except ImportError:  # pragma: no cover - exercised only without faiss
    faiss = None


def log_density(support_sims: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """log F(f, Ψ_f) = −log Σ_k exp(τ s_k) for support similarities (N, k)."""
    return -torch.logsumexp(tau * support_sims.double(), dim=1)


def log_dao(cos: torch.Tensor, log_f1: torch.Tensor, log_f2: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """log DAO(f1, f2, Ψ1, Ψ2) (eq. 4) from the pair cosine and both log densities."""
    return tau * cos.double() + torch.logaddexp(log_f1.double(), log_f2.double())


def dao(f1: torch.Tensor, f2: torch.Tensor, support1: torch.Tensor, support2: torch.Tensor,
        tau: float = 1.0) -> torch.Tensor:
    """DAO of eq. 4 for rows of f1, f2 (N, D) with support sets (N, k, D); the direct (non-log) form."""
    s1 = torch.einsum("nd,nkd->nk", f1, support1)
    s2 = torch.einsum("nd,nkd->nk", f2, support2)
    inner = (f1 * f2).sum(1)
    return torch.exp(tau * inner) * (1 / torch.exp(tau * s1).sum(1) + 1 / torch.exp(tau * s2).sum(1))


class AnchorIndex:
    """Top-k inner-product search over L2-normalised anchors.

    Args:
        anchors: (M, D) float tensor (normalised here).
        backend: ``faiss`` (default when installed) or ``torch`` (chunked matmul + topk).
        kind: FAISS index: ``flat`` (exact IndexFlatIP), ``ivf`` (IndexIVFFlat, ``nlist``/``nprobe``) or
            ``hnsw`` (IndexHNSWFlat, ``hnsw_m``/``ef_search``) for large anchor sets.
        use_gpu: move the FAISS index to the GPU when the installed FAISS build supports it.
    """

    def __init__(self, anchors: torch.Tensor, backend: str = "faiss", kind: str = "flat", nlist: int = 256,
                 nprobe: int = 16, hnsw_m: int = 32, ef_search: int = 128, use_gpu: bool = False,
                 chunk: int = 4096) -> None:
        if backend not in ("faiss", "torch"):
            raise ValueError(f"ida backend must be faiss or torch, got {backend!r}")
        if kind not in ("flat", "ivf", "hnsw"):
            raise ValueError(f"ida index kind must be flat | ivf | hnsw, got {kind!r}")
        if backend == "faiss" and faiss is None:
            log.warning("faiss is not installed: anchor search falls back to an exact torch search "
                        "(pip install 'facelearn[faiss]', or faiss-gpu, for FAISS)")
            backend = "torch"
        if backend == "torch" and kind != "flat":
            raise ValueError(f"approximate index {kind!r} needs faiss (pip install 'facelearn[faiss]' or faiss-gpu); "
                             "the torch backend is exact only")
        self.anchors = torch.nn.functional.normalize(anchors.float(), dim=1).contiguous()
        self.backend, self.kind, self.chunk = backend, kind, chunk
        if backend == "faiss":
            x = self.anchors.numpy()
            d = x.shape[1]
            if kind == "flat":
                index = faiss.IndexFlatIP(d)
            elif kind == "ivf":
                quantizer = faiss.IndexFlatIP(d)
                index = faiss.IndexIVFFlat(quantizer, d, min(nlist, len(x)), faiss.METRIC_INNER_PRODUCT)
                index.train(x)
                index.nprobe = nprobe
            else:
                index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
                index.hnsw.efSearch = ef_search
            if use_gpu and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
                self._res = faiss.StandardGpuResources()
                index = faiss.index_cpu_to_gpu(self._res, 0, index)
            index.add(x)
            self.index = index

    def __len__(self) -> int:
        return len(self.anchors)

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(similarities (N, k) descending, anchor indices (N, k)) of the k most similar anchors."""
        if not 1 <= k <= len(self.anchors):
            raise ValueError(f"ida.k={k} must be in [1, {len(self.anchors)}] (the anchor set size)")
        q = torch.nn.functional.normalize(queries.float(), dim=1).contiguous()
        if self.backend == "faiss":
            sims, idx = self.index.search(q.numpy(), k)
            return torch.from_numpy(sims), torch.from_numpy(idx).long()
        sims, idx = [], []
        for start in range(0, len(q), self.chunk):
            s, i = (q[start:start + self.chunk] @ self.anchors.T).topk(k, dim=1)
            sims.append(s)
            idx.append(i)
        return torch.cat(sims), torch.cat(idx)


class SupportSetRegressor(nn.Module):
    """IDA-L's support set regression module (§3.2): two FC layers with ReLU, embedding -> log F(f, Ψ_f).

    We regress log F rather than F: F spans orders of magnitude across τ and k, the log is well conditioned, and
    ``log_dao`` consumes log F directly (eq. 6's squared error is taken on log F).
    """

    def __init__(self, embedding_size: int, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(embedding_size, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.net(embeddings).squeeze(1)


def fit_regressor(embeddings: torch.Tensor, targets: torch.Tensor, hidden: int = 256, epochs: int = 30,
                  batch_size: int = 256, lr: float = 1e-3, seed: int = 0) -> tuple[SupportSetRegressor, float]:
    """Stage-wise IDA-L training (frozen backbone: only the regressor learns) as a small Lightning fit.

    Targets are standardised for the fit and the scale is folded back into the last layer, so the returned
    regressor predicts log F directly. Returns the regressor and its final training MSE (on log F).
    """
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset

    mean, std = targets.mean(), targets.std().clamp_min(1e-6)

    class _Fit(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = SupportSetRegressor(embeddings.shape[1], hidden)

        def training_step(self, batch, _):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.model(x), (y - mean) / std)
            self.log("ida_l/mse", loss, on_epoch=True, on_step=False)
            return loss

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=lr)

    pl.seed_everything(seed, verbose=False)
    fit = _Fit()
    loader = DataLoader(TensorDataset(embeddings.float(), targets.float()), batch_size=batch_size, shuffle=True)
    trainer = pl.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    trainer.fit(fit, loader)
    reg = fit.model.eval()
    with torch.no_grad():  # fold the standardisation into the output layer
        last = reg.net[2]
        last.weight.mul_(std)
        last.bias.mul_(std).add_(mean)
        mse = float(torch.nn.functional.mse_loss(reg(embeddings.float()), targets.float()))
    return reg, mse


def pick_one_per_class(labels: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """Index of one random image per class (the paper's real-db), at most ``cap`` classes."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    _, first = np.unique(labels[order], return_index=True)
    chosen = order[first]
    return np.sort(rng.permutation(chosen)[:cap])
