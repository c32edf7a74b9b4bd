"""Embed LFW View-2 (aligned, as facelearn.evaluate does) with SFace, single and flip, save; then protocol variants."""
import os, sys, time, numpy as np, torch
SHARED = os.environ.get("SHARED", "../shared")
from facelearn.protocols.pairs import LFWPairs
from facelearn.data.landmarks import FivePointAlignment
from facelearn.nn.backbones import SFaceNet
from facelearn.data.transforms import normalize
al = FivePointAlignment(SHARED + "/models/face_detection_yunet_2023mar_int8bq.onnx")
p = LFWPairs(SHARED + "/data/lfw/pairs.txt", SHARED + "/data/lfw/lfw-deepfunneled", 150, alignment=al)
bs = p.load(112, "./cache")
net = SFaceNet(weights=SHARED + "/models/face_recognition_sface_2021dec_int8bq.onnx").eval()
a, b = [], []
t = time.time()
with torch.inference_mode():
    for i in range(0, len(bs.images), 16):
        x = normalize(torch.from_numpy(bs.images[i:i + 16]))
        a.append(net(x)); b.append(net(x.flip(3)))
print("embedded", len(bs.images), time.time() - t)
np.savez("./lfw_view2_emb.npz", single=torch.cat(a).numpy(), flipped=torch.cat(b).numpy(), pairs=bs.pairs,
         issame=bs.issame, folds=bs.folds)
