import os, sys, numpy as np
SHARED = os.environ.get("SHARED", "../shared")
from facelearn.protocols.pairs import LFWPairs, parse_pairs_file
from facelearn.data.landmarks import FivePointAlignment, STAGES
from facelearn.eval.verification import _best_threshold
p = LFWPairs(SHARED + "/data/lfw/pairs.txt", SHARED + "/data/lfw/lfw-deepfunneled", 150)
pairs, issame, folds = parse_pairs_file(p.pairs_file)
keys = {}
for n1, i1, n2, i2 in pairs:
    for k in ((n1, i1), (n2, i2)):
        keys.setdefault(k, len(keys))
paths = [p.image_path(*k) for k in keys]
al = FivePointAlignment(SHARED + "/models/face_detection_yunet_2023mar_int8bq.onnx")
m = al.landmarks(paths, "./cache")
z = np.load("./lfw_view2_emb.npz")
e = z["single"] + z["flipped"]; e /= np.linalg.norm(e, axis=1, keepdims=True)
P, y, f = z["pairs"], z["issame"], z["folds"]
s = (e[P[:, 0]] * e[P[:, 1]]).sum(1)
wrong = []
for k in range(10):
    te = f == k
    t, _ = _best_threshold(s[~te], y[~te])
    wrong += [i for i in np.flatnonzero(te) if (s[i] >= t) != y[i]]
print(len(wrong), "errors;", sum(y[wrong]), "false rejects")
multi = m.faces > 1; low = m.stage > 0
print("images: several faces", multi.mean(), "low stage", low.mean())
ew = set(P[wrong].ravel().tolist())
print("images in errors:", len(ew), "several faces", np.mean([multi[i] for i in ew]), "low stage", np.mean([low[i] for i in ew]))
for i in wrong[:40]:
    a, b = P[i]
    print(y[i], round(float(s[i]), 3), paths[a].split('/')[-1], m.faces[a], STAGES[m.stage[a]], paths[b].split('/')[-1], m.faces[b], STAGES[m.stage[b]])
