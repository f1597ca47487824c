"""Image alignment for PatchEAD+: rotation and translation between photos of the same part.

Patch matching compares a patch with patches at any position, but a part turned by a few degrees
shows its edges at other angles, and those patches find no match. PatchEAD+ therefore estimates
the rotation and translation of each image against a reference with classical feature matching
(ORB keypoints, brute-force Hamming matching, a RANSAC fit of a rotation + translation + uniform
scale, OpenCV), warps it onto the reference, and also scores the 180-degree-rotated copy, since
symmetric parts can match either way round.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class RigidTransform:
    """Rotation about the image centre (degrees, in OpenCV's convention: a positive angle is
    counter-clockwise on screen) and translation (pixels) that map an image onto the reference;
    ``inliers`` is how many keypoint matches agree with it."""

    angle: float
    tx: float
    ty: float
    inliers: int


def _grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image


def estimate_transform(image: np.ndarray, reference: np.ndarray, max_features: int = 1000,
                       min_inliers: int = 8) -> RigidTransform | None:
    """The transform that maps ``image`` onto ``reference`` (uint8 RGB or grey), or None when too
    few keypoint matches agree (texture-less or unrelated images: leave them as they are)."""
    orb = cv2.ORB_create(nfeatures=max_features)
    kp_img, des_img = orb.detectAndCompute(_grey(image), None)
    kp_ref, des_ref = orb.detectAndCompute(_grey(reference), None)
    if des_img is None or des_ref is None or len(kp_img) < min_inliers or len(kp_ref) < min_inliers:
        return None
    matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(des_img, des_ref)
    if len(matches) < min_inliers:
        return None
    src = np.float32([kp_img[m.queryIdx].pt for m in matches])
    dst = np.float32([kp_ref[m.trainIdx].pt for m in matches])
    matrix, inliers = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=3.0)
    if matrix is None or int(inliers.sum()) < min_inliers:
        return None
    angle = float(np.degrees(np.arctan2(matrix[1, 0], matrix[0, 0])))
    # express the fit as rotation about the centre followed by a translation
    h, w = reference.shape[:2]
    about_centre = cv2.getRotationMatrix2D((w / 2, h / 2), -angle, 1.0)
    centre = np.array([w / 2, h / 2])
    shift = matrix[:, :2] @ centre + matrix[:, 2] - (about_centre[:, :2] @ centre + about_centre[:, 2])
    return RigidTransform(angle=angle, tx=float(shift[0]), ty=float(shift[1]), inliers=int(inliers.sum()))


def apply_transform(image: np.ndarray, transform: RigidTransform) -> np.ndarray:
    """Warp ``image`` by the transform (edge pixels replicated where nothing maps)."""
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), -transform.angle, 1.0)
    matrix[:, 2] += (transform.tx, transform.ty)
    return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def align_to(images: list[np.ndarray], reference: np.ndarray) -> list[np.ndarray]:
    """Every image warped onto ``reference`` where a transform is found, unchanged otherwise."""
    aligned = []
    for image in images:
        transform = estimate_transform(image, reference)
        aligned.append(image if transform is None else apply_transform(image, transform))
    return aligned


def rotated_180(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image[::-1, ::-1])
