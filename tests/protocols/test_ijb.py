"""IJB-B / IJB-C templates (facelearn.protocols.ijb) on a fixture in the release's exact file formats: template
pooling, TAR@FAR and the 1:N metrics against values computed by hand, the meta files' errors, benchmark=ijbc end to
end."""

import numpy as np
import pytest
import torch
from PIL import Image

from facelearn.eval.verification import tar_at_far
from facelearn.protocols.ijb import IJBTemplates, identification_metrics, read_meta, template_features


def unit(v):
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


def test_template_features_by_hand():
    f = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], float)
    templates, medias = np.array([7, 7, 7, 3]), np.array([0, 0, 1, 5])
    tids, feats = template_features(f, templates, medias)
    assert tids.tolist() == [3, 7]
    np.testing.assert_allclose(feats[1], unit([0.5, 0.5, 1]), atol=1e-6)  # mean of media 0, plus media 1
    np.testing.assert_allclose(feats[0], unit([1, 1, 0]), atol=1e-6)
    _, flat = template_features(f, templates, medias, media_pooling=False)
    np.testing.assert_allclose(flat[1], unit([1, 1, 1]), atol=1e-6)
    _, weighted = template_features(f, templates, medias, weights=np.array([1.0, 0.5, 2.0, 1.0]))
    np.testing.assert_allclose(weighted[1], unit([0.5, 0.25, 2.0]), atol=1e-6)


def write_release(root, n_subjects=6, images_per_template=4, one_to_n=False):
    """An IJB-C-format folder: per subject two templates (a 'still' media of 1 image and a 'video' media of 3),
    genuine pairs within a subject, impostor pairs across; 112 px faces whose landmarks are the ArcFace template
    (so alignment keeps them as they are). ``one_to_n``: the 1:N files too, gallery G1 the first template of the
    first half of the subjects, G2 of the others, the probes every subject's second template (subject id 100 + s)."""
    from facelearn.data.alignment import ARCFACE_TEMPLATE
    from facelearn.data.synthetic import SyntheticFaces
    faces = SyntheticFaces(num_identities=n_subjects, images_per_identity=2 * images_per_template, seed=5).load(112)
    (root / "meta").mkdir(parents=True)
    (root / "loose_crop").mkdir()
    tid_lines, lmk_lines = [], []
    lm = " ".join(f"{v:.4f}" for v in ARCFACE_TEMPLATE.reshape(-1))
    for k, image in enumerate(faces.images):
        subject, j = divmod(k, 2 * images_per_template)
        template = 2 * subject + j // images_per_template
        media = 10 * template + (0 if j % images_per_template == 0 else 1)
        name = f"{k}.jpg"
        Image.fromarray(image.transpose(1, 2, 0)).save(root / "loose_crop" / name, quality=95)
        tid_lines.append(f"{name} {template} {media}")
        lmk_lines.append(f"{name} {lm} {0.5 + 0.5 * (k % 2):.2f}")
    pairs = [f"{2 * s} {2 * s + 1} 1" for s in range(n_subjects)]
    pairs += [f"{2 * s} {2 * ((s + d) % n_subjects) + 1} 0" for s in range(n_subjects) for d in (1, 2, 3)]
    (root / "meta" / "ijbc_face_tid_mid.txt").write_text("\n".join(tid_lines) + "\n")
    (root / "meta" / "ijbc_name_5pts_score.txt").write_text("\n".join(lmk_lines) + "\n")
    (root / "meta" / "ijbc_template_pair_label.txt").write_text("\n".join(pairs) + "\n")
    if one_to_n:
        def csv(templates):
            rows = [f"{t},{100 + t // 2},{k}.jpg" for t in templates
                    for k in range(t * images_per_template, (t + 1) * images_per_template)]
            return "TEMPLATE_ID,SUBJECT_ID,FILENAME\n" + "\n".join(rows) + "\n"
        half = n_subjects // 2
        (root / "meta" / "ijbc_1N_gallery_G1.csv").write_text(csv([2 * s for s in range(half)]))
        (root / "meta" / "ijbc_1N_gallery_G2.csv").write_text(csv([2 * s for s in range(half, n_subjects)]))
        (root / "meta" / "ijbc_1N_probe_mixed.csv").write_text(csv([2 * s + 1 for s in range(n_subjects)]))
    return faces


