"""Five-point alignment: the similarity transform against a linear least-squares reference, the warp against
OpenCV's FaceRecognizerSF.alignCrop, the landmark policy (nearest centre, retries, fallback, cache) with a scripted
detector, and YuNet on real LFW / CFP faces (skipped without ../shared)."""

from pathlib import Path

import numpy as np
import pytest

from facelearn.data import landmarks as lm
from facelearn.data.alignment import (ARCFACE_TEMPLATE, alignment_matrix, box_matrix, center_box,
                                      similarity_transform, template, warp, warp_face)
from facelearn.data.images import FaceCrop, decode_faces, read_rgb

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT.parent / "shared" / "models"
YUNET = MODELS / "face_detection_yunet_2023mar_int8bq.onnx"
SFACE = MODELS / "face_recognition_sface_2021dec_int8bq.onnx"
LFW = ROOT.parent / "shared" / "data" / "lfw" / "lfw-deepfunneled"
needs_models = pytest.mark.skipif(not YUNET.is_file(), reason="../shared/models absent")
needs_lfw = pytest.mark.skipif(not LFW.is_dir(), reason="../shared/data/lfw absent")


def lstsq_similarity(src, dst):
    """Reference: [[a, -b, tx], [b, a, ty]] by ordinary linear least squares (no reflection possible)."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src, dst):
        rows += [[x, -y, 1, 0], [y, x, 0, 1]]
        rhs += [u, v]
    a, b, tx, ty = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]
    return np.array([[a, -b, tx], [b, a, ty]])


def test_exact_similarity_is_recovered():
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = (ARCFACE_TEMPLATE - shift) @ np.linalg.inv(scale * rot).T  # src mapped by (scale rot, shift) = template
    m = similarity_transform(src, ARCFACE_TEMPLATE)
    np.testing.assert_allclose(m[:, :2], scale * rot, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], shift, atol=1e-9)


def test_noisy_landmarks_match_linear_least_squares():
    rng = np.random.default_rng(0)
    for _ in range(20):
        src = ARCFACE_TEMPLATE * rng.uniform(0.5, 3) + rng.normal(0, 4, (5, 2)) + rng.uniform(0, 100, 2)
        np.testing.assert_allclose(similarity_transform(src, ARCFACE_TEMPLATE), lstsq_similarity(src,
                                   ARCFACE_TEMPLATE), atol=1e-8)


def test_mirrored_landmarks_give_a_rotation_not_a_reflection():
    src = ARCFACE_TEMPLATE * [-1, 1]  # left and right swapped: the best similarity cannot mirror
    m = similarity_transform(src, ARCFACE_TEMPLATE)
    assert np.linalg.det(m[:, :2]) > 0


def test_degenerate_and_malformed_landmarks_are_refused():
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform(np.ones((5, 2)), ARCFACE_TEMPLATE)
    with pytest.raises(ValueError, match="5 \\(x, y\\) landmarks"):
        alignment_matrix(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="finite"):
        similarity_transform(np.full((5, 2), np.nan), ARCFACE_TEMPLATE)


def test_template_scales_with_the_crop_and_boxes_map_to_the_crop():
    np.testing.assert_allclose(template(56), ARCFACE_TEMPLATE / 2)
    m = box_matrix((10, 20, 60, 70), 112)
    np.testing.assert_allclose(m @ [10, 20, 1], [0, 0])
    np.testing.assert_allclose(m @ [60, 70, 1], [112, 112])
    assert center_box(250, 250, 0.6) == (50.0, 50.0, 200.0, 200.0)


def test_warp_puts_the_landmarks_on_the_template():
    # an image with a bright dot at each landmark: after the warp each dot sits on its template point
    rng = np.random.default_rng(1)
    src = ARCFACE_TEMPLATE * 1.8 + [40, 30] + rng.normal(0, 0.5, (5, 2))
    img = np.zeros((300, 300, 3), np.uint8)
    crop_pts = []
    m = alignment_matrix(src)
    for x, y in src:
        img[int(round(y)) - 2:int(round(y)) + 3, int(round(x)) - 2:int(round(x)) + 3] = 255
        crop_pts.append(m @ [round(x), round(y), 1])
    out = warp(img, m)
    assert out.shape == (112, 112, 3)
    for (u, v), t in zip(crop_pts, ARCFACE_TEMPLATE):
        assert np.hypot(u - t[0], v - t[1]) < 2.5
        assert out[int(round(v)), int(round(u))].max() > 200
    small = warp_face(img, m, 56)
    assert small.shape == (56, 56, 3)


@needs_models
@needs_lfw
def test_crops_equal_opencv_align_crop_on_real_faces():
    """Not bit-identical: OpenCV estimates the transform in float32, we in float64, which moves a few bilinear
    roundings by one grey level (measured on 100 LFW/CFP faces: max difference 1, 0.03 % of the pixels)."""
    cv2 = pytest.importorskip("cv2")
    recognizer = cv2.FaceRecognizerSF.create(str(SFACE), "")
    net = lm.YuNet(str(YUNET))
    files = sorted(LFW.glob("A*/*_0001.jpg"))[:12]
    for f in files:
        rgb = read_rgb(f)
        faces = net.detect(rgb, 0.9)
        assert len(faces), f
        face = faces[lm.nearest_centre(faces, rgb.shape[1], rgb.shape[0])]
        ours = warp(rgb, alignment_matrix(face[4:14].reshape(5, 2)))
        theirs = recognizer.alignCrop(np.ascontiguousarray(rgb[:, :, ::-1]), face.reshape(1, -1))[:, :, ::-1]
        diff = np.abs(ours.astype(int) - theirs.astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (f, diff.max(), (diff > 0).mean())


class ScriptedNet:
    """A detector returning scripted faces per (threshold, image shape) attempt, recording the attempts."""

    def __init__(self, answers):
        import cv2
        self.cv2, self.answers, self.calls = cv2, list(answers), []

    def detect(self, rgb, threshold):
        self.calls.append((threshold, rgb.shape[:2]))
        return self.answers.pop(0) if self.answers else np.zeros((0, 15), np.float32)


def face_row(cx, cy, size=40.0, score=0.95):
    pts = (ARCFACE_TEMPLATE - 56) * size / 112 + [cx, cy]
    return np.r_[cx - size / 2, cy - size / 2, size, size, pts.reshape(-1), score].astype(np.float32)


def scripted_aligner(answers, **kw):
    a = lm.FivePointAlignment(str(YUNET), **{"detect_scale": 1.0, **kw})
    net = ScriptedNet(answers)
    a._net = lambda: net
    return a, net


def test_several_faces_take_the_one_nearest_the_centre():
    a, _ = scripted_aligner([np.stack([face_row(20, 20, score=0.99), face_row(52, 48, score=0.91)])])
    pts, score, stage, n = a.detect_one(np.zeros((100, 100, 3), np.uint8))
    assert (stage, n) == (0, 2) and score == pytest.approx(0.91)
    np.testing.assert_allclose(pts.mean(0), face_row(52, 48)[4:14].reshape(5, 2).mean(0), atol=1e-4)


def test_retries_low_threshold_then_upscaled_then_padded_then_fallback():
    empty = np.zeros((0, 15), np.float32)
    a, net = scripted_aligner([empty, empty, np.stack([face_row(100, 100)])], score_threshold=0.9,
                              retry_threshold=0.3, upscale=2.0, pad=0.25)
    pts, _, stage, _ = a.detect_one(np.zeros((100, 100, 3), np.uint8))
    assert lm.STAGES[stage] == "upscaled"
    assert net.calls == [(0.9, (100, 100)), (0.3, (100, 100)), (0.3, (200, 200))]
    # landmarks found on the 2x image are returned in pixels of the original
    np.testing.assert_allclose(pts, face_row(100, 100)[4:14].reshape(5, 2) / 2, atol=1e-4)
    a, net = scripted_aligner([empty, empty, empty, np.stack([face_row(75, 75)])], pad=0.25)
    pts, _, stage, _ = a.detect_one(np.zeros((100, 100, 3), np.uint8))
    assert lm.STAGES[stage] == "padded" and net.calls[-1][1] == (150, 150)
    np.testing.assert_allclose(pts, face_row(75, 75)[4:14].reshape(5, 2) - 25, atol=1e-4)
    a, net = scripted_aligner([])
    pts, score, stage, n = a.detect_one(np.zeros((100, 100, 3), np.uint8))
    assert stage == lm.FALLBACK and np.isnan(pts).all() and (score, n) == (0.0, 0) and len(net.calls) == 4


def test_detect_scale_detects_on_the_upscaled_image_and_returns_original_pixels():
    a, net = scripted_aligner([np.stack([face_row(100, 80)])], detect_scale=2.0)
    pts, _, stage, _ = a.detect_one(np.zeros((100, 120, 3), np.uint8))
    assert stage == 0 and net.calls == [(0.9, (200, 240))]
    np.testing.assert_allclose(pts, face_row(100, 80)[4:14].reshape(5, 2) / 2, atol=1e-4)
    empty = np.zeros((0, 15), np.float32)
    a, net = scripted_aligner([empty, empty, empty, np.stack([face_row(150, 150)])], detect_scale=2.0, pad=0.25)
    pts, _, stage, _ = a.detect_one(np.zeros((100, 100, 3), np.uint8))
    assert lm.STAGES[stage] == "padded" and net.calls[2][1] == (400, 400) and net.calls[3][1] == (300, 300)
    np.testing.assert_allclose(pts, (face_row(150, 150)[4:14].reshape(5, 2) - 50) / 2, atol=1e-4)


def write_images(tmp_path, n):
    from PIL import Image
    paths = []
    for i in range(n):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(np.full((100, 100, 3), 40 * i, np.uint8)).save(p)
        paths.append(str(p))
    return paths


@needs_models
def test_fallback_images_take_the_source_crop_are_counted_and_cached(tmp_path, caplog):
    paths = write_images(tmp_path, 3)
    a, net = scripted_aligner([np.stack([face_row(50, 50)])])  # image 0 has a face, 1 and 2 none
    a.workers = 1
    with caplog.at_level("WARNING"):
        images = decode_faces(paths, FaceCrop(112, center_crop=60), str(tmp_path / "cache"), a, what="test set")
    assert images.shape == (3, 3, 112, 112)
    assert "no face found in 2 of 3 images" in caplog.text and paths[1] in caplog.text
    marks = a.landmarks(paths, str(tmp_path / "cache"))  # from the cache: the detector is not called again
    assert marks.counts()["fallback"] == 2 and marks.counts()["detected"] == 1
    assert len(net.calls) == 1 + 4 + 4
    strict = lm.FivePointAlignment(str(YUNET), on_failure="error")
    strict._net = lambda: ScriptedNet([])
    with pytest.raises(ValueError, match="no face found in 3 of 3 images"):
        strict.landmarks(paths, None, "strict set")


def test_bad_settings_and_a_missing_detector_are_refused_before_work(tmp_path):
    with pytest.raises(ValueError, match="on_failure"):
        lm.FivePointAlignment("x.onnx", on_failure="guess")
    with pytest.raises(ValueError, match="score_threshold"):
        lm.FivePointAlignment("x.onnx", score_threshold=1.5)
    with pytest.raises(FileNotFoundError, match="face detector model .*missing.onnx"):
        lm.FivePointAlignment(str(tmp_path / "missing.onnx")).check()


@needs_models
@needs_lfw
def test_yunet_finds_the_five_points_of_real_faces():
    a = lm.FivePointAlignment(str(YUNET), workers=1)
    paths = [str(p) for p in sorted(LFW.glob("B*/*_0001.jpg"))[:8]]
    marks = a.landmarks(paths)
    assert (marks.stage != lm.FALLBACK).all()
    for pts in marks.points:  # the subject's right eye is left of the left eye, eyes above the nose above the mouth
        assert pts[0, 0] < pts[1, 0] and pts[3, 0] < pts[4, 0]
        assert pts[:2, 1].max() < pts[2, 1] < pts[3:, 1].min()
        assert 60 < pts[:, 0].mean() < 190 and 60 < pts[:, 1].mean() < 190  # near the centre of 250 px


def test_the_alignment_pickles_for_spawned_processes():
    import pickle
    a = lm.FivePointAlignment("det.onnx", score_threshold=0.8)
    b = pickle.loads(pickle.dumps(a))
    assert (b.detector, b.score_threshold) == ("det.onnx", 0.8) and b._local is not a._local
