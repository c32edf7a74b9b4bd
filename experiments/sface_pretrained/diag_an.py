import os, sys, numpy as np
from facelearn.eval.verification import kfold_accuracy
z = np.load("./lfw_view2_emb.npz")
def l2(x): return x / np.linalg.norm(x, axis=1, keepdims=True)
P, y, f = z["pairs"], z["issame"], z["folds"]
def insightface(emb):
    e = l2(emb); d = ((e[P[:, 0]] - e[P[:, 1]]) ** 2).sum(1)
    th = np.arange(0, 4, 0.01); accs = []
    for k in range(10):
        tr, te = f != k, f == k
        best = th[np.argmax([((d[tr] < t) == y[tr]).mean() for t in th])]
        accs.append(((d[te] < best) == y[te]).mean())
    return np.mean(accs), np.std(accs)
for name, emb in (("single", z["single"]), ("flip-sum", z["single"] + z["flipped"]),
                  ("flip-sum of normalised", l2(z["single"]) + l2(z["flipped"])), ("concat", np.c_[l2(z["single"]), l2(z["flipped"])])):
    e = l2(emb); s = (e[P[:, 0]] * e[P[:, 1]]).sum(1)
    m = kfold_accuracy(s, y, f)
    print(f"{name:24s} facelearn {100*m['accuracy']:.2f} ± {100*m['accuracy_std']:.2f}   insightface grid {100*insightface(emb)[0]:.2f} ± {100*insightface(emb)[1]:.2f}")
# thresholds chosen with the test pairs included (not the protocol; what an optimistic evaluation would report)
from facelearn.eval.verification import _best_threshold
e = l2(z["single"] + z["flipped"]); s = (e[P[:, 0]] * e[P[:, 1]]).sum(1)
print("one threshold fit on all 6,000 pairs:", round(100 * _best_threshold(s, y)[1], 2))
print("each fold's own best threshold:", round(100 * np.mean([_best_threshold(s[f == k], y[f == k])[1] for k in range(10)]), 2))