def test_ijbc_end_to_end_equals_the_hand_computation(tmp_path):
    write_release(tmp_path)
    bset = IJBTemplates(str(tmp_path), "ijbc", block=5).load(112)  # block < templates: several blocks
    assert bset.images.shape == (48, 3, 112, 112) and "24 template pairs (6 genuine) over 12 templates" in bset.describe()
    rng = np.random.default_rng(0)
    emb = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(48, 8))).float(), dim=1)
    m = bset.metrics(emb, {}, fars=(0.1,))
    # by hand: detector-score weighting, media means summed, L2; cosine of the pairs' templates
    meta = read_meta(str(tmp_path), "ijbc")
    e, feats = emb.numpy().astype(float) * meta.scores[:, None], {}
    for t in np.unique(meta.templates):
        parts = [e[(meta.templates == t) & (meta.medias == md)].mean(0) for md in np.unique(meta.medias[meta.templates == t])]
        feats[t] = unit(np.sum(parts, 0))
    scores = np.array([feats[a] @ feats[b] for a, b in meta.pairs])
    for far in (0.1, 0.2, 1e-6):
        key = f"tar@far={far:g}"
        if key in m:
            assert m[key] == pytest.approx(tar_at_far(scores, meta.labels, far), nan_ok=True), key
    assert np.isnan(m["tar@far=1e-06"])  # 18 impostor pairs cannot resolve FAR 1e-6
    from sklearn.metrics import roc_auc_score
    assert m["auc"] == pytest.approx(roc_auc_score(meta.labels, scores), abs=1e-9)


def test_identity_embeddings_verify_every_pair(tmp_path):
    faces = write_release(tmp_path)
    bset = IJBTemplates(str(tmp_path), "ijbc").load(112)
    ids = np.unique(faces.identities, return_inverse=True)[1]
    emb = torch.nn.functional.one_hot(torch.from_numpy(ids), 6).float()  # a perfect model
    m = bset.metrics(emb, {}, fars=())
    assert m["auc"] == 1.0 and m["tar@far=0.1"] == 1.0


@pytest.mark.parametrize("edit,message", [
    (lambda r: (r / "meta" / "ijbc_face_tid_mid.txt").write_text("a.jpg 1\n"), r"ijbc_face_tid_mid.txt:1: expected 3"),
    (lambda r: (r / "meta" / "ijbc_template_pair_label.txt").write_text("0 999 1\n"), r"template ids have no image"),
    (lambda r: (r / "meta" / "ijbc_template_pair_label.txt").write_text("0 1 x\n"), r"a column of integers holds something else"),
    (lambda r: (r / "meta" / "ijbc_name_5pts_score.txt").write_text(""), r"no image / 5 landmarks"),
    (lambda r: (r / "meta" / "ijbc_template_pair_label.txt").unlink(), r"template_pair_label.txt does not exist"),
])
def test_broken_meta_files_are_named(tmp_path, edit, message):
    write_release(tmp_path)
    edit(tmp_path)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        read_meta(str(tmp_path), "ijbc")


def test_an_image_name_escaping_loose_crop_is_refused(tmp_path):
    write_release(tmp_path)
    for f in ("ijbc_face_tid_mid.txt", "ijbc_name_5pts_score.txt"):
        p = tmp_path / "meta" / f
        p.write_text(p.read_text().replace("0.jpg", "../0.jpg", 1))
    with pytest.raises(ValueError, match=r"'../0.jpg' is not a file name inside loose_crop"):
        read_meta(str(tmp_path), "ijbc")


