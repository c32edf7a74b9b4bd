"""Five-point face alignment onto the ArcFace 112x112 template (the field's standard crop).

The five landmarks (right eye, left eye, nose tip, right and left mouth corner, in the image's left-to-right order
of a frontal face: the subject's right eye is on the image's left) are mapped onto ``ARCFACE_TEMPLATE`` by the
least-squares similarity transform (rotation, uniform scale, translation; Umeyama 1991, the estimate insightface's
``norm_crop`` gets from scikit-image and OpenCV's ``FaceRecognizerSF.alignCrop`` computes itself), and the image is
warped with bilinear interpolation and a black border (``cv2.warpAffine``), giving the crops every published model
and insightface's ``.bin`` sets assume.

A crop of another size S uses the template scaled by S / 112 (the geometry of a resized 112 crop); the decoders warp
at 112 and resize with antialiasing instead (``warp_face``), so a 64 px crop is the 112 px crop downsampled.
"""

from __future__ import annotations

import numpy as np

#: insightface / OpenCV ArcFace template, pixels of a 112x112 crop (x, y).
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)
TEMPLATE_SIZE = 112


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 matrix M of the similarity transform minimising sum ||M [src_i, 1] - dst_i||^2 (Umeyama's
    closed form, reflections excluded). ``src`` and ``dst`` are (K, 2) with K >= 2 distinct points."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"similarity_transform needs two (K, 2) point sets with K >= 2, got {src.shape} and "
                         f"{dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("similarity_transform: landmarks must be finite")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var_s = (s ** 2).sum() / len(src)
    if var_s <= 1e-12:
        raise ValueError("similarity_transform: the source landmarks coincide (no face geometry)")
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # best rotation would be a reflection: flip the weakest axis
        sign[1, 1] = -1
    rot = u @ sign @ vt
    scale = float((sig * np.diag(sign)).sum() / var_s)
    m = np.empty((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def template(size: int = TEMPLATE_SIZE) -> np.ndarray:
    """The ArcFace template for a ``size`` x ``size`` crop."""
    return ARCFACE_TEMPLATE * (size / TEMPLATE_SIZE)


def alignment_matrix(landmarks: np.ndarray, size: int = TEMPLATE_SIZE) -> np.ndarray:
    """2x3 matrix taking image pixels to the aligned ``size`` crop, from (5, 2) landmarks."""
    pts = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    if pts.shape != (5, 2):
        raise ValueError(f"five-point alignment needs 5 (x, y) landmarks, got {pts.shape[0]}")
    return similarity_transform(pts, template(size))


def box_matrix(box: tuple[float, float, float, float], size: int = TEMPLATE_SIZE) -> np.ndarray:
    """2x3 matrix taking the square ``box`` (left, top, right, bottom) to a ``size`` crop (a fallback crop)."""
    left, top, right, bottom = (float(v) for v in box)
    side = max(right - left, bottom - top)
    if side <= 0:
        raise ValueError(f"crop box {box} is empty")
    s = size / side
    return np.array([[s, 0.0, -left * s], [0.0, s, -top * s]])


def center_box(width: int, height: int, fraction: float) -> tuple[float, float, float, float]:
    """The centred square of side ``fraction`` x min(width, height)."""
    side = fraction * min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return left, top, left + side, top + side


def warp(image: np.ndarray, matrix: np.ndarray, size: int = TEMPLATE_SIZE) -> np.ndarray:
    """``image`` (H, W, 3) uint8 warped by ``matrix`` into a (size, size, 3) crop: bilinear, black outside the
    image, as insightface's ``norm_crop`` and OpenCV's ``alignCrop``."""
    import cv2  # opencv-python-headless (a dependency); imported here so geometry alone needs only numpy

    return cv2.warpAffine(np.ascontiguousarray(image), np.asarray(matrix, dtype=np.float64), (size, size),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def warp_face(image: np.ndarray, matrix: np.ndarray, out_size: int) -> np.ndarray:
    """The aligned crop at ``out_size``: warped at 112 by ``matrix`` (a 112-template matrix), then resized with
    Pillow's antialiased bilinear filter when ``out_size`` differs (as the other crops are resized)."""
    crop = warp(image, matrix, TEMPLATE_SIZE)
    if out_size == TEMPLATE_SIZE:
        return crop
    from PIL import Image

    return np.asarray(Image.fromarray(crop).resize((out_size, out_size), Image.BILINEAR))
