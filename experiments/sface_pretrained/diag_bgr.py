"""Channel order check: LFW View-2 with SFace fed the aligned crops as BGR instead of RGB (single pass, no flip),
against the RGB single-pass embeddings of diag_lfw.py."""
import os, time, numpy as np, torch
SHARED = os.environ.get("SHARED", "../shared")
from facelearn.protocols.pairs import LFWPairs
from facelearn.data.landmarks import FivePointAlignment
from facelearn.nn.backbones import SFaceNet
from facelearn.data.transforms import normalize
from facelearn.eval.verification import kfold_accuracy
al = FivePointAlignment(SHARED + "/models/face_detection_yunet_2023mar_int8bq.onnx")
bs = LFWPairs(SHARED + "/data/lfw/pairs.txt", SHARED + "/data/lfw/lfw-deepfunneled", 150, alignment=al).load(112, "./cache")
net = SFaceNet(weights=SHARED + "/models/face_recognition_sface_2021dec_int8bq.onnx").eval()
out = []
with torch.inference_mode():
    for i in range(0, len(bs.images), 16):
        out.append(net(normalize(torch.from_numpy(np.ascontiguousarray(bs.images[i:i + 16, ::-1])))))
e = torch.nn.functional.normalize(torch.cat(out), dim=1).numpy()
s = (e[bs.pairs[:, 0]] * e[bs.pairs[:, 1]]).sum(1)
m = kfold_accuracy(s, bs.issame, bs.folds)
print(f"BGR single: {100 * m['accuracy']:.2f} ± {100 * m['accuracy_std']:.2f}")