def test_benchmark_ijbc_as_typed_with_ida_on_templates(tmp_path):
    """`facelearn.evaluate ... benchmark=ijbc benchmark.ijbc.root=...` (a backbone without training: the command
    path, not a number) with IDA-R beside cosine, its anchors a folder of other faces: every scorer scores templates."""
    import json
    import subprocess
    import sys
    from facelearn.data.synthetic import SyntheticFaces
    write_release(tmp_path / "IJBC")
    anchors = SyntheticFaces(num_identities=12, images_per_identity=1, seed=9).load(112)
    for i, image in enumerate(anchors.images):
        (tmp_path / "anchors" / f"a{i}").mkdir(parents=True)
        Image.fromarray(image.transpose(1, 2, 0)).save(tmp_path / "anchors" / f"a{i}" / "0.png")
    proc = subprocess.run([sys.executable, "-m", "facelearn.evaluate", "backbone=small", "image_size=112",
                           "benchmark=ijbc", f"benchmark.ijbc.root={tmp_path / 'IJBC'}", "ida=ida_r",
                           "ida.ida_r.anchors=folder", f"ida.ida_r.folder={tmp_path / 'anchors'}", "ida.ida_r.k=3",
                           f"paths.log_dir={tmp_path / 'logs'}", f"paths.cache_dir={tmp_path / 'cache'}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| template benchmark | scorer" in proc.stdout and "| ijbc               | ida_r" in proc.stdout
    m = json.loads(next((tmp_path / "logs").rglob("evaluation.json")).read_text())["metrics"]["ijbc"]
    assert {"auc", "tar@far=0.1", "ida_r/auc", "ida_r/tar@far=0.1"} <= set(m)


def test_identification_metrics_by_hand():
    unit_rows = lambda *rows: np.array([unit(r) for r in rows])  # noqa: E731
    gallery, g_subjects = np.eye(3), np.array([10, 20, 30])
    probes = unit_rows([1, 0.2, 0], [0.9, 0.5, 0], [0, 0, 1], [0, 1, 1], [0, 0.1, 1])
    p_subjects = np.array([10, 20, 40, 50, 30])  # 40 and 50 are not enrolled: non-mated searches
    m = identification_metrics(probes, p_subjects, gallery, g_subjects, fpirs=(0.5, 0.1, 1.0), ranks=(1, 2))
    # mated: p0 first (0.981), p1 second (subject 10 scores 0.874 > 0.486), p4 first (0.995)
    assert m["rank1"] == pytest.approx(2 / 3) and m["rank2"] == 1.0
    # non-mated top scores 1.0 and 0.707: FPIR 0.5 lets one above the threshold 0.707 -> p0 and p4 pass
    assert m["tpir@fpir=0.5"] == pytest.approx(2 / 3)
    assert np.isnan(m["tpir@fpir=0.1"])  # 2 non-mated searches cannot resolve 10 %
    assert m["tpir@fpir=1"] == pytest.approx(2 / 3)  # no threshold: the rank-1 share
    # a second gallery template of subject 20 near p1: the subject's best template counts, p1 moves to rank 1
    m2 = identification_metrics(probes, p_subjects, np.vstack([gallery, unit([1, 0.5, 0])]),
                                np.array([10, 20, 30, 20]), fpirs=(0.5,), ranks=(1,), chunk=2)
    assert m2["rank1"] == 1.0 and m2["tpir@fpir=0.5"] == 1.0  # p1 (0.998) is above 0.707 now too


def brute_force_search(feats, probe_t, probe_s, gallery_t, gallery_s, fpir):
    """Rank-1 and TPIR of one gallery, written out probe by probe."""
    hits, tops, mated_hits = 0, [], []
    for t, s in zip(probe_t, probe_s):
        scores = {gs: feats[gt] @ feats[t] for gt, gs in zip(gallery_t, gallery_s)}
        best = max(scores, key=scores.get)
        if s in scores:
            mated_hits.append(scores[s] if best == s else None)
            hits += best == s
        else:
            tops.append(scores[best])
    threshold = sorted(tops, reverse=True)[int(len(tops) * fpir)]
    tpir = np.mean([h is not None and h > threshold for h in mated_hits])
    return hits / len(mated_hits), tpir


def test_ijbc_one_to_n_equals_a_probe_by_probe_search(tmp_path):
    write_release(tmp_path, n_subjects=20, one_to_n=True)
    bset = IJBTemplates(str(tmp_path), "ijbc").load(112)
    assert "1:N: 20 probe templates, galleries G1 10, G2 10" in bset.describe()
    emb = torch.nn.functional.normalize(torch.from_numpy(np.random.default_rng(1).normal(size=(160, 4))).float(), dim=1)
    m = bset.metrics(emb, {}, fars=())
    meta = read_meta(str(tmp_path), "ijbc")
    tids, tf = template_features(emb.numpy(), meta.templates, meta.medias, meta.scores)
    feats = dict(zip(tids, tf))
    probes = [2 * s + 1 for s in range(20)]
    for g, gallery in (("G1", list(range(0, 20, 2))), ("G2", list(range(20, 40, 2)))):
        rank1, tpir = brute_force_search(feats, probes, [100 + t // 2 for t in probes], gallery,
                                         [100 + t // 2 for t in gallery], 0.1)  # 10 non-mated: one may pass
        assert np.isnan(m[f"{g}/tpir@fpir=0.01"])  # 10 non-mated searches cannot resolve 1 %
        assert m[f"{g}/rank1"] == pytest.approx(rank1) and m[f"{g}/tpir@fpir=0.1"] == pytest.approx(tpir)
    assert m["rank1"] == pytest.approx((m["G1/rank1"] + m["G2/rank1"]) / 2)
    # a perfect model: every probe found first, every mated search above every non-mated one
    ids = torch.from_numpy(np.repeat(np.arange(20), 8))
    perfect = bset.metrics(torch.nn.functional.one_hot(ids, 20).float(), {}, fars=())
    assert perfect["rank1"] == perfect["rank5"] == perfect["tpir@fpir=0.1"] == 1.0


@pytest.mark.parametrize("edit,message", [
    (lambda r: (r / "meta" / "ijbc_1N_gallery_G2.csv").unlink(), r"missing: .*ijbc_1N_gallery_G2.csv"),
    (lambda r: (r / "meta" / "ijbc_1N_probe_mixed.csv").write_text("TEMPLATE_ID,SUBJECT_ID\n999,1\n"),
     r"ijbc_1N_probe_mixed.csv: 1 templates have no image in the face_tid_mid list \(e.g. 999\)"),
    (lambda r: (r / "meta" / "ijbc_1N_gallery_G1.csv").write_text("TEMPLATE_ID,SUBJECT_ID\n0,1\n0,2\n"),
     r"ijbc_1N_gallery_G1.csv: template 0 is listed with several subject ids"),
    (lambda r: (r / "meta" / "ijbc_1N_gallery_G1.csv").write_text("TEMPLATE_ID,SUBJECT_ID\nzero,1\n"),
     r"ijbc_1N_gallery_G1.csv:2: expected an integer template id"),
])
def test_broken_one_to_n_files_are_named(tmp_path, edit, message):
    write_release(tmp_path, one_to_n=True)
    edit(tmp_path)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        IJBTemplates(str(tmp_path), "ijbc").load(112)


def test_identification_true_without_the_files_is_refused(tmp_path):
    write_release(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no ijbc_1N_\*.csv files, but identification=true"):
        IJBTemplates(str(tmp_path), "ijbc", identification=True).load(112)
    assert IJBTemplates(str(tmp_path), "ijbc").load(112).search is None  # None: 1:1 only, logged


def test_ida_tau_sweep_runs_on_a_template_benchmark_and_reports(tmp_path):
    """IDA's Fig. 7 layout for a user with IJB data: `facelearn.evaluate -m +sweep=ida_tau benchmark=ijbc ...`
    (six evaluations, one per tau), then `facelearn.report` over the multirun: one row per tau with the IDA-R
    TAR@FAR of the template pairs."""
    import subprocess
    import sys
    from facelearn.data.synthetic import SyntheticFaces
    write_release(tmp_path / "IJBC", one_to_n=True)
    anchors = SyntheticFaces(num_identities=12, images_per_identity=1, seed=9).load(112)
    for i, image in enumerate(anchors.images):
        (tmp_path / "anchors" / f"a{i}").mkdir(parents=True)
        Image.fromarray(image.transpose(1, 2, 0)).save(tmp_path / "anchors" / f"a{i}" / "0.png")
    proc = subprocess.run([sys.executable, "-m", "facelearn.evaluate", "-m", "+sweep=ida_tau", "backbone=small",
                           "image_size=112", "benchmark=ijbc", f"benchmark.ijbc.root={tmp_path / 'IJBC'}",
                           "ida.ida_r.anchors=folder", f"ida.ida_r.folder={tmp_path / 'anchors'}", "ida.ida_r.k=3",
                           f"paths.log_dir={tmp_path / 'logs'}", f"paths.cache_dir={tmp_path / 'cache'}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| 1:N benchmark | gallery" in proc.stdout  # the 1:N table of each job
    multirun = next((tmp_path / "logs" / "multiruns").iterdir())
    report = subprocess.run([sys.executable, "-m", "facelearn.report", str(multirun), "--metrics",
                             "tar@far=1e-1", "ida_r/tar@far=1e-1", "rank1"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert report.returncode == 0, report.stderr[-3000:]
    for tau in ("0.25", "0.5", "1", "2", "4", "8"):
        assert f"ida.ida_r.tau={tau}" in report.stdout, report.stdout


CFP = __import__("pathlib").Path(__file__).resolve().parents[3] / "shared" / "data" / "cfp"
SFACE_MODELS = CFP.parents[1] / "models"


@pytest.mark.skipif(not (CFP / "Data" / "Images").is_dir()
                    or not (SFACE_MODELS / "face_detection_yunet_2023mar_int8bq.onnx").is_file(),
                    reason="../shared (CFP and the models) absent")
def test_a_template_set_built_from_cfp_runs_with_sface_as_typed(tmp_path):
    """Real faces through the whole template path: experiments/cfp_templates/build_ijb.py on 6 CFP people (84
    images, YuNet landmarks), then `facelearn.evaluate backbone=sface benchmark=ijbc ...` from another directory.
    The pretrained model separates these few people's templates (experiments/results/cfp_templates has all 500)."""
    import json
    import os
    import subprocess
    import sys
    script = __import__("pathlib").Path(__file__).resolve().parents[2] / "experiments" / "cfp_templates" / "build_ijb.py"
    env = {**os.environ, "FACELEARN_MODELS": str(SFACE_MODELS), "FACELEARN_CACHE": str(tmp_path / "cache")}
    built = subprocess.run([sys.executable, str(script), str(CFP), str(tmp_path / "CFP_IJB"), "--people", "6"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    summary = json.loads((tmp_path / "CFP_IJB" / "summary.json").read_text())
    assert summary["templates"] == 18 and summary["pairs"] == 153 and summary["genuine_pairs"] == 18
    proc = subprocess.run([sys.executable, "-m", "facelearn.evaluate", "backbone=sface", "benchmark=ijbc",
                           f"benchmark.ijbc.root={tmp_path / 'CFP_IJB'}", "benchmark.ijbc.name=cfp_templates",
                           f"paths.log_dir={tmp_path / 'logs'}"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| cfp_templates | G1" in proc.stdout.replace("  ", " ").replace("  ", " ") or "cfp_templates" in proc.stdout
    m = json.loads(next((tmp_path / "logs").rglob("evaluation.json")).read_text())["metrics"]["cfp_templates"]
    assert m["auc"] > 0.99 and m["rank1"] >= 5 / 6  # 12 probe templates against 3 + 3 enrolled people
