"""Landmark-precision check: detect and warp on the 2x-upscaled LFW image (bilinear) instead of the original, single
pass, LFW View-2; compare with the single-pass 99.10 of the standard pipeline (diag_an.py). ``--warp-original``:
landmarks from the 2x image (scaled back), warp from the original image."""
import os, numpy as np, torch, cv2
from concurrent.futures import ThreadPoolExecutor
import sys
SHARED = os.environ.get("SHARED", "../shared")
WARP_ORIGINAL = "--warp-original" in sys.argv
from facelearn.protocols.pairs import LFWPairs, parse_pairs_file
from facelearn.data.landmarks import FivePointAlignment
from facelearn.data.alignment import alignment_matrix, warp
from facelearn.data.images import read_rgb
from facelearn.nn.backbones import SFaceNet
from facelearn.data.transforms import normalize
from facelearn.eval.verification import kfold_accuracy
p = LFWPairs(SHARED + "/data/lfw/pairs.txt", SHARED + "/data/lfw/lfw-deepfunneled", 150)
pairs, issame, folds = parse_pairs_file(p.pairs_file)
keys = {}
index = np.array([[keys.setdefault(k, len(keys)) for k in ((a, i), (b, j))] for a, i, b, j in pairs])
paths = [p.image_path(*k) for k in keys]
al = FivePointAlignment(SHARED + "/models/face_detection_yunet_2023mar_int8bq.onnx")
crops = np.empty((len(paths), 3, 112, 112), np.uint8)
def work(i):
    big = cv2.resize(read_rgb(paths[i]), None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)
    pts, _, stage, _ = al.detect_one(big)
    if WARP_ORIGINAL:
        crops[i] = warp(read_rgb(paths[i]), alignment_matrix(pts / 2)).transpose(2, 0, 1)
    else:
        crops[i] = warp(big, alignment_matrix(pts)).transpose(2, 0, 1)
with ThreadPoolExecutor(2) as ex:
    list(ex.map(work, range(len(paths))))
net = SFaceNet(weights=SHARED + "/models/face_recognition_sface_2021dec_int8bq.onnx").eval()
with torch.inference_mode():
    e = torch.cat([net(normalize(torch.from_numpy(crops[i:i + 16]))) for i in range(0, len(crops), 16)])
e = torch.nn.functional.normalize(e, dim=1).numpy()
m = kfold_accuracy((e[index[:, 0]] * e[index[:, 1]]).sum(1), issame, folds)
print(f"upscaled 2x ({'landmarks only' if WARP_ORIGINAL else 'landmarks and warp'}), single: {100 * m['accuracy']:.2f} ± {100 * m['accuracy_std']:.2f}")
