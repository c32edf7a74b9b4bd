"""GPU-only checks (skipped without CUDA): margin heads under bf16/fp16 autocast on the GPU, and one bf16-mixed
training step of every method."""

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_heads_autocast_on_gpu_no_nan(dtype):
    from facelearn.nn.heads import ArcFace, CombinedMargin, CosFace, NormFace, SphereFace

    for cls in (NormFace, CosFace, ArcFace, SphereFace, CombinedMargin):
        head = cls(embedding_size=64, num_classes=1000).cuda()
        feats = torch.randn(256, 64, device="cuda", requires_grad=True)
        labels = torch.randint(0, 1000, (256,), device="cuda")
        with torch.no_grad():  # include exact cos = +1 and -1 rows
            head.weight[labels[0]] = feats[0].detach()
            head.weight[labels[1]] = -feats[1].detach()
        with torch.autocast("cuda", dtype=dtype):
            logits = head(feats, labels)
            loss = torch.nn.functional.cross_entropy(logits, labels)
        loss.backward()
        assert logits.dtype == torch.float32 and torch.isfinite(loss) and torch.isfinite(feats.grad).all()
